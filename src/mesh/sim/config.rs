//! The instances' configs, and how they change across restarts. Each instance declares its
//! relay and the scene (`commands.rs`), and some of [`DECLARABLE`] as virtual objects, with where they start; a restart may come with a
//! changed config (an object added or removed, its start moved), as a person edits
//! `pimesh.toml` and restarts the service. Every start reconciles the replica with the
//! config of the moment ([`crate::mesh::reconcile`], as the agent does). The objects are
//! among those clients write, so start values meet rooms and positions people set.
//!
//! What [`Sim::check_configs`] asserts after a healed run:
//! - every running instance claims exactly the objects its config declares, and none of
//!   those is deleted; its relay has no other claimant (a Pi rebuilt with a new identity
//!   holds it alone once its old self is forgotten: `retire.rs`);
//! - a start value from a config is held only at the oldest stamp: a config never writes
//!   over the house, so a room a client set survives restarts and config changes.
//!
//! The decisions come from a stream of their own, so the other faults a seed draws stay
//! the same.

use super::commands::{relay_of, SCENE};
use super::serial::channel_of;
use super::world::Rng;
use super::Sim;
use crate::mesh::dispatch::claimants;
use crate::mesh::reconcile::{claim_prop, Declared};
use crate::model::{self, ObjectId, Value};

/// The objects a config may declare (clients write them too: `Sim::client_write`).
const DECLARABLE: [&str; 4] = ["hall-light", "porch", "pump", "boiler"];
/// Chance that an object is in an instance's first config.
const IN_FIRST: f64 = 0.4;
/// Chance that a restart comes with a changed config.
const CHANGED: f64 = 0.4;
/// The start values a config gives: room `cfg-<k>`, x `1000 + k`, y `2000 + k`. Clients
/// never write such values, so one in a replica came from a config.
const START_FROM: f64 = 1000.0;

/// The configs of a run.
#[derive(Debug)]
pub(super) struct Configs {
    /// Its own random stream.
    rng: Rng,
    /// Each instance's config now: the objects it declares, by index into
    /// [`DECLARABLE`], and which start each has.
    of: Vec<Vec<(usize, u64)>>,
}

/// Object `k` of [`DECLARABLE`] as a config declares it, with start variant `start`.
fn declared(k: usize, start: u64) -> Declared {
    let id = ObjectId::new(DECLARABLE[k]).expect("declarable ids are valid");
    Declared {
        id,
        fixed: vec![
            (model::KIND.into(), "virtual".into()),
            (model::NAME.into(), DECLARABLE[k].into()),
        ],
        start: vec![
            (model::ROOM.into(), format!("cfg-{start}").as_str().into()),
            (model::X.into(), (START_FROM + start as f64).into()),
            (model::Y.into(), (2.0 * START_FROM + start as f64).into()),
            (model::STATE.into(), model::OFF.into()),
        ],
    }
}

/// Whether `v` is a start value some config gives for `prop`.
fn from_config(prop: &str, v: &Value) -> bool {
    match (prop, v) {
        (model::ROOM, Value::Text(t)) => t.starts_with("cfg-"),
        (model::X | model::Y, Value::Number(n)) => *n >= START_FROM,
        _ => false,
    }
}

impl Configs {
    /// First configs for `n` instances.
    pub(super) fn new(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed ^ 0xc0_f1_65_u64);
        let mut of = vec![Vec::new(); n];
        for config in &mut of {
            for k in 0..DECLARABLE.len() {
                if rng.chance(IN_FIRST) {
                    config.push((k, rng.below(3)));
                }
            }
        }
        Configs { rng, of }
    }

    /// Instance `i`'s config as it starts; a restart may change it first.
    fn at_start(&mut self, i: usize, restart: bool) -> Vec<Declared> {
        if restart && self.rng.chance(CHANGED) {
            let k = self.rng.below(DECLARABLE.len() as u64) as usize;
            let start = self.rng.below(3);
            let config = &mut self.of[i];
            match config.iter().position(|(o, _)| *o == k) {
                Some(at) if self.rng.chance(0.5) => {
                    config.remove(at);
                }
                Some(at) => config[at].1 = start,
                None => config.push((k, start)),
            }
        }
        self.of[i].iter().map(|(k, s)| declared(*k, *s)).collect()
    }
}

impl Sim {
    /// At (re)start of instance `i`, as the agent: reconcile its replica with its config.
    pub(super) fn reconcile_config(&mut self, i: usize) {
        let mut config = self.configs.at_start(i, self.step > 0);
        // What every config has: the instance's relay, its channel and the scene.
        let hardware = [
            (relay_of(i), "relay"),
            (channel_of(i), super::serial::KIND),
            (SCENE.to_string(), "virtual"),
        ];
        for (id, kind) in hardware {
            let id = ObjectId::new(id.as_str()).expect("relay and scene ids are valid");
            config.push(Declared {
                fixed: vec![
                    (model::KIND.into(), kind.into()),
                    (model::NAME.into(), id.as_str().into()),
                ],
                id,
                start: Vec::new(),
            });
        }
        let now = self.now(i);
        if let Some(node) = self.nodes[i].node.as_mut() {
            let released = node.reconcile(&config, now);
            *self.stats.entry("config-released").or_default() += released.len() as u64;
        }
    }

    /// The rules of configs (see the module doc), on the converged replica.
    pub(super) fn check_configs(&self) -> Result<(), String> {
        let replica = self.agreed_replica()?;
        for (i, inst) in self.nodes.iter().enumerate() {
            if self.is_retired(i) {
                continue;
            }
            let relay = ObjectId::new(relay_of(i)).expect("relay ids are valid");
            let holders = replica.get(&relay).map(|o| claimants(replica, o));
            if self.retirement_done() && holders != Some(vec![inst.uuid]) {
                return Err(format!(
                    "{} ({}) should hold {relay} alone, but its claimants are {holders:?}",
                    inst.name, inst.uuid
                ));
            }
            let claim = claim_prop(inst.uuid);
            for (k, name) in DECLARABLE.iter().enumerate() {
                let object = ObjectId::new(*name).expect("declarable ids are valid");
                let o = replica.get(&object);
                let claims = o.and_then(|o| o.value(&claim)) == Some(&Value::Bool(true));
                let declares = self.configs.of[i].iter().any(|(d, _)| *d == k);
                let deleted = o.is_some_and(|o| o.is_deleted());
                if declares && (!claims || deleted) {
                    return Err(format!(
                        "{} declares {name} but the house has it {} (claimed by it: {claims})",
                        inst.name,
                        if deleted { "deleted" } else { "not deleted" }
                    ));
                }
                if !declares && claims {
                    return Err(format!(
                        "{} still claims {name}, which left its config",
                        inst.name
                    ));
                }
            }
        }
        for name in DECLARABLE {
            let object = ObjectId::new(name).expect("declarable ids are valid");
            let Some(o) = replica.get(&object) else {
                continue;
            };
            for prop in [model::ROOM, model::X, model::Y] {
                if let Some(r) = o.props.get(prop) {
                    if from_config(prop, &r.value) && r.stamp.wall_ms != 0 {
                        return Err(format!(
                            "{name}.{prop} = {:?} from a config written over the house (stamp {:?})",
                            r.value, r.stamp
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
