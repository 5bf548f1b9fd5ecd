//! The writer thread: every write of the store, committed in batches.
//!
//! SQLite has one writer at a time. Instead of each write taking a lock and
//! committing on a blocking-pool thread of its own, writes queue to one thread
//! that owns the writer connection. It takes every write waiting (up to
//! [`MAX_BATCH`]), runs them one after the other inside one `BEGIN IMMEDIATE`
//! transaction — each in a savepoint of its own, so a write that fails undoes
//! only itself — and commits once (group commit). Nobody is answered before
//! the commit: a permit is only ever returned for a committed trial. Not even
//! a failed write is answered before it, since its failure may rest on an
//! earlier write of the batch that a failed commit undoes. A failed commit,
//! SQLite rolling the transaction back, or a savepoint that cannot be ended
//! fails every write of the batch.
//!
//! Writes in a batch run in the order they were queued and each sees the
//! ones before it, exactly as if each had been a transaction of its own; only
//! the pages touched and the wake-ups are shared (what that saves against a
//! transaction per write on the blocking pool: docs/PERFORMANCE.md, change 2).
//!
//! Each write carries its caller's deadline (`storage.timeout`): the writer
//! skips a write it reaches after it, so an overload does not run late work,
//! and a caller whose write is still running then (a stalled disk) is answered
//! `Unavailable` at its deadline, whatever the writer does. Such a write may
//! still commit; the client's retry then finds its trial.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
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
    /// Runs inside the batch's transaction; returns how to answer once the
    /// batch is over, and `false` when the batch must be abandoned (a
    /// savepoint could not be ended, so what is in the transaction is unknown).
    fn run(self: Box<Self>, conn: &Connection) -> (Answer, bool);
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
    fn run(self: Box<Self>, conn: &Connection) -> (Answer, bool) {
        let Pending { work, reply, give_up_at } = *self;
        // The caller stops waiting after the store timeout; a write still
        // queued by then must not run late (and pile up under overload).
        if Instant::now() >= give_up_at {
            let _ = reply.send(Err(StoreError::Unavailable("gave up waiting for the SQLite writer".into())));
            return (Box::new(|_| {}), true);
        }
        let (outcome, intact) = in_savepoint(conn, work);
        // Even a failure waits for the batch: it may have been decided by an
        // earlier write of the batch (a name taken), which a failed commit undoes.
        let answer: Answer = Box::new(move |batch: Result<(), &StoreError>| {
            let _ = reply.send(match batch {
                Ok(()) => outcome,
                Err(error) => Err(copy(error)),
            });
        });
        (answer, intact)
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Runs `work` in a savepoint of its own, undone alone when it fails; `false`
/// when the savepoint itself could not be released or rolled back.
fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, bool) {
    let run = |sql: &str| execute_cached(conn, sql);
    if let Err(error) = run("SAVEPOINT write") {
        return (Err(to_store_error(error)), false);
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(StoreError::Internal("a write panicked; it was undone".into())));
    let ended = match &outcome {
        Ok(_) => run("RELEASE write"),
        Err(_) => run("ROLLBACK TO write").and_then(|()| run("RELEASE write")),
    };
    match ended {
        Ok(()) => (outcome, true),
        Err(error) => (outcome.and(Err(to_store_error(error))), false),
    }
}

/// Transaction control statements, prepared once: the writer runs them for every write.
fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn copy(error: &StoreError) -> StoreError {
    error.clone()
}

/// The queue in front of the writer thread; dropping it lets the thread finish and close the connection.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    /// Jobs sent and not yet taken by the writer thread: at most `max_queued`,
    /// so an overload is refused at once instead of growing without bound.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    batches: Arc<BatchCounts>,
    thread: Option<JoinHandle<()>>,
}

/// Batches the writer ran since start-up, and the writes in them (for the metrics).
#[derive(Debug, Default)]
pub(crate) struct BatchCounts {
    pub(crate) batches: AtomicU64,
    pub(crate) writes: AtomicU64,
}

