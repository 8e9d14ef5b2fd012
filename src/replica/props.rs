//! An object's registers by property name, stored compactly.
//!
//! A house of 10,000 objects holds about 80,000 registers, so their layout is most of the
//! replica's memory. A `BTreeMap<String, Register>` gave every object a B-tree node of eleven
//! slots (about 1.9 KiB for the eight or so properties an object has) and every name a heap
//! allocation of its own. [`Props`] is a vector sorted by name, exactly as long as the object
//! has properties, and a name the model knows (`state`, `room`, ...) points at the model's
//! constant instead of a copy. Lookups are a binary search over a handful of names. It reads
//! and writes JSON as the map did, so snapshots are unchanged.

use super::Register;
use crate::model;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Property names every object has, kept once for the whole process.
const KNOWN: [&str; 7] = [
    model::STATE,
    model::ROOM,
    model::X,
    model::Y,
    model::NAME,
    model::KIND,
    model::DELETED,
];

/// A property's name: the model's constant when it is one, else its own copy.
fn name(prop: &str) -> Cow<'static, str> {
    match KNOWN.iter().find(|k| **k == prop) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(prop.to_owned()),
    }
}

/// Every register of one object, sorted by property name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Props(Vec<Slot>);

impl Props {
    /// Where `prop` is, or where it would go.
    fn find(&self, prop: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(prop))
    }

    /// The register of `prop`.
    pub fn get(&self, prop: &str) -> Option<&Register> {
        self.find(prop).ok().map(|i| &self.0[i].1)
    }

    /// The register of `prop`, to overwrite.
    pub fn get_mut(&mut self, prop: &str) -> Option<&mut Register> {
        self.find(prop).ok().map(|i| &mut self.0[i].1)
    }

    /// Whether `prop` has a register.
    pub fn contains_key(&self, prop: &str) -> bool {
        self.find(prop).is_ok()
    }

    /// Sets the register of `prop`, returning the one it replaces. A new property grows the
    /// vector by exactly one slot: objects rarely gain properties after they are created,
    /// and spare capacity would be kept for good by every object.
    pub fn insert(&mut self, prop: &str, register: Register) -> Option<Register> {
        match self.find(prop) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, register)),
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (name(prop), register));
                None
            }
        }
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the object has no property.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every (name, register), by name.
    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(|(k, r)| (k.as_ref(), r))
    }

    /// Every register, by name.
    pub fn values(&self) -> impl Iterator<Item = &Register> {
        self.0.iter().map(|(_, r)| r)
    }
}

/// One slot of [`Props`].
type Slot = (Cow<'static, str>, Register);

/// The iterator of [`Props::iter`]: named, so `for (prop, r) in &props` allocates nothing.
pub type Iter<'a> = std::iter::Map<std::slice::Iter<'a, Slot>, fn(&Slot) -> (&str, &Register)>;

impl<'a> IntoIterator for &'a Props {
    type Item = (&'a str, &'a Register);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::ops::Index<&str> for Props {
    type Output = Register;

    /// The register of `prop`; panics when there is none, as a map's index does.
    fn index(&self, prop: &str) -> &Register {
        self.get(prop)
            .unwrap_or_else(|| panic!("no property {prop:?}"))
    }
}

impl FromIterator<(String, Register)> for Props {
    fn from_iter<I: IntoIterator<Item = (String, Register)>>(iter: I) -> Self {
        let sorted: BTreeMap<String, Register> = iter.into_iter().collect();
        let mut v = Vec::with_capacity(sorted.len());
        v.extend(sorted.into_iter().map(|(k, r)| (name(&k), r)));
        Props(v)
    }
}

impl Serialize for Props {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Props {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, Register>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;
    use crate::model::Value;
    use uuid::Uuid;

    fn reg(n: f64) -> Register {
        Register {
            value: Value::Number(n),
            stamp: Stamp {
                wall_ms: 1,
                counter: 0,
                origin: Uuid::nil(),
            },
            seq: 1,
            sig: None,
        }
    }

    #[test]
    fn keeps_names_sorted_and_exactly_as_many_slots_as_properties() {
        let mut p = Props::default();
        for (i, k) in ["y", "claim.abc", "state", "x", "room"].iter().enumerate() {
            assert!(p.insert(k, reg(i as f64)).is_none());
        }
        assert_eq!(p.insert("x", reg(9.0)), Some(reg(3.0)));
        let names: Vec<&str> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["claim.abc", "room", "state", "x", "y"]);
        assert_eq!(p.0.capacity(), 5);
        assert_eq!(p["x"], reg(9.0));
        assert!(p.contains_key("claim.abc") && !p.contains_key("claim"));
        assert!(matches!(p.0[1].0, Cow::Borrowed(_)), "room is the model's");
    }

    #[test]
    fn reads_and_writes_json_as_the_map_did() {
        let map: BTreeMap<String, Register> =
            [("state".to_string(), reg(1.0)), ("b".to_string(), reg(2.0))].into();
        let json = serde_json::to_string(&map).unwrap();
        let p: Props = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), json);
        assert_eq!(p.len(), 2);
    }
}
