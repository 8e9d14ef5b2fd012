//! Client commands in the simulation: every instance runs the dispatcher (`mesh::dispatch`)
//! beside its node, with a shell as thin as the agent's: forwarded commands and answers
//! travel on the simulated network, a relay switches a simulated pin some steps after its
//! command, decided answers are written before anyone hears them, and liveness comes from
//! what each instance hears, as the agent's does.
//!
//! Instance `i` holds the relay `relay-<i>`; every instance runs the virtual `scene`. Clients
//! (three senders, whose command ids collide on purpose) send to any running instance, and
//! retry now and then with the same id, on the same or another instance. What
//! [`Sim::check_commands`] asserts after a healed run:
//! - no command is answered twice, and one sent to an instance that stayed up is answered;
//! - an answer carries the client's own id;
//! - only the holder is ever asked to run a relay command, and no command switches a pin
//!   twice (a retry is answered from memory, not run again);
//! - `ok` for a relay comes from its holder, which switched the pin for that command;
//! - the dispatcher's maps stay within their bounds.

use super::{Packet, Sim, STEP_MS};
use crate::api::{Outcome, Reply, SetRequest, Switch};
use crate::broker::local::ResponseTo;
use crate::mesh::commands::{Commands, Origin, MAX_PENDING, MAX_WAITING, RECENT};
use crate::mesh::dispatch::{self, Action, Dispatcher, Recipient, Seen, View, MAX_RUNNING};
use crate::mesh::node::{Node, Now};
use crate::mesh::peers::OFFLINE_AFTER;
use crate::mesh::proto::{Forward, ForwardReply};
use crate::model::{self, ObjectId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use uuid::Uuid;

/// The virtual object every instance runs.
const SCENE: &str = "scene";

/// Probability per step that a client sends a command.
const COMMAND: f64 = 0.06;

/// What an instance's process keeps for commands; a crash loses it.
#[derive(Default)]
pub(super) struct Desk {
    /// The routing core.
    dispatch: Dispatcher,
    /// Relay commands switching: done at a step.
    runs: Vec<(u64, ObjectId, String, SetRequest)>,
    /// Answers to forwarded virtual commands, waiting for their updates to be durable.
    deferred: Vec<(u64, Uuid, Reply)>,
    /// When each peer was last heard, step.
    heard: BTreeMap<Uuid, u64>,
    /// The peers this instance counts as online.
    online: BTreeSet<Uuid>,
}

/// What survives a crash: the pin levels and the decided answers on disk.
#[derive(Default)]
pub(super) struct Kept {
    /// Pin levels of the relays this instance holds.
    pins: BTreeMap<String, bool>,
    /// Decided answers, as `answers.log` keeps them (the last [`RECENT`]).
    answers: Vec<(String, Reply)>,
    /// Times this instance crashed.
    pub crashes: u64,
}

/// A command a client sent, and what it heard back.
pub(super) struct Sent {
    /// The instance it was sent to.
    to: usize,
    /// That instance's crash count when it was sent.
    crashes: u64,
    /// Who sent it, the object, the client's id, what it asked.
    sender: String,
    object: String,
    id: String,
    req: SetRequest,
    /// The mesh key of the command.
    key: String,
    /// Every answer it got.
    answers: Vec<Reply>,
}

/// The commands side of a run.
#[derive(Default)]
pub(super) struct Traffic {
    /// Every command sent.
    sent: Vec<Sent>,
    /// Per sender, the last id used.
    ids: BTreeMap<String, u64>,
    /// Every pin switch: instance, object, command key.
    pins: Vec<(usize, String, String)>,
    /// Broken rules seen while running.
    violations: Vec<String>,
}

/// What the dispatcher of one simulated instance sees.
struct SimView<'a> {
    me: Uuid,
    name: &'a str,
    node: &'a Node,
    now: Instant,
    online: &'a BTreeSet<Uuid>,
    refusing: bool,
}

impl View for SimView<'_> {
    fn me(&self) -> Uuid {
        self.me
    }
    fn now(&self) -> Instant {
        self.now
    }
    fn object(&self, id: &ObjectId) -> Option<Seen> {
        dispatch::seen(self.node.replica(), id)
    }
    fn alive(&self, u: Uuid) -> bool {
        self.online.contains(&u)
    }
    fn reachable(&self, u: Uuid) -> bool {
        self.online.contains(&u)
    }
    fn online(&self) -> Vec<Uuid> {
        self.online.iter().copied().collect()
    }
    fn name(&self, u: Uuid) -> String {
        u.to_string()
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
        dispatch::make_reply(self.me, self.name, self.refusing, object, id, result, error)
    }
    fn state(&self, id: &ObjectId) -> Option<serde_json::Value> {
        let obj = self.node.replica().get(id)?;
        Some(crate::api::state_json(id, obj))
    }
}

