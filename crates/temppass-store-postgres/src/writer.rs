//! The writer tasks of one server: they take the authorizations that need a
//! write from the store's queue and hand them to [`authorize_batch`] in
//! batches, so that many first uses share one commit (group commit).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use temppass_store::{AuthorizeOutcome, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::batch::{Callers, FirstUseBackoff, WriteJob, authorize_batch};
use crate::connection;

/// An authorization for a writer, and where its answer goes.
pub(crate) type WriteRequest = (WriteJob, oneshot::Sender<Result<AuthorizeOutcome, StoreError>>);

/// Authorizations that one writer runs together at most.
const WRITE_BATCH: usize = 64;

/// How long a batch may run before another writer starts one beside it.
/// Until then the authorizations that arrive wait for it and then go
/// together, in one batch: on a busy server, a few large batches cost
/// PostgreSQL much less than many small ones (statements, locks and a WAL
/// flush per transaction). A batch older than this (one waiting for a lock
/// held elsewhere, or a slow disk) no longer counts: the next starts at once.
const OVERLAP_AFTER: Duration = Duration::from_millis(20);

/// A task that takes the authorizations waiting and runs them in as few
/// transactions as it can ([`authorize_batch`]): one commit, one WAL
/// flush, for many first uses. Several share the queue, each with a pooled
/// connection per batch: one takes jobs at a time, and it waits until no
/// batch younger than [`OVERLAP_AFTER`] runs before it takes them, so that
/// they gather into one batch (group commit) while a slow batch holds back nobody.
struct Writer {
    pool: Pool,
    target: String,
    /// The whole batch (`operation_timeout`). Not a request's deadline: a
    /// batch runs for many callers, each bounded by its own operation's
    /// deadline; this bounds the writer, so a batch stuck on a dead
    /// connection frees it for the next.
    deadline: Duration,
    /// How many batches younger than [`OVERLAP_AFTER`] are running, shared by the writers.
    running: Arc<watch::Sender<usize>>,
    /// Whether first uses may skip their reads, shared by the writers.
    first_uses: Arc<FirstUseBackoff>,
    /// The store's count of queued writes, which a writer lowers as it takes them.
    queued: Arc<AtomicUsize>,
    batches: Arc<BatchCounts>,
}

/// Batches the writers took since start-up, and the writes in them (for the metrics).
#[derive(Debug, Default)]
pub(crate) struct BatchCounts {
    pub(crate) batches: AtomicU64,
    pub(crate) writes: AtomicU64,
}

/// Starts `count` writers on `pool`, each bounding a batch by `deadline`;
/// answers the queue's sender, the count of writes queued on it and the
/// writers' count of batches.
pub(crate) fn spawn(
    count: usize,
    pool: &Pool,
    target: &str,
    deadline: Duration,
) -> (mpsc::UnboundedSender<WriteRequest>, Arc<AtomicUsize>, Arc<BatchCounts>) {
    let (writes, queue) = mpsc::unbounded_channel();
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let running = Arc::new(watch::Sender::new(0));
    let first_uses = Arc::new(FirstUseBackoff::default());
    let queued = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(BatchCounts::default());
    for _ in 0..count {
        let writer = Writer {
            pool: pool.clone(),
            target: target.to_owned(),
            deadline,
            running: Arc::clone(&running),
            first_uses: Arc::clone(&first_uses),
            queued: Arc::clone(&queued),
            batches: Arc::clone(&batches),
        };
        tokio::spawn(writer.write_in_batches(Arc::clone(&queue)));
    }
    (writes, queued, batches)
}

/// Counts a batch as young until it is dropped.
struct Running(Arc<watch::Sender<usize>>);

impl Running {
    fn start(running: &Arc<watch::Sender<usize>>) -> Self {
        running.send_modify(|count| *count += 1);
        Self(Arc::clone(running))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

impl Writer {
    /// Runs until the store, and with it the queue's sender, is dropped.
    async fn write_in_batches(self, queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<WriteRequest>>>) {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        loop {
            let mut waiting = queue.lock().await;
            if waiting.recv_many(&mut batch, WRITE_BATCH).await == 0 {
                return;
            }
            let mut idle = self.running.subscribe();
            if *idle.borrow_and_update() > 0 {
                // Let more gather behind the batch in flight, then take them all.
                let _ = tokio::time::timeout(OVERLAP_AFTER, idle.wait_for(|count| *count == 0)).await;
                while batch.len() < WRITE_BATCH {
                    let Ok(request) = waiting.try_recv() else { break };
                    batch.push(request);
                }
            }
            self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            self.batches.batches.fetch_add(1, Ordering::Relaxed);
            self.batches.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            // Counted before the next writer may look at the queue.
            let mut young = Some(Running::start(&self.running));
            drop(waiting);
            let (jobs, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
            let mut callers = Replies(replies.into_iter().map(Some).collect());
            if !(0..jobs.len()).any(|index| Callers::waiting(&callers, index)) {
                continue;
            }
            let finished = {
                let run = tokio::time::timeout(self.deadline, async {
                    let mut conn = connection::get(&self.pool, &self.target).await?;
                    authorize_batch(&mut conn, &jobs, &mut callers, &self.first_uses).await;
                    Ok::<(), StoreError>(())
                });
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        finished = &mut run => break finished,
                        // Old enough: the writers waiting start beside it.
                        () = tokio::time::sleep(OVERLAP_AFTER), if young.is_some() => young = None,
                    }
                }
            };
            drop(young);
            let failed = match finished {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(StoreError::Unavailable(format!(
                    "PostgreSQL at {} did not answer within {:?}",
                    self.target, self.deadline
                ))),
            };
            // Those not answered yet: the batch stopped before their commit.
            for reply in callers.0.into_iter().flatten() {
                let error = failed
                    .clone()
                    .unwrap_or_else(|| StoreError::Internal("an authorization of a batch was never run".into()));
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// The callers of a batch, each answered once.
struct Replies(Vec<Option<oneshot::Sender<Result<AuthorizeOutcome, StoreError>>>>);

impl Callers for Replies {
    fn waiting(&self, index: usize) -> bool {
        self.0[index].as_ref().is_some_and(|reply| !reply.is_closed())
    }

    fn answer(&mut self, index: usize, answer: Result<AuthorizeOutcome, StoreError>) {
        if let Some(reply) = self.0[index].take() {
            let _ = reply.send(answer);
        }
    }
}
