//! Syncs: asking one peer for what our version vector lacks, page by page, and answering
//! such requests from a snapshot taken once per round. This is the start-up transfer, and
//! the repair for lost stream messages, time spent off, and partitions.

use super::node::{Msg, Node, Now, Send};
use super::proto::{self, SyncPage, SyncReq};
use crate::ratelimit::warn_limited;
use crate::replica::{Update, VersionVector};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A sync abandoned after this long without its next page is started again by the next
/// heartbeat that shows the peer holding more.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// A request without its page for this long is sent again (the request or the page was
/// lost), at most [`SYNC_RETRIES`] times in a row: a sync over a lossy link goes on from
/// the page it reached instead of starting over.
pub const SYNC_RETRY: Duration = Duration::from_secs(1);
/// Requests sent again in a row for one page, at most.
pub const SYNC_RETRIES: u32 = 8;

/// A sync in progress with one peer.
#[derive(Debug)]
pub(super) struct SyncState {
    /// The round number pages must carry.
    round: u64,
    /// Our version vector when the sync began: every page asks relative to it.
    vv: VersionVector,
    /// The responder's version vector read with the first page: what we hold once the last
    /// page is applied.
    first_vv: Option<VersionVector>,
    /// The (origin, seq) of the last update received.
    after: Option<(Uuid, u64)>,
    /// When the last request went out.
    sent: Instant,
    /// Times the last request was sent again without its page.
    retries: u32,
    /// While fenced: how many of our own updates the peer's last heartbeat before this
    /// sync said it holds ([`Node::claimed_by`]).
    claimed: u64,
    /// Updates received so far, for the log.
    received: usize,
    /// Per origin, the lowest seq of this sync's updates that were refused or are held: our
    /// version vector must stay below it.
    refused: VersionVector,
}

/// A sync round we are answering: the delta and version vector taken when it began.
#[derive(Debug)]
pub(super) struct Serving {
    /// The requester's round.
    round: u64,
    /// Our version vector when the round began.
    vv: VersionVector,
    /// The delta for the requester's version vector, in (origin, seq) order.
    delta: Vec<Update>,
    /// Last page served; a round idle longer than the sync timeout is dropped.
    at: Instant,
}

impl Node {
    /// Asks `peer` for everything we lack, unless a sync with it is already running.
    pub(super) fn start_sync(&mut self, peer: Uuid, now: Now) {
        if self
            .syncs
            .get(&peer)
            .is_some_and(|s| now.at.saturating_duration_since(s.sent) < SYNC_TIMEOUT)
        {
            return;
        }
        if self.rounds == 0 {
            // Rounds of this run start past those of any earlier run of this instance: a page
            // answering a request made before a restart, late on the wire, must not pass for
            // the answer to this run's request with the same number (the simulator found
            // such a page raising our version vector over updates it never carried).
            self.rounds = now.wall_ms.saturating_mul(1 << 20);
        }
        self.rounds += 1;
        let vv = self.replica().version_vector().clone();
        let claimed = self.claimed_by(&peer);
        self.syncs.insert(
            peer,
            SyncState {
                round: self.rounds,
                vv,
                first_vv: None,
                after: None,
                sent: now.at,
                retries: 0,
                claimed,
                received: 0,
                refused: VersionVector::new(),
            },
        );
        self.send_sync_req(peer, now);
    }

    /// Sends the next request of the sync with `peer`.
    fn send_sync_req(&mut self, peer: Uuid, now: Now) {
        let Some(st) = self.syncs.get_mut(&peer) else {
            return;
        };
        st.sent = now.at;
        let req = SyncReq {
            to: peer,
            round: st.round,
            vv: st.vv.clone(),
            after: st.after,
        };
        self.push_send(Send::To(peer, Msg::SyncReq(req)));
    }

