//! Automations: "when this object's property changes (to a value), do that to another
//! object". Rules are objects of kind `automation`, so they replicate like everything else and
//! every instance knows every rule.
//!
//! Each triggering change is evaluated once, by the instance that originated it (it alone
//! knows the change for certain and at once). That instance hands the job to the dispatcher
//! (`mesh::dispatch`), which gives it round-robin to a live instance (itself included), which
//! routes the rule's command to wherever it must run.
//! The command id is derived from the rule and the triggering update (origin UUID and seq),
//! so however often a job is retried after an executor dies, the target runs it once.

use super::Agent;
use crate::api::{SetRequest, Switch};
use crate::config::{Action, AutomationConfig};
use crate::mesh::dispatch::View;
use crate::model::{self, Value};
use crate::replica::Update;

/// Property names of an automation object.
const WHEN: &str = "when";
const WATCH: &str = "watch";
const TO: &str = "to";
const THEN: &str = "then";
const ACTION: &str = "action";
const MOVE_ROOM: &str = "move-room";
const MOVE_X: &str = "move-x";
const MOVE_Y: &str = "move-y";

/// A rule to run for one event.
#[derive(Debug)]
pub(super) struct Job {
    /// The rule.
    rule: String,
    /// The object to command.
    target: String,
    /// The command id, derived from the rule and the event.
    id: String,
    /// What to do.
    req: SetRequest,
    /// The seq of the update that triggered it: the job leaves once that is durable.
    seq: u64,
}

/// The replicated properties of a rule.
pub(super) fn rule_props(a: &AutomationConfig) -> Vec<(String, Value)> {
    let action = match a.action {
        Action::On => "on",
        Action::Off => "off",
        Action::Toggle => "toggle",
        Action::Move => "move",
    };
    let mut props: Vec<(String, Value)> = vec![
        (model::KIND.into(), "automation".into()),
        (model::DELETED.into(), false.into()),
        (WHEN.into(), a.when.as_str().into()),
        (WATCH.into(), a.property.as_str().into()),
        (TO.into(), a.to.clone().unwrap_or_default().into()),
        (THEN.into(), a.then.as_str().into()),
        (ACTION.into(), action.into()),
    ];
    if let Some(room) = &a.room {
        props.push((MOVE_ROOM.into(), room.as_str().into()));
    }
    if let Some(x) = a.x {
        props.push((MOVE_X.into(), x.into()));
    }
    if let Some(y) = a.y {
        props.push((MOVE_Y.into(), y.into()));
    }
    props
}

/// The text of a value, as rules compare it (`ON`, a room name, a number).
fn text_of(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

impl Agent {
    /// Queues the jobs our own updates trigger.
    pub(super) fn trigger(&mut self, updates: &[Update]) {
        for u in updates.iter().filter(|u| u.stamp.origin == self.uuid) {
            let value = text_of(&u.value);
            if u.prop == super::hardware::EVENT && value.is_empty() {
                // The reset between two identical press events is not an event.
                continue;
            }
            for (rule_id, rule) in self.node.replica().objects() {
                let matches = !rule.is_deleted()
                    && rule.text(model::KIND) == Some("automation")
                    && rule.text(WHEN) == Some(u.object.as_str())
                    && rule.text(WATCH) == Some(u.prop.as_str())
                    && rule.text(TO).is_none_or(|to| to.is_empty() || to == value);
                if !matches {
                    continue;
                }
                let (Some(target), Some(action)) = (rule.text(THEN), rule.text(ACTION)) else {
                    continue;
                };
                let mut req = SetRequest::default();
                match action {
                    "on" => req.state = Some(Switch::On),
                    "off" => req.state = Some(Switch::Off),
                    "toggle" => req.state = Some(Switch::Toggle),
                    "move" => {
                        req.room = rule.text(MOVE_ROOM).map(str::to_string);
                        req.x = rule.number(MOVE_X);
                        req.y = rule.number(MOVE_Y);
                    }
                    _ => continue,
                }
                self.jobs.push(Job {
                    rule: rule_id.to_string(),
                    target: target.to_string(),
                    id: format!("auto-{rule_id}-{}-{}", self.uuid.simple(), u.seq),
                    req,
                    seq: u.seq,
                });
            }
        }
    }

    /// Dispatches the queued jobs whose triggering update is durable: a job's id comes from
    /// that update's seq, which a crash must never let us reuse.
    pub(super) async fn run_jobs(&mut self) {
        let durable = self.node.durable_seq();
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.jobs)
            .into_iter()
            .partition(|j| j.seq <= durable);
        self.jobs = later;
        for job in ready {
            tracing::info!(rule = %job.rule, command = %job.id, "automation triggered");
            let (rule, id) = (job.rule.clone(), job.id.clone());
            let view = super::forward::view!(self);
            let picked =
                self.dispatch
                    .job(&view, job.rule, &job.target, job.id, job.req, Vec::new());
            if let Some(u) = picked {
                let runner = match u == self.uuid {
                    true => self.name.clone(),
                    false => view.name(u),
                };
                tracing::info!(%rule, command = %id, %runner, "automation job handed out");
            }
        }
        self.settle_commands().await;
    }
}
