//! The fence outlives a restart. An instance whose store lost its own updates makes no
//! change until peers have sent them back (`mesh::fence`); the loss is seen only at the
//! start that finds it. Restarted again before the fence lifted (a crash, a reboot, a
//! systemd restart), the store it now has looks whole, and without a record of the fence
//! the instance would number new updates after the few it got back, reusing sequence
//! numbers a peer holds for others (the simulator's `lost.rs` found it). So the fence is
//! written to `<data dir>/fenced` (with why) when it goes up, and removed once it lifted and
//! the updates the peers sent back are durable.

use super::Agent;
use crate::replica::sync_dir;
use std::io::Write as _;
use std::path::Path;

/// The file that says the fence is up.
pub const FENCE_FILE: &str = "fenced";

/// Why the fence of an earlier start is still up, if it is.
pub(super) fn read(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(FENCE_FILE)).ok()?;
    Some(text.trim().to_string())
}

/// Records durably that the fence is up, and why.
pub(super) fn write(data_dir: &Path, why: &str) -> std::io::Result<()> {
    let mut file = std::fs::File::create(data_dir.join(FENCE_FILE))?;
    file.write_all(why.as_bytes())?;
    file.sync_all()?;
    sync_dir(data_dir)
}

impl Agent {
    /// Puts the fence up, durably.
    pub(super) fn fence(&mut self, why: &str) {
        self.node.fence(why, crate::mesh::node::Now::real());
        // The peers known before may be all that still says who holds our updates.
        self.node
            .fence_expects(self.known.iter().map(|(uuid, _)| *uuid));
        match write(&self.data_dir, why) {
            Ok(()) => self.fence_marked = true,
            Err(e) => {
                tracing::error!(file = %self.data_dir.join(FENCE_FILE).display(), error = %e, "cannot record the fence on disk; a restart before it lifts would not keep it")
            }
        }
    }

    /// Once the fence lifted, removes its file (checked once per turn of the loop).
    pub(super) fn end_fence_mark(&mut self) {
        if !self.fence_marked || self.node.fenced().is_some() {
            return;
        }
        // Our own updates the peers sent back are only written yet: lost in a power cut
        // after the file is gone, the next start would number new updates after fewer of
        // ours than peers hold. So they are made durable first.
        if let Err(e) = self.store.flush() {
            crate::ratelimit::warn_limited!(self.warns, "fence-flush", error = %e, "cannot make our own updates the peers sent back durable; the fence's file stays until they are");
            return;
        }
        self.node.durable();
        let file = self.data_dir.join(FENCE_FILE);
        let removed = std::fs::remove_file(&file).and_then(|()| sync_dir(&self.data_dir));
        match removed {
            Ok(()) => self.fence_marked = false,
            Err(e) => {
                crate::ratelimit::warn_limited!(self.warns, "fence-file", file = %file.display(), error = %e, "cannot remove the fence's file; the next start will wait for peers again")
            }
        }
    }
}