impl Writer {
    pub(crate) fn start(conn: Connection, max_queued: usize) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = Arc::clone(&queued);
        let batches = Arc::new(BatchCounts::default());
        let counted = Arc::clone(&batches);
        let thread = std::thread::Builder::new()
            .name("temppass-sqlite-writer".into())
            .spawn(move || run(&conn, &queue, &taken, &counted))
            .map_err(|e| StoreError::Internal(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Self { jobs: Some(jobs), queued, max_queued, batches, thread: Some(thread) })
    }

    /// Writes queued now, batches run and the writes in them since start-up.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (
            self.queued.load(Ordering::Relaxed) as u64,
            self.batches.batches.load(Ordering::Relaxed),
            self.batches.writes.load(Ordering::Relaxed),
        )
    }

    /// Queues `work` at once (calls are queued in the order they are made)
    /// and returns the wait for its batch to be committed.
    pub(crate) fn write<T, F>(
        &self,
        give_up_at: Instant,
        work: F,
    ) -> impl Future<Output = Result<T, StoreError>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopped = || StoreError::Internal("the SQLite writer thread has stopped".into());
        let queued = if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            Err(StoreError::Busy(format!("{} writes are already queued for the SQLite writer", self.max_queued)))
        } else {
            match &self.jobs {
                Some(queue) => queue.send(Box::new(Pending { work, reply, give_up_at })).map_err(|_| stopped()),
                None => Err(stopped()),
            }
        };
        async move {
            queued?;
            // The writer skips a job it reaches after `give_up_at`; this is
            // for one it is still running then (a stalled disk): the caller
            // hears at its deadline, whatever the writer does.
            match tokio::time::timeout_at(tokio::time::Instant::from_std(give_up_at), answer).await {
                Ok(answer) => answer.map_err(|_| stopped())?,
                Err(_) => {
                    Err(StoreError::Unavailable("the SQLite writer did not answer within storage.timeout".into()))
                }
            }
        }
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

