//! What a replica accepts from other instances: every remote update, stamp and version
//! vector passes here before it can change anything, so no input can grow the store without
//! bound or push a clock or a sequence number to the end of its range.
//!
//! Updates made here (`prepare`) and read back from our own disk are not checked: a Pi that
//! boots with its clock in the past must still load its own store.

use super::{Replica, Update, VersionVector};
use crate::clock::{check_ahead, Stamp, TooFarAhead};
use crate::model::Value;
use uuid::Uuid;

/// The most objects (tombstoned ones included) a replica holds: a house has hundreds; the
/// tests and benchmarks run with 10,000.
pub const MAX_OBJECTS: usize = 20_000;
/// The most properties one object has: a handful of its own plus one claim per instance.
pub const MAX_PROPS: usize = 256;
/// The longest property name, in bytes (`claim.<uuid>` is 42).
pub const MAX_PROP_LEN: usize = 64;
/// The longest text value, in bytes (names and rooms are far shorter).
pub const MAX_TEXT_LEN: usize = 1024;
/// The most origins a version vector tracks: far more instances than a house runs.
pub const MAX_ORIGINS: usize = 1024;
/// The highest sequence number accepted, 2^53: an origin writing a million updates a second
/// needs 285 years to get there, and values above it are forged. Far enough below `u64::MAX`
/// that an origin whose vector entry reached it still has room for its next seqs.
pub const MAX_SEQ: u64 = 1 << 53;

