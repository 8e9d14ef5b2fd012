//! Where each command runs and who hears its answer, without I/O: the routing half of the
//! mesh core, beside the replication half in [`node`](super::node).
//!
//! Inputs: a client's command, a command another instance forwarded, an executor's answer,
//! an executor that went offline, the time passing, an automation job, and the shell saying a
//! command it was asked to run has run. Outputs ([`Action`]): run a command here, forward it to
//! another instance, answer someone. What the shell must know about the house and the mesh
//! comes through a [`View`], its clock included, so the simulator (`mesh/sim/`) drives this
//! very code through faulty schedules.
//!
//! The rules it keeps:
//! - every command gets exactly one answer: a duplicate of a command in progress waits for
//!   its answer (or is told why not), a command nobody can run is answered at once;
//! - a client's command id only means something to that client and object
//!   ([`command_key`]), so equal ids of different clients never meet;
//! - a decided answer is remembered (also on disk, by the shell) and given again to a retry,
//!   which does not run again; `timeout`, `unavailable` and `unknown` are never remembered;
//! - relays and serial channels run on their holder only; when it goes offline before
//!   answering, the answer is `unknown` with the last known state (it may have switched);
//!   virtual commands and automation jobs move on to the next live instance.

mod view;

pub use view::{claimants, command_key, make_reply, seen, state_of, Seen, View};

use super::commands::{Commands, NotExecutor, Origin, Pending, Waiter};
use crate::api::{Outcome, Reply, SetRequest, Switch};
use crate::broker::local::ResponseTo;
use crate::model::ObjectId;
use crate::router::{self, RoundRobin, Route, Target};
use std::collections::HashMap;
use uuid::Uuid;

/// Commands running here (handed to the shell, not yet answered), at most.
pub const MAX_RUNNING: usize = 4096;

/// Who hears an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Recipient {
    /// A client, on its reply topic (none: it asked for no answer).
    Client(Option<ResponseTo>),
    /// The instance that forwarded the command.
    Peer(Uuid),
    /// An automation this instance handed out; the answer is only logged.
    Automation(String),
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Run `req` on `object` here, and call [`Dispatcher::ran`] with `key` and the answer
    /// when it has run (at once, or when a relay's dead time is over).
    Run {
        object: ObjectId,
        key: String,
        req: SetRequest,
    },
    /// Send the command to `executor`; its answer comes back to [`Dispatcher::answered`].
    Forward {
        executor: Uuid,
        key: String,
        object: String,
        req: SetRequest,
        /// An automation job: the executor routes it on.
        onward: bool,
    },
    /// Answer `to`.
    Answer { to: Recipient, reply: Reply },
}

/// The command routing of one instance.
#[derive(Debug, Default)]
pub struct Dispatcher {
    /// Forwarded and pending, duplicates waiting, recent answers.
    commands: Commands,
    /// Commands running here, by key, with who waits for them.
    running: HashMap<String, Origin>,
    /// Rotation over the runners of virtual objects.
    rr: RoundRobin,
    /// Rotation of automation jobs over live instances.
    rr_jobs: RoundRobin,
    /// What the shell has still to do.
    out: Vec<Action>,
}

impl Dispatcher {
    /// A dispatcher that remembers the answers a previous run decided.
    pub fn new(commands: Commands) -> Self {
        Dispatcher {
            commands,
            ..Default::default()
        }
    }

    /// What the shell has to do, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Decided answers not yet on disk.
    pub fn take_unsaved(&mut self) -> Vec<(String, Reply)> {
        self.commands.take_unsaved()
    }

    /// Every remembered answer, oldest first.
    pub fn recent(&self) -> Vec<(String, Reply)> {
        self.commands.recent()
    }

