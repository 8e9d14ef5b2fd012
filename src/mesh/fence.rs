//! The fence an instance puts up when its store lost our own updates (the log was emptied,
//! deleted or replaced from outside; see `Store::lost`).
//!
//! Peers may hold our own updates the disk no longer has. Our next change would then take a
//! sequence number a peer already holds for another update: the peer drops it as known, and
//! the replicas differ for good. So while fenced, the node makes no change of its own: each
//! one is kept (in order, at most [`MAX_DEFERRED`]) and the agent answers commands
//! `unavailable`. A finished sync with a peer brings our updates back (a peer sends every
//! origin's updates above our version vector, ours included). One sync is not enough: another
//! peer may hold updates of ours the one that answered lacks, and a member cut off from us
//! may hold some no one else has. So every peer whose heartbeat arrives while fenced is
//! synced from, and the fence lifts once every peer alive has had time to beat
//! ([`OFFLINE_AFTER`]), and a sync has finished with each member we know (not retired) and
//! each peer heard recently, and each peer the instance knew before (`known-peers.json`
//! outlives a store lost from outside, and may name a peer no member record left names),
//! that began after its last heartbeat said how many of our own
//! updates it holds (its version vector, or `above` for those past a gap). Our own updates
//! none of them sent back are then gone or written over everywhere, and our version vector
//! steps over them, up to the most any peer said it holds
//! ([`crate::replica::Replica::close_own_gaps`]); the kept changes are made after them.
//! With a member that never answers, the fence lifts after [`FENCE_LIMIT`]: a house should
//! not stay frozen because one Pi is unplugged, and the warning says what may follow.

