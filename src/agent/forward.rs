//! The agent's side of command routing: it feeds the dispatcher (`mesh::dispatch`, which
//! decides where each command runs and who hears its answer) and carries out what it asks.
//!
//! A command for another instance is left on that instance's broker
//! (`$pimesh/<base>/mesh/<me>/cmd`); the executor answers on its own broker
//! (`$pimesh/<base>/mesh/<executor>/answer/<me>`). The dispatcher keeps it pending until then,
//! and decides what happens when the executor goes offline or stays silent.

use super::Agent;
use crate::api::{Outcome, PayloadError, Reply, SetRequest, MAX_ID_BYTES};
use crate::broker::local::ResponseTo;
use crate::mesh::dispatch::{Action, Recipient, Seen, View};
use crate::mesh::node::Node;
use crate::mesh::peers::Peers;
use crate::mesh::proto::{Forward, ForwardReply};
use crate::model::{self, ObjectId};
use crate::mqtt::Qos;
use crate::ratelimit::warn_limited;
use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;

/// What the dispatcher sees of the agent: borrowed field by field, so the dispatcher itself
/// can be borrowed mutably beside it.
pub(super) struct AgentView<'a> {
    pub uuid: Uuid,
    pub name: &'a str,
    pub node: &'a Node,
    pub peers: &'a Peers,
    pub links: &'a HashMap<String, super::PeerLink>,
    pub refusing: bool,
}

/// The agent's [`AgentView`], built from disjoint fields of `$agent`.
macro_rules! view {
    ($agent:expr) => {
        $crate::agent::forward::AgentView {
            uuid: $agent.uuid,
            name: &$agent.name,
            node: &$agent.node,
            peers: &$agent.peers,
            links: &$agent.links,
            refusing: $agent.store.refusing(),
        }
    };
}
pub(super) use view;

impl View for AgentView<'_> {
    fn me(&self) -> Uuid {
        self.uuid
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn object(&self, id: &ObjectId) -> Option<Seen> {
        crate::mesh::dispatch::seen(self.node.replica(), id)
    }

    fn alive(&self, u: Uuid) -> bool {
        self.peers.is_alive(u)
    }

    fn reachable(&self, u: Uuid) -> bool {
        self.peers
            .addr_of(u)
            .is_some_and(|a| self.links.contains_key(a))
    }

    fn online(&self) -> Vec<Uuid> {
        self.peers.online()
    }

    fn name(&self, u: Uuid) -> String {
        self.peers
            .name_of(u)
            .map(str::to_string)
            .unwrap_or_else(|| u.to_string())
    }

    fn fenced(&self) -> Option<String> {
        self.node.fenced().map(|why| why.to_string())
    }

    fn reply(
        &self,
        object: &str,
        id: Option<String>,
        result: Outcome,
        error: Option<String>,
    ) -> Reply {
        crate::mesh::dispatch::make_reply(
            self.uuid,
            self.name,
            self.refusing,
            object,
            id,
            result,
            error,
        )
    }

    fn state(&self, id: &ObjectId) -> Option<serde_json::Value> {
        crate::mesh::dispatch::state_of(self.node.replica(), id)
    }
}

impl Agent {
    /// A client's `…/set`, parsed: routed by the dispatcher.
    pub(super) fn command(
        &mut self,
        sender: Option<&str>,
        object: &str,
        client_id: Option<String>,
        req: SetRequest,
        reply_to: Option<ResponseTo>,
    ) {
        let view = view!(self);
        self.dispatch
            .client(&view, sender, object, client_id, req, reply_to);
    }

    /// A command another instance left on our broker. It is checked exactly like a
    /// `…/set` from a client (and its clock against the stamp bound) before anything else,
    /// its clock included, is taken from it; a bad one is answered `rejected`.
    pub(super) fn on_forward(&mut self, sender: Uuid, fwd: Forward) {
        if let Err(why) = self.check_forward(&fwd) {
            let shown: String = fwd.object.chars().take(crate::model::MAX_ID_LEN).collect();
            warn_limited!(self.warns, "rejected-forward", %sender, object = %shown, error = %why, "rejected a forwarded command");
            let id = (fwd.id.len() <= MAX_ID_BYTES).then_some(fwd.id);
            let reply = self.reply(&shown, id, Outcome::Rejected, Some(why));
            let origin = crate::mesh::commands::Origin::Peer { sender };
            return self.dispatch.answer(origin, reply);
        }
        let view = view!(self);
        self.dispatch
            .forwarded(&view, sender, fwd.id, &fwd.object, fwd.request, fwd.onward);
    }