    /// Sizes (pending, waiting, recent, running), for bound checks.
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let (p, w, r) = self.commands.sizes();
        (p, w, r, self.running.len())
    }

    /// Whether command `key` is in progress here: sent to another instance or running.
    pub fn in_progress(&self, key: &str) -> bool {
        self.commands.is_pending(key) || self.running.contains_key(key)
    }

    /// A client's command for `object`, with its own id (if any) and where it wants the
    /// answer. `sender` is who the front door says sent it.
    pub fn client(
        &mut self,
        view: &impl View,
        sender: Option<&str>,
        object: &str,
        client_id: Option<String>,
        req: SetRequest,
        reply_to: Option<ResponseTo>,
    ) {
        let key = match &client_id {
            Some(own) => command_key(sender, object, own),
            // No id, no duplicate check: a fresh key only names it in the mesh.
            None => Uuid::new_v4().to_string(),
        };
        if client_id.is_some() {
            let waiter = Waiter::Client {
                id: client_id.clone(),
                reply_to: reply_to.clone(),
            };
            if self.wait_if_in_progress(view, object, &key, waiter) {
                return;
            }
            if let Some(mut earlier) = self.commands.recall(&key) {
                earlier.id = client_id;
                self.answer_to(Recipient::Client(reply_to), earlier);
                return;
            }
        }
        let origin = Origin::Client {
            reply_to,
            id: client_id,
            tried: Vec::new(),
        };
        self.dispatch(view, object, key, req, origin);
    }

    /// A command another instance sent us, already checked like a client's.
    pub fn forwarded(
        &mut self,
        view: &impl View,
        sender: Uuid,
        key: String,
        object: &str,
        req: SetRequest,
        onward: bool,
    ) {
        // Sent again (through another instance, or after its sender's timeout): it gets the
        // answer when the command completes.
        if self.wait_if_in_progress(view, object, &key, Waiter::Peer(sender)) {
            return;
        }
        if let Some(earlier) = self.commands.recall(&key) {
            self.answer_to(Recipient::Peer(sender), earlier);
            return;
        }
        let origin = Origin::Peer { sender };
        if onward {
            return self.dispatch(view, object, key, req, origin);
        }
        match ObjectId::new(object) {
            Ok(oid) => self.run(view, oid, key, req, origin),
            Err(e) => {
                let reply = view.reply(object, Some(key), Outcome::Rejected, Some(e.to_string()));
                self.answer(origin, reply)
            }
        }
    }

    /// The answer `from` sent to a command we forwarded. Only the instance the command was
    /// sent to can answer it: another member that learnt the key cannot.
    pub fn answered(&mut self, from: Uuid, reply: Reply) -> Result<(), NotExecutor> {
        let Some(key) = reply.id.clone() else {
            return Ok(());
        };
        if let Some(p) = self.commands.answered(from, &key)? {
            self.answer(p.origin, reply);
        }
        Ok(())
    }

    /// The shell ran command `key` ([`Action::Run`]) and this is its answer.
    pub fn ran(&mut self, key: &str, reply: Reply) {
        if let Some(origin) = self.running.remove(key) {
            self.answer(origin, reply);
        }
    }

    /// `executor` went offline: its pending commands move on, or are answered.
    pub fn offline(&mut self, view: &impl View, executor: Uuid) {
        for (key, p) in self.commands.gone(executor) {
            let origin = p.origin.after_trying(executor);
            if p.onward {
                if let Origin::Automation { rule, tried } = origin {
                    self.job(view, rule, &p.object, key, p.req, tried);
                } else {
                    self.unknown(view, &p.object, key, origin, executor);
                }
                continue;
            }
            let virtual_ = ObjectId::new(&p.object)
                .ok()
                .and_then(|o| view.object(&o))
                .is_some_and(|o| o.kind == "virtual");
            if virtual_ {
                self.dispatch(view, &p.object, key, p.req, origin);
            } else {
                self.unknown(view, &p.object, key, origin, executor);
            }
        }
    }

    /// Answers `timeout` for commands unanswered for too long.
    pub fn expire(&mut self, view: &impl View) {
        for (key, p) in self.commands.late(view.now()) {
            let why = format!(
                "no answer from {} within {:?}",
                view.name(p.executor),
                super::commands::FORWARD_TIMEOUT
            );
            let reply = view.reply(&p.object, Some(key), Outcome::Timeout, Some(why));
            self.answer(p.origin, reply);
        }
    }

    /// Hands an automation job to the next live instance not yet tried, round-robin in UUID
    /// order (this one included), which routes the rule's command to where it must run; the
    /// instance it picked, if any.
    pub fn job(
        &mut self,
        view: &impl View,
        rule: String,
        target: &str,
        key: String,
        req: SetRequest,
        tried: Vec<Uuid>,
    ) -> Option<Uuid> {
        let mut live = view.online();
        live.push(view.me());
        live.retain(|u| !tried.contains(u));
        live.sort();
        live.dedup();
        let origin = Origin::Automation { rule, tried };
        let picked = self.rr_jobs.pick(&live);
        match picked {
            Some(u) if u == view.me() => self.dispatch(view, target, key, req, origin),
            Some(u) => self.forward(view, u, target, key, req, origin, true),
            None => {
                let why = "no live instance left to run it".to_string();
                let reply = view.reply(target, Some(key), Outcome::Unavailable, Some(why));
                self.answer(origin, reply);
            }
        }
        picked
    }

    /// Answers `origin` (and every duplicate that waited for the same command).
    pub fn answer(&mut self, origin: Origin, reply: Reply) {
        if let Some(key) = &reply.id {
            for waiter in self.commands.complete(key, &reply) {
                let mut copy = reply.clone();
                match waiter {
                    Waiter::Client { id, reply_to } => {
                        copy.id = id;
                        self.answer_to(Recipient::Client(reply_to), copy);
                    }
                    Waiter::Peer(sender) => self.answer_to(Recipient::Peer(sender), copy),
                }
            }
        }
        match origin {
            Origin::Client { reply_to, id, .. } => {
                let mut reply = reply;
                reply.id = id;
                self.answer_to(Recipient::Client(reply_to), reply);
            }
            Origin::Peer { sender } => self.answer_to(Recipient::Peer(sender), reply),
            Origin::Automation { rule, .. } => self.answer_to(Recipient::Automation(rule), reply),
        }
    }

    fn answer_to(&mut self, to: Recipient, reply: Reply) {
        self.out.push(Action::Answer { to, reply });
    }

    /// If command `key` is in progress here, `waiter` gets its answer when it completes (or,
    /// when too many wait already, is told so now); true if so.
    fn wait_if_in_progress(
        &mut self,
        view: &impl View,
        object: &str,
        key: &str,
        waiter: Waiter,
    ) -> bool {
        if !self.in_progress(key) {
            return false;
        }
        if let Err(e) = self.commands.wait(key, waiter.clone()) {
            let why = format!("the same command is in progress and {e}; try again in a moment");
            let reply = view.reply(object, Some(key.into()), Outcome::Unavailable, Some(why));
            match waiter {
                Waiter::Client { id, reply_to } => {
                    let mut reply = reply;
                    reply.id = id;
                    self.answer_to(Recipient::Client(reply_to), reply);
                }
                Waiter::Peer(sender) => self.answer_to(Recipient::Peer(sender), reply),
            }
        }
        true
    }

    /// Runs a command here or sends it to the instance that must run it.
    fn dispatch(
        &mut self,
        view: &impl View,
        object: &str,
        key: String,
        mut req: SetRequest,
        origin: Origin,
    ) {
        let seen = ObjectId::new(object)
            .ok()
            .and_then(|oid| view.object(&oid).map(|s| (oid, s)));
        let Some((oid, seen)) = seen else {
            let why = format!("unknown object {object:?}");
            let reply = view.reply(object, Some(key), Outcome::Rejected, Some(why));
            return self.answer(origin, reply);
        };
        if req.state.is_none() {
            // A move is replicated state: any instance records it.
            return self.run(view, oid, key, req, origin);
        }
        if let (Some(Switch::Toggle), "virtual") = (req.state, seen.kind.as_str()) {
            // Resolved once, here: a retry on another executor then sets the same value.
            req.state = Some(if Switch::Toggle.target(seen.on) {
                Switch::On
            } else {
                Switch::Off
            });
        }
        let target = Target {
            id: object,
            kind: &seen.kind,
            claimants: seen.claimants,
        };
        let skip = origin.tried();
        let me = view.me();
        let route = router::route(
            me,
            &target,
            |u| view.alive(u),
            &skip,
            &mut self.rr,
            |u| view.name(u),
        );
        match route {
            Route::Local => self.run(view, oid, key, req, origin),
            Route::Forward(executor) => {
                self.forward(view, executor, object, key, req, origin, false)
            }
            Route::Unavailable(why) => {
                let reply = view.reply(object, Some(key), Outcome::Unavailable, Some(why));
                self.answer(origin, reply)
            }
            Route::Rejected(why) => {
                let reply = view.reply(object, Some(key), Outcome::Rejected, Some(why));
                self.answer(origin, reply)
            }
        }
    }

    /// Hands a command to the shell to run here, unless this instance makes no changes now.
    fn run(
        &mut self,
        view: &impl View,
        object: ObjectId,
        key: String,
        req: SetRequest,
        origin: Origin,
    ) {
        let refused = match view.fenced() {
            Some(why) => Some(format!("this instance is fetching its own changes back from peers before it makes new ones ({why}); try again in a moment")),
            None if self.running.len() >= MAX_RUNNING => {
                Some(format!("{MAX_RUNNING} commands already run on this instance"))
            }
            None => None,
        };
        if let Some(why) = refused {
            let reply = view.reply(object.as_str(), Some(key), Outcome::Unavailable, Some(why));
            return self.answer(origin, reply);
        }
        self.running.insert(key.clone(), origin);
        self.out.push(Action::Run { object, key, req });
    }

    /// Sends a command to `executor` and keeps it pending until it answers.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        view: &impl View,
        executor: Uuid,
        object: &str,
        key: String,
        req: SetRequest,
        origin: Origin,
        onward: bool,
    ) {
        if !view.reachable(executor) {
            let why = format!("no link to {}, which runs it", view.name(executor));
            let reply = view.reply(object, Some(key), Outcome::Unavailable, Some(why));
            return self.answer(origin, reply);
        }
        let pending = Pending {
            object: object.to_string(),
            req: req.clone(),
            origin: origin.clone(),
            executor,
            onward,
            sent: view.now(),
        };
        if let Err(e) = self.commands.send(&key, pending) {
            let reply = view.reply(object, Some(key), Outcome::Unavailable, Some(e.to_string()));
            return self.answer(origin, reply);
        }
        self.out.push(Action::Forward {
            executor,
            key,
            object: object.to_string(),
            req,
            onward,
        });
    }

    /// The answer to a command whose holder went offline before answering: it may have run.
    fn unknown(&mut self, view: &impl View, object: &str, key: String, origin: Origin, gone: Uuid) {
        let why = format!(
            "{} went offline before answering; the command may or may not have run",
            view.name(gone)
        );
        let mut reply = view.reply(object, Some(key), Outcome::Unknown, Some(why));
        reply.state = ObjectId::new(object).ok().and_then(|o| view.state(&o));
        self.answer(origin, reply);
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
