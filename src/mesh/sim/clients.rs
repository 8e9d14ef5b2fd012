//! The clients of the simulation and what their commands must see. Three senders, whose
//! command ids collide on purpose, send relay and scene commands to any running instance and
//! retry now and then with the same id, on the same or another instance. What
//! [`Sim::check_commands`] asserts after a healed run:
//! - no command is answered twice, and one sent to an instance that stayed up is answered;
//! - an answer carries the client's own id;
//! - only the holder is ever asked to run a relay command, and no command switches a pin
//!   twice (a retry is answered from memory, not run again);
//! - `ok` for a relay comes from its holder, which switched the pin for that command;
//! - the dispatcher's maps stay within their bounds (checked at every heartbeat).

use super::commands::{relay_of, SCENE};
use super::serial::{channel_of, holds};
use super::Sim;
use crate::api::{Outcome, Reply, SetRequest, Switch};
use crate::broker::local::ResponseTo;
use crate::mesh::dispatch;
use std::collections::BTreeMap;

/// Probability per step that a client sends a command.
const COMMAND: f64 = 0.06;

/// A command a client sent, and what it heard back.
pub(super) struct Sent {
    /// The instance it was sent to.
    pub to: usize,
    /// That instance's crash count when it was sent.
    pub crashes: u64,
    /// Who sent it, the object, the client's id, what it asked.
    pub sender: String,
    pub object: String,
    pub id: String,
    pub req: SetRequest,
    /// The mesh key of the command.
    pub key: String,
    /// Every answer it got.
    pub answers: Vec<Reply>,
}

/// The commands side of a run.
#[derive(Default)]
pub(super) struct Traffic {
    /// Every command sent.
    pub sent: Vec<Sent>,
    /// Per sender, the last id used.
    pub ids: BTreeMap<String, u64>,
    /// Every pin switch: instance, object, command key.
    pub pins: Vec<(usize, String, String)>,
    /// Broken rules seen while running.
    pub violations: Vec<String>,
    /// Automation jobs handed out.
    pub jobs: Vec<super::jobs::JobSent>,
    /// Commands before this one are not retried: sent before an instance was rebuilt, their
    /// clients gave up long ago (a rebuilt Pi has lost the answers its old disk kept).
    pub retry_from: usize,
}

impl Sim {
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
        let recent = (self.traffic.sent.len() - self.traffic.retry_from).min(20) as u64;
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
            } else if self.rng.chance(0.6) {
                relay_of(self.rng.below(n as u64) as usize)
            } else {
                channel_of(self.rng.below(n as u64) as usize)
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

    /// The rules of commands after a healed run; `Err` names the first one broken.
    pub(super) fn check_commands(&self) -> Result<(), String> {
        if let Some(v) = self.traffic.violations.first() {
            return Err(v.clone());
        }
        let holder = |object: &str| (0..self.nodes.len()).find(|i| holds(*i, object));
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
        self.check_jobs(&switched)?;
        for (n, s) in self.traffic.sent.iter().enumerate() {
            let what = format!(
                "command {n} ({} id {} for {} at {})",
                s.sender, s.id, s.object, self.nodes[s.to].name
            );
            let stayed_up = self.nodes[s.to].kept.crashes == s.crashes;
            let answer =
                self.check_answers(&what, &s.answers, stayed_up, &s.object, &s.key, &switched)?;
            if let Some(answer) = answer.filter(|a| a.id.as_deref() != Some(s.id.as_str())) {
                return Err(format!("{what} answered with id {:?}", answer.id));
            }
        }
        Ok(())
    }

    /// What every command and job must see: at most one answer, one when the instance that
    /// waits for it stayed up, and an `ok` for a relay from its holder after it switched for
    /// it. The answer, if any.
    pub(super) fn check_answers<'a>(
        &self,
        what: &str,
        answers: &'a [Reply],
        stayed_up: bool,
        object: &str,
        key: &str,
        switched: &BTreeMap<&str, usize>,
    ) -> Result<Option<&'a Reply>, String> {
        if answers.len() > 1 {
            return Err(format!(
                "{what} answered {} times: {answers:?}",
                answers.len()
            ));
        }
        let Some(answer) = answers.first() else {
            if stayed_up {
                return Err(format!("{what} never answered"));
            }
            return Ok(None);
        };
        if answer.result != Outcome::Ok || object == SCENE {
            return Ok(Some(answer));
        }
        let holder = (0..self.nodes.len()).find(|i| holds(*i, object));
        let by_holder = holder.zip(answer.executed_by_uuid);
        if !by_holder.is_some_and(|(slot, by)| self.was_in_slot(slot, by)) {
            return Err(format!(
                "{what} answered ok by {:?}, not its holder",
                answer.executed_by
            ));
        }
        if !switched.contains_key(key) {
            return Err(format!(
                "{what} answered ok, but its holder never switched for it"
            ));
        }
        Ok(Some(answer))
    }
}
