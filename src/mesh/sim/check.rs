//! What must hold after a healed run: the replicas agree, no acknowledged write is lost,
//! state stays bounded, and the rules of commands ([`Sim::check_commands`]).

use super::world::{first_difference, view};
use super::Sim;
use crate::mesh::node::MAX_HELD;

impl Sim {
    /// Every instance (but one retired for good) runs and holds the same registers.
    pub(super) fn converged(&self) -> bool {
        let mut views = self.live().map(|n| n.node.as_ref().map(view));
        let Some(Some(first)) = views.next() else {
            return false;
        };
        let fenced = self
            .live()
            .any(|n| n.node.as_ref().is_some_and(|n| n.fenced().is_some()));
        !fenced && views.all(|v| v.as_ref() == Some(&first))
    }

    /// The instances that are meant to run: all but one retired for good.
    fn live(&self) -> impl Iterator<Item = &super::Instance> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.is_retired(*i))
            .map(|(_, n)| n)
    }

    /// The replica of the first live instance that runs: after [`Sim::converged`], the one
    /// every live instance holds.
    pub(super) fn agreed_replica(&self) -> Result<&crate::replica::Replica, String> {
        self.live()
            .find_map(|n| n.node.as_ref())
            .map(|n| n.replica())
            .ok_or_else(|| "no instance runs".to_string())
    }

    /// The invariants after a healed run; `Err` names the first one broken.
    pub fn check(&self) -> Result<(), String> {
        if !self.converged() {
            let views: Vec<_> = self.live().map(|n| n.node.as_ref().map(view)).collect();
            // Equal views that do not count as converged: one is missing or fenced, which
            // the loop below names.
            if let Some(diff) = first_difference(&views) {
                return Err(format!("replicas differ after healing: {diff}"));
            }
        }
        for inst in self.live() {
            let Some(node) = inst.node.as_ref() else {
                return Err(format!("{} is not running", inst.name));
            };
            if let Some(why) = node.fenced() {
                return Err(format!(
                    "{} is still fenced after healing ({why}); {}",
                    inst.name,
                    node.fence_state()
                ));
            }
            for u in &self.acked {
                let reg = node
                    .replica()
                    .get(&u.object)
                    .and_then(|o| o.props.get(&u.prop));
                match reg {
                    None => {
                        return Err(format!(
                            "{} lacks acknowledged {}.{} (origin {}, seq {})",
                            inst.name, u.object, u.prop, u.stamp.origin, u.seq
                        ))
                    }
                    Some(r) if r.loses_to(u) => {
                        return Err(format!(
                        "{} holds {}.{} = {:?}, older than acknowledged {:?} (origin {}, seq {})",
                        inst.name, u.object, u.prop, r.value, u.value, u.stamp.origin, u.seq
                    ))
                    }
                    Some(_) => {}
                }
            }
        }
        let peers = self.nodes.len();
        let w = &self.worst;
        if w.syncs > peers || w.serving > peers || w.announced > peers || w.unjustified > peers {
            return Err(format!(
                "per-peer state grew past the number of peers: {w:?}"
            ));
        }
        if w.held > MAX_HELD {
            return Err(format!("held updates past their bound: {w:?}"));
        }
        self.check_configs()?;
        self.check_hardware()?;
        self.check_commands()
    }
}
