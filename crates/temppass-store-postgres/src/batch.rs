//! One batch of authorizations on one connection: which jobs share a
//! transaction, and what happens when one fails.
//!
//! [`authorize_batch`] runs its jobs in as few transactions as it can, each
//! job exactly as it would run alone: one transaction takes every job whose
//! keys no job before it in that transaction shares (the others wait for the
//! next one) and runs as `batch_tx.rs` describes; each job's answer is kept
//! only once that commit is answered, and its caller hears it then. A job
//! whose caller stopped waiting is not run. A job whose key moved to an
//! unlocked trial, or whose trial an earlier job of the transaction writes,
//! runs again in the next transaction; so does one that waited for a lock
//! longer than [`BATCH_LOCK_TIMEOUT`](crate::locks::BATCH_LOCK_TIMEOUT), last
//! and alone; a deadlock reported by PostgreSQL runs the whole transaction
//! again; any other error rolls it back and its jobs run one per transaction
//! from then on, so an error belongs to one job. A transaction whose jobs all
//! have keys never bound (and that [`FirstUseBackoff`] allows) is a first-use
//! transaction instead; when its insert meets a key bound after all, it rolls
//! back and its jobs run again the usual way, an attempt that is not counted.
//! A job that took part in [`MAX_ATTEMPTS`] transactions without an answer is
//! answered `Unavailable`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use temppass_store::{Authorization, AuthorizeOutcome, KeyKind, OwnedAuthorization, StoreError};

use crate::batch_tx::{Outcome, Statements, TxError, run_first_uses, run_locked};
use crate::connection::Conn;
use crate::locks::key_lock;

/// How many transactions a job may take part in without an answer (a
/// concurrent merge moved a key, or PostgreSQL reported a deadlock) before
/// the store reports itself unavailable.
const MAX_ATTEMPTS: usize = 8;

/// An authorization that needs the write path, owned so that it can wait
/// for a batch (see `PostgresStore::authorize`).
pub(crate) struct WriteJob {
    request: OwnedAuthorization,
    /// The filter of bound keys said that none of its keys was ever bound: a
    /// hint that lets its transaction skip the reads (see `batch_tx::run_first_uses`).
    keys_never_bound: bool,
}

impl WriteJob {
    pub(crate) fn new(request: Authorization<'_>) -> Self {
        Self { request: OwnedAuthorization::new(request), keys_never_bound: false }
    }

    pub(crate) fn request(&self) -> Authorization<'_> {
        self.request.borrow()
    }

    /// Marks whether the filter of bound keys said that none of its keys was ever bound.
    pub(crate) fn keys_never_bound(self, keys_never_bound: bool) -> Self {
        Self { keys_never_bound, ..self }
    }

    pub(crate) fn key(&self, kind: KeyKind) -> Option<(KeyKind, &str)> {
        self.request().lookup.key(kind)
    }

    /// Its keys: the device's, and the identity's if it has one.
    pub(crate) fn keys(&self) -> impl Iterator<Item = (KeyKind, &str)> + '_ {
        [KeyKind::Device, KeyKind::Identity].into_iter().filter_map(|kind| self.key(kind))
    }

    /// The advisory locks of its keys.
    pub(crate) fn key_locks(&self) -> impl Iterator<Item = i64> + '_ {
        let scope = self.request().lookup.scope;
        self.keys().map(move |(kind, key)| key_lock(scope, kind, key))
    }
}

/// Whoever waits for the jobs of a batch.
pub(crate) trait Callers {
    /// Whether someone still waits for job `index`'s answer.
    fn waiting(&self, index: usize) -> bool;
    /// Job `index`'s answer: called once per job that ran, as soon as it is known.
    fn answer(&mut self, index: usize, answer: Result<AuthorizeOutcome, StoreError>);
}

/// Runs `jobs` as the module documentation says, answering each caller once.
pub(crate) async fn authorize_batch(
    conn: &mut Conn,
    jobs: &[WriteJob],
    callers: &mut impl Callers,
    backoff: &FirstUseBackoff,
) {
    let statements = match Statements::prepare(conn).await {
        Ok(statements) => statements,
        Err(error) => {
            (0..jobs.len()).for_each(|index| callers.answer(index, Err(error.clone())));
            return;
        }
    };
    let mut schedule = Schedule::new(jobs);
    while let Some(tx) = schedule.next(jobs, callers, backoff) {
        let result = if tx.first_uses {
            run_first_uses(conn, &statements, jobs, &tx.jobs, tx.patient).await
        } else {
            run_locked(conn, &statements, jobs, &tx.jobs, tx.patient).await
        };
        let again = match result {
            Ok(outcomes) => schedule.committed(&tx, outcomes, callers, backoff),
            Err(error) => {
                // Whatever failed, the transaction is over for PostgreSQL or
                // must be ended here; a connection that cannot even roll back
                // fails every job still waiting.
                if let Err(lost) = conn.rollback().await {
                    schedule.pending.iter().for_each(|&index| callers.answer(index, Err(lost.clone())));
                    return;
                }
                schedule.failed(&tx, error, callers, backoff)
            }
        };
        schedule.requeue(tx.later, again, callers);
    }
}