/// The relay instance `i` holds.
fn relay_of(i: usize) -> String {
    format!("relay-{i}")
}

fn on_off(on: bool) -> &'static str {
    if on {
        model::ON
    } else {
        model::OFF
    }
}

impl Sim {
    /// Lets instance `i`'s dispatcher act, with its view of the house and the mesh.
    fn dispatch_at(&mut self, i: usize, f: impl FnOnce(&mut Dispatcher, &SimView<'_>)) {
        let now = self.now(i).at;
        let refusing = self.nodes[i].disk.full_until > self.step;
        let inst = &mut self.nodes[i];
        let Some(node) = inst.node.as_ref() else {
            return;
        };
        let view = SimView {
            me: inst.uuid,
            name: &inst.name,
            node,
            now,
            online: &inst.desk.online,
            refusing,
        };
        f(&mut inst.desk.dispatch, &view);
    }

    /// At start, as the agent's reconcile: the holder claims its relay with its pin's level,
    /// every instance claims the scene; the dispatcher remembers the answers on disk.
    pub(super) fn start_commands(&mut self, i: usize) {
        let now = self.now(i);
        let inst = &mut self.nodes[i];
        let (answers, _) = Commands::load(&Commands::encode(&inst.kept.answers));
        inst.desk = Desk {
            dispatch: Dispatcher::new(answers),
            ..Default::default()
        };
        let Some(node) = inst.node.as_mut() else {
            return;
        };
        let claim = format!("{}{}", model::CLAIM_PREFIX, inst.uuid);
        let relay = relay_of(i);
        let on = inst.kept.pins.get(&relay).copied().unwrap_or(false);
        if let Ok(id) = ObjectId::new(&relay) {
            let props = vec![
                (model::KIND.into(), "relay".into()),
                (claim.clone(), true.into()),
                (model::STATE.into(), on_off(on).into()),
            ];
            node.record(&id, props, false, now);
        }
        if let Ok(id) = ObjectId::new(SCENE) {
            let props = vec![(model::KIND.into(), "virtual".into()), (claim, true.into())];
            node.record(&id, props, false, now);
        }
    }

    /// A client sends a command to a random running instance: new, or a retry of a recent
    /// one with the same id.
    pub(super) fn client_command(&mut self) {
        if !self.rng.chance(COMMAND) {
            return;
        }
        let n = self.nodes.len();
        let to = self.rng.below(n as u64) as usize;
        if self.nodes[to].node.is_none() {
            return;
        }
        let recent = self.traffic.sent.len().min(20) as u64;
        let (sender, object, id, req) = if recent > 0 && self.rng.chance(0.25) {
            let k = self.traffic.sent.len() - 1 - self.rng.below(recent) as usize;
            self.count("command-retry");
            let s = &self.traffic.sent[k];
            (
                s.sender.clone(),
                s.object.clone(),
                s.id.clone(),
                s.req.clone(),
            )
        } else {
            let sender = format!("client-{}", self.rng.below(3));
            let next = self.traffic.ids.entry(sender.clone()).or_default();
            *next += 1;
            let id = next.to_string();
            let object = if self.rng.chance(0.3) {
                SCENE.to_string()
            } else {
                relay_of(self.rng.below(n as u64) as usize)
            };
            let state = match self.rng.below(3) {
                0 => Switch::On,
                1 => Switch::Off,
                _ => Switch::Toggle,
            };
            let req = SetRequest {
                state: Some(state),
                id: Some(id.clone()),
                ..Default::default()
            };
            (sender, object, id, req)
        };
        let reply_to = ResponseTo::topic(format!("client/{}", self.traffic.sent.len()));
        self.traffic.sent.push(Sent {
            to,
            crashes: self.nodes[to].kept.crashes,
            key: dispatch::command_key(Some(&sender), &object, &id),
            sender: sender.clone(),
            object: object.clone(),
            id: id.clone(),
            req: req.clone(),
            answers: Vec::new(),
        });
        self.count("command");
        self.dispatch_at(to, |d, v| {
            d.client(v, Some(&sender), &object, Some(id), req, Some(reply_to))
        });
        self.settle(to);
    }

    /// Carries out what instance `i`'s dispatcher asks, as `Agent::settle_commands` does.
    pub(super) fn settle_commands(&mut self, i: usize) {
        loop {
            let Some(node) = self.nodes[i].node.as_ref() else {
                return;
            };
            let clock = node.replica().clock();
            let desk = &mut self.nodes[i].desk;
            let actions = desk.dispatch.take_actions();
            if actions.is_empty() {
                break;
            }
            // Decided answers are on disk before anyone hears them.
            let fresh = desk.dispatch.take_unsaved();
            let kept = &mut self.nodes[i].kept.answers;
            kept.extend(fresh);
            let excess = kept.len().saturating_sub(RECENT);
            kept.drain(..excess);
            for action in actions {
                match action {
                    Action::Run { object, key, req } => self.run_here(i, object, key, req),
                    Action::Forward {
                        executor,
                        key,
                        object,
                        req,
                        onward,
                    } => {
                        let fwd = Forward {
                            id: key,
                            object,
                            request: req,
                            onward,
                            clock: Some(clock),
                        };
                        if let Some(j) = self.index_of(executor) {
                            self.transmit(i, j, Packet::Cmd(fwd));
                        }
                    }
                    Action::Answer { to, reply } => self.hear(i, to, reply),
                }
            }
            self.settle_node(i);
        }
        self.send_deferred(i);
    }

    fn index_of(&self, u: Uuid) -> Option<usize> {
        self.nodes.iter().position(|n| n.uuid == u)
    }

    /// Runs a command at instance `i`: a relay switches its pin a few steps later, the scene
    /// is recorded at once.
    fn run_here(&mut self, i: usize, object: ObjectId, key: String, req: SetRequest) {
        let seen = self.nodes[i]
            .node
            .as_ref()
            .and_then(|n| dispatch::seen(n.replica(), &object));
        match seen.map(|s| s.kind) {
            Some(kind) if kind == "relay" => {
                if object.as_str() != relay_of(i) {
                    self.traffic.violations.push(format!(
                        "{} was asked to run command {key} for {object}, which it does not hold",
                        self.nodes[i].name
                    ));
                    let reply = Reply {
                        id: Some(key.clone()),
                        object: object.to_string(),
                        result: Outcome::Unavailable,
                        ..self.blank_reply(i)
                    };
                    self.nodes[i].desk.dispatch.ran(&key, reply);
                    return;
                }
                let at = self.step + 1 + self.rng.below(20);
                self.nodes[i].desk.runs.push((at, object, key, req));
            }
            _ => {
                let on = self.record_state(i, &object, req.state);
                let mut reply = self.blank_reply(i);
                reply.id = Some(key.clone());
                reply.object = object.to_string();
                reply.state = on.map(|on| serde_json::json!({ "state": on_off(on) }));
                self.nodes[i].desk.dispatch.ran(&key, reply);
            }
        }
    }

    /// An `ok` answer from instance `i`, to be filled in.
    fn blank_reply(&self, i: usize) -> Reply {
        let inst = &self.nodes[i];
        let refusing = inst.disk.full_until > self.step;
        dispatch::make_reply(inst.uuid, &inst.name, refusing, "", None, Outcome::Ok, None)
    }

    /// Records `object`'s new state at instance `i`; the state it took.
    fn record_state(
        &mut self,
        i: usize,
        object: &ObjectId,
        switch: Option<Switch>,
    ) -> Option<bool> {
        let now = self.now(i);
        let node = self.nodes[i].node.as_mut()?;
        let was = node
            .replica()
            .get(object)
            .is_some_and(|o| o.text(model::STATE) == Some(model::ON));
        let on = switch?.target(was);
        node.record(
            object,
            vec![(model::STATE.into(), on_off(on).into())],
            true,
            now,
        );
        Some(on)
    }

    /// Relays whose switching time has come: the pin moves, the state is recorded, the
    /// dispatcher hears that the command ran.
    pub(super) fn finish_runs(&mut self) {
        for i in 0..self.nodes.len() {
            let step = self.step;
            let runs = &mut self.nodes[i].desk.runs;
            let (due, later): (Vec<_>, Vec<_>) = runs.drain(..).partition(|r| r.0 <= step);
            *runs = later;
            if due.is_empty() {
                continue;
            }
            for (_, object, key, req) in due {
                let Some(on) = self.record_state(i, &object, req.state) else {
                    continue;
                };
                self.nodes[i].kept.pins.insert(object.to_string(), on);
                self.traffic.pins.push((i, object.to_string(), key.clone()));
                let mut reply = self.blank_reply(i);
                reply.id = Some(key.clone());
                reply.object = object.to_string();
                reply.state = Some(serde_json::json!({ "state": on_off(on) }));
                self.nodes[i].desk.dispatch.ran(&key, reply);
            }
            self.settle(i);
        }
    }

    /// Gives an answer from instance `i` to whoever waits for it.
    fn hear(&mut self, i: usize, to: Recipient, reply: Reply) {
        match to {
            Recipient::Client(Some(rt)) => {
                let n = rt
                    .topic
                    .strip_prefix("client/")
                    .and_then(|n| n.parse::<usize>().ok());
                self.count(match reply.result {
                    Outcome::Ok => "answer-ok",
                    Outcome::Failed => "answer-failed",
                    Outcome::Rejected => "answer-rejected",
                    Outcome::Unavailable => "answer-unavailable",
                    Outcome::Timeout => "answer-timeout",
                    Outcome::Unknown => "answer-unknown",
                });
                match n.and_then(|n| self.traffic.sent.get_mut(n)) {
                    Some(sent) => sent.answers.push(reply),
                    None => self
                        .traffic
                        .violations
                        .push(format!("answer on {}", rt.topic)),
                }
            }
            Recipient::Client(None) => {}
            Recipient::Peer(sender) => {
                let Some(node) = self.nodes[i].node.as_ref() else {
                    return;
                };
                let virtual_ = ObjectId::new(&reply.object)
                    .ok()
                    .and_then(|o| dispatch::seen(node.replica(), &o))
                    .is_some_and(|s| s.kind == "virtual");
                if node.has_unsaved() && virtual_ {
                    let seq = node.last_unsaved().unwrap_or(0);
                    self.nodes[i].desk.deferred.push((seq, sender, reply));
                } else {
                    self.send_answer(i, sender, reply);
                }
            }
            Recipient::Automation(_) => self.count("automation-answer"),
        }
    }

    /// Sends the answer to a forwarded command with our durable updates not yet streamed.
    fn send_answer(&mut self, i: usize, sender: Uuid, reply: Reply) {
        let Some(node) = self.nodes[i].node.as_ref() else {
            return;
        };
        let updates = node.outbox().to_vec();
        if let Some(j) = self.index_of(sender) {
            self.transmit(i, j, Packet::Answer(ForwardReply { reply, updates }));
        }
    }

    /// Sends the deferred answers whose updates are durable now.
    fn send_deferred(&mut self, i: usize) {
        let Some(durable) = self.nodes[i].node.as_ref().map(|n| n.durable_seq()) else {
            return;
        };
        let deferred = std::mem::take(&mut self.nodes[i].desk.deferred);
        let (ready, waiting): (Vec<_>, Vec<_>) = deferred
            .into_iter()
            .partition(|(seq, _, _)| *seq <= durable);
        self.nodes[i].desk.deferred = waiting;
        for (_, sender, reply) in ready {
            self.send_answer(i, sender, reply);
        }
    }

    /// Instance `to` heard from `from`: it is online in `to`'s view.
    pub(super) fn heard(&mut self, to: usize, from: usize) {
        let u = self.nodes[from].uuid;
        let desk = &mut self.nodes[to].desk;
        desk.heard.insert(u, self.step);
        desk.online.insert(u);
    }

    /// A command another instance forwarded, checked like the agent checks it.
    pub(super) fn receive_command(&mut self, to: usize, from: usize, fwd: Forward, now: Now) {
        let sender = self.nodes[from].uuid;
        let observed = match (&fwd.clock, self.nodes[to].node.as_mut()) {
            (Some(stamp), Some(node)) => node.replica_mut().observe(stamp, now.wall_ms),
            _ => Ok(()),
        };
        if let Err(e) = observed {
            self.count("command-clock-rejected");
            let mut reply = self.blank_reply(to);
            reply.id = Some(fwd.id);
            reply.object = fwd.object;
            reply.result = Outcome::Rejected;
            reply.error = Some(e.to_string());
            self.nodes[to]
                .desk
                .dispatch
                .answer(Origin::Peer { sender }, reply);
            return;
        }
        self.dispatch_at(to, |d, v| {
            d.forwarded(v, sender, fwd.id, &fwd.object, fwd.request, fwd.onward)
        });
    }

    /// An executor's answer to a command instance `to` forwarded.
    pub(super) fn receive_answer(&mut self, to: usize, from: usize, fr: ForwardReply, now: Now) {
        let executor = self.nodes[from].uuid;
        let Some(node) = self.nodes[to].node.as_mut() else {
            return;
        };
        node.receive_answer(executor, fr.updates, now);
        if self.nodes[to]
            .desk
            .dispatch
            .answered(executor, fr.reply)
            .is_err()
        {
            self.count("answer-from-non-executor");
        }
    }

    /// Each instance's liveness and timeouts, as the agent's heartbeat does them: peers
    /// silent for [`OFFLINE_AFTER`] go offline (their pending commands are answered or move
    /// on), and commands unanswered for too long time out.
    pub(super) fn beat_commands(&mut self, i: usize) {
        let silent = OFFLINE_AFTER.as_millis() as u64 / STEP_MS;
        let step = self.step;
        let desk = &mut self.nodes[i].desk;
        let gone: Vec<Uuid> = desk
            .online
            .iter()
            .filter(|u| desk.heard.get(u).is_none_or(|t| step > t + silent))
            .copied()
            .collect();
        for u in &gone {
            desk.online.remove(u);
        }
        for u in gone {
            if let Some(node) = self.nodes[i].node.as_mut() {
                node.peer_offline(u);
            }
            self.dispatch_at(i, |d, v| d.offline(v, u));
        }
        self.dispatch_at(i, |d, v| d.expire(v));
        let (p, w, r, run) = self.nodes[i].desk.dispatch.sizes();
        if p > MAX_PENDING || w > MAX_WAITING || r > RECENT || run > MAX_RUNNING {
            self.traffic.violations.push(format!(
                "{}'s dispatcher past its bounds: pending {p}, waiting {w}, recent {r}, running {run}",
                self.nodes[i].name
            ));
        }
    }

    /// Nothing is in progress anywhere: every command sent to a running instance has had
    /// its chance to be answered.
    pub(super) fn commands_settled(&self) -> bool {
        self.nodes.iter().all(|inst| {
            let (p, _, _, run) = inst.desk.dispatch.sizes();
            inst.node.is_none()
                || (p == 0
                    && run == 0
                    && inst.desk.runs.is_empty()
                    && inst.desk.deferred.is_empty())
        })
    }

    /// The rules of commands after a healed run; `Err` names the first one broken.
    pub(super) fn check_commands(&self) -> Result<(), String> {
        if let Some(v) = self.traffic.violations.first() {
            return Err(v.clone());
        }
        let holder = |object: &str| (0..self.nodes.len()).find(|i| relay_of(*i) == object);
        let mut switched: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, object, key) in &self.traffic.pins {
            if holder(object) != Some(*i) {
                return Err(format!(
                    "{} switched {object}, held by another",
                    self.nodes[*i].name
                ));
            }
            let times = switched.entry(key.as_str()).or_default();
            *times += 1;
            if *times > 1 {
                return Err(format!("command {key} switched {object} twice"));
            }
        }
        for (n, s) in self.traffic.sent.iter().enumerate() {
            let what = format!(
                "command {n} ({} id {} for {} at {})",
                s.sender, s.id, s.object, self.nodes[s.to].name
            );
            if s.answers.len() > 1 {
                return Err(format!(
                    "{what} answered {} times: {:?}",
                    s.answers.len(),
                    s.answers
                ));
            }
            let stayed_up = self.nodes[s.to].kept.crashes == s.crashes;
            let Some(answer) = s.answers.first() else {
                if stayed_up {
                    return Err(format!("{what} never answered"));
                }
                continue;
            };
            if answer.id.as_deref() != Some(s.id.as_str()) {
                return Err(format!("{what} answered with id {:?}", answer.id));
            }
            if answer.result != Outcome::Ok || s.object == SCENE {
                continue;
            }
            let by = holder(&s.object).map(|h| self.nodes[h].uuid);
            if answer.executed_by_uuid != by {
                return Err(format!(
                    "{what} answered ok by {:?}, not its holder",
                    answer.executed_by
                ));
            }
            if !switched.contains_key(s.key.as_str()) {
                return Err(format!(
                    "{what} answered ok, but its holder never switched for it"
                ));
            }
        }
        Ok(())
    }
}
