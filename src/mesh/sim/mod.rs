//! A deterministic simulation of a mesh: several [`Node`]s, the protocol the agents run,
//! on a simulated network and simulated disks, driven through faults by one seed.
//!
//! Everything that is random comes from the seed: which messages are lost, duplicated,
//! delayed or reordered, when links are cut and healed, when an instance crashes (losing or
//! tearing the part of its log not yet synced) and restarts, when its disk refuses writes,
//! how far its clock is off and when it jumps, and the writes and commands clients make
//! (every instance runs the dispatcher too: `commands.rs`). After the faults the network
//! heals and every instance comes back; [`Sim::check`] then asserts the invariants:
//! identical replicas, every acknowledged write present (or overwritten by a newer one),
//! bounded state, and the rules of commands. A failing seed is reproduced with
//! `SIM_SEED=<seed> cargo test --lib mesh::sim::tests::one_seed`.

mod check;
mod clients;
mod commands;
mod config;
mod faults;
mod jobs;
mod lost;
mod retire;
mod serial;
#[cfg(test)]
mod tests;
mod world;

use world::{wire_round_trip, Disk};
pub use world::{Faults, Rng};

use super::node::{Msg, Node, Now, Persist, Send};
use crate::model::{ObjectId, Value};
use crate::replica::{Replica, Update};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Milliseconds of simulated time per step.
const STEP_MS: u64 = 10;

/// One simulated instance.
struct Instance {
    /// Its identity.
    uuid: Uuid,
    /// Its name.
    name: String,
    /// Its signing key.
    key: ed25519_dalek::SigningKey,
    /// The protocol, while the process runs.
    node: Option<Node>,
    /// Its disk.
    disk: Disk,
    /// How far its wall clock is off, ms.
    skew_ms: i64,
    /// Own updates written and waiting for the fsync that acknowledges them.
    awaiting: Vec<Update>,
    /// Restarts at this step, while crashed.
    back_at: u64,
    /// Its commands, while the process runs.
    desk: commands::Desk,
    /// What its commands leave behind a crash: pins and decided answers.
    kept: commands::Kept,
}

/// What travels between instances.
#[derive(Clone, Debug)]
enum Packet {
    /// The replication protocol.
    Mesh(Msg),
    /// A command forwarded to its executor.
    Cmd(crate::mesh::proto::Forward),
    /// The executor's answer.
    Answer(crate::mesh::proto::ForwardReply),
}

/// A message on the simulated network.
#[derive(Debug)]
struct InFlight {
    /// Delivered at this step.
    at: u64,
    /// Tie breaker: the order it was sent in.
    order: u64,
    /// Sender and receiver, by index.
    from: usize,
    to: usize,
    /// What it carries.
    msg: Packet,
}

/// A run of the simulation.
pub struct Sim {
    /// The random source of this run.
    rng: Rng,
    /// The faults it draws from.
    faults: Faults,
    /// The instances.
    nodes: Vec<Instance>,
    /// Messages in flight.
    net: Vec<InFlight>,
    /// Links cut, by instance pair (lower index first), until a step.
    cuts: BTreeMap<(usize, usize), u64>,
    /// The current step.
    step: u64,
    /// Messages sent so far.
    sent: u64,
    /// Monotonic time zero.
    base: Instant,
    /// Every own update acknowledged (durable at its origin).
    acked: Vec<Update>,
    /// Largest footprint seen, for the bound check.
    pub worst: super::node::Footprint,
    /// Counts of what happened, for the report.
    pub stats: BTreeMap<&'static str, u64>,
    /// Client commands and pin switches.
    traffic: clients::Traffic,
    /// An instance retired for good, in some runs (`retire.rs`).
    retirement: retire::Retirement,
    /// What each instance's config declares (`config.rs`).
    configs: config::Configs,
    /// Chance that a crash takes the store with it (`lost.rs`).
    store_loss: f64,
}

/// The objects clients write.
const OBJECTS: [&str; 6] = ["hall-light", "porch", "pump", "boiler", "blinds", "fan"];

