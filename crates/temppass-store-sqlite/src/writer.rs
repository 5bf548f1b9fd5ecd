//! The writer thread: every write of the store, committed in batches.
//!
//! SQLite has one writer at a time. Instead of each write taking a lock and
//! committing on a blocking-pool thread of its own, writes queue to one thread
//! that owns the writer connection. It takes every write waiting (up to
//! [`MAX_BATCH`]), runs them one after the other inside one `BEGIN IMMEDIATE`
//! transaction — each in a savepoint of its own, so a write that fails undoes
//! only itself — and commits once (group commit). Nobody is answered before
//! the commit: a permit is only ever returned for a committed trial, and if
//! the commit fails, every write of the batch is answered with the failure.
//!
//! Writes in a batch run in the order they were queued and each sees the
//! ones before it, exactly as if each had been a transaction of its own; only
//! the pages touched and the wake-ups are shared.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use temppass_store::StoreError;

use crate::to_store_error;

/// Writes committed together at most; a batch stays a few milliseconds of the writer.
const MAX_BATCH: usize = 64;

/// How a write is answered once its batch is over.
type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// One write waiting for the writer thread.
trait Job: Send {
    /// Runs inside the batch's transaction; returns how to answer once the batch is over.
    fn run(self: Box<Self>, conn: &Connection) -> Answer;
    /// Answers without running: the batch could not start or was lost.
    fn fail(self: Box<Self>, error: StoreError);
}

struct Pending<T, F> {
    work: F,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    give_up_at: Instant,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Answer {
        let Pending { work, reply, give_up_at } = *self;
        // The caller stops waiting after the store timeout; a write still
        // queued by then must not run late (and pile up under overload).
        if Instant::now() >= give_up_at {
            let _ = reply.send(Err(StoreError::Unavailable("gave up waiting for the SQLite writer".into())));
            return Box::new(|_| {});
        }
        match in_savepoint(conn, work) {
            Ok(value) => Box::new(move |batch: Result<(), &StoreError>| {
                let _ = reply.send(batch.map(|()| value).map_err(copy));
            }),
            // Undone already: nothing of it can be committed, so it may be answered now.
            Err(error) => {
                let _ = reply.send(Err(error));
                Box::new(|_| {})
            }
        }
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT write").map_err(to_store_error)?;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(StoreError::Internal("a write panicked; it was undone".into())));
    match outcome {
        Ok(value) => {
            conn.execute_batch("RELEASE write").map_err(to_store_error)?;
            Ok(value)
        }
        Err(error) => {
            // Fails only when SQLite already rolled the whole transaction back
            // (e.g. on a full disk); the batch notices that and fails as a whole.
            let _ = conn.execute_batch("ROLLBACK TO write; RELEASE write");
            Err(error)
        }
    }
}

fn copy(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        StoreError::Conflict(message) => StoreError::Conflict(message.clone()),
        StoreError::Internal(message) => StoreError::Internal(message.clone()),
    }
}

/// The queue in front of the writer thread; dropping it lets the thread finish and close the connection.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("temppass-sqlite-writer".into())
            .spawn(move || run(&conn, &queue))
            .map_err(|e| StoreError::Internal(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread) })
    }

    /// Queues `work` and waits for its batch to be committed.
    pub(crate) async fn write<T, F>(&self, give_up_at: Instant, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopped = || StoreError::Internal("the SQLite writer thread has stopped".into());
        let queue = self.jobs.as_ref().ok_or_else(stopped)?;
        queue.send(Box::new(Pending { work, reply, give_up_at })).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, queue: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            let error = to_store_error(error);
            batch.into_iter().for_each(|job| job.fail(copy(&error)));
            continue;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut lost = None;
        let mut jobs = batch.into_iter();
        for job in jobs.by_ref() {
            answers.push(job.run(conn));
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (a full disk, an I/O
                // error): what the batch wrote before is gone too.
                lost = Some(StoreError::Unavailable("SQLite rolled the write transaction back".into()));
                break;
            }
        }
        let outcome = match lost {
            Some(error) => Err(error),
            None => conn.execute_batch("COMMIT").map_err(to_store_error),
        };
        if let Err(error) = &outcome {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            jobs.for_each(|job| job.fail(copy(error)));
        }
        answers.into_iter().for_each(|answer| answer(outcome.as_ref().map(|_| ())));
    }
}
