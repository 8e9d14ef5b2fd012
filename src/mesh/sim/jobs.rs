//! Automations in the simulation. Instance 0 configures one rule, "when the scene turns ON,
//! toggle `relay-0`"; whichever instance records the scene's change evaluates the rule
//! (`mesh::automation::jobs_for`, as the agent does) and hands the job to its dispatcher once
//! the change is durable. [`Sim::check_jobs`] asserts after a healed run that no job is
//! answered twice, that every job handed out by an instance that stayed up is answered, and
//! that an `ok` for the relay comes from its holder after it switched for that job (the pin
//! log of `clients.rs` also holds a job's switches: a job never switches twice).

use super::commands::{relay_of, SCENE};
use super::Sim;
use crate::api::Reply;
use crate::mesh::automation::{jobs_for, ACTION, THEN, TO, WATCH, WHEN};
use crate::model::{self, ObjectId};

/// The rule's object id.
const RULE: &str = "scene-toggles-relay";

/// A job an instance handed out, and what it heard back.
pub(super) struct JobSent {
    /// The instance that handed it out, and its crash count then.
    pub from: usize,
    pub crashes: u64,
    /// The job's command id.
    pub id: String,
    /// Its target.
    pub target: String,
    /// The answers its instance got.
    pub answers: Vec<Reply>,
}

impl Sim {
    /// Instance 0 records the rule, as a configured automation is recorded at start.
    pub(super) fn record_rule(&mut self, i: usize) {
        if i != 0 {
            return;
        }
        let now = self.now(i);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let props = vec![
            (model::KIND.into(), "automation".into()),
            (WHEN.into(), SCENE.into()),
            (WATCH.into(), model::STATE.into()),
            (TO.into(), model::ON.into()),
            (THEN.into(), relay_of(0).as_str().into()),
            (ACTION.into(), "toggle".into()),
        ];
        if let Ok(id) = ObjectId::new(RULE) {
            node.record(&id, props, false, now);
        }
    }

    /// Turns instance `i`'s own recorded changes into jobs, and hands out those whose
    /// triggering update is durable.
    pub(super) fn hand_out_jobs(&mut self, i: usize) {
        let inst = &mut self.nodes[i];
        let Some(node) = inst.node.as_ref() else {
            return;
        };
        let triggered = std::mem::take(&mut inst.desk.triggered);
        for job in jobs_for(node.replica(), inst.uuid, &triggered) {
            if inst.desk.jobs.push(job.seq, job).is_err() {
                self.traffic
                    .violations
                    .push("more jobs wait for the disk than the bound".into());
                return;
            }
        }
        for job in inst.desk.jobs.ready(node.durable_seq()) {
            self.count("job");
            let crashes = self.nodes[i].kept.crashes;
            self.traffic.jobs.push(JobSent {
                from: i,
                crashes,
                id: job.id.clone(),
                target: job.target.clone(),
                answers: Vec::new(),
            });
            self.dispatch_at(i, |d, v| {
                d.job(v, job.rule, &job.target, job.id, job.req, Vec::new());
            });
        }
    }

    /// The answer to a job instance `i` handed out.
    pub(super) fn job_answered(&mut self, i: usize, reply: Reply) {
        let id = reply.id.clone().unwrap_or_default();
        let sent = self
            .traffic
            .jobs
            .iter_mut()
            .find(|j| j.id == id && j.from == i);
        match sent {
            Some(j) => j.answers.push(reply),
            None => self.traffic.violations.push(format!(
                "{} heard an answer to job {id} it never handed out",
                self.nodes[i].name
            )),
        }
    }

    /// The rules of automations after a healed run; `Err` names the first one broken.
    pub(super) fn check_jobs(
        &self,
        switched: &std::collections::BTreeMap<&str, usize>,
    ) -> Result<(), String> {
        for j in &self.traffic.jobs {
            let what = format!("job {} handed out by {}", j.id, self.nodes[j.from].name);
            let stayed_up = self.nodes[j.from].kept.crashes == j.crashes;
            self.check_answers(&what, &j.answers, stayed_up, &j.target, &j.id, switched)?;
        }
        Ok(())
    }
}