fn run(conn: &Connection, queue: &mpsc::Receiver<Box<dyn Job>>, queued: &AtomicUsize, counts: &BatchCounts) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(MAX_BATCH - 1));
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
        counts.batches.fetch_add(1, Ordering::Relaxed);
        counts.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // A rollback that failed earlier may have left a transaction open.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(error) = execute_cached(conn, "BEGIN IMMEDIATE") {
            let error = to_store_error(error);
            batch.into_iter().for_each(|job| job.fail(copy(&error)));
            continue;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut lost = None;
        let mut jobs = batch.into_iter();
        for job in jobs.by_ref() {
            let (answer, intact) = job.run(conn);
            answers.push(answer);
            if !intact || conn.is_autocommit() {
                // SQLite rolled the whole transaction back (a full disk, an I/O
                // error) or a savepoint could not be ended: what the batch
                // wrote before is gone or unknown, so none of it may be committed.
                lost = Some(StoreError::Unavailable("the SQLite write transaction was abandoned".into()));
                break;
            }
        }
        let outcome = match lost {
            Some(error) => Err(error),
            None => execute_cached(conn, "COMMIT").map_err(to_store_error),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type TestWrite = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;

    fn writer() -> (Writer, tempfile::TempDir) {
        writer_with_queue(temppass_store::DEFAULT_MAX_QUEUED_WRITES)
    }

    fn writer_with_queue(max_queued: usize) -> (Writer, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let conn = Connection::open(dir.path().join("w.db")).expect("the database opens");
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (name TEXT PRIMARY KEY)")
            .expect("the test table is created");
        (Writer::start(conn, max_queued).expect("the writer starts"), dir)
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn insert(name: &'static str) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        move |conn: &Connection| conn.execute("INSERT INTO t VALUES (?1)", [name]).map(drop).map_err(to_store_error)
    }

    fn names(dir: &tempfile::TempDir) -> Vec<String> {
        let conn = Connection::open(dir.path().join("w.db")).expect("the database opens");
        let mut statement = conn.prepare("SELECT name FROM t ORDER BY name").expect("the query prepares");
        let rows = statement.query_map([], |row| row.get(0)).expect("the query runs");
        rows.collect::<Result<_, _>>().expect("every row is a name")
    }

    /// Runs `writes` as one batch: a first write holds the writer until all are queued.
    async fn one_batch(writer: &Writer, writes: Vec<TestWrite>) -> Vec<Result<(), StoreError>> {
        let hold = writer.write(later(), |_: &Connection| {
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        });
        let answers = futures_join(writer, writes);
        let (held, answers) = tokio::join!(hold, answers);
        assert!(held.is_ok(), "{held:?}");
        answers
    }

    async fn futures_join(writer: &Writer, writes: Vec<TestWrite>) -> Vec<Result<(), StoreError>> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let pending: Vec<_> = writes.into_iter().map(|work| writer.write(later(), work)).collect();
        let mut answers = Vec::new();
        for answer in pending {
            answers.push(answer.await);
        }
        answers
    }

    #[tokio::test]
    async fn a_write_that_fails_or_panics_undoes_only_itself_in_its_batch() {
        let (writer, dir) = writer();
        let answers = one_batch(
            &writer,
            vec![
                Box::new(insert("a")),
                Box::new(|conn: &Connection| {
                    insert("b")(conn)?;
                    Err(StoreError::Conflict("b changed its mind".into()))
                }),
                Box::new(|conn: &Connection| {
                    let _ = insert("c")(conn);
                    panic!("a bug in a write");
                }),
                Box::new(insert("d")),
            ],
        )
        .await;
        assert!(answers[0].is_ok() && answers[3].is_ok(), "{answers:?}");
        assert!(matches!(answers[1], Err(StoreError::Conflict(_))), "{answers:?}");
        assert!(matches!(answers[2], Err(StoreError::Internal(_))), "{answers:?}");
        drop(writer);
        assert_eq!(names(&dir), ["a", "d"]);
    }

    #[tokio::test]
    async fn when_sqlite_rolls_the_batch_back_every_write_of_it_fails_and_nothing_is_kept() {
        let (writer, dir) = writer();
        let answers = one_batch(
            &writer,
            vec![
                Box::new(insert("a")),
                // What SQLite does on a full disk: the whole transaction is rolled back.
                Box::new(|conn: &Connection| conn.execute_batch("ROLLBACK").map_err(to_store_error)),
                Box::new(insert("c")),
            ],
        )
        .await;
        assert!(answers.iter().all(|a| matches!(a, Err(StoreError::Unavailable(_)))), "{answers:?}");
        assert!(writer.write(later(), insert("e")).await.is_ok(), "the writer did not recover");
        drop(writer);
        assert_eq!(names(&dir), ["e"]);
    }

    #[tokio::test]
    async fn a_write_whose_deadline_passed_in_the_queue_never_runs() {
        let (writer, dir) = writer();
        let answer = writer.write(Instant::now(), insert("late")).await;
        assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
        drop(writer);
        assert!(names(&dir).is_empty());
    }

    #[tokio::test]
    async fn a_write_past_the_queue_bound_is_refused_at_once_and_the_queued_ones_still_commit() {
        let (writer, dir) = writer_with_queue(2);
        let (started, running) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let hold = writer.write(later(), move |_: &Connection| {
            let _ = started.send(());
            let _ = released.recv_timeout(Duration::from_secs(10));
            Ok(())
        });
        let hold = tokio::spawn(hold);
        running.recv_timeout(Duration::from_secs(10)).expect("the first write runs within 10 s");
        // The writer thread is busy with the first write: these two wait in the queue.
        let queued = [writer.write(later(), insert("a")), writer.write(later(), insert("b"))];
        let refused = writer.write(later(), insert("c")).await;
        assert!(matches!(refused, Err(StoreError::Busy(_))), "{refused:?}");
        let _ = release.send(());
        for answer in queued {
            assert!(answer.await.is_ok());
        }
        assert!(hold.await.is_ok_and(|held| held.is_ok()));
        assert!(writer.write(later(), insert("d")).await.is_ok(), "a drained queue takes writes again");
        drop(writer);
        assert_eq!(names(&dir), ["a", "b", "d"]);
    }
}
