//! Automations in the agent: the replicated properties of the configured rules, and the jobs
//! our own changes trigger (`mesh::automation::jobs_for`, without I/O), handed to the
//! dispatcher (`mesh::dispatch`) once the triggering update is durable. The dispatcher gives
//! each round-robin to a live instance (itself included), which routes the rule's command to
//! wherever it must run.

use super::Agent;
use crate::config::{Action, AutomationConfig};
use crate::mesh::automation::{jobs_for, ACTION, MOVE_ROOM, MOVE_X, MOVE_Y, THEN, TO, WATCH, WHEN};
use crate::mesh::dispatch::View;
use crate::model::{self, Value};
use crate::replica::Update;

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

impl Agent {
    /// Queues the jobs our own updates trigger.
    pub(super) fn trigger(&mut self, updates: &[Update]) {
        for job in jobs_for(self.node.replica(), self.uuid, updates) {
            if let Err(job) = self.jobs.push(job.seq, job) {
                tracing::error!(rule = %job.rule, command = %job.id, waiting = self.jobs.len(), "automation job dropped: too many jobs already wait for the disk to take their triggering change");
            }
        }
    }

    /// Dispatches the queued jobs whose triggering update is durable: a job's id comes from
    /// that update's seq, which a crash must never let us reuse.
    pub(super) async fn run_jobs(&mut self) {
        for job in self.jobs.ready(self.node.durable_seq()) {
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
