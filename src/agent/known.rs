//! The peers this instance has known (`known-peers.json` in the data dir): the last address
//! each identified instance answered on. At start they are dialled beside `[mesh] peers`, so
//! an instance restarted while its only configured peer is down still finds the rest of the
//! mesh. At most [`MAX_KNOWN`] are kept, the least recently identified dropped first; a
//! retired instance is removed. A missing or unreadable file only means starting from
//! `[mesh] peers` (and invitations and mDNS) again.

use super::Agent;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Known peers kept, at most: as many as the links an instance keeps.
pub const MAX_KNOWN: usize = crate::mesh::peers::MAX_LINKS;

/// The file, in the data dir.
fn path(dir: &Path) -> PathBuf {
    dir.join("known-peers.json")
}

/// What the file holds: (instance, address), least recently identified first.
pub(super) type Known = Vec<(Uuid, String)>;

/// The known peers a previous run left in `dir`.
pub(super) fn load(dir: &Path) -> Known {
    let file = path(dir);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Known::new();
    };
    match serde_json::from_str::<Known>(&text) {
        Ok(mut known) => {
            let extra = known.len().saturating_sub(MAX_KNOWN);
            known.drain(..extra);
            known
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "ignoring an unreadable list of known peers; the configured ones are dialled");
            Known::new()
        }
    }
}

/// `known` with `uuid` last, at `addr`; false when that changes nothing.
pub(super) fn note(known: &mut Known, uuid: Uuid, addr: &str) -> bool {
    if known.last().is_some_and(|(u, a)| *u == uuid && a == addr) {
        return false;
    }
    known.retain(|(u, _)| *u != uuid);
    known.push((uuid, addr.to_string()));
    let extra = known.len().saturating_sub(MAX_KNOWN);
    known.drain(..extra);
    true
}

impl Agent {
    /// Remembers that `uuid` answered at `addr`.
    pub(super) fn remember_peer(&mut self, uuid: Uuid, addr: &str) {
        if note(&mut self.known, uuid, addr) {
            self.save_known();
        }
    }

    /// Forgets a retired instance's address.
    pub(super) fn forget_known(&mut self, uuid: Uuid) {
        let before = self.known.len();
        self.known.retain(|(u, _)| *u != uuid);
        if self.known.len() != before {
            self.save_known();
        }
    }

    /// Writes the file through a temporary one and a rename; a failure costs only a warning.
    fn save_known(&mut self) {
        let file = path(&self.data_dir);
        let tmp = file.with_extension("json.tmp");
        let text = serde_json::to_string(&self.known).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &file)) {
            crate::ratelimit::warn_limited!(self.warns, "known-peers", file = %file.display(), error = %e, "cannot keep the known peers; a restart dials only the configured ones");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_address_of_each_peer_is_kept_within_the_bound() {
        let mut known = Known::new();
        let u = |n: u128| Uuid::from_u128(n);
        assert!(note(&mut known, u(1), "10.0.0.1:1883"));
        assert!(!note(&mut known, u(1), "10.0.0.1:1883"), "nothing new");
        assert!(note(&mut known, u(2), "10.0.0.2:1883"));
        assert!(note(&mut known, u(1), "10.0.0.9:1883"), "moved");
        assert_eq!(
            known,
            vec![
                (u(2), "10.0.0.2:1883".into()),
                (u(1), "10.0.0.9:1883".into())
            ]
        );
        for n in 10..10 + MAX_KNOWN as u128 {
            note(&mut known, u(n), &format!("10.0.1.{n}:1883"));
        }
        assert_eq!(known.len(), MAX_KNOWN, "bounded");
        assert!(
            known.iter().all(|(u, _)| u.as_u128() >= 10),
            "oldest dropped first"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), serde_json::to_string(&known).unwrap()).unwrap();
        assert_eq!(load(dir.path()), known);
        std::fs::write(path(dir.path()), "not json").unwrap();
        assert!(load(dir.path()).is_empty(), "an unreadable file is ignored");
    }
}
