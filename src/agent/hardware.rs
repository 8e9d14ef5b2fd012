//! The agent's side of the hardware cores: performing the relay bank's actions (drive a pin,
//! start a timer, record a change, answer a command), keeping relay commands queued until the
//! bank answers them, and turning an input's press patterns into events.
//!
//! The bank decides; this file only does what it says, in order. A relay command is queued on
//! its relay before the bank sees it, and every `Reply`/`Fail` answers the oldest queued
//! command of that relay — at once, or after an interlock dead time.

use super::state::claimants;
use super::{on_off, Agent, Internal};
use crate::api::{self, Outcome, SetRequest, Switch};
use crate::mesh::automation::EVENT;
use crate::model::{self, ObjectId, Value};
use crate::mqtt::Qos;
use crate::plugins::press::PressAction;
use crate::plugins::relay_bank::{Reason, RelayAction};
use std::collections::VecDeque;
use std::time::Instant;

/// Property saying why a relay last changed state (`command`, `pulse-ms elapsed`,
/// `max-on-s exceeded`, `interlock: <id> switched on`, `on-stop`, `start rules`).
pub const REASON: &str = "reason";

/// The hardware this instance holds, and the state of its rules.
pub(super) struct Hardware {
    /// Relays this instance holds, by object id.
    pub(super) relays: std::collections::BTreeMap<ObjectId, crate::plugins::Relay>,
    /// The switching rules of our relays (pulse, interlock, watchdog, on-stop).
    pub(super) bank: crate::plugins::relay_bank::RelayBank,
    /// Relay commands waiting for the bank's answer, oldest first, by relay.
    pub(super) queued: std::collections::HashMap<ObjectId, std::collections::VecDeque<Queued>>,
    /// Inputs this instance holds; the index is what edge callbacks report.
    pub(super) inputs: Vec<(ObjectId, crate::plugins::Input)>,
    /// The press detector of each input, by the same index.
    pub(super) presses: Vec<crate::plugins::press::PressDetector>,
    /// Our serial devices' tasks, by device id.
    pub(super) serials: std::collections::BTreeMap<ObjectId, crate::plugins::serial::SerialHandle>,
    /// The device of each line channel we hold, by channel id.
    pub(super) channels: std::collections::BTreeMap<ObjectId, ObjectId>,
    /// The level each channel's device last reported, by channel id.
    pub(super) levels: std::collections::BTreeMap<ObjectId, bool>,
}

impl Hardware {
    /// Nothing claimed yet, with the rules of `relays`.
    pub(super) fn new(bank: crate::plugins::relay_bank::RelayBank) -> Self {
        Hardware {
            relays: Default::default(),
            bank,
            queued: Default::default(),
            inputs: Vec::new(),
            presses: Vec::new(),
            serials: Default::default(),
            channels: Default::default(),
            levels: Default::default(),
        }
    }
}

/// A relay command waiting for the bank's answer (the dispatcher knows who waits for it).
#[derive(Debug)]
pub(super) struct Queued {
    /// The command id.
    cmd: String,
}

impl Agent {
    /// Runs a command on this instance: a state command for a relay we hold goes through the
    /// relay bank (answered now or when its dead time is over); anything else is executed and
    /// answered at once.
    pub(super) async fn run_local(&mut self, id: &ObjectId, req: &SetRequest, cmd: &str) {
        let ours = self.replica().get(id).is_some_and(|o| {
            !o.is_deleted()
                && o.text(model::KIND) == Some("relay")
                && claimants(self.replica(), o).contains(&self.uuid)
        });
        if ours && req.state.is_some() && self.hw.relays.contains_key(id) {
            return self.command_relay(id, req, cmd).await;
        }
        if !self.command_serial(id, req, cmd) {
            let reply = self.execute_local(id, req, cmd);
            self.dispatch.ran(cmd, reply);
        }
    }