impl Sim {
    /// A mesh of `n` instances for `seed`.
    pub fn new(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed);
        let faults = Faults::random(&mut rng);
        let nodes = (0..n)
            .map(|i| {
                let mut key_bytes = [0u8; 32];
                for chunk in key_bytes.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next().to_le_bytes());
                }
                Instance {
                    uuid: Uuid::from_u64_pair(rng.next(), rng.next()),
                    name: format!("pi{i}"),
                    key: ed25519_dalek::SigningKey::from_bytes(&key_bytes),
                    node: None,
                    disk: Disk::default(),
                    skew_ms: rng.below(4001) as i64 - 2000,
                    awaiting: Vec::new(),
                    back_at: 0,
                    desk: Default::default(),
                    kept: Default::default(),
                }
            })
            .collect();
        let mut sim = Sim {
            rng,
            faults,
            nodes,
            net: Vec::new(),
            cuts: BTreeMap::new(),
            step: 0,
            sent: 0,
            base: Instant::now(),
            acked: Vec::new(),
            worst: Default::default(),
            stats: BTreeMap::new(),
            traffic: Default::default(),
            retirement: retire::Retirement::new(seed, n),
            configs: config::Configs::new(seed, n),
            store_loss: 0.0,
        };
        for i in 0..n {
            sim.start(i);
        }
        sim
    }

    /// The faults this run draws from.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The time at instance `i`.
    fn now(&self, i: usize) -> Now {
        let ms = self.step * STEP_MS;
        let wall = 1_800_000_000_000i64 + ms as i64 + self.nodes[i].skew_ms;
        Now {
            at: self.base + Duration::from_millis(ms),
            wall_ms: wall.max(0) as u64,
        }
    }

    /// Counts an event.
    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    /// Starts (or restarts) instance `i` from what its disk kept.
    fn start(&mut self, i: usize) {
        let now = self.now(i);
        let inst = &mut self.nodes[i];
        let mut replica = Replica::new(inst.uuid);
        replica.set_signer(inst.key.clone());
        // Opening the store makes what it reads durable (`replay_log`): a killed process
        // left it in the page cache, and it is about to be served as durable.
        inst.disk.durable.append(&mut inst.disk.written);
        for u in &inst.disk.durable {
            replica.apply(u, now.wall_ms);
        }
        let mut node = Node::new(inst.uuid, &inst.name, replica);
        if inst.disk.fenced {
            node.fence("the store was lost", now);
            node.fence_expects(inst.disk.known.iter().copied());
        }
        let props = crate::membership::member_props(&inst.name, &inst.key.verifying_key());
        node.record(&crate::membership::member_id(inst.uuid), props, false, now);
        inst.node = Some(node);
        self.reconcile_config(i);
        let inst = &mut self.nodes[i];
        inst.disk.pending.clear();
        inst.awaiting.clear();
        self.start_commands(i);
        self.settle(i);
        let peers: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i).collect();
        for j in peers {
            self.link_ready(i, j);
            self.link_ready(j, i);
        }
    }

    /// Whether `a` and `b` can talk now.
    fn linked(&self, a: usize, b: usize) -> bool {
        let pair = (a.min(b), a.max(b));
        self.nodes[a].node.is_some()
            && self.nodes[b].node.is_some()
            && self.cuts.get(&pair).is_none_or(|until| *until <= self.step)
    }

    /// `a`'s link to `b` is up: `a` syncs from `b`.
    fn link_ready(&mut self, a: usize, b: usize) {
        if !self.linked(a, b) {
            return;
        }
        let now = self.now(a);
        let peer = self.nodes[b].uuid;
        if let Some(node) = self.nodes[a].node.as_mut() {
            node.link_ready(peer, now);
        }
        self.settle(a);
    }

    /// After an event at instance `i`, as the agent does: the node's part, then what the
    /// dispatcher asks.
    fn settle(&mut self, i: usize) {
        self.keep_levels(i);
        self.settle_node(i);
        self.follow_retirement(i);
        self.settle_commands(i);
    }

    /// Write what the node asked for, fsync (group commit), then send what it wants sent.
    fn settle_node(&mut self, i: usize) {
        let step = self.step;
        let inst = &mut self.nodes[i];
        let Some(node) = inst.node.as_mut() else {
            return;
        };
        // Our own updates are written at once; a peer's wait in the process for the next
        // fsync; everything waits while the disk refuses writes.
        let full = inst.disk.full_until > step;
        for Persist { updates, own } in node.take_store() {
            if own {
                inst.awaiting.extend(updates.iter().cloned());
                inst.desk.triggered.extend(updates.iter().cloned());
            }
            inst.disk.pending.extend(updates);
            if own && !full {
                inst.disk.written.append(&mut inst.disk.pending);
            }
        }
        if node.has_unsaved() && !full {
            inst.disk.written.append(&mut inst.disk.pending);
            if self.rng.chance(self.faults.partial_sync) {
                // The fsync began before the last writes: it covers a prefix of them, and our
                // updates up to the last one in it (the agent's group commit on its thread).
                let k = self.rng.below(inst.disk.written.len() as u64 + 1) as usize;
                let covered: Vec<Update> = inst.disk.written.drain(..k).collect();
                let upto = covered
                    .iter()
                    .filter(|u| u.stamp.origin == inst.uuid)
                    .map(|u| u.seq)
                    .max();
                inst.disk.durable.extend(covered);
                if let Some(seq) = upto {
                    node.durable_upto(seq);
                    let n = inst.awaiting.iter().take_while(|u| u.seq <= seq).count();
                    self.acked.extend(inst.awaiting.drain(..n));
                }
                *self.stats.entry("partial-sync").or_default() += 1;
            } else {
                inst.disk.durable.append(&mut inst.disk.written);
                node.durable();
                self.acked.append(&mut inst.awaiting);
            }
        }
        // The agent removes its fence file once the fence lifted, after making the store
        // durable (`agent::fence_mark`): the updates peers sent back are only written yet.
        if inst.disk.fenced && node.fenced().is_none() && inst.disk.pending.is_empty() {
            inst.disk.durable.append(&mut inst.disk.written);
            node.durable();
            self.acked.append(&mut inst.awaiting);
            inst.disk.fenced = false;
        }
        node.stream();
        let sends = node.take_sends();
        let fp = node.footprint();
        self.worst.syncs = self.worst.syncs.max(fp.syncs);
        self.worst.serving = self.worst.serving.max(fp.serving);
        self.worst.held = self.worst.held.max(fp.held);
        self.worst.announced = self.worst.announced.max(fp.announced);
        self.worst.unjustified = self.worst.unjustified.max(fp.unjustified);
        for send in sends {
            match send {
                Send::All(msg) => {
                    for j in 0..self.nodes.len() {
                        if j != i {
                            self.transmit(i, j, Packet::Mesh(msg.clone()));
                        }
                    }
                }
                Send::To(peer, msg) => {
                    if let Some(j) = self.nodes.iter().position(|n| n.uuid == peer) {
                        self.transmit(i, j, Packet::Mesh(msg));
                    }
                }
            }
        }
    }

    /// Puts a message on the network, where it may be lost, duplicated and delayed.
    fn transmit(&mut self, from: usize, to: usize, msg: Packet) {
        if !self.linked(from, to) {
            self.count("msg-unlinked");
            return;
        }
        if self.rng.chance(self.faults.loss) {
            self.count("msg-lost");
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.below(self.faults.max_delay_ms / STEP_MS + 1);
            self.sent += 1;
            self.net.push(InFlight {
                at: self.step + 1 + delay,
                order: self.sent,
                from,
                to,
                msg: msg.clone(),
            });
        }
    }

    /// One step: faults, client writes, heartbeats, deliveries.
    fn tick(&mut self, chaos: bool) {
        self.step += 1;
        let n = self.nodes.len();
        if chaos {
            self.inject_faults();
        }
        self.retire_faults(chaos);
        for i in 0..n {
            if self.nodes[i].node.is_none() && self.nodes[i].back_at <= self.step {
                self.count("restart");
                self.start(i);
            }
        }
        if chaos && self.rng.chance(self.faults.write) {
            self.client_write();
        }
        if chaos {
            self.client_command();
        }
        self.finish_runs();
        if chaos {
            self.devices_change();
        }
        // Heartbeats, each instance at its own phase.
        for i in 0..n {
            if (self.step + i as u64 * 17).is_multiple_of(crate::mesh::peers::BEAT_MS / STEP_MS) {
                let now = self.now(i);
                let inst = &mut self.nodes[i];
                if let Some(node) = inst.node.as_mut() {
                    node.beat(now);
                    // The heartbeat's flush, as the agent's: what peers sent reaches the disk.
                    if inst.disk.full_until <= self.step {
                        inst.disk.written.append(&mut inst.disk.pending);
                        inst.disk.durable.append(&mut inst.disk.written);
                    }
                }
                self.beat_commands(i);
                self.settle(i);
            }
        }
        let step = self.step;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= step {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|m| (m.at, m.order));
        for m in due {
            self.deliver(m);
        }
    }

    /// Delivers one message, unless its link was cut meanwhile.
    fn deliver(&mut self, m: InFlight) {
        if !self.linked(m.from, m.to) {
            self.count("msg-cut");
            return;
        }
        let from = self.nodes[m.from].uuid;
        let now = self.now(m.to);
        self.heard(m.to, m.from);
        match m.msg {
            Packet::Mesh(msg) => {
                let msg = if self.rng.chance(0.05) {
                    // Now and then through the wire format, as the agents send it.
                    wire_round_trip(msg)
                } else {
                    msg
                };
                if let Some(node) = self.nodes[m.to].node.as_mut() {
                    node.receive(from, msg, now);
                }
            }
            Packet::Cmd(fwd) => self.receive_command(m.to, m.from, fwd, now),
            Packet::Answer(fr) => self.receive_answer(m.to, m.from, fr, now),
        }
        self.count("msg-delivered");
        self.settle(m.to);
    }

    /// A client changes an object at a random running instance.
    fn client_write(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let now = self.now(i);
        let object = OBJECTS[self.rng.below(OBJECTS.len() as u64) as usize];
        let props: Vec<(String, Value)> = match self.rng.below(3) {
            0 => vec![(
                "state".into(),
                if self.rng.chance(0.5) { "ON" } else { "OFF" }.into(),
            )],
            1 => vec![(
                "room".into(),
                format!("room{}", self.rng.below(5)).as_str().into(),
            )],
            _ => vec![
                ("x".into(), (self.rng.below(100) as f64).into()),
                ("y".into(), (self.rng.below(100) as f64).into()),
            ],
        };
        let touch = self.rng.chance(0.2);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let Ok(id) = ObjectId::new(object) else {
            return;
        };
        node.record(&id, props, touch, now);
        self.count("write");
        self.settle(i);
    }

    /// Runs `chaos_steps` steps of faults and writes, then heals everything and runs until
    /// the replicas agree or `heal_steps` pass.
    pub fn run(&mut self, chaos_steps: u64, heal_steps: u64) {
        for _ in 0..chaos_steps {
            self.tick(true);
        }
        self.cuts.clear();
        for i in 0..self.nodes.len() {
            self.nodes[i].disk.full_until = 0;
            self.nodes[i].skew_ms = self.nodes[i].skew_ms.clamp(-2000, 2000);
            if !self.is_retired(i) {
                self.nodes[i].back_at = self.nodes[i].back_at.min(self.step + 1);
            }
        }
        for _ in 0..heal_steps {
            self.tick(false);
            if self.step.is_multiple_of(50)
                && self.converged()
                && self.commands_settled()
                && self.retirement_done()
            {
                return;
            }
        }
    }
}
