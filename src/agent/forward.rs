//! Commands that run on another instance: sending them, answering them, and what happens
//! when the executor dies or stays silent.
//!
//! A command is left on the executor's broker (`$pimesh/<base>/mesh/<me>/cmd`); the executor answers
//! on its own broker (`$pimesh/<base>/mesh/<executor>/answer/<me>`). Until then the command is
//! pending here. If the executor goes offline, a relay command is answered `unavailable` at
//! once (only its holder may touch the relay), while virtual commands and automation jobs
//! move on to the next live instance with the same command id, so they still run at most once.

use super::Agent;
use crate::api::{Outcome, PayloadError, Reply, SetRequest, MAX_ID_BYTES};
pub(super) use crate::mesh::commands::Origin;
use crate::mesh::commands::{Pending, Waiter, FORWARD_TIMEOUT};
use crate::mesh::proto::{Forward, ForwardReply};
use crate::model::{self, ObjectId};
use crate::mqtt::Qos;
use crate::ratelimit::warn_limited;
use std::time::Instant;
use uuid::Uuid;

impl Agent {
    /// If the command known as `key` is in progress here (forwarded and pending, or queued on
    /// its hardware), the `waiter` made by `make` gets its answer when it completes (at most
    /// [`MAX_WAITING`](crate::mesh::commands::MAX_WAITING) wait) and this returns true.
    pub(super) fn wait_if_in_progress(&mut self, key: &str, make: impl FnOnce() -> Waiter) -> bool {
        if !self.commands.is_pending(key) && !self.is_queued(key) {
            return false;
        }
        match self.commands.wait(key, make()) {
            Ok(()) => {
                tracing::info!(command = %key, "duplicate of a command in progress: answered when it completes")
            }
            Err(e) => {
                warn_limited!(self.warns, "waiting-full", command = %key, error = %e, "duplicate of a command in progress: not answered")
            }
        }
        true
    }
}

impl Agent {
    /// Sends a command to `executor` and keeps it pending until it answers.
    pub(super) async fn forward(
        &mut self,
        executor: Uuid,
        object: &str,
        id: String,
        req: SetRequest,
        origin: Origin,
        onward: bool,
    ) {
        let link = self
            .peers
            .addr_of(executor)
            .and_then(|a| self.links.get(a))
            .map(|pl| pl.link.clone());
        let Some(link) = link else {
            let reply = self.reply(
                object,
                Some(id),
                Outcome::Unavailable,
                Some("no link to the instance that runs it".into()),
            );
            return self.respond(origin, reply).await;
        };
        let msg = Forward {
            id: id.clone(),
            object: object.to_string(),
            request: req.clone(),
            onward,
            clock: Some(self.replica().clock()),
        };
        let payload = serde_json::to_vec(&msg).unwrap_or_default();
        let pending = Pending {
            object: object.to_string(),
            req,
            origin: origin.clone(),
            executor,
            onward,
            sent: Instant::now(),
        };
        if let Err(e) = self.commands.send(&id, pending) {
            warn_limited!(self.warns, "pending-full", command = %id, error = %e, "not forwarding a command");
            let reply = self.reply(object, Some(id), Outcome::Unavailable, Some(e.to_string()));
            return self.respond(origin, reply).await;
        }
        if let Err(e) = link
            .publish(
                &self.topics.cmd(self.uuid),
                Qos::AtLeastOnce,
                false,
                payload,
            )
            .await
        {
            tracing::warn!(command = %id, error = %e, "could not forward a command");
        }
    }

