//! The simulated world around the nodes: a seeded random source, the faults a run draws,
//! disks, and how replicas are compared.

use super::super::node::{Msg, Node};
use crate::model::Value;
use crate::replica::Update;
use std::collections::{BTreeMap, BTreeSet};

/// A small, seeded random source (splitmix64): the same seed gives the same run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A source for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// How hostile a run is.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Largest delivery delay, ms (messages overtake each other within it).
    pub max_delay_ms: u64,
    /// Probability per step that a link between two instances is cut.
    pub cut: f64,
    /// Probability per step that an instance crashes.
    pub crash: f64,
    /// Probability per step that a link drops and comes back at once.
    pub flap: f64,
    /// Probability per step that an instance's disk starts refusing writes.
    pub disk_full: f64,
    /// Probability per step that an instance's clock jumps.
    pub clock_jump: f64,
    /// Probability that an fsync covers only some of what was written (it began earlier).
    pub partial_sync: f64,
    /// Probability per step that a client writes at some instance.
    pub write: f64,
}

impl Faults {
    /// Faults of every kind, drawn for one seed.
    pub fn random(rng: &mut Rng) -> Self {
        Faults {
            loss: [0.0, 0.01, 0.1, 0.3][rng.below(4) as usize],
            duplicate: [0.0, 0.05, 0.2][rng.below(3) as usize],
            max_delay_ms: [1, 20, 200, 1500][rng.below(4) as usize],
            cut: [0.0, 0.002, 0.01][rng.below(3) as usize],
            crash: [0.0, 0.001, 0.004][rng.below(3) as usize],
            flap: [0.0, 0.005, 0.02][rng.below(3) as usize],
            disk_full: [0.0, 0.002, 0.006][rng.below(3) as usize],
            clock_jump: [0.0, 0.001][rng.below(2) as usize],
            partial_sync: [0.0, 0.3, 0.8][rng.below(3) as usize],
            write: [0.02, 0.05, 0.2][rng.below(3) as usize],
        }
    }
}

/// One instance's simulated disk: what was fsynced, what the kernel holds, and what waits
/// in memory while the disk refuses writes.
#[derive(Clone, Debug, Default)]
pub(super) struct Disk {
    /// Synced: survives anything.
    pub(super) durable: Vec<Update>,
    /// Written, not synced: survives a killed process, not a power cut.
    pub(super) written: Vec<Update>,
    /// Waiting in the process while the disk refuses writes.
    pub(super) pending: Vec<Update>,
    /// The disk refuses writes until this step.
    pub(super) full_until: u64,
    /// The fence is up, as the agent's `<data dir>/fenced` says: from a store lost from
    /// outside until the node lifts it; every start meanwhile is fenced (`lost.rs`).
    pub(super) fenced: bool,
    /// The peers this instance heard from, as the agent's `known-peers.json` keeps them:
    /// beside the store, so a store lost from outside leaves them.
    pub(super) known: BTreeSet<uuid::Uuid>,
}

/// What must agree between replicas: every register's value and stamp, by object and
/// property.
pub(super) type View = BTreeMap<(String, String), (Value, crate::clock::Stamp)>;

/// One replica's [`View`].
pub(super) fn view(node: &Node) -> View {
    let mut v = BTreeMap::new();
    for (id, obj) in node.replica().objects() {
        for (prop, reg) in &obj.props {
            v.insert(
                (id.to_string(), prop.to_owned()),
                (reg.value.clone(), reg.stamp),
            );
        }
    }
    v
}

/// The first register two views disagree on, for the failure message; `None` when they
/// all agree.
pub(super) fn first_difference(views: &[Option<View>]) -> Option<String> {
    let keys: BTreeSet<&(String, String)> = views.iter().flatten().flat_map(|v| v.keys()).collect();
    for key in keys {
        let values: Vec<_> = views
            .iter()
            .map(|v| {
                v.as_ref()
                    .map(|v| v.get(key).map(|(val, st)| (val, st.wall_ms, st.counter)))
            })
            .collect();
        if values.windows(2).any(|w| w[0] != w[1]) {
            return Some(format!("{}.{}: {values:?}", key.0, key.1));
        }
    }
    None
}

/// A message encoded and decoded as the agents exchange it.
pub(super) fn wire_round_trip(msg: Msg) -> Msg {
    fn again<T: serde::Serialize + serde::de::DeserializeOwned>(v: T) -> T {
        let bytes = serde_json::to_vec(&v).expect("a mesh message encodes");
        serde_json::from_slice(&bytes).expect("a mesh message decodes")
    }
    match msg {
        Msg::Beat(b) => Msg::Beat(again(b)),
        Msg::Updates(b) => Msg::Updates(again(b)),
        Msg::SyncReq(r) => Msg::SyncReq(again(r)),
        Msg::SyncPage(p) => Msg::SyncPage(again(p)),
    }
}
