//! What an instance remembers about commands, without I/O: those sent to another instance
//! and waiting for its answer, duplicates waiting for a command in progress, and the recent
//! answers that make a repeated command answer again instead of running again.
//!
//! Every part is bounded: at most [`MAX_PENDING`] commands wait for another instance (one
//! more is answered `unavailable`, so its client may retry), [`MAX_WAITING`] duplicates wait,
//! and the last [`RECENT`] decided answers are kept. The recent answers are kept on disk too
//! ([`Commands::load`], [`Commands::take_unsaved`]): a client that retries after the agent
//! restarted gets the answer it missed, and a toggle does not run twice.

use crate::api::{Outcome, Reply, SetRequest};
use crate::broker::local::ResponseTo;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Commands waiting for another instance's answer, at most.
pub const MAX_PENDING: usize = 4096;
/// Duplicates of commands in progress waiting for their answer, at most.
pub const MAX_WAITING: usize = 256;
/// Decided answers remembered.
pub const RECENT: usize = 256;
/// How long a forwarded command may stay unanswered before it is answered `timeout`;
/// shorter than the CLI's default wait, so the client hears why.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(4);

/// Who is waiting for a command's answer.
#[derive(Clone, Debug)]
pub enum Origin {
    /// An MQTT client or the CLI, answered on its `reply-to` (if any).
    Client {
        /// Where to answer.
        reply_to: Option<ResponseTo>,
        /// The client's own command id, which its answer carries (the mesh knows the command
        /// by a digest of it).
        id: Option<String>,
        /// Executors already tried (they died before answering).
        tried: Vec<Uuid>,
    },
    /// Another instance that forwarded the command to us.
    Peer {
        /// The instance to answer.
        sender: Uuid,
    },
    /// An automation this instance dispatched for an event it originated.
    Automation {
        /// The rule.
        rule: String,
        /// Executors already tried.
        tried: Vec<Uuid>,
    },
}

impl Origin {
    /// Executors already tried for this command.
    pub fn tried(&self) -> Vec<Uuid> {
        match self {
            Origin::Client { tried, .. } | Origin::Automation { tried, .. } => tried.clone(),
            Origin::Peer { .. } => Vec::new(),
        }
    }

    /// The same origin with `executor` added to the tried list.
    pub fn after_trying(mut self, executor: Uuid) -> Origin {
        if let Origin::Client { tried, .. } | Origin::Automation { tried, .. } = &mut self {
            tried.push(executor);
        }
        self
    }
}

/// A duplicate of a command in progress, answered when the command is.
#[derive(Clone, Debug)]
pub enum Waiter {
    /// A client, with its own command id.
    Client {
        id: Option<String>,
        reply_to: Option<ResponseTo>,
    },
    /// An instance that forwarded the same command again.
    Peer(Uuid),
}

/// A command sent to another instance, waiting for its answer.
#[derive(Debug)]
pub struct Pending {
    /// The object.
    pub object: String,
    /// The request as sent.
    pub req: SetRequest,
    /// Who waits for the answer.
    pub origin: Origin,
    /// The instance running it.
    pub executor: Uuid,
    /// An automation job (the executor routes it on) rather than a plain command.
    pub onward: bool,
    /// When it was sent.
    pub sent: Instant,
}

/// Why a command could not be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("{MAX_PENDING} commands already wait for other instances")]
    Pending,
    #[error("{MAX_WAITING} duplicates already wait for commands in progress")]
    Waiting,
}

/// An answer from an instance the command was not sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the command was not sent to that instance")]
pub struct NotExecutor;

/// One remembered answer, as the disk keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Remembered {
    key: String,
    reply: Reply,
}

/// The command bookkeeping of one instance.
#[derive(Debug, Default)]
pub struct Commands {
    /// Sent to another instance, by the command's mesh key.
    pending: HashMap<String, Pending>,
    /// Duplicates of commands in progress, by key.
    waiting: Vec<(String, Waiter)>,
    /// Decided answers, oldest first.
    recent: VecDeque<(String, Reply)>,
    /// Answers remembered since the last [`Commands::take_unsaved`].
    unsaved: Vec<(String, Reply)>,
}