/// Why a remote input was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refused {
    /// The stamp is from too far in the future (a forged or broken clock).
    #[error(transparent)]
    Ahead(#[from] TooFarAhead),
    /// A sequence number no origin can have reached.
    #[error("sequence number {seq} of {origin} is beyond {MAX_SEQ}")]
    AbsurdSeq { origin: Uuid, seq: u64 },
    /// Creating the object would pass [`MAX_OBJECTS`].
    #[error("the store holds {MAX_OBJECTS} objects, the most allowed; {object} is not created")]
    TooManyObjects { object: String },
    /// A new property would pass [`MAX_PROPS`] on its object.
    #[error("{object} has {MAX_PROPS} properties, the most allowed; {prop:?} is not added")]
    TooManyProps { object: String, prop: String },
    /// A property name or text value longer than allowed.
    #[error("{what} of {object} is {len} bytes; at most {max} are allowed")]
    TooLong {
        object: String,
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A new origin would pass [`MAX_ORIGINS`].
    #[error("{MAX_ORIGINS} origins are known, the most allowed; updates of {origin} are refused")]
    TooManyOrigins { origin: Uuid },
    /// No signature, where every update must carry its origin's.
    #[error("update {seq} of {origin} carries no signature")]
    Unsigned { origin: Uuid, seq: u64 },
    /// The signature is not its origin's over this update.
    #[error("update {seq} of {origin} has a signature that is not {origin}'s")]
    BadSignature { origin: Uuid, seq: u64 },
    /// No member record names the origin's key (yet).
    #[error("update {seq} of {origin} is signed by no known member")]
    UnknownSigner { origin: Uuid, seq: u64 },
    /// A member record naming another key for a member whose key is known.
    #[error("{origin} tried to replace the key of member {member}")]
    KeyChange { member: Uuid, origin: Uuid },
    /// A member record whose key is not an ed25519 public key.
    #[error("update {seq} of {origin} records a malformed key for member {member}")]
    BadKey {
        member: Uuid,
        origin: Uuid,
        seq: u64,
    },
    /// An update of a retired member (`pimesh forget`), stamped after its retirement.
    #[error("update {seq} of {origin} comes after that instance was forgotten")]
    Retired { origin: Uuid, seq: u64 },
    /// A claim written for another instance.
    #[error("{origin} wrote a claim on {object} for another instance")]
    ForeignClaim { origin: Uuid, object: String },
}

impl Refused {
    /// The update may be good but its signer's record has not arrived yet: worth keeping for
    /// a retry once more member records are known.
    pub fn awaits_signer(&self) -> bool {
        matches!(self, Refused::UnknownSigner { .. })
    }
}

impl Replica {
    /// Sets how far ahead of our wall clock a remote stamp may be
    /// ([`crate::clock::DEFAULT_MAX_AHEAD_MS`] unless told).
    pub fn set_max_clock_ahead(&mut self, ms: u64) {
        self.max_ahead_ms = ms;
    }

    /// Whether the remote update `u` may be applied at `wall_ms`.
    pub fn admit(&self, u: &Update, wall_ms: u64) -> Result<(), Refused> {
        check_ahead(&u.stamp, wall_ms, self.max_ahead_ms)?;
        let origin = u.stamp.origin;
        if u.seq > MAX_SEQ {
            return Err(Refused::AbsurdSeq { origin, seq: u.seq });
        }
        let object = || u.object.as_str().to_string();
        let too_long = |what, len, max| Refused::TooLong {
            object: object(),
            what,
            len,
            max,
        };
        if u.prop.len() > MAX_PROP_LEN {
            return Err(too_long("a property name", u.prop.len(), MAX_PROP_LEN));
        }
        if let Value::Text(t) = &u.value {
            if t.len() > MAX_TEXT_LEN {
                return Err(too_long("a text value", t.len(), MAX_TEXT_LEN));
            }
        }
        match self.objects.get(&u.object) {
            None if self.objects.len() >= MAX_OBJECTS => {
                return Err(Refused::TooManyObjects { object: object() })
            }
            Some(o) if !o.props.contains_key(&u.prop) && o.props.len() >= MAX_PROPS => {
                return Err(Refused::TooManyProps {
                    object: object(),
                    prop: u.prop.clone(),
                })
            }
            _ => {}
        }
        if !self.seqs.version_vector.contains_key(&origin)
            && !self.seqs.ahead.contains_key(&origin)
            && self.seqs.origins() >= MAX_ORIGINS
        {
            return Err(Refused::TooManyOrigins { origin });
        }
        Ok(())
    }

    /// Applies a remote update if [`admit`](Self::admit) lets it in and, while signatures are
    /// enforced, it is signed by its origin ([`check_signature`](Self::check_signature)); a
    /// refused one changes nothing, not even the clock.
    pub fn apply_remote(&mut self, u: &Update, wall_ms: u64) -> Result<super::Applied, Refused> {
        self.admit(u, wall_ms)?;
        if self.enforces_signatures() {
            self.check_signature(u)?;
        }
        Ok(self.apply(u, wall_ms))
    }

    /// Moves the clock past a stamp received with a message (a forwarded command), unless it
    /// is too far ahead of `wall_ms`.
    pub fn observe(&mut self, stamp: &Stamp, wall_ms: u64) -> Result<(), TooFarAhead> {
        self.clock.observe_remote(stamp, wall_ms, self.max_ahead_ms)
    }

    /// After a sync whose pages were applied: raises our version vector towards the
    /// responder's `peer` vector, as far as we can justify, and returns the claims we did not
    /// take (origin → the peer's value).
    ///
    /// Raising to the responder's vector is right when its pages and vector were taken at one
    /// moment (see the module doc), but nothing proves that of a page: a forged one with
    /// `u64::MAX` everywhere would make us claim to hold everything, never ask for anything
    /// again, and take our own next seqs from the end of the range. So for each origin the
    /// raise stops at the highest seq of it we hold (the pages' updates included) or at what
    /// the origin itself last announced as its own count in its heartbeat (`announced`,
    /// the one instance that knows how many it issued); more is refused. Our own entry may be
    /// raised further (a peer may remember more of our updates than a replaced disk), but no
    /// entry past [`MAX_SEQ`]. What is refused costs at most a sync that brings nothing; a
    /// forger who can also forge the origin's own heartbeat needs the signatures of the
    /// design's trust section to be stopped.
    pub fn merge_page_version_vector(
        &mut self,
        peer: &VersionVector,
        announced: &VersionVector,
    ) -> VersionVector {
        let mut take = VersionVector::new();
        let mut refused = VersionVector::new();
        for (&origin, &seq) in peer {
            let held = self.seqs.highest(&origin);
            if seq <= self.seqs.contiguous(&origin) {
                continue;
            }
            let bound = if origin == self.origin {
                MAX_SEQ
            } else {
                held.max(announced.get(&origin).copied().unwrap_or(0))
                    .min(MAX_SEQ)
            };
            if seq <= bound {
                take.insert(origin, seq);
                continue;
            }
            // An absurd claim justifies nothing; a merely unproven one, what we hold.
            if seq <= MAX_SEQ && bound > self.seqs.contiguous(&origin) {
                take.insert(origin, bound);
            }
            refused.insert(origin, seq);
        }
        self.seqs.raise(&take);
        refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::DEFAULT_MAX_AHEAD_MS;
    use crate::model::{ObjectId, STATE};
    use crate::replica::tests::{node, oid, write};

    const T0: u64 = 1_700_000_000_000;

    fn forged(origin: Uuid, object: &str, value: &str, wall_ms: u64, seq: u64) -> Update {
        Update {
            object: ObjectId::new(object).unwrap(),
            prop: STATE.into(),
            value: value.into(),
            stamp: Stamp {
                wall_ms,
                counter: u32::MAX,
                origin,
            },
            seq,
            sig: None,
        }
    }

    #[test]
    fn a_stamp_at_the_end_of_time_is_refused_and_later_writes_still_win() {
        let mut holder = Replica::new(node(1));
        let mut other = Replica::new(node(3));
        let on = write(&mut holder, "relay", &[(STATE, "ON".into())], T0);
        other.apply_remote(&on[0], T0).unwrap();

        let attack = forged(node(2), "relay", "OFF", u64::MAX, 1);
        for r in [&mut holder, &mut other] {
            let err = r.apply_remote(&attack, T0).unwrap_err();
            assert!(
                matches!(err, Refused::Ahead(a) if a.origin == node(2)),
                "{err}"
            );
            assert_eq!(r.get(&oid("relay")).unwrap().text(STATE), Some("ON"));
            assert!(
                r.clock().wall_ms < T0 + 1_000,
                "never folded into the clock"
            );
            assert!(!r.version_vector().contains_key(&node(2)));
        }
        let off = write(&mut holder, "relay", &[(STATE, "OFF".into())], T0 + 10);
        other.apply_remote(&off[0], T0 + 10).unwrap();
        assert_eq!(other.get(&oid("relay")).unwrap().text(STATE), Some("OFF"));
    }

    #[test]
    fn a_stamp_within_the_bound_is_applied() {
        let mut r = Replica::new(node(1));
        let skewed = forged(node(2), "relay", "ON", T0 + DEFAULT_MAX_AHEAD_MS, 1);
        assert!(r.apply_remote(&skewed, T0).unwrap().changed);
        r.set_max_clock_ahead(1_000);
        let far = forged(node(2), "relay", "OFF", T0 + 1_001, 2);
        assert!(r.apply_remote(&far, T0).is_err());
    }

    #[test]
    fn a_forwarded_clock_from_the_future_is_refused() {
        let mut r = Replica::new(node(1));
        let before = r.clock();
        let stamp = Stamp {
            wall_ms: u64::MAX,
            counter: u32::MAX,
            origin: node(2),
        };
        assert!(r.observe(&stamp, T0).is_err());
        assert_eq!(r.clock(), before);
    }

    #[test]
    fn objects_properties_origins_and_sizes_are_bounded() {
        let mut r = Replica::new(node(1));
        for i in 0..MAX_OBJECTS {
            let u = forged(node(2), &format!("o{i}"), "ON", T0, i as u64 + 1);
            r.apply_remote(&u, T0).unwrap();
        }
        let one_more = forged(node(2), "straw", "ON", T0, MAX_OBJECTS as u64 + 1);
        let err = r.apply_remote(&one_more, T0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the store holds 20000 objects, the most allowed; straw is not created"
        );
        assert_eq!(r.len(), MAX_OBJECTS);

        let mut r = Replica::new(node(1));
        for i in 0..MAX_PROPS {
            let mut u = forged(node(2), "o", "x", T0, i as u64 + 1);
            u.prop = format!("p{i}");
            r.apply_remote(&u, T0).unwrap();
        }
        let mut u = forged(node(2), "o", "x", T0, 9_999);
        u.prop = "one-more".into();
        assert!(matches!(
            r.apply_remote(&u, T0),
            Err(Refused::TooManyProps { .. })
        ));

        let mut u = forged(node(2), "o", "x", T0, 1);
        u.value = "x".repeat(MAX_TEXT_LEN + 1).into();
        assert!(matches!(
            r.admit(&u, T0),
            Err(Refused::TooLong { len: 1025, .. })
        ));
        let u = forged(node(2), "o", "x", T0, MAX_SEQ + 1);
        assert!(matches!(r.admit(&u, T0), Err(Refused::AbsurdSeq { .. })));

        let mut r = Replica::new(node(1));
        for i in 0..MAX_ORIGINS {
            let origin = Uuid::from_u128(i as u128 + 10);
            r.apply_remote(&forged(origin, "o", "x", T0, 1), T0)
                .unwrap();
        }
        let stranger = forged(Uuid::from_u128(7), "o", "x", T0, 1);
        assert!(matches!(
            r.apply_remote(&stranger, T0),
            Err(Refused::TooManyOrigins { .. })
        ));
    }

    #[test]
    fn a_forged_page_vector_cannot_raise_what_nothing_justifies() {
        let mut r = Replica::new(node(1));
        write(&mut r, "lamp", &[(STATE, "ON".into())], T0);
        for seq in 1..=3 {
            r.apply_remote(&forged(node(2), "fan", "ON", T0, seq), T0)
                .unwrap();
        }
        let forged_vv = VersionVector::from([
            (node(1), u64::MAX),
            (node(2), u64::MAX),
            (node(9), u64::MAX),
        ]);
        let refused = r.merge_page_version_vector(&forged_vv, &VersionVector::new());
        assert_eq!(refused, forged_vv, "every absurd claim is refused");
        assert_eq!(r.version_vector().get(&node(1)), Some(&1));
        assert_eq!(r.version_vector().get(&node(2)), Some(&3));
        assert_eq!(r.version_vector().get(&node(9)), None);
        let next = r.prepare(&oid("lamp"), vec![(STATE.into(), "OFF".into())], T0);
        assert_eq!(next[0].seq, 2, "our own seqs go on from where they were");
    }

    #[test]
    fn a_page_vector_is_taken_as_far_as_held_or_announced_seqs_reach() {
        let mut r = Replica::new(node(1));
        // Seq 5 of node 2 arrived; 1..=4 were overwritten before we joined.
        r.apply_remote(&forged(node(2), "fan", "ON", T0, 5), T0)
            .unwrap();
        let page = VersionVector::from([(node(2), 5), (node(3), 8), (node(1), 4)]);
        let announced = VersionVector::from([(node(3), 8)]);
        let refused = r.merge_page_version_vector(&page, &announced);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(r.version_vector().get(&node(2)), Some(&5));
        assert_eq!(r.version_vector().get(&node(3)), Some(&8));
        // A peer remembers more of our own updates than we do: never reuse them.
        assert_eq!(r.version_vector().get(&node(1)), Some(&4));

        let more = VersionVector::from([(node(2), 9), (node(3), 20)]);
        let refused = r.merge_page_version_vector(&more, &announced);
        assert_eq!(refused, more);
        assert_eq!(r.version_vector().get(&node(2)), Some(&5));
    }
}