    /// What a `…/set` would be refused for, plus a clock from too far in the future (then
    /// the clock is not observed); otherwise observes the clock.
    fn check_forward(&mut self, fwd: &Forward) -> Result<(), String> {
        if fwd.id.len() > MAX_ID_BYTES {
            let e = PayloadError::TooLong {
                what: "command id",
                len: fwd.id.len(),
            };
            return Err(e.to_string());
        }
        ObjectId::new(&fwd.object).map_err(|e| e.to_string())?;
        crate::api::check(&fwd.request).map_err(|e| e.to_string())?;
        if let Some(stamp) = &fwd.clock {
            let now = crate::clock::now_ms();
            self.node
                .replica_mut()
                .observe(stamp, now)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The answer to a command we forwarded.
    pub(super) fn on_forward_reply(&mut self, from: Uuid, reply: Reply) {
        let id = reply.id.clone().unwrap_or_default();
        if self.dispatch.answered(from, reply).is_err() {
            warn_limited!(self.warns, "answer-from-non-executor", peer = %from, command = %id, "ignoring an answer from an instance the command was not sent to");
        }
    }

    /// An executor went offline: its pending commands move on, or are answered.
    pub(super) fn executor_gone(&mut self, executor: Uuid) {
        let view = view!(self);
        self.dispatch.offline(&view, executor);
    }

    /// Answers `timeout` for commands unanswered for too long.
    pub(super) fn expire_pending(&mut self) {
        let view = view!(self);
        self.dispatch.expire(&view);
    }

    /// Carries out what the dispatcher asks, until it asks nothing more: runs commands here,
    /// forwards them, answers. The retained state of what changed is published before the
    /// first answer, so a client that reads it after the answer sees the new state; decided
    /// answers are on disk (`answers.log`) before anyone hears them.
    pub(super) async fn settle_commands(&mut self) {
        loop {
            let actions = self.dispatch.take_actions();
            if actions.is_empty() {
                return;
            }
            if actions.iter().any(|a| matches!(a, Action::Answer { .. })) {
                self.publish_dirty().await;
                self.save_answers();
            }
            for action in actions {
                match action {
                    Action::Run { object, key, req } => self.run_local(&object, &req, &key).await,
                    Action::Forward {
                        executor,
                        key,
                        object,
                        req,
                        onward,
                    } => self.send_forward(executor, key, object, req, onward).await,
                    Action::Answer { to, reply } => self.deliver(to, reply).await,
                }
            }
        }
    }

    /// Leaves a command on `executor`'s broker.
    async fn send_forward(
        &mut self,
        executor: Uuid,
        key: String,
        object: String,
        request: SetRequest,
        onward: bool,
    ) {
        let link = self
            .peers
            .addr_of(executor)
            .and_then(|a| self.links.get(a))
            .map(|pl| pl.link.clone());
        let msg = Forward {
            id: key.clone(),
            object,
            request,
            onward,
            clock: Some(self.replica().clock()),
        };
        let payload = serde_json::to_vec(&msg).unwrap_or_default();
        let sent = match link {
            Some(link) => link
                .publish(
                    &self.topics.cmd(self.uuid),
                    Qos::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .map_err(|e| e.to_string()),
            None => Err("the link closed".to_string()),
        };
        if let Err(e) = sent {
            // Still pending: answered when the executor goes offline or times out.
            tracing::warn!(command = %key, error = %e, "could not forward a command");
        }
    }

    /// Gives an answer to whoever the dispatcher says waits for it.
    async fn deliver(&mut self, to: Recipient, reply: Reply) {
        match to {
            Recipient::Client(reply_to) => {
                if reply.result != Outcome::Ok {
                    warn_limited!(self.warns, "command-not-executed", object = %reply.object, result = ?reply.result, error = ?reply.error, "command not executed");
                }
                self.answer(reply_to.as_ref(), reply).await
            }
            Recipient::Peer(sender) => {
                // The instance that received a virtual command resolves the next toggle from
                // its own replica, so that answer carries our updates, and updates only
                // leave once durable: it waits for this event's fsync.
                if self.node.has_unsaved() && self.resolved_by_receiver(&reply.object) {
                    let seq = self.node.last_unsaved().unwrap_or(0);
                    if let Err((sender, reply)) = self.deferred.push(seq, (sender, reply)) {
                        // The disk has refused writes for a long while: answer now, without
                        // our updates (they follow on the live stream once durable).
                        warn_limited!(
                            self.warns,
                            "deferred-answers-full",
                            waiting = self.deferred.len(),
                            "too many answers wait for the disk; answering without our updates"
                        );
                        self.send_forward_reply(sender, reply).await;
                    }
                } else {
                    self.send_forward_reply(sender, reply).await;
                }
            }
            Recipient::Automation(rule) => match reply.result {
                Outcome::Ok => {
                    tracing::info!(%rule, object = %reply.object, by = ?reply.executed_by, "automation ran")
                }
                other => {
                    tracing::warn!(%rule, object = %reply.object, result = ?other, error = ?reply.error, "automation did not run")
                }
            },
        }
    }

    /// True for objects whose toggles the receiving instance resolves (virtual ones).
    fn resolved_by_receiver(&self, object: &str) -> bool {
        ObjectId::new(object)
            .ok()
            .and_then(|o| self.replica().get(&o))
            .and_then(|o| o.text(model::KIND))
            == Some("virtual")
    }

    /// Sends the answer to a forwarded command, with our durable updates not yet streamed.
    pub(super) async fn send_forward_reply(&mut self, sender: Uuid, reply: Reply) {
        let updates = self.node.outbox().to_vec();
        let payload = serde_json::to_vec(&ForwardReply { reply, updates }).unwrap_or_default();
        let topic = self.topics.answer(self.uuid, sender);
        if let Err(e) = self
            .link
            .publish(&topic, Qos::AtLeastOnce, false, payload)
            .await
        {
            tracing::warn!(error = %e, "could not answer a forwarded command");
        }
    }
}
