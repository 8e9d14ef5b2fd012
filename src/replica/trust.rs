//! Who may write what: every update is signed by its origin's ed25519 key, and a replica that
//! enforces signatures applies a remote update only after checking the signature against the
//! key its member record (`_member-<uuid>`, property `key`) holds.
//!
//! A member's key is learned from the first record of it that verifies, and never replaced:
//! a record naming another key for a known member is refused, so a member cannot take over
//! another's identity by writing its record again. A record is trusted when it is signed by a
//! member already known, or by the key it names itself (self-certifying: every instance
//! writes its own record at its first start, and the mesh's founder is known no other way).
//! Letting any member record a new member is no more than a member can already do with
//! `pimesh invite`.
//!
//! A claim (`claim.<uuid>`) speaks for one instance, so only that instance may write it.
//!
//! Updates written before signatures existed (a store from an older pimesh) are *adopted*:
//! each instance writes every unsigned register it holds again, signed, with the same value
//! and the same wall time and counter (see [`Replica::adopt_unsigned`]). At an equal time a
//! signed write beats an unsigned one, and nothing written after the upgrade is older than the
//! adopted copy, so adoption changes no value anywhere.

use super::{Refused, Replica, Update};
use crate::model::{ObjectId, Value, CLAIM_PREFIX};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The property of a member record that holds its public key, hex.
pub const KEY_PROP: &str = "key";
/// The object id prefix of member records.
const MEMBER_PREFIX: &str = "_member-";

/// An ed25519 signature over one update; hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({}…)", crate::secret::to_hex(&self.0[..4]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::secret::to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        crate::secret::from_hex(&text)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(Signature)
            .ok_or_else(|| serde::de::Error::custom("a signature is 128 hex digits"))
    }
}

/// This instance's signing key, as the replica holds it.
#[derive(Clone)]
pub(super) struct Signer(pub(super) SigningKey);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

/// The bytes an update's signature covers: a domain tag, then every field but the signature,
/// each length-prefixed or fixed-size, so no two updates share them.
pub fn signed_bytes(u: &Update) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + u.object.as_str().len() + u.prop.len());
    out.extend_from_slice(b"pimesh-update-v1\0");
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    field(u.object.as_str().as_bytes());
    field(u.prop.as_bytes());
    match &u.value {
        Value::Bool(b) => field(&[0, u8::from(*b)]),
        Value::Number(n) => {
            let mut v = vec![1];
            v.extend_from_slice(&n.to_bits().to_le_bytes());
            field(&v);
        }
        Value::Text(t) => {
            let mut v = vec![2];
            v.extend_from_slice(t.as_bytes());
            field(&v);
        }
    }
    out.extend_from_slice(&u.stamp.wall_ms.to_le_bytes());
    out.extend_from_slice(&u.stamp.counter.to_le_bytes());
    out.extend_from_slice(u.stamp.origin.as_bytes());
    out.extend_from_slice(&u.seq.to_le_bytes());
    out
}

/// Signs `u` with `key` (the key of `u`'s origin).
pub fn sign(key: &SigningKey, u: &Update) -> Signature {
    Signature(key.sign(&signed_bytes(u)).to_bytes())
}

/// Whether `u` carries a valid signature by `key`.
pub fn verify(key: &VerifyingKey, u: &Update) -> bool {
    u.sig.is_some_and(|sig| {
        key.verify_strict(
            &signed_bytes(u),
            &ed25519_dalek::Signature::from_bytes(&sig.0),
        )
        .is_ok()
    })
}

/// The member a member record is about.
pub fn member_of(object: &ObjectId) -> Option<Uuid> {
    object.as_str().strip_prefix(MEMBER_PREFIX)?.parse().ok()
}

