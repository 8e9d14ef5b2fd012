//! Compaction of the store on a thread of its own, `pimesh-compact`: the agent switches the
//! store to a spare log and serialises the replica (no fsync), the thread writes, syncs and
//! renames (several fsyncs, seconds on a slow SD card), and the agent books the result. The
//! agent's loop, and the fsyncs that commands wait for, go on meanwhile.

use super::{Agent, Internal};
use crate::replica::{CompactionJob, StoreError};
use std::time::{Duration, Instant};

/// A compaction's job has ended: its result, and how long it took.
#[derive(Debug)]
pub(super) struct Compacted {
    /// What the job returned.
    result: Result<(), StoreError>,
    /// From the job's start on the agent's thread to its end on the compaction thread.
    took: Duration,
}

/// A job for the compaction thread, and when the agent began it.
type Job = (CompactionJob, Instant);

/// Starts the thread that runs compactions' jobs; each result comes back as an event. With
/// [`super::durable::SLOW_FSYNC_ENV`] set, each job takes that much longer (for tests).
pub(super) fn compaction_thread(
    events: tokio::sync::mpsc::UnboundedSender<Internal>,
) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let slow = super::durable::slow_disk();
    let spawned = std::thread::Builder::new()
        .name("pimesh-compact".into())
        .spawn(move || {
            while let Ok((job, began)) = rx.recv() {
                if let Some(delay) = slow {
                    std::thread::sleep(delay);
                }
                let result = job.run();
                let done = Compacted {
                    result,
                    took: began.elapsed(),
                };
                if events.send(Internal::Compacted(Box::new(done))).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        // The sender's errors then make compactions run on the agent's own thread.
        tracing::error!(error = %e, "cannot start the compaction thread; compacting on the agent's");
    }
    tx
}

impl Agent {
    /// Starts a compaction of the store's log when it has grown well past the live state (or
    /// an interrupted one is to be finished); its disk work runs on the compaction thread.
    pub(super) fn maybe_compact(&mut self) {
        if !self.store.should_compact(self.node.replica()) {
            return;
        }
        let began = Instant::now();
        let job = match self.store.begin_compaction(self.node.replica()) {
            Ok(job) => job,
            Err(e) => {
                return tracing::error!(error = %e, "store compaction failed; the log keeps growing until it succeeds")
            }
        };
        tracing::info!(
            serialised_in = ?began.elapsed(),
            "compacting the store: appends go to a new log, the snapshot is written on the compaction thread"
        );
        if let Err(e) = self.compactor.send((job, began)) {
            tracing::error!("the compaction thread is gone; compacting here");
            let (job, began) = e.0;
            let result = job.run();
            self.compaction_ended(Compacted {
                result,
                took: began.elapsed(),
            });
        }
    }

    /// A compaction's job ended: the new snapshot holds the old log, or it failed and the
    /// next compaction tries again (nothing is lost meanwhile: both logs are replayed).
    pub(super) fn compaction_ended(&mut self, done: Compacted) {
        match self.store.end_compaction(done.result) {
            Ok(()) => tracing::info!(took = ?done.took, "store compacted"),
            Err(e) => {
                tracing::error!(error = %e, "store compaction failed; the log keeps growing until it succeeds")
            }
        }
    }
}