    /// Answers one page of a sync request from `requester`. The delta and our version vector
    /// are taken once per round and served page by page, so every page of a round comes from
    /// one consistent moment and the delta is computed once. Both say only what is durable
    /// here: while some of our own changes wait for the disk, the delta carries the values
    /// they replaced and the version vector stops below them ([`Node::durable_delta`]).
    pub(super) fn answer_sync(&mut self, requester: Uuid, req: SyncReq, now: Now) {
        let fresh = self
            .serving
            .get(&requester)
            .is_none_or(|s| s.round != req.round);
        if fresh {
            let mut delta = self.durable_delta(&req.vv);
            // The requester's own updates we hold unverified (its member record has not
            // reached us) go back to it: it can check its own signature, and after a lost
            // store they may be all that is left of them.
            let has = req.vv.get(&requester).copied().unwrap_or(0);
            let own = |u: &&Update| u.stamp.origin == requester && u.seq > has;
            delta.extend(self.held.iter().filter(own).cloned());
            delta.sort_by_key(|u| (u.stamp.origin, u.seq));
            let serving = Serving {
                round: req.round,
                vv: self.shareable_version_vector(),
                delta,
                at: now.at,
            };
            self.serving.insert(requester, serving);
        }
        let Some(serving) = self.serving.get_mut(&requester) else {
            return;
        };
        serving.at = now.at;
        let (updates, more) = proto::page(&serving.delta, req.after);
        let page = SyncPage {
            round: req.round,
            updates,
            more,
            vv: serving.vv.clone(),
        };
        if !more {
            self.serving.remove(&requester);
        }
        self.push_send(Send::To(requester, Msg::SyncPage(page)));
    }

    /// Applies one page of our sync with `peer` and asks for the next, or finishes.
    pub(super) fn on_sync_page(&mut self, peer: Uuid, page: SyncPage, now: Now) {
        let Some(st) = self.syncs.get_mut(&peer) else {
            return;
        };
        if page.round != st.round {
            return;
        }
        // A page we had already (a request sent again, and both answers came) is not
        // applied again, nor followed by a second request for the next one.
        let last = page.updates.last().map(|u| (u.stamp.origin, u.seq));
        if last.is_some() && last <= st.after {
            return;
        }
        st.retries = 0;
        if st.first_vv.is_none() {
            st.first_vv = Some(page.vv.clone());
        }
        st.received += page.updates.len();
        if let Some(last) = page.updates.last() {
            st.after = Some((last.stamp.origin, last.seq));
        }
        let received = self.apply_remote(&page.updates, now);
        if let Some(st) = self.syncs.get_mut(&peer) {
            for (origin, seq) in received.refused {
                let lowest = st.refused.entry(origin).or_insert(seq);
                *lowest = (*lowest).min(seq);
            }
        }
        if page.more {
            self.send_sync_req(peer, now);
            return;
        }
        let Some(st) = self.syncs.remove(&peer) else {
            return;
        };
        let lift = self.fence.is_some();
        if let Some(mut vv) = st.first_vv {
            // What we refused or still hold is not ours: claiming it would stop us from ever
            // fetching the real update (or the held one, once its signer is known).
            for (origin, lowest) in &st.refused {
                if let Some(seq) = vv.get_mut(origin) {
                    *seq = (*seq).min(lowest.saturating_sub(1));
                }
            }
            let announced = self.announced.clone();
            let refused = self
                .replica_mut()
                .merge_page_version_vector(&vv, &announced);
            if refused.is_empty() {
                self.unjustified.remove(&peer);
            } else {
                let first = refused.iter().next().map(|(o, s)| format!("{o}={s}"));
                warn_limited!(self.warns, "unjustified-vv", %peer, origins = refused.len(), first = ?first, "a sync page claims more than it brought or its origins announced; not raising our version vector that far");
                let kept = refused.into_iter().take(crate::replica::MAX_ORIGINS);
                if self.unjustified.len() < crate::replica::MAX_ORIGINS
                    || self.unjustified.contains_key(&peer)
                {
                    self.unjustified.insert(peer, kept.collect());
                }
            }
        }
        if !self.held.is_empty() {
            warn_limited!(self.warns, "unverified", count = self.held.len(), first_origin = %self.held[0].stamp.origin, "dropping updates signed by no known member");
            self.held.clear();
        }
        if st.received > 0 {
            tracing::info!(%peer, updates = st.received, objects = self.replica().len(), "synced from peer");
        }
        if lift {
            self.synced_while_fenced(peer, st.claimed, now);
        }
    }

    /// Drops syncs and answered rounds idle for longer than the sync timeout.
    pub(super) fn expire_syncs(&mut self, now: Now) {
        let live = |t: Instant| now.at.saturating_duration_since(t) < SYNC_TIMEOUT;
        let mut stalled: Vec<Uuid> = self
            .syncs
            .iter_mut()
            .filter(|(_, s)| {
                now.at.saturating_duration_since(s.sent) >= SYNC_RETRY && s.retries < SYNC_RETRIES
            })
            .map(|(peer, s)| {
                s.retries += 1;
                *peer
            })
            .collect();
        // In a fixed order: the simulator replays a seed exactly.
        stalled.sort_unstable();
        for peer in stalled {
            self.send_sync_req(peer, now);
        }
        self.syncs.retain(|_, s| live(s.sent));
        self.serving.retain(|_, s| live(s.at));
    }
}