    /// Hands a relay's state command to the bank, queued for the bank's answer.
    async fn command_relay(&mut self, id: &ObjectId, req: &SetRequest, cmd: &str) {
        let on = match req.state {
            Some(Switch::On) => true,
            Some(Switch::Off) => false,
            Some(Switch::Toggle) => !self.hw.bank.is_on(id).unwrap_or(false),
            None => return,
        };
        let moves = move_props(req);
        if !moves.is_empty() {
            self.record(id, moves);
        }
        let queued = Queued {
            cmd: cmd.to_string(),
        };
        self.hw
            .queued
            .entry(id.clone())
            .or_default()
            .push_back(queued);
        match self.hw.bank.command(id, on, Instant::now()) {
            Ok(actions) => self.perform(actions).await,
            Err(e) => {
                if let Some(q) = self.pop_queued(id) {
                    let reply = self.reply(
                        id.as_str(),
                        Some(q.cmd.clone()),
                        Outcome::Failed,
                        Some(e.to_string()),
                    );
                    self.dispatch.ran(&q.cmd, reply);
                }
            }
        }
    }

    /// The oldest command queued on relay `id`.
    fn pop_queued(&mut self, id: &ObjectId) -> Option<Queued> {
        let queue = self.hw.queued.get_mut(id)?;
        let q = queue.pop_front();
        if queue.is_empty() {
            self.hw.queued.remove(id);
        }
        q
    }

