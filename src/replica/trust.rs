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

    /// The members whose key we know and that are not retired.
    pub fn members(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.keys.keys().copied().filter(|m| !self.is_retired(*m))
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
                out.push(self.own_update(id, prop.to_owned(), r.value.clone(), stamp, seq));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
