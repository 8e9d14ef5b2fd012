//! A store lost from outside: now and then, as a crashed instance goes down, its store goes
//! with it (`store/` deleted, a disk swapped, an old backup put back), while its identity
//! stays. It comes back fenced (`mesh::fence`): no change of its own until peers have sent
//! its own updates back, so it never reuses a sequence number a peer holds; restarted again
//! meanwhile, it is fenced again (the agent's `<data dir>/fenced`). Its own
//! acknowledged writes that no other instance holds on disk are gone with the store; every
//! other one must be back everywhere once healed, and the replicas identical.

use super::Sim;

impl Sim {
    /// From now on, a crash takes the store with it with chance `p` (none by default: see
    /// `tests::stores_lost_from_outside`).
    pub fn losing_stores(mut self, p: f64) -> Self {
        self.store_loss = p;
        self
    }

    /// Instance `i`, just crashed, may lose its store (see the module doc).
    pub(super) fn maybe_lose_store(&mut self, i: usize) {
        if self.store_loss == 0.0 || !self.rng.chance(self.store_loss) {
            return;
        }
        self.count("store-lost");
        let uuid = self.nodes[i].uuid;
        let disk = &mut self.nodes[i].disk;
        disk.durable.clear();
        disk.written.clear();
        disk.fenced = true;
        let nodes = &self.nodes;
        self.acked.retain(|u| {
            u.stamp.origin != uuid
                || nodes.iter().enumerate().any(|(j, n)| {
                    j != i
                        && n.disk
                            .durable
                            .iter()
                            .any(|d| d.stamp.origin == uuid && d.seq == u.seq)
                })
        });
    }
}