impl Commands {
    /// Bookkeeping that starts from the answers a previous run kept (`lines` of
    /// [`Commands::encode`]); unreadable lines are skipped and counted.
    pub fn load(lines: &str) -> (Self, usize) {
        let mut me = Commands::default();
        let mut bad = 0;
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Remembered>(line) {
                Ok(r) => me.keep(r.key, r.reply),
                Err(_) => bad += 1,
            }
        }
        (me, bad)
    }

    /// Answers as lines for the disk.
    pub fn encode(answers: &[(String, Reply)]) -> String {
        /// A [`Remembered`] borrowed: the same JSON, without copying each answer.
        #[derive(Serialize)]
        struct Line<'a> {
            key: &'a str,
            reply: &'a Reply,
        }
        let mut out = Vec::with_capacity(answers.len() * 256);
        for (key, reply) in answers {
            let start = out.len();
            match serde_json::to_writer(&mut out, &Line { key, reply }) {
                Ok(()) => out.push(b'\n'),
                Err(_) => out.truncate(start),
            }
        }
        // serde_json writes UTF-8 only.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Every remembered answer, oldest first (to rewrite the file whole).
    pub fn recent(&self) -> Vec<(String, Reply)> {
        self.recent.iter().cloned().collect()
    }

    /// Answers remembered since the last call, for the disk.
    pub fn take_unsaved(&mut self) -> Vec<(String, Reply)> {
        std::mem::take(&mut self.unsaved)
    }

    /// The answer already given to command `key`, if it is recent.
    pub fn recall(&self, key: &str) -> Option<Reply> {
        self.recent
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r.clone())
    }

    /// Whether `key` waits for another instance.
    pub fn is_pending(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    /// A duplicate of command `key`, in progress, waits for its answer.
    pub fn wait(&mut self, key: &str, waiter: Waiter) -> Result<(), Full> {
        if self.waiting.len() >= MAX_WAITING {
            return Err(Full::Waiting);
        }
        self.waiting.push((key.to_string(), waiter));
        Ok(())
    }

    /// Keeps command `key`, sent to another instance, until it answers.
    pub fn send(&mut self, key: &str, pending: Pending) -> Result<(), Full> {
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(key) {
            return Err(Full::Pending);
        }
        self.pending.insert(key.to_string(), pending);
        Ok(())
    }

    /// The answer to `key` came from `from`: the command it settles, if `from` is the
    /// instance it was sent to (another member that learnt the key cannot answer it).
    pub fn answered(&mut self, from: Uuid, key: &str) -> Result<Option<Pending>, NotExecutor> {
        match self.pending.get(key) {
            Some(p) if p.executor != from => Err(NotExecutor),
            Some(_) => Ok(self.pending.remove(key)),
            None => Ok(None),
        }
    }

    /// Commands sent to `executor`, which went offline.
    pub fn gone(&mut self, executor: Uuid) -> Vec<(String, Pending)> {
        self.take_where(|p| p.executor == executor)
    }

    /// Commands unanswered for longer than [`FORWARD_TIMEOUT`] at `now`.
    pub fn late(&mut self, now: Instant) -> Vec<(String, Pending)> {
        self.take_where(|p| now.saturating_duration_since(p.sent) > FORWARD_TIMEOUT)
    }

    fn take_where(&mut self, pred: impl Fn(&Pending) -> bool) -> Vec<(String, Pending)> {
        let mut keys: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| pred(p))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|k| self.pending.remove(&k).map(|p| (k, p)))
            .collect()
    }

    /// Command `key` got its answer: remember it when the executor decided it (a retry after
    /// `unavailable`, `timeout` or `unknown` must run), and hand over the duplicates that
    /// waited for it.
    pub fn complete(&mut self, key: &str, reply: &Reply) -> Vec<Waiter> {
        let decided = !matches!(
            reply.result,
            Outcome::Unavailable | Outcome::Timeout | Outcome::Unknown
        );
        if decided {
            self.keep(key.to_string(), reply.clone());
            self.unsaved.push((key.to_string(), reply.clone()));
        }
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(k, _)| k == key);
        self.waiting = rest;
        done.into_iter().map(|(_, w)| w).collect()
    }

    fn keep(&mut self, key: String, reply: Reply) {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((key, reply));
    }

    /// Sizes, for bound checks.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.pending.len(), self.waiting.len(), self.recent.len())
    }
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
