//! What this instance's config says about the house, made true in the replica without
//! overwriting what the house says: the agent runs it at start, the simulator at every
//! (re)start of an instance, with its config of the moment.
//!
//! - A declared object exists (`deleted` false) and carries this instance's claim; the
//!   properties the config decides (kind, name) are written when they differ.
//! - Where an object *starts* (room, position, a virtual object's state) is written only
//!   for a property the replica holds no value of, at the oldest stamp there is
//!   ([`crate::replica::Replica::prepare_initial`]): any value the mesh holds wins, also on
//!   a new or rebuilt instance whose store is empty and which syncs only later.
//! - An object this instance claimed that left its config loses the claim and, when no
//!   other instance claims it, is deleted.
//!
//! While the node is fenced (its store lost updates of ours that peers may hold,
//! [`super::fence`]), the whole reconciliation waits: which objects we claimed can only be
//! told once our lost claims are back.

use super::dispatch::claimants;
use super::fence::Deferred;
use super::node::{Node, Now};
use crate::model::{self, ObjectId, Value};
use std::collections::HashSet;
use uuid::Uuid;

/// The claim property of instance `uuid`.
pub fn claim_prop(uuid: Uuid) -> String {
    format!("{}{uuid}", model::CLAIM_PREFIX)
}

/// An object as this instance's config declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct Declared {
    /// Its id.
    pub id: ObjectId,
    /// What the config decides: written whenever the replica differs.
    pub fixed: Vec<(String, Value)>,
    /// Where it starts: written only where the replica holds no value.
    pub start: Vec<(String, Value)>,
}

/// An object whose claim [`Node::reconcile`] released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// The object.
    pub id: ObjectId,
    /// It was deleted too: no other instance claims it.
    pub deleted: bool,
}

impl Node {
    /// Makes the replica agree with `declared`, this instance's config (see the module doc);
    /// returns the objects it stopped claiming.
    pub fn reconcile(&mut self, declared: &[Declared], now: Now) -> Vec<Released> {
        self.reconcile_with(declared.iter().cloned(), now, |_| {})
    }

    /// [`Node::reconcile`], taking the declared objects one by one and calling `each` after
    /// every one, so the caller can hand what it asked of the store on at once: a config of
    /// thousands of objects would otherwise be held in memory whole, with all their updates,
    /// and the process keeps that peak.
    pub fn reconcile_with(
        &mut self,
        declared: impl IntoIterator<Item = Declared>,
        now: Now,
        mut each: impl FnMut(&mut Node),
    ) -> Vec<Released> {
        if self.fenced().is_some() {
            self.defer(Deferred::Reconcile(declared.into_iter().collect()));
            return Vec::new();
        }
        let me = self.uuid();
        let claim = claim_prop(me);
        let mut ids: HashSet<ObjectId> = HashSet::new();
        for Declared { id, fixed, start } in declared {
            let mut props = fixed;
            props.push((claim.clone(), true.into()));
            props.push((model::DELETED.into(), false.into()));
            self.record(&id, props, false, now);
            self.record_initial(&id, start, now);
            ids.insert(id);
            each(self);
        }
        let replica = self.replica();
        let gone: Vec<Released> = replica
            .objects()
            .filter(|(id, _)| !ids.contains(id))
            .filter_map(|(id, o)| {
                let holders = claimants(replica, o);
                holders.contains(&me).then(|| Released {
                    id: id.clone(),
                    deleted: holders.len() == 1,
                })
            })
            .collect();
        for r in &gone {
            let mut props = vec![(claim.clone(), false.into())];
            if r.deleted {
                props.push((model::DELETED.into(), true.into()));
            }
            self.record(&r.id, props, false, now);
        }
        gone
    }
}
