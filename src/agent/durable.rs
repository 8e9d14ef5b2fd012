//! Durability: group commit with the fsync on a thread of its own, and what waits for it
//! (our updates on the live stream, automation jobs, forwarded answers that carry updates).

use super::Agent;

/// An fsync for the fsync thread: the store's ticket, and our last update it covers.
#[derive(Debug)]
pub(super) struct ToSync {
    pub(super) ticket: crate::replica::SyncTicket,
    pub(super) upto: Option<u64>,
}

/// The environment variable that makes every fsync of the fsync thread, and every job of the
/// compaction thread, take this many milliseconds longer: a slow SD card, for tests
/// (`tests/slow_disk.rs`). Start-up and shutdown flushes on the agent's thread are not slowed.
pub const SLOW_FSYNC_ENV: &str = "PIMESH_TEST_FSYNC_DELAY_MS";

/// The delay [`SLOW_FSYNC_ENV`] asks for, if any.
pub(super) fn slow_disk() -> Option<std::time::Duration> {
    std::env::var(SLOW_FSYNC_ENV)
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

/// Starts the thread that runs the store's fsyncs, so a slow SD card holds up only what
/// waits for durability, never the agent's loop; each result comes back as an event.
pub(super) fn fsync_thread(
    events: tokio::sync::mpsc::UnboundedSender<super::Internal>,
) -> std::sync::mpsc::Sender<ToSync> {
    let (tx, rx) = std::sync::mpsc::channel::<ToSync>();
    let slow = slow_disk();
    if let Some(delay) = slow {
        tracing::warn!(?delay, "{SLOW_FSYNC_ENV} is set: every fsync takes that much longer, as on a slow SD card (for tests)");
    }
    let spawned = std::thread::Builder::new()
        .name("pimesh-fsync".into())
        .spawn(move || {
            while let Ok(mut job) = rx.recv() {
                if let Some(delay) = slow {
                    std::thread::sleep(delay);
                }
                let result = job.ticket.sync();
                if events
                    .send(super::Internal::Synced(Box::new(job), result))
                    .is_err()
                {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        // The sender's errors then make every fsync run on the agent's own thread.
        tracing::error!(error = %e, "cannot start the fsync thread; syncing on the agent's");
    }
    tx
}

impl Agent {
    /// Group commit, once per event: the event's changes are in the kernel already; one
    /// fsync, on the fsync thread, makes them durable together with whatever else was written
    /// since the last one. The agent goes on meanwhile: our updates, the automation jobs they
    /// triggered and the forwarded answers that carry them leave once their fsync ended
    /// ([`Agent::sync_ended`]). Answers to clients do not wait (the hardware has moved).
    pub(super) async fn commit(&mut self) {
        self.save_answers();
        self.persist();
        self.end_fence_mark();
        if self.node.has_unsaved() {
            self.start_sync();
        }
        self.send_durable_replies().await;
    }

    /// Starts an fsync of everything written, unless one is running (it is started again
    /// when that one ends, if there is more).
    pub(super) fn start_sync(&mut self) {
        let upto = self.node.last_unsaved();
        match self.store.begin_sync() {
            Ok(Some(mut ticket)) => {
                if let Some(result) = ticket.done.take() {
                    return self.sync_ended(ToSync { ticket, upto }, result);
                }
                if let Err(e) = self.syncer.send(ToSync { ticket, upto }) {
                    tracing::error!("the fsync thread is gone; syncing here");
                    let ToSync { mut ticket, upto } = e.0;
                    let result = ticket.sync();
                    self.sync_ended(ToSync { ticket, upto }, result);
                }
            }
            // Nothing left to sync (a compaction, say, made it durable): ours may leave.
            Ok(None) if !self.store.syncing() => {
                if let Some(seq) = upto {
                    self.node.durable_upto(seq);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, queued = self.store.pending(), "state not saved yet; will retry")
            }
        }
    }

    /// An fsync ended: what it covered is durable (our updates up to its seq may leave), or
    /// it failed and is written again, or a compaction's log switch made it moot and the
    /// next fsync covers it. More written meanwhile gets the next fsync.
    pub(super) fn sync_ended(&mut self, done: ToSync, result: std::io::Result<()>) {
        match self.store.end_sync(done.ticket, result) {
            Ok(true) => {
                if let Some(seq) = done.upto {
                    self.node.durable_upto(seq);
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, queued = self.store.pending(), "state not saved yet; will retry")
            }
        }
    }

    /// Sends the forwarded answers whose updates are durable now.
    async fn send_durable_replies(&mut self) {
        for (sender, reply) in self.deferred.ready(self.node.durable_seq()) {
            self.send_forward_reply(sender, reply).await;
        }
    }

    /// Retries queued store writes; once they are on disk, our updates may go to peers.
    pub(super) fn flush_store(&mut self) {
        match self.store.flush() {
            Ok(()) => self.node.durable(),
            Err(e) => {
                tracing::error!(error = %e, queued = self.store.pending(), "state not saved")
            }
        }
    }
}