/// Where one job of a batch stands.
#[derive(Debug, Clone, Copy)]
struct JobState {
    /// Transactions it took part in without an answer.
    attempts: usize,
    /// It could not get a lock quickly: it runs last, alone, waiting as long
    /// as its statements may, so that it holds back nobody else.
    slow: bool,
    /// Still believed to start a trial on keys never bound; cleared when a
    /// transaction of it found a key bound after all.
    never_bound: bool,
}

/// The jobs of a batch still to run, and how.
struct Schedule {
    states: Vec<JobState>,
    pending: Vec<usize>,
    /// A transaction of several jobs failed: from now on, one job per transaction.
    one_at_a_time: bool,
}

/// The jobs of one transaction, and those that wait for the next.
struct Transaction {
    jobs: Vec<usize>,
    later: Vec<usize>,
    /// One slow job alone: no lock timeout.
    patient: bool,
    first_uses: bool,
}

impl Schedule {
    fn new(jobs: &[WriteJob]) -> Self {
        let states =
            jobs.iter().map(|job| JobState { attempts: 0, slow: false, never_bound: job.keys_never_bound }).collect();
        Self { states, pending: (0..jobs.len()).collect(), one_at_a_time: false }
    }

    /// The next transaction: quick jobs first, the slow ones alone once
    /// nothing else is left. A caller whose deadline passed is gone: its job
    /// is not run, so nothing is written that nobody was told of.
    fn next(&mut self, jobs: &[WriteJob], callers: &impl Callers, backoff: &FirstUseBackoff) -> Option<Transaction> {
        self.pending.retain(|&index| callers.waiting(index));
        let (&first, _) = self.pending.split_first()?;
        let quick: Vec<usize> = self.pending.iter().copied().filter(|&index| !self.states[index].slow).collect();
        let (now, later) = if quick.is_empty() {
            (vec![first], self.pending[1..].to_vec())
        } else {
            let (now, mut later) = disjoint(jobs, &quick, self.one_at_a_time);
            later.extend(self.pending.iter().copied().filter(|&index| self.states[index].slow));
            (now, later)
        };
        now.iter().for_each(|&index| self.states[index].attempts += 1);
        let patient = now.len() == 1 && self.states[now[0]].slow;
        let first_uses = now.iter().all(|&index| self.states[index].never_bound) && backoff.allow();
        Some(Transaction { jobs: now, later, patient, first_uses })
    }

    /// Committed: each caller hears at once, not after the rest of the batch.
    /// Answers the jobs that run again.
    fn committed(
        &mut self,
        tx: &Transaction,
        outcomes: Vec<(usize, Outcome)>,
        callers: &mut impl Callers,
        backoff: &FirstUseBackoff,
    ) -> Vec<usize> {
        if tx.first_uses {
            backoff.succeeded();
        }
        let mut again = Vec::new();
        for (index, outcome) in outcomes {
            match outcome {
                Outcome::Done(answer) => callers.answer(index, answer),
                Outcome::StartOver => again.push(index),
                Outcome::Deferred => {
                    self.states[index].attempts -= 1;
                    again.push(index);
                }
            }
        }
        again
    }

    /// Rolled back after `error`. Answers the jobs that run again.
    fn failed(
        &mut self,
        tx: &Transaction,
        error: TxError,
        callers: &mut impl Callers,
        backoff: &FirstUseBackoff,
    ) -> Vec<usize> {
        if error.worth_retrying() {
            return tx.jobs.clone();
        }
        if let [alone] = tx.jobs[..]
            && error.lock_not_granted()
        {
            self.states[alone].slow = true;
            return tx.jobs.clone();
        }
        if tx.first_uses && error.binds_a_bound_key() {
            // A key believed never bound was bound (by another server): the
            // jobs run again, reading their bindings.
            backoff.failed();
            for &index in &tx.jobs {
                self.states[index].never_bound = false;
                self.states[index].attempts -= 1;
            }
            return tx.jobs.clone();
        }
        let error = error.into_store_error();
        if tx.jobs.len() > 1 {
            tracing::debug!(%error, jobs = tx.jobs.len(), "a batch of authorizations failed; running them one by one");
            self.one_at_a_time = true;
            return tx.jobs.clone();
        }
        tx.jobs.iter().for_each(|&index| callers.answer(index, Err(error.clone())));
        Vec::new()
    }