use super::node::{Node, Now};
use super::peers::OFFLINE_AFTER;
use crate::model::{ObjectId, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a fence waits for a peer's sync before the instance goes on without it.
pub const FENCE_LIMIT: Duration = Duration::from_secs(120);
/// Changes kept while fenced, at most; older ones are dropped first.
pub const MAX_DEFERRED: usize = 4096;

/// A change made while fenced, kept to be made once the fence is lifted.
#[derive(Debug)]
pub(super) enum Deferred {
    /// [`Node::record`].
    Record {
        id: ObjectId,
        props: Vec<(String, Value)>,
        touch: bool,
    },
    /// [`Node::record_initial`].
    Initial {
        id: ObjectId,
        props: Vec<(String, Value)>,
    },
    /// [`Node::adopt_unsigned`].
    Adopt,
    /// [`Node::reconcile`]: which objects left the config is decided once our lost claims
    /// are back.
    Reconcile(Vec<super::reconcile::Declared>),
}

/// Why and until when an instance makes no change of its own.
#[derive(Debug)]
pub(super) struct Fence {
    /// What the store said was lost.
    why: String,
    /// When the instance goes on without a peer's sync.
    until: Instant,
    /// When every peer alive has had time to beat since the fence went up.
    heard_all: Instant,
    /// The peers whose heartbeat arrived since the fence went up: when the last did, and how
    /// many of our own updates it said its sender holds.
    heard: HashMap<uuid::Uuid, (Instant, u64)>,
    /// The peers a sync finished with since the fence went up, each with what its last
    /// heartbeat before that sync began said it holds of ours: a later heartbeat that says
    /// more (updates it held back, unverified, then took) asks for another sync.
    synced: HashMap<uuid::Uuid, u64>,
    /// The most of our own updates any peer's heartbeat said it holds since the fence.
    heard_of_ours: u64,
    /// Peers known from before the fence (the agent's `known-peers.json`): waited for like
    /// members, since they may hold our updates while no one we reach knows them.
    expected: Vec<uuid::Uuid>,
    /// The changes to make once lifted, in order.
    deferred: VecDeque<Deferred>,
    /// Changes dropped because more than [`MAX_DEFERRED`] waited.
    dropped: usize,
}

impl Node {
    /// Makes no change of our own until a peer's sync has sent our lost updates back, or
    /// [`FENCE_LIMIT`] passed; `why` is what the store said was lost.
    pub fn fence(&mut self, why: &str, now: Now) {
        self.fence = Some(Fence {
            why: why.to_string(),
            until: now.at + FENCE_LIMIT,
            heard_all: now.at + OFFLINE_AFTER,
            heard: HashMap::new(),
            synced: HashMap::new(),
            heard_of_ours: 0,
            expected: Vec::new(),
            deferred: VecDeque::new(),
            dropped: 0,
        });
    }

    /// While fenced, waits also for a sync with each of `peers`, instances known from before
    /// (see [`Fence::expected`]).
    pub fn fence_expects(&mut self, peers: impl IntoIterator<Item = uuid::Uuid>) {
        if let Some(fence) = self.fence.as_mut() {
            fence.expected.extend(peers);
            fence.expected.sort_unstable();
            fence.expected.dedup();
        }
    }

    /// The peers known from before that the fence waits for: not us, not retired.
    fn expected_peers<'a>(&'a self, fence: &'a Fence) -> impl Iterator<Item = uuid::Uuid> + 'a {
        fence
            .expected
            .iter()
            .copied()
            .filter(|p| *p != self.uuid && !self.replica.is_retired(*p))
    }

    /// Why this instance makes no change of its own now, if it is fenced.
    pub fn fenced(&self) -> Option<&str> {
        self.fence.as_ref().map(|f| f.why.as_str())
    }

    /// What the fence waits for, in words (empty when not fenced).
    pub fn fence_state(&self) -> String {
        let own = self.replica.own_highest();
        self.fence.as_ref().map_or_else(String::new, |f| {
            format!(
                "heard: {}, synced: {}, own updates held up to: {own}, most a peer said it holds: {}, known from before and not synced: {:?}",
                f.heard.len(),
                f.synced.len(),
                f.heard_of_ours,
                self.expected_peers(f)
                    .filter(|p| !f.synced.contains_key(p))
                    .collect::<Vec<_>>()
            )
        })
    }

    /// Changes waiting for the fence to lift.
    pub fn deferred(&self) -> usize {
        self.fence.as_ref().map_or(0, |f| f.deferred.len())
    }

    /// Keeps `change` for later if fenced; false when it is to be made now.
    pub(super) fn defer(&mut self, change: Deferred) -> bool {
        let Some(fence) = self.fence.as_mut() else {
            return false;
        };
        if fence.deferred.len() >= MAX_DEFERRED {
            fence.deferred.pop_front();
            fence.dropped += 1;
        }
        fence.deferred.push_back(change);
        true
    }

    /// How many of our own updates `peer`'s last heartbeat said it holds (0 if not fenced
    /// or not heard): kept with a sync as it begins.
    pub(super) fn claimed_by(&self, peer: &uuid::Uuid) -> u64 {
        let fence = self.fence.as_ref();
        fence.and_then(|f| f.heard.get(peer)).map_or(0, |(_, c)| *c)
    }

    /// A sync with a peer finished: our own updates it held when its heartbeat said
    /// `claimed` are back.
    pub(super) fn synced_while_fenced(&mut self, peer: uuid::Uuid, claimed: u64, now: Now) {
        if let Some(fence) = self.fence.as_mut() {
            tracing::info!(%peer, "a peer sent back what it held of our own updates");
            if fence.synced.len() < crate::replica::MAX_ORIGINS || fence.synced.contains_key(&peer)
            {
                let was = fence.synced.entry(peer).or_default();
                *was = (*was).max(claimed);
            }
            self.lift_if_caught_up(now);
        }
    }

    /// A heartbeat of `peer` arrived; it holds our own updates up to `ours` (past gaps
    /// included). Returns whether the fence waits for a sync with that peer.
    pub(super) fn heard_while_fenced(&mut self, peer: uuid::Uuid, ours: u64, now: Now) -> bool {
        let Some(fence) = self.fence.as_mut() else {
            return false;
        };
        fence.heard_of_ours = fence.heard_of_ours.max(ours);
        if fence.heard.len() < crate::replica::MAX_ORIGINS || fence.heard.contains_key(&peer) {
            fence.heard.insert(peer, (now.at, ours));
        }
        fence.synced.get(&peer).is_none_or(|was| ours > *was)
    }

    /// Lifts the fence once every live peer had time to beat, and a sync finished with each
    /// member we know and each peer heard recently, after its last heartbeat said how many
    /// of our own updates it holds.
    pub(super) fn lift_if_caught_up(&mut self, now: Now) {
        let Some(fence) = self.fence.as_ref() else {
            return;
        };
        let own = self.replica.own_highest();
        let live = |at: &Instant| now.at.saturating_duration_since(*at) < OFFLINE_AFTER;
        // A peer that said it holds our updates is waited for even once it went quiet (it
        // may be restarting), unless it was retired: it will never answer again.
        let heard = fence
            .heard
            .iter()
            .filter(|(p, (at, claimed))| {
                (live(at) || *claimed > 0) && !self.replica.is_retired(**p)
            })
            .map(|(p, _)| *p);
        let members = self.replica.members().filter(|m| *m != self.uuid);
        let expected = self.expected_peers(fence);
        let all_synced = members.chain(heard).chain(expected).all(|peer| {
            let claimed = fence.heard.get(&peer).map_or(0, |(_, c)| *c);
            fence.synced.get(&peer).is_some_and(|was| *was >= claimed)
        });
        if !fence.synced.is_empty() && all_synced && now.at >= fence.heard_all {
            tracing::info!(
                own,
                "the peers hold no more of our own updates than we do; making changes again"
            );
            self.lift_fence(now);
        }
    }

    /// Lifts the fence once [`FENCE_LIMIT`] passed without any peer's sync.
    pub(super) fn expire_fence(&mut self, now: Now) {
        if self.fence.as_ref().is_some_and(|f| now.at >= f.until) {
            tracing::warn!(
                limit_s = FENCE_LIMIT.as_secs(),
                "no peer sent our own updates back in time; making changes again. If a peer that was away holds updates of ours this instance lost, the two disagree on them until they are written again"
            );
            self.lift_fence(now);
        }
    }

    /// Makes the kept changes, in order, now that our sequence numbers follow what peers hold.
    fn lift_fence(&mut self, now: Now) {
        let Some(fence) = self.fence.take() else {
            return;
        };
        // Our own updates no peer sent back are gone or written over everywhere; numbering
        // goes on after the most any peer said it holds.
        self.replica.close_own_gaps(fence.heard_of_ours);
        if fence.dropped > 0 {
            tracing::warn!(
                dropped = fence.dropped,
                "changes made while fenced were more than could be kept; the oldest are lost"
            );
        }
        for change in fence.deferred {
            match change {
                Deferred::Record { id, props, touch } => {
                    self.record(&id, props, touch, now);
                }
                Deferred::Initial { id, props } => self.record_initial(&id, props, now),
                Deferred::Adopt => {
                    self.adopt_unsigned(now);
                }
                Deferred::Reconcile(declared) => {
                    for r in self.reconcile(&declared, now) {
                        tracing::info!(object = %r.id, deleted = r.deleted, "object no longer in the config: released");
                    }
                }
            }
        }
    }
}