    /// Performs the bank's actions in order; a failed drive replaces the rest with what the
    /// bank says instead.
    pub(super) async fn perform(&mut self, actions: Vec<RelayAction>) {
        let mut todo: VecDeque<RelayAction> = actions.into();
        let mut failure: Option<String> = None;
        while let Some(action) = todo.pop_front() {
            match action {
                RelayAction::Drive { id, on } => {
                    let result = match self.hw.relays.get_mut(&id) {
                        Some(relay) => relay.switch(on).map_err(|e| e.to_string()),
                        None => Err("it is not claimed by this instance".to_string()),
                    };
                    if let Err(why) = result {
                        tracing::error!(object = %id, state = on_off(on), error = %why, "cannot switch relay");
                        let rest: Vec<RelayAction> = todo.drain(..).collect();
                        todo.extend(self.hw.bank.drive_failed(&id, on, &rest));
                        failure = Some(format!("cannot switch {id} {}: {why}", on_off(on)));
                    }
                }
                RelayAction::StartTimer { timer, after } => {
                    let tx = self.internal.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send(Internal::RelayTimer(timer));
                    });
                }
                RelayAction::Report { id, on, reason } => self.report(&id, on, &reason).await,
                RelayAction::Reply { id, .. } => {
                    let Some(q) = self.pop_queued(&id) else {
                        continue;
                    };
                    tracing::info!(object = %id, command = %q.cmd, "command executed");
                    let mut reply = self.reply(id.as_str(), Some(q.cmd.clone()), Outcome::Ok, None);
                    reply.state = Some(self.state_json(&id));
                    self.dispatch.ran(&q.cmd, reply);
                }
                RelayAction::Fail { id } => {
                    let Some(q) = self.pop_queued(&id) else {
                        continue;
                    };
                    let why = failure.clone().unwrap_or_else(|| {
                        format!("a relay {id} depends on could not be switched")
                    });
                    let reply =
                        self.reply(id.as_str(), Some(q.cmd.clone()), Outcome::Failed, Some(why));
                    self.dispatch.ran(&q.cmd, reply);
                }
            }
        }
    }

    /// Records a relay's change with its reason; a change no command asked for (pulse end,
    /// watchdog, interlock, stop) is also published as an event saying why.
    async fn report(&mut self, id: &ObjectId, on: bool, reason: &Reason) {
        let why = reason.to_string();
        self.record(
            id,
            vec![
                (model::STATE.into(), on_off(on).into()),
                (REASON.into(), why.as_str().into()),
            ],
        );
        if *reason == Reason::Command {
            return;
        }
        tracing::info!(object = %id, state = on_off(on), reason = %why, "relay switched by its rules");
        let payload = serde_json::json!({ "state": on_off(on), "reason": why }).to_string();
        self.publish_event(id, payload).await;
    }

    /// The level our hardware `id` is at: a relay we hold, or a channel whose device said.
    fn hardware_level(&self, id: &ObjectId) -> Option<bool> {
        if self.hw.relays.contains_key(id) {
            return self.hw.bank.is_on(id);
        }
        self.hw.levels.get(id).copied()
    }

    /// The house shows what our hardware does. A state another instance wrote for a relay
    /// or channel we hold (a retired Pi whose clock ran ahead, whose write still wins by its
    /// stamp) is written over with the level the hardware is at (the simulator's seed 2651).
    pub(super) fn keep_hardware_state(&mut self, id: &ObjectId) {
        let Some(on) = self.hardware_level(id) else {
            return;
        };
        let shown = self.replica().get(id).and_then(|o| o.text(model::STATE));
        if shown == Some(on_off(on)) || self.node.fenced().is_some() {
            return;
        }
        let shown = shown.map(str::to_owned);
        crate::ratelimit::warn_limited!(self.warns, "foreign-state", object = %id, shown = ?shown, hardware = on_off(on), "the house showed another state than our hardware is at; writing the hardware's");
        self.record(id, vec![(model::STATE.into(), on_off(on).into())]);
    }

    /// Publishes an event of object `id` on `<base>/<id>/event` (not retained).
    pub(super) async fn publish_event(&self, id: &ObjectId, payload: String) {
        let topic = api::event_topic(&self.base, id);
        if let Err(e) = self
            .link
            .publish(&topic, Qos::AtLeastOnce, false, payload)
            .await
        {
            tracing::warn!(%topic, error = %e, "could not publish an event");
        }
    }

    /// On a clean stop: relays go to their `on-stop` state, and commands still waiting for a
    /// dead time are answered `unavailable`.
    pub(super) async fn stop_relays(&mut self) {
        let actions = self.hw.bank.stop_actions();
        self.perform(actions).await;
        let ids: Vec<ObjectId> = self.hw.queued.keys().cloned().collect();
        for id in ids {
            while let Some(q) = self.pop_queued(&id) {
                let why = "the agent is stopping".to_string();
                let reply = self.reply(
                    id.as_str(),
                    Some(q.cmd.clone()),
                    Outcome::Unavailable,
                    Some(why),
                );
                self.dispatch.ran(&q.cmd, reply);
            }
        }
        self.settle_commands().await;
        self.publish_pending().await;
    }

    /// Feeds input `i`'s debounced level to its press detector.
    pub(super) async fn press_level(&mut self, i: usize, on: bool) {
        let Some(detector) = self.hw.presses.get_mut(i) else {
            return;
        };
        let actions = detector.level(on, Instant::now());
        self.perform_press(i, actions).await;
    }

    /// Performs a press detector's actions for input `i`.
    pub(super) async fn perform_press(&mut self, i: usize, actions: Vec<PressAction>) {
        for action in actions {
            match action {
                PressAction::StartTimer { timer, after } => {
                    let tx = self.internal.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send(Internal::PressTimer(i, timer));
                    });
                }
                PressAction::Event(press) => {
                    let Some(id) = self.hw.inputs.get(i).map(|(id, _)| id.clone()) else {
                        continue;
                    };
                    let word = press.as_str();
                    tracing::info!(object = %id, press = word, "button pressed");
                    let repeated = self
                        .node
                        .replica()
                        .get(&id)
                        .and_then(|o| o.text(EVENT))
                        .is_some_and(|last| last == word);
                    // The same press twice must still be a change, so automations see it: the
                    // property passes through "" (which never triggers) first.
                    let mut props: Vec<(String, Value)> = Vec::new();
                    if repeated {
                        props.push((EVENT.into(), "".into()));
                    }
                    props.push((EVENT.into(), word.into()));
                    self.record(&id, props);
                    self.publish_event(&id, word.to_string()).await;
                }
            }
        }
    }
}

/// The room and position changes a request carries.
pub(super) fn move_props(req: &SetRequest) -> Vec<(String, Value)> {
    let mut props: Vec<(String, Value)> = Vec::new();
    if let Some(room) = &req.room {
        props.push((model::ROOM.into(), room.trim().into()));
    }
    if let Some(x) = req.x {
        props.push((model::X.into(), x.into()));
    }
    if let Some(y) = req.y {
        props.push((model::Y.into(), y.into()));
    }
    props
}
