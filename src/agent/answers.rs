//! The recent answers on disk (`answers.log` in the data dir): a client that retries a
//! command after the agent restarted gets the answer it missed instead of running it again.
//!
//! Each decided answer is appended at the end of its event, in the kernel at once, before the
//! event's fsync of the store (an answer goes out before that fsync too). The file stays open
//! for appending, and is rewritten whole, through a temporary file and a rename, when it
//! holds [`REWRITE_AT`] windows.

use super::Agent;
use crate::mesh::commands::{Commands, RECENT};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many windows of answers the file holds before it is rewritten with one: a busy
/// instance rewrites it every `(REWRITE_AT - 1) * RECENT` commands, not every window.
const REWRITE_AT: usize = 8;

/// `answers.log` as the agent appends to it.
#[derive(Debug)]
pub(super) struct AnswersFile {
    /// Open for appending; none before the first append, and after a failed write (the next
    /// append opens it again).
    file: Option<std::fs::File>,
    /// Lines in the file, counting what the previous run left as a full window.
    lines: usize,
}

impl Default for AnswersFile {
    fn default() -> Self {
        AnswersFile {
            file: None,
            lines: RECENT,
        }
    }
}

/// The file of the recent answers.
fn path(dir: &Path) -> PathBuf {
    dir.join("answers.log")
}

/// The command bookkeeping a previous run left in `dir`.
pub(super) fn load(dir: &Path) -> Commands {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Commands::default(),
        Err(e) => {
            tracing::warn!(file = %path(dir).display(), error = %e, "cannot read the recent answers; a retried command may run again");
            return Commands::default();
        }
    };
    let (commands, bad) = Commands::load(&text);
    if bad > 0 {
        tracing::warn!(file = %path(dir).display(), lines = bad, "skipped unreadable lines of the recent answers");
    }
    commands
}

impl Agent {
    /// Appends the answers decided in this event; rewrites the file when it grew to
    /// [`REWRITE_AT`] windows.
    pub(super) fn save_answers(&mut self) {
        let fresh = self.dispatch.take_unsaved();
        if fresh.is_empty() {
            return;
        }
        let file = path(&self.data_dir);
        let disk = &mut self.answers_file;
        disk.lines += fresh.len();
        let result = if disk.lines > REWRITE_AT * RECENT {
            let all = self.dispatch.recent();
            disk.lines = all.len();
            disk.file = None;
            let tmp = file.with_extension("log.tmp");
            std::fs::write(&tmp, Commands::encode(&all)).and_then(|()| std::fs::rename(&tmp, &file))
        } else {
            let open = match disk.file.take() {
                Some(f) => Ok(f),
                None => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&file),
            };
            open.and_then(|mut f| {
                f.write_all(Commands::encode(&fresh).as_bytes())?;
                disk.file = Some(f);
                Ok(())
            })
        };
        if let Err(e) = result {
            crate::ratelimit::warn_limited!(self.warns, "answers-not-saved", file = %file.display(), error = %e, "cannot keep the recent answers on disk; a command retried after a restart may run again");
        }
    }
}