    /// Answers whoever waits for a command. The retained state of what changed is
    /// published first, so a client that reads it after the answer sees the new state. The
    /// answer does not wait for the disk (the hardware has moved; the event's fsync follows
    /// right after), except a forwarded answer about a virtual object: the instance that
    /// received the command resolves the next toggle from its own replica, so that answer
    /// carries our updates, and updates only leave once durable.
    pub(super) async fn respond(&mut self, origin: Origin, reply: Reply) {
        self.publish_dirty().await;
        if let Some(key) = &reply.id {
            // Remembered when decided; duplicates that arrived while it ran get the answer.
            let waiters = self.commands.complete(key, &reply);
            // On disk before anyone hears it: a retry after a crash is answered, not run.
            self.save_answers();
            for waiter in waiters {
                let mut copy = reply.clone();
                match waiter {
                    Waiter::Client { id, reply_to } => {
                        copy.id = id;
                        self.answer(reply_to.as_ref(), copy).await;
                    }
                    Waiter::Peer(sender) => self.send_forward_reply(sender, copy).await,
                }
            }
        }
        match origin {
            Origin::Client { reply_to, id, .. } => {
                if reply.result != Outcome::Ok {
                    warn_limited!(self.warns, "command-not-executed", object = %reply.object, result = ?reply.result, error = ?reply.error, "command not executed");
                }
                let mut reply = reply;
                reply.id = id;
                self.answer(reply_to.as_ref(), reply).await
            }
            Origin::Peer { sender } => {
                if self.node.has_unsaved() && self.resolved_by_receiver(&reply.object) {
                    let seq = self.node.last_unsaved().unwrap_or(0);
                    self.deferred.push((seq, sender, reply));
                } else {
                    self.send_forward_reply(sender, reply).await;
                }
            }
            Origin::Automation { rule, .. } => match reply.result {
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

    /// A command another instance left on our broker. It is checked exactly like a
    /// `…/set` from a client (and its clock against the stamp bound) before anything else,
    /// its clock included, is taken from it; a bad one is answered `rejected`.
    pub(super) async fn on_forward(&mut self, sender: Uuid, fwd: Forward) {
        let origin = Origin::Peer { sender };
        if let Err(why) = self.check_forward(&fwd) {
            let shown: String = fwd.object.chars().take(crate::model::MAX_ID_LEN).collect();
            warn_limited!(self.warns, "rejected-forward", %sender, object = %shown, error = %why, "rejected a forwarded command");
            let id = (fwd.id.len() <= MAX_ID_BYTES).then_some(fwd.id);
            let reply = self.reply(&shown, id, Outcome::Rejected, Some(why));
            return self.respond(origin, reply).await;
        }
        // Sent again (through another instance, or after its sender's timeout): it gets the
        // answer when the command completes.
        if self.wait_if_in_progress(&fwd.id, || Waiter::Peer(sender)) {
            return;
        }
        if let Some(earlier) = self.commands.recall(&fwd.id) {
            tracing::info!(command = %fwd.id, "duplicate forwarded command: answering again, not executing again");
            return self.respond(origin, earlier).await;
        }
        if fwd.onward {
            return self
                .dispatch(&fwd.object, fwd.id, fwd.request, origin, false)
                .await;
        }
        match ObjectId::new(&fwd.object) {
            Ok(oid) => self.run_local(&oid, &fwd.request, &fwd.id, origin).await,
            Err(e) => {
                let reply = self.reply(
                    &fwd.object,
                    Some(fwd.id.clone()),
                    Outcome::Rejected,
                    Some(e.to_string()),
                );
                self.respond(origin, reply).await
            }
        }
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
    /// Only the instance a command was sent to can answer it: another member that learnt
    /// the command id (or guessed it) cannot.
    pub(super) async fn on_forward_reply(&mut self, from: Uuid, reply: Reply) {
        let Some(id) = reply.id.clone() else { return };
        match self.commands.answered(from, &id) {
            Ok(Some(p)) => self.respond(p.origin, reply).await,
            Ok(None) => {}
            Err(_) => {
                warn_limited!(self.warns, "answer-from-non-executor", peer = %from, command = %id, "ignoring an answer from an instance the command was not sent to");
            }
        }
    }

    /// An executor went offline: move its pending commands on, or answer them.
    pub(super) async fn executor_gone(&mut self, executor: Uuid) {
        for (id, p) in self.commands.gone(executor) {
            let origin = p.origin.after_trying(executor);
            if p.onward {
                if let Origin::Automation { rule, tried } = origin {
                    tracing::info!(%rule, command = %id, "automation executor went offline; trying the next instance");
                    self.run_job(rule, p.object, id, p.req, tried).await;
                }
                continue;
            }
            let kind = ObjectId::new(&p.object)
                .ok()
                .and_then(|o| self.replica().get(&o))
                .and_then(|o| o.text(model::KIND).map(str::to_string));
            if kind.as_deref() == Some("virtual") {
                tracing::info!(command = %id, "executor went offline before answering; trying the next instance");
                self.dispatch(&p.object, id, p.req, origin, false).await;
            } else {
                let name = self
                    .peers
                    .name_of(executor)
                    .unwrap_or("its holder")
                    .to_string();
                // It may have switched before it went: say so, with the state as last known.
                let why = format!(
                    "{name} went offline before answering; the command may or may not have run"
                );
                let mut reply = self.reply(&p.object, Some(id), Outcome::Unknown, Some(why));
                reply.state = ObjectId::new(&p.object).ok().and_then(|o| {
                    self.replica()
                        .get(&o)
                        .map(|obj| crate::api::state_json(&o, obj))
                });
                self.respond(origin, reply).await;
            }
        }
    }

    /// Answers `timeout` for commands unanswered for too long.
    pub(super) async fn expire_pending(&mut self) {
        for (id, p) in self.commands.late(Instant::now()) {
            let name = self.peers.name_of(p.executor).unwrap_or("?").to_string();
            let why = format!("no answer from {name} within {FORWARD_TIMEOUT:?}");
            let reply = self.reply(&p.object, Some(id), Outcome::Timeout, Some(why));
            self.respond(p.origin, reply).await;
        }
    }
}