/// A member key from its hex form.
pub fn parse_key(hex: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = crate::secret::from_hex(hex)?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// If `u` records a member's key: the member and the key it names (None when malformed).
fn key_record(u: &Update) -> Option<(Uuid, Option<VerifyingKey>)> {
    if u.prop != KEY_PROP {
        return None;
    }
    let member = member_of(&u.object)?;
    Some((member, u.value.as_text().and_then(parse_key)))
}

impl Replica {
    /// From now on, sign every update `prepare` makes with `key`, and accept remote updates
    /// only with a valid signature by their origin (see the module doc).
    pub fn set_signer(&mut self, key: SigningKey) {
        self.keys.insert(self.origin, key.verifying_key());
        self.signer = Some(Signer(key));
    }

    /// Whether remote updates must be signed.
    pub fn enforces_signatures(&self) -> bool {
        self.signer.is_some()
    }

    /// The key of member `uuid`, if known.
    pub fn member_key(&self, uuid: &Uuid) -> Option<&VerifyingKey> {
        self.keys.get(uuid)
    }

    /// Number of members whose key is known.
    pub fn known_members(&self) -> usize {
        self.keys.len()
    }

    /// Signs `u` as this instance, when a signer is set.
    pub(super) fn sign_own(&self, u: &mut Update) {
        if let Some(Signer(key)) = &self.signer {
            u.sig = Some(sign(key, u));
        }
    }

    /// Learns a member key from an applied update (the first key of a member stays).
    pub(super) fn learn_key(&mut self, u: &Update) {
        if let Some((member, Some(key))) = key_record(u) {
            self.keys.entry(member).or_insert(key);
        }
    }

    /// Whether member `uuid` was retired (`pimesh forget`): its member record is deleted.
    pub fn is_retired(&self, uuid: Uuid) -> bool {
        self.retirement(uuid).is_some()
    }

    /// When member `uuid` was retired: the stamp of its record's deletion.
    fn retirement(&self, uuid: Uuid) -> Option<crate::clock::Stamp> {
        let record = self.objects.get(&ObjectId::member(uuid))?;
        record
            .is_deleted()
            .then(|| record.props.get(crate::model::DELETED).map(|r| r.stamp))
            .flatten()
    }

    /// Whether the remote update `u` is signed by its origin and speaks only for it.
    ///
    /// A retired member's updates are still taken when stamped before its retirement: they
    /// are the house's history, which every replica must hold alike.
    pub fn check_signature(&self, u: &Update) -> Result<(), Refused> {
        let origin = u.stamp.origin;
        if self.retirement(origin).is_some_and(|at| u.stamp > at) {
            return Err(Refused::Retired { origin, seq: u.seq });
        }
        if let Some(claimed) = u.prop.strip_prefix(CLAIM_PREFIX) {
            if claimed != origin.to_string() {
                return Err(Refused::ForeignClaim {
                    origin,
                    object: u.object.as_str().to_string(),
                });
            }
        }
        if u.sig.is_none() {
            return Err(Refused::Unsigned { origin, seq: u.seq });
        }
        let record = key_record(u);
        let named = match record {
            Some((member, None)) => {
                return Err(Refused::BadKey {
                    member,
                    origin,
                    seq: u.seq,
                })
            }
            Some((member, Some(key))) => {
                if self.keys.get(&member).is_some_and(|known| *known != key) {
                    return Err(Refused::KeyChange { member, origin });
                }
                (member == origin).then_some(key)
            }
            None => None,
        };
        let key = match (self.keys.get(&origin), named) {
            (Some(key), _) => *key,
            (None, Some(own)) => own,
            (None, None) => return Err(Refused::UnknownSigner { origin, seq: u.seq }),
        };
        if verify(&key, u) {
            Ok(())
        } else {
            Err(Refused::BadSignature { origin, seq: u.seq })
        }
    }

    /// Our unsigned registers written again as our own signed updates, with the same value,
    /// wall time and counter (see the module doc); empty once there are none, or without a
    /// signer. Another instance's claims are left alone: only it may speak for itself, and its
    /// own adoption replaces them. Persist, then [`apply`](Replica::apply), like `prepare`.
    pub fn adopt_unsigned(&self) -> Vec<Update> {
        if self.signer.is_none() {
            return Vec::new();
        }
        let own_claim = format!("{CLAIM_PREFIX}{}", self.origin);
        let mut seq = self.seqs.highest(&self.origin);
        let mut out = Vec::new();
        for (id, object) in &self.objects {
            for (prop, r) in &object.props {
                if r.sig.is_some() || (prop.starts_with(CLAIM_PREFIX) && *prop != own_claim) {
                    continue;
                }
                seq = seq.saturating_add(1);
                let stamp = crate::clock::Stamp {
                    origin: self.origin,
                    ..r.stamp
                };
                out.push(self.own_update(id, prop.clone(), r.value.clone(), stamp, seq));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;
    use crate::model::STATE;
    use crate::replica::tests::{node, oid};

    const T0: u64 = 1_700_000_000_000;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    /// A replica of `node(n)` that signs with `key(n)`.
    fn signing(n: u8) -> Replica {
        let mut r = Replica::new(node(n));
        r.set_signer(key(n));
        r
    }

    fn member_record(writer: &Replica, member: u8) -> Vec<Update> {
        writer.prepare(
            &ObjectId::member(node(member)),
            vec![(
                KEY_PROP.into(),
                crate::secret::to_hex(key(member).verifying_key().as_bytes()).into(),
            )],
            T0,
        )
    }

    fn local(r: &mut Replica, updates: &[Update]) {
        for u in updates {
            r.apply(u, T0);
        }
    }

    #[test]
    fn a_signed_update_of_a_known_member_is_applied_and_every_forgery_refused() {
        let mut a = signing(1);
        let mut b = signing(2);
        // a learns b from b's own record (self-certifying).
        let rec = member_record(&b, 2);
        local(&mut b, &rec);
        a.apply_remote(&rec[0], T0).unwrap();
        let on = b.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0 + 1);
        local(&mut b, &on);
        assert!(a.apply_remote(&on[0], T0 + 1).unwrap().changed);

        let mut unsigned = on[0].clone();
        unsigned.sig = None;
        unsigned.seq += 1;
        assert!(matches!(
            a.apply_remote(&unsigned, T0),
            Err(Refused::Unsigned { .. })
        ));
        let mut altered = on[0].clone();
        altered.value = "OFF".into();
        altered.stamp.counter += 1;
        assert!(matches!(
            a.apply_remote(&altered, T0),
            Err(Refused::BadSignature { .. })
        ));
        // Signed with a third key but claiming to be b.
        let mut as_b = altered.clone();
        as_b.sig = Some(sign(&key(3), &as_b));
        assert!(matches!(
            a.apply_remote(&as_b, T0),
            Err(Refused::BadSignature { .. })
        ));
        // From a stranger nobody recorded.
        let stranger = signing(9).prepare(&oid("lamp"), vec![(STATE.into(), "OFF".into())], T0);
        assert!(matches!(
            a.apply_remote(&stranger[0], T0),
            Err(Refused::UnknownSigner { .. })
        ));
        assert_eq!(a.get(&oid("lamp")).unwrap().text(STATE), Some("ON"));
    }

    #[test]
    fn a_member_cannot_replace_another_members_key_or_claim_for_it() {
        let mut a = signing(1);
        let mut m = signing(3);
        for n in [2, 3] {
            let rec = member_record(&signing(n), n);
            a.apply_remote(&rec[0], T0).unwrap();
            local(&mut m, &rec);
        }
        // m writes a record giving member 2 m's own key.
        let takeover = m.prepare(
            &ObjectId::member(node(2)),
            vec![(
                KEY_PROP.into(),
                crate::secret::to_hex(key(3).verifying_key().as_bytes()).into(),
            )],
            T0 + 5,
        );
        assert!(matches!(
            a.apply_remote(&takeover[0], T0),
            Err(Refused::KeyChange { .. })
        ));
        let claim = m.prepare(
            &oid("lamp"),
            vec![(format!("{CLAIM_PREFIX}{}", node(2)), true.into())],
            T0 + 6,
        );
        assert!(matches!(
            a.apply_remote(&claim[0], T0),
            Err(Refused::ForeignClaim { .. })
        ));
        assert_eq!(
            a.member_key(&node(2)),
            Some(&key(2).verifying_key()),
            "the first key stays"
        );
    }

    #[test]
    fn a_member_recorded_by_a_known_member_is_trusted_through_it() {
        let mut a = signing(1);
        let founder = signing(2);
        let rec2 = member_record(&founder, 2);
        let rec3 = member_record(&founder, 3);
        // The record of 3 signed by 2 is refused until 2 is known, then taken.
        assert!(matches!(
            a.apply_remote(&rec3[0], T0),
            Err(Refused::UnknownSigner { .. })
        ));
        a.apply_remote(&rec2[0], T0).unwrap();
        a.apply_remote(&rec3[0], T0).unwrap();
        let three = signing(3).prepare(&oid("fan"), vec![(STATE.into(), "ON".into())], T0);
        assert!(a.apply_remote(&three[0], T0).unwrap().changed);
    }

    #[test]
    fn adopted_legacy_registers_keep_their_values_and_lose_to_later_writes() {
        // Two instances from before signatures, converged.
        let mut old_a = Replica::new(node(1));
        let mut old_b = Replica::new(node(2));
        let legacy = old_b.prepare(
            &oid("lamp"),
            vec![(STATE.into(), "ON".into()), ("room".into(), "hall".into())],
            T0,
        );
        local(&mut old_b, &legacy);
        local(&mut old_a, &legacy);
        let b_claim = old_b.prepare(
            &oid("lamp"),
            vec![(format!("{CLAIM_PREFIX}{}", node(2)), true.into())],
            T0,
        );
        local(&mut old_b, &b_claim);
        local(&mut old_a, &b_claim);

        // a upgrades first and adopts; b's claim is left to b.
        old_a.set_signer(key(1));
        let adopted = old_a.adopt_unsigned();
        assert_eq!(adopted.len(), 2, "{adopted:?}");
        assert!(adopted.iter().all(|u| u.stamp.origin == node(1)
            && u.stamp.wall_ms <= T0
            && verify(&key(1).verifying_key(), u)));
        local(&mut old_a, &adopted);
        assert!(old_a.adopt_unsigned().is_empty(), "adoption happens once");
        let lamp = old_a.get(&oid("lamp")).unwrap();
        assert_eq!(lamp.text(STATE), Some("ON"));
        assert!(lamp.props[STATE].sig.is_some());

        // A write after the upgrade beats the adopted copy, wherever it lands.
        let mut fresh = signing(3);
        for rec in [member_record(&old_a, 1), member_record(&fresh, 3)] {
            local(&mut fresh, &rec);
        }
        local(&mut fresh, &adopted);
        let off = fresh.prepare(&oid("lamp"), vec![(STATE.into(), "OFF".into())], T0 + 10);
        local(&mut fresh, &off);
        local(&mut old_a, &off);
        // b upgrades later and adopts its own legacy copy: still loses to the later write.
        old_b.set_signer(key(2));
        let b_adopted = old_b.adopt_unsigned();
        assert_eq!(b_adopted.len(), 3, "b adopts its state, room and claim");
        local(&mut old_a, &b_adopted);
        assert_eq!(old_a.get(&oid("lamp")).unwrap().text(STATE), Some("OFF"));
        let claim = &old_a.get(&oid("lamp")).unwrap().props[&format!("{CLAIM_PREFIX}{}", node(2))];
        assert!(claim.sig.is_some(), "b's claim is now signed by b");
        // Nothing unsigned is left to serve.
        assert!(old_a
            .delta_since(&Default::default())
            .iter()
            .all(|u| u.sig.is_some()));
    }

    #[test]
    fn a_retired_members_history_stays_and_its_later_updates_are_refused() {
        let mut a = signing(1);
        let mut b = signing(2);
        let rec = member_record(&b, 2);
        local(&mut b, &rec);
        a.apply_remote(&rec[0], T0).unwrap();
        let before = b.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0 + 1);
        local(&mut b, &before);
        let after = b.prepare(&oid("lamp"), vec![(STATE.into(), "OFF".into())], T0 + 100);
        // a forgets b at T0 + 50; b's update from before arrives late, the one after too.
        let forget = a.prepare(
            &ObjectId::member(node(2)),
            vec![(crate::model::DELETED.into(), true.into())],
            T0 + 50,
        );
        local(&mut a, &forget);
        assert!(a.is_retired(node(2)));
        a.apply_remote(&before[0], T0 + 1).unwrap();
        assert!(matches!(
            a.apply_remote(&after[0], T0 + 100),
            Err(Refused::Retired { .. })
        ));
        assert_eq!(a.get(&oid("lamp")).unwrap().text(STATE), Some("ON"));
    }

    #[test]
    fn signed_bytes_differ_in_every_field() {
        let base = Update {
            object: oid("a"),
            prop: "p".into(),
            value: Value::Number(1.0),
            stamp: Stamp {
                wall_ms: 1,
                counter: 2,
                origin: node(1),
            },
            seq: 3,
            sig: None,
        };
        let mut variants = vec![base.clone()];
        let mut v = base.clone();
        v.object = oid("b");
        variants.push(v);
        let mut v = base.clone();
        v.prop = "q".into();
        variants.push(v);
        let mut v = base.clone();
        v.value = Value::Text("1".into());
        variants.push(v);
        let mut v = base.clone();
        v.value = Value::Bool(true);
        variants.push(v);
        let mut v = base.clone();
        v.stamp.counter = 3;
        variants.push(v);
        let mut v = base.clone();
        v.seq = 4;
        variants.push(v);
        let bytes: std::collections::BTreeSet<Vec<u8>> =
            variants.iter().map(signed_bytes).collect();
        assert_eq!(bytes.len(), variants.len());
    }
}
