//! The store's helper threads besides the writer: loading the bound keys at
//! open, and checkpointing the WAL so that the writer does not have to.
//!
//! Each has a connection of its own and stops when the store is dropped.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::OpenFlags;
use temppass_store::{BoundKeys, StoreError};

use crate::{SqliteOptions, WRITER_CHECKPOINT_PAGES, open_connection, trials};

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// A helper thread; dropping it asks the thread to stop and waits for it.
pub(crate) struct Background {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What a helper thread checks to learn that the store is being dropped.
struct Stop(mpsc::Receiver<()>);

impl Stop {
    fn requested(&self) -> bool {
        matches!(self.0.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Waits `period`; false when the store was dropped meanwhile.
    fn wait(&self, period: Duration) -> bool {
        matches!(self.0.recv_timeout(period), Err(RecvTimeoutError::Timeout))
    }
}

impl Background {
    fn spawn(name: &str, work: impl FnOnce(Stop) + Send + 'static) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(Stop(stopped)))
            .map_err(|e| StoreError::Internal(format!("cannot start the thread {name}: {e}")))?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }

    /// Puts every key bound in the file into `bound`, in short read
    /// transactions so that checkpoints go on, then marks it complete. Keys
    /// bound meanwhile are put in by `authorize` itself. Should loading fail,
    /// the filter stays incomplete: every authorization reads first, as
    /// without it.
    pub(crate) fn load_bound_keys(
        path: &Path,
        options: &SqliteOptions,
        bound: Arc<BoundKeys>,
    ) -> Result<Self, StoreError> {
        let conn = open_connection(path, options, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Self::spawn("temppass-sqlite-keys", move |stop| {
            let started = Instant::now();
            match trials::load_bound_keys(&conn, &bound, || stop.requested()) {
                Ok(Some(keys)) => {
                    bound.mark_complete();
                    tracing::info!(keys, ms = started.elapsed().as_millis() as u64, "bound keys loaded");
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot load the bound keys; every authorization reads first"),
            }
        })
    }

    /// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`]
    /// (a passive checkpoint: it never blocks the writer or a reader), so
    /// that the copying and its two fsyncs are off the writer's path. The
    /// writer checkpoints itself only when the WAL still grows past its
    /// backstop (see [`crate::WRITER_CHECKPOINT_PAGES`]).
    pub(crate) fn checkpoint(path: &Path, options: &SqliteOptions) -> Result<Self, StoreError> {
        let conn = open_connection(path, options, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        Self::spawn("temppass-sqlite-checkpoint", move |stop| {
            let (mut failing, mut behind) = (false, false);
            while stop.wait(CHECKPOINT_EVERY) {
                // (busy, pages in the WAL, pages copied back): a passive checkpoint
                // that could not finish says so in the row, not as an error.
                let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1));
                // A full disk fails every checkpoint until space returns: say so once.
                match (&result, failing) {
                    (Ok(_), true) => {
                        tracing::info!("WAL checkpoints succeed again");
                        failing = false;
                    }
                    (Err(error), false) => {
                        tracing::warn!(%error, "WAL checkpoint failed; the writer checkpoints when the WAL grows");
                        failing = true;
                    }
                    _ => {}
                }
                // Something keeps the WAL from being copied back (a long read): say so once.
                let pages = result.unwrap_or(0);
                if pages > 2 * WRITER_CHECKPOINT_PAGES && !behind {
                    tracing::warn!(pages, "the WAL keeps growing: a long read transaction may hold checkpoints back");
                } else if pages <= WRITER_CHECKPOINT_PAGES && behind {
                    tracing::info!(pages, "the WAL is checkpointed again");
                }
                behind = if behind { pages > WRITER_CHECKPOINT_PAGES } else { pages > 2 * WRITER_CHECKPOINT_PAGES };
            }
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
