//! The faults a run injects: cut links, crashes (with the unsynced tail of the log kept,
//! lost or torn), full disks, clock jumps and links that flap.

use super::Sim;

impl Sim {
    /// Cuts links, crashes instances, fills disks and jumps clocks.
    pub(super) fn inject_faults(&mut self) {
        let n = self.nodes.len();
        if self.rng.chance(self.faults.cut) {
            let a = self.rng.below(n as u64) as usize;
            let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
            let until = self.step + 50 + self.rng.below(1000);
            self.cuts.insert((a.min(b), a.max(b)), until);
            self.count("cut");
            self.offline(a, b);
            self.offline(b, a);
        }
        if self.rng.chance(self.faults.crash) {
            let i = self.rng.below(n as u64) as usize;
            self.crash(i);
        }
        // A full disk is when a crash hurts most: the changes it refused are only in memory.
        for i in 0..n {
            if self.nodes[i].disk.full_until > self.step && self.rng.chance(self.faults.crash * 5.0)
            {
                self.crash(i);
            }
        }
        if self.rng.chance(self.faults.flap) {
            // A link drops and comes back at once: both sides sync again.
            let a = self.rng.below(n as u64) as usize;
            let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
            self.count("flap");
            self.link_ready(a, b);
            self.link_ready(b, a);
        }
        if self.rng.chance(self.faults.disk_full) {
            let i = self.rng.below(n as u64) as usize;
            self.nodes[i].disk.full_until = self.step + 20 + self.rng.below(500);
            self.count("disk-full");
        }
        if self.rng.chance(self.faults.clock_jump) {
            let i = self.rng.below(n as u64) as usize;
            self.nodes[i].skew_ms = self.rng.below(60_001) as i64 - 30_000;
            self.count("clock-jump");
        }
        // A cut heals when its time comes: both sides sync.
        let healed: Vec<(usize, usize)> = self
            .cuts
            .iter()
            .filter(|(_, until)| **until == self.step)
            .map(|(pair, _)| *pair)
            .collect();
        for (a, b) in healed {
            self.link_ready(a, b);
            self.link_ready(b, a);
        }
    }

    /// `a` stops hearing `b`.
    pub(super) fn offline(&mut self, a: usize, b: usize) {
        let peer = self.nodes[b].uuid;
        if let Some(node) = self.nodes[a].node.as_mut() {
            node.peer_offline(peer);
        }
    }

    /// Instance `i` dies: a killed process keeps what the kernel holds; a power cut loses
    /// it, or tears it at a random record.
    fn crash(&mut self, i: usize) {
        if self.nodes[i].node.is_none() {
            return;
        }
        let how = self.rng.below(3);
        let keep = self.rng.below(self.nodes[i].disk.written.len() as u64 + 1) as usize;
        let written = &mut self.nodes[i].disk.written;
        let what = match how {
            0 => "kill-9",
            1 => {
                written.clear();
                "power-cut"
            }
            _ => {
                written.truncate(keep);
                "torn-write"
            }
        };
        self.count(what);
        self.maybe_lose_store(i);
        let inst = &mut self.nodes[i];
        inst.node = None;
        inst.kept.crashes += 1;
        inst.disk.pending.clear();
        inst.awaiting.clear();
        inst.back_at = self.step + 10 + self.rng.below(300);
        for j in 0..self.nodes.len() {
            if j != i {
                self.offline(j, i);
            }
        }
    }
}
