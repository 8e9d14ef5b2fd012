//! Syncs: asking one peer for what our version vector lacks, page by page, and answering
//! such requests from a snapshot taken once per round. This is the start-up transfer, and
//! the repair for lost stream messages, time spent off, and partitions.

use super::Agent;
use crate::mesh::proto::{self, SyncPage, SyncReq};
use crate::mqtt::Qos;
use crate::ratelimit::warn_limited;
use crate::replica::VersionVector;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A sync abandoned after this long without its next page is started again by the next
/// heartbeat that shows the peer holding more.
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

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
    delta: Vec<crate::replica::Update>,
    /// Last page served; a round idle longer than the sync timeout is dropped.
    at: Instant,
}

impl Agent {
    /// Asks `peer` for everything we lack, unless a sync with it is already running.
    pub(super) async fn start_sync(&mut self, peer: Uuid) {
        if self
            .syncs
            .get(&peer)
            .is_some_and(|s| s.sent.elapsed() < SYNC_TIMEOUT)
        {
            return;
        }
        self.rounds += 1;
        self.syncs.insert(
            peer,
            SyncState {
                round: self.rounds,
                vv: self.replica.version_vector().clone(),
                first_vv: None,
                after: None,
                sent: Instant::now(),
                received: 0,
                refused: VersionVector::new(),
            },
        );
        self.send_sync_req(peer).await;
    }

    /// Sends the next request of the sync with `peer`.
    async fn send_sync_req(&mut self, peer: Uuid) {
        let Some(st) = self.syncs.get_mut(&peer) else {
            return;
        };
        st.sent = Instant::now();
        let req = SyncReq {
            to: peer,
            round: st.round,
            vv: st.vv.clone(),
            after: st.after,
        };
        let payload = serde_json::to_vec(&req).unwrap_or_default();
        let topic = self.topics.sync_req(self.uuid);
        let Some(link) = self
            .peers
            .addr_of(peer)
            .and_then(|a| self.links.get(a))
            .map(|pl| pl.link.clone())
        else {
            return;
        };
        if let Err(e) = link.publish(&topic, Qos::AtLeastOnce, false, payload).await {
            tracing::warn!(error = %e, "cannot send a sync request");
        }
    }

    /// Answers one page of a sync request from `requester`, on our own broker. The delta and
    /// our version vector are taken once per round and served page by page, so every page of
    /// a round comes from one consistent moment and the delta is computed once.
    ///
    /// While some of our own changes wait for the disk (it refuses writes), no sync is
    /// answered: a delta would carry them, and the value they replaced is no longer there to
    /// send instead. The requester times out and syncs from a peer that has what is durable.
    pub(super) async fn answer_sync(&mut self, requester: Uuid, req: SyncReq) {
        if !self.unsaved.is_empty() {
            tracing::debug!(%requester, "not answering a sync while our own changes wait for the disk");
            return;
        }
        let fresh = self
            .serving
            .get(&requester)
            .is_none_or(|s| s.round != req.round);
        if fresh {
            self.serving.insert(
                requester,
                Serving {
                    round: req.round,
                    vv: self.replica.version_vector().clone(),
                    delta: self.replica.delta_since(&req.vv),
                    at: Instant::now(),
                },
            );
        }
        let Some(serving) = self.serving.get_mut(&requester) else {
            return;
        };
        serving.at = Instant::now();
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
        let payload = serde_json::to_vec(&page).unwrap_or_default();
        let topic = self.topics.sync_page(self.uuid, requester);
        if let Err(e) = self
            .link
            .publish(&topic, Qos::AtLeastOnce, false, payload)
            .await
        {
            tracing::warn!(error = %e, "cannot answer a sync request");
        }
    }

    /// Applies one page of our sync with `peer` and asks for the next, or finishes.
    pub(super) async fn on_sync_page(&mut self, peer: Uuid, page: SyncPage) {
        let Some(st) = self.syncs.get_mut(&peer) else {
            return;
        };
        if page.round != st.round {
            return;
        }
        if st.first_vv.is_none() {
            st.first_vv = Some(page.vv.clone());
        }
        st.received += page.updates.len();
        if let Some(last) = page.updates.last() {
            st.after = Some((last.stamp.origin, last.seq));
        }
        let received = self.apply_remote(&page.updates);
        if let Some(st) = self.syncs.get_mut(&peer) {
            for (origin, seq) in received.refused {
                let lowest = st.refused.entry(origin).or_insert(seq);
                *lowest = (*lowest).min(seq);
            }
        }
        if page.more {
            self.send_sync_req(peer).await;
            return;
        }
        if let Some(st) = self.syncs.remove(&peer) {
            if let Some(mut vv) = st.first_vv {
                // What we refused or still hold is not ours: claiming it would stop us from
                // ever fetching the real update (or the held one, once its signer is known).
                for (origin, lowest) in &st.refused {
                    if let Some(seq) = vv.get_mut(origin) {
                        *seq = (*seq).min(lowest.saturating_sub(1));
                    }
                }
                let refused = self.replica.merge_page_version_vector(&vv, &self.announced);
                if refused.is_empty() {
                    self.unjustified.remove(&peer);
                } else {
                    let name = self.peers.name_of(peer).unwrap_or("?").to_string();
                    let first = refused.iter().next().map(|(o, s)| format!("{o}={s}"));
                    warn_limited!(self.warns, "unjustified-vv", peer = %name, origins = refused.len(), first = ?first, "a sync page claims more than it brought or its origins announced; not raising our version vector that far");
                    let kept = refused.into_iter().take(crate::replica::MAX_ORIGINS);
                    self.unjustified.insert(peer, kept.collect());
                }
            }
            if !self.held.is_empty() {
                warn_limited!(self.warns, "unverified", count = self.held.len(), first_origin = %self.held[0].stamp.origin, "dropping updates signed by no known member");
                self.held.clear();
            }
            if st.received > 0 {
                let name = self.peers.name_of(peer).unwrap_or("?").to_string();
                tracing::info!(peer = %name, updates = st.received, objects = self.replica.len(), "synced from peer");
            }
        }
    }

    /// Drops syncs and answered rounds idle for longer than the sync timeout.
    pub(super) fn expire_syncs(&mut self) {
        self.syncs.retain(|_, s| s.sent.elapsed() < SYNC_TIMEOUT);
        self.serving.retain(|_, s| s.at.elapsed() < SYNC_TIMEOUT);
    }
}
