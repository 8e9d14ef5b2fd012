//! Client commands in the simulation: every instance runs the dispatcher (`mesh::dispatch`)
//! beside its node, with a shell as thin as the agent's: forwarded commands and answers
//! travel on the simulated network, a relay switches a simulated pin some steps after its
//! command, decided answers are written before anyone hears them, and liveness comes from
//! what each instance hears, as the agent's does. Instance `i` holds the relay `relay-<i>`
//! and the serial channel `chan-<i>` (`serial.rs`); every instance runs the virtual `scene`. The clients and the rules they check are in
//! `clients.rs`.

use super::serial::{self, channel_of, holds};
use super::{Packet, Sim, STEP_MS};
use crate::api::{Outcome, Reply, SetRequest, Switch};
use crate::mesh::commands::{Commands, Origin, MAX_PENDING, MAX_WAITING, RECENT};
use crate::mesh::dispatch::{self, Action, Dispatcher, Recipient, Seen, View, MAX_RUNNING};
use crate::mesh::node::{Node, Now};
use crate::mesh::peers::OFFLINE_AFTER;
use crate::mesh::proto::{Forward, ForwardReply};
use crate::mesh::until_durable::UntilDurable;
use crate::model::{self, ObjectId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use uuid::Uuid;

/// The virtual object every instance runs.
pub(super) const SCENE: &str = "scene";

/// What an instance's process keeps for commands; a crash loses it.
#[derive(Default)]
pub(super) struct Desk {
    /// The routing core.
    dispatch: Dispatcher,
    /// Relay commands switching: done at a step.
    runs: Vec<(u64, ObjectId, String, SetRequest)>,
    /// Answers to forwarded virtual commands, waiting for their updates to be durable.
    deferred: UntilDurable<(Uuid, Reply)>,
    /// When each peer was last heard, step.
    heard: BTreeMap<Uuid, u64>,
    /// The peers this instance counts as online.
    online: BTreeSet<Uuid>,
    /// Own updates recorded, for the rules to look at.
    pub triggered: Vec<crate::replica::Update>,
    /// Jobs waiting for their triggering update to be durable.
    pub jobs: UntilDurable<crate::mesh::automation::Job>,
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

impl Kept {
    /// The SD card is replaced: the answers on it are gone, the pins keep their levels.
    pub(super) fn new_disk(&mut self) {
        self.answers.clear();
    }

    /// The level of hardware `object` (a relay's pin, a channel's device).
    pub(super) fn level(&self, object: &str) -> bool {
        self.pins.get(object).copied().unwrap_or(false)
    }

    /// Sets the level of hardware `object`.
    pub(super) fn set_level(&mut self, object: &str, on: bool) {
        self.pins.insert(object.to_string(), on);
    }
}

impl Desk {
    /// The dispatcher hears that command `key` ran here, with `reply`.
    pub(super) fn ran(&mut self, key: &str, reply: Reply) {
        self.dispatch.ran(key, reply);
    }
}

/// What the dispatcher of one simulated instance sees.
pub(super) struct SimView<'a> {
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
        crate::mesh::dispatch::state_of(self.node.replica(), id)
    }
}

/// The relay instance `i` holds.
pub(super) fn relay_of(i: usize) -> String {
    format!("relay-{i}")
}

pub(super) fn on_off(on: bool) -> &'static str {
    if on {
        model::ON
    } else {
        model::OFF
    }
}

impl Sim {
    /// Lets instance `i`'s dispatcher act, with its view of the house and the mesh.
    pub(super) fn dispatch_at(&mut self, i: usize, f: impl FnOnce(&mut Dispatcher, &SimView<'_>)) {
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

    /// At start, after the config's reconcile (`config.rs`): the holder records its relay's
    /// and channel's levels, every instance claims the scene; the dispatcher remembers the
    /// answers on disk.
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
        if let Ok(id) = ObjectId::new(SCENE) {
            let props = vec![(model::KIND.into(), "virtual".into()), (claim, true.into())];
            node.record(&id, props, false, now);
        }
        // The relay's pin and the channel's device say where they are.
        self.record_level(i, &relay_of(i));
        self.record_level(i, &channel_of(i));
        self.record_rule(i);
    }

    /// Carries out what instance `i`'s dispatcher asks, as `Agent::settle_commands` does.
    pub(super) fn settle_commands(&mut self, i: usize) {
        loop {
            self.hand_out_jobs(i);
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
            Some(kind) if kind == "relay" || kind == serial::KIND => {
                if !holds(i, object.as_str()) {
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
    pub(super) fn blank_reply(&self, i: usize) -> Reply {
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
                if self.device_refuses(i, &object, &key) {
                    continue;
                }
                let Some(on) = self.record_state(i, &object, req.state) else {
                    continue;
                };
                self.nodes[i].kept.set_level(object.as_str(), on);
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
                    if let Err((sender, reply)) =
                        self.nodes[i].desk.deferred.push(seq, (sender, reply))
                    {
                        self.send_answer(i, sender, reply);
                    }
                } else {
                    self.send_answer(i, sender, reply);
                }
            }
            Recipient::Automation(_) => self.job_answered(i, reply),
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
        for (sender, reply) in self.nodes[i].desk.deferred.ready(durable) {
            self.send_answer(i, sender, reply);
        }
    }

    /// Instance `to` heard from `from`: it is online in `to`'s view.
    pub(super) fn heard(&mut self, to: usize, from: usize) {
        let u = self.nodes[from].uuid;
        self.nodes[to].disk.known.insert(u);
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
                    && inst.desk.jobs.is_empty()
                    && inst.desk.deferred.is_empty())
        })
    }
}
