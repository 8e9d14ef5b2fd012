//! Which automation jobs a change triggers, without I/O: the agent and the simulator both ask
//! this, and hand the jobs to the dispatcher once the triggering update is durable.
//!
//! Rules are objects of kind `automation`: "when this object's property changes (to a
//! value), do that to another object". Each triggering change is evaluated once, by the
//! instance that originated it (it alone knows the change for certain and at once). The job's
//! command id is derived from the rule and the triggering update (origin UUID and seq), so
//! however often a job is retried after an executor dies, the target runs it once.

use crate::api::{SetRequest, Switch};
use crate::model::{self, Value};
use crate::replica::{Replica, Update};
use uuid::Uuid;

/// Property names of an automation object.
pub const WHEN: &str = "when";
pub const WATCH: &str = "watch";
pub const TO: &str = "to";
pub const THEN: &str = "then";
pub const ACTION: &str = "action";
pub const MOVE_ROOM: &str = "move-room";
pub const MOVE_X: &str = "move-x";
pub const MOVE_Y: &str = "move-y";

/// The property holding an input's last press pattern (`single`, `double`, `long`); its
/// empty value between two equal events is not an event.
pub const EVENT: &str = "event";

/// A rule to run for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The rule.
    pub rule: String,
    /// The object to command.
    pub target: String,
    /// The command id, derived from the rule and the event.
    pub id: String,
    /// What to do.
    pub req: SetRequest,
    /// The seq of the update that triggered it: the job leaves once that is durable.
    pub seq: u64,
}

/// The text of a value, as rules compare it (`ON`, a room name, a number).
fn text_of(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

/// The jobs that `me`'s own updates among `updates` trigger under the rules in `replica`.
pub fn jobs_for(replica: &Replica, me: Uuid, updates: &[Update]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for u in updates.iter().filter(|u| u.stamp.origin == me) {
        let value = text_of(&u.value);
        if u.prop == EVENT && value.is_empty() {
            continue;
        }
        for (rule_id, rule) in replica.objects() {
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
            jobs.push(Job {
                rule: rule_id.to_string(),
                target: target.to_string(),
                id: format!("auto-{rule_id}-{}-{}", me.simple(), u.seq),
                req,
                seq: u.seq,
            });
        }
    }
    jobs
}