    /// Pending from now on: `later`, then those of `again` that have attempts left.
    fn requeue(&mut self, later: Vec<usize>, again: Vec<usize>, callers: &mut impl Callers) {
        let mut settled = Vec::new();
        for index in again {
            if self.states[index].attempts >= MAX_ATTEMPTS {
                let message = format!("an authorization did not settle after {MAX_ATTEMPTS} attempts under contention");
                callers.answer(index, Err(StoreError::Unavailable(message)));
            } else {
                settled.push(index);
            }
        }
        self.pending = later.into_iter().chain(settled).collect();
    }
}

/// The jobs of `pending` that can share a transaction, in order: each whose
/// keys no job taken before it has (or only the first, `one_at_a_time`); and the rest.
fn disjoint(jobs: &[WriteJob], pending: &[usize], one_at_a_time: bool) -> (Vec<usize>, Vec<usize>) {
    let mut taken_keys = HashSet::new();
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for &index in pending {
        let keys: Vec<i64> = jobs[index].key_locks().collect();
        let room = !one_at_a_time || now.is_empty();
        if room && keys.iter().all(|key| !taken_keys.contains(key)) {
            taken_keys.extend(keys);
            now.push(index);
        } else {
            later.push(index);
        }
    }
    (now, later)
}

/// Whether a transaction of first uses may skip its reads, shared by the
/// writers of one server.
///
/// A key bound through another server reads as never bound here until this
/// server binds or loads it, so behind a load balancer a device's first visit
/// to each other server looks like a first use; its transaction then fails on
/// the bound key and every job of it runs again the usual way. When that
/// happens, the next transactions read as usual: 2 of them after one such
/// failure, twice as many after each further failure in a row (at most
/// [`FirstUseBackoff::MAX_SKIPPED`]), none again once one succeeds. A single
/// server never backs off; a cluster whose first uses keep meeting keys bound
/// elsewhere tries one in about a thousand.
#[derive(Debug, Default)]
pub(crate) struct FirstUseBackoff {
    /// Transactions still to run the usual way.
    skip: AtomicU32,
    /// The last number skipped after a failure; 0 once a transaction of first uses succeeds.
    next: AtomicU32,
}

impl FirstUseBackoff {
    const MAX_SKIPPED: u32 = 1024;

    /// Whether the next transaction of first uses may skip its reads.
    fn allow(&self) -> bool {
        self.skip.fetch_update(Relaxed, Relaxed, |skip| skip.checked_sub(1)).is_err()
    }

    fn succeeded(&self) {
        self.next.store(0, Relaxed);
    }

    fn failed(&self) {
        let next = self.next.load(Relaxed).saturating_mul(2).clamp(2, Self::MAX_SKIPPED);
        self.next.store(next, Relaxed);
        self.skip.store(next, Relaxed);
    }
}

#[cfg(test)]
mod backoff {
    use super::FirstUseBackoff;

    fn allowed_in(backoff: &FirstUseBackoff, transactions: usize) -> Vec<bool> {
        (0..transactions).map(|_| backoff.allow()).collect()
    }

    #[test]
    fn first_uses_skip_their_reads_until_one_meets_a_bound_key() {
        let backoff = FirstUseBackoff::default();
        assert_eq!(allowed_in(&backoff, 3), vec![true; 3]);
        backoff.succeeded();
        assert!(backoff.allow());
    }

    #[test]
    fn each_failure_in_a_row_doubles_the_transactions_that_read_as_usual_up_to_a_bound() {
        let backoff = FirstUseBackoff::default();
        backoff.failed();
        assert_eq!(allowed_in(&backoff, 3), vec![false, false, true]);
        backoff.failed();
        assert_eq!(allowed_in(&backoff, 5), vec![false, false, false, false, true]);
        for _ in 0..20 {
            backoff.failed();
        }
        let allowed = allowed_in(&backoff, FirstUseBackoff::MAX_SKIPPED as usize + 1);
        assert_eq!(allowed.iter().filter(|a| !**a).count(), FirstUseBackoff::MAX_SKIPPED as usize);
        assert_eq!(allowed.last(), Some(&true));
    }

    #[test]
    fn a_success_ends_the_backoff() {
        let backoff = FirstUseBackoff::default();
        backoff.failed();
        backoff.failed();
        backoff.succeeded();
        backoff.failed();
        assert_eq!(allowed_in(&backoff, 3), vec![false, false, true], "the backoff started again from 2");
    }
}

#[cfg(all(test, feature = "testing"))]
#[path = "batch_tests.rs"]
mod batch_tests;
