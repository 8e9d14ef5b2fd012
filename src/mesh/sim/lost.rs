//! A store lost from outside: now and then, as a crashed instance goes down, its store goes
//! with it (`store/` deleted, a disk swapped, an old backup put back), while its identity
//! stays. It comes back fenced (`mesh::fence`): no change of its own until peers have sent
//! its own updates back, so it never reuses a sequence number a peer holds; restarted again
//! meanwhile, it is fenced again (the agent's `<data dir>/fenced`). Acknowledged writes
//! (its own or any other instance's) that no other instance holds on disk are gone with the
//! store; every other one must be back everywhere once healed, and the replicas identical.

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
        let disk = &mut self.nodes[i].disk;
        disk.durable.clear();
        disk.written.clear();
        disk.fenced = true;
        self.lose_acked_only_on(i);
    }

    /// The disk of instance `i` is gone: acknowledged writes no other disk holds are gone too
    /// (the disk of an instance retired for good counts for nothing).
    pub(super) fn lose_acked_only_on(&mut self, i: usize) {
        let holders: Vec<&super::world::Disk> = (0..self.nodes.len())
            .filter(|&j| j != i && !self.is_retired(j))
            .map(|j| &self.nodes[j].disk)
            .collect();
        self.acked.retain(|u| {
            holders.iter().any(|disk| {
                disk.durable
                    .iter()
                    .any(|d| d.stamp.origin == u.stamp.origin && d.seq == u.seq)
            })
        });
    }
}
