//! One transaction for several authorizations that share no key: the
//! locked transaction, which locks and reads before it plans, and the
//! first-use transaction, which reads nothing.
//!
//! Both plan each job with `temppass_store::plan` and write every plan in one
//! pipelined exchange ending in `COMMIT`: the new trials of all jobs in one
//! statement (`batch_writes.rs`), then each job's other writes in its plan's
//! order. The locked transaction costs two round trips (the locks and every
//! read; the writes and the commit), the first-use transaction one. Which
//! jobs go together, and what happens when a transaction fails, is `batch.rs`.

use std::collections::{BTreeSet, HashSet};

use temppass_core::TrialId;
use temppass_store::{AuthorizeOutcome, StoreError};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::batch::WriteJob;
use crate::batch_writes::{NewTrials, WriteStatements, Writes};
use crate::connection::{BEGIN, COMMIT, Conn, Param};
use crate::locks::{BATCH_LOCK_TIMEOUT, LOCK_BATCH_TRIALS, LOCK_SHARED_THEN_EXCLUSIVE, generation_lock, sorted};
use crate::lookup::Read;
use crate::to_store_error;

/// Every statement of a batch's transaction runs its cached generic plan.
/// Their parameters are arrays, whose lengths make each custom plan look a
/// little cheaper than the generic one, so under the default
/// `plan_cache_mode` PostgreSQL planned every statement of every batch
/// again: a seventh of its CPU per first use in a profile. The generic plans
/// of the lookups are point probes (see the `plan_cache_tests`).
const GENERIC_PLANS: &str = "SELECT set_config('plan_cache_mode', 'force_generic_plan', true)";
/// [`GENERIC_PLANS`], and the lock timeout $1 ([`BATCH_LOCK_TIMEOUT`]) for a transaction that is not patient.
const GENERIC_PLANS_AND_LOCK_TIMEOUT: &str = "
    SELECT set_config('plan_cache_mode', 'force_generic_plan', true), set_config('lock_timeout', $1, true)";

/// [`lookup::FIND`](crate::lookup::FIND) for every job of a batch's transaction, in one statement: $1 job
/// positions (0-based), $2 service providers, $3 mvpds, $4 key kinds, $5 keys, $6
/// valid since (ms), one element per key. Answers the job position, then
/// FIND's columns, for each key that has a binding.
///
/// Each probe is a `LATERAL` subquery with `OFFSET 0`, which PostgreSQL never
/// flattens into a join: it runs once per key with the key bound, so every
/// plan is a point probe by the whole primary key (a join against the keys
/// may be planned as a scan, see FIND).
pub(crate) const FIND_BATCH: &str = "
    SELECT k.job, k.kind, b.trial_id,
           COALESCE(b.generation = COALESCE(g.generation, 0) AND t.started_at_ms >= k.since, false) AS valid,
           t.started_at_ms, t.expires_at_ms, t.used_resources
    FROM unnest($1::int[], $2::text[], $3::text[], $4::smallint[], $5::text[], $6::bigint[])
         AS k (job, sp, mvpd, kind, key, since)
    CROSS JOIN LATERAL (
        SELECT x.trial_id, x.generation FROM bindings x
        WHERE x.service_provider = k.sp AND x.mvpd = k.mvpd AND x.key_kind = k.kind AND x.key = k.key
        OFFSET 0) b
    LEFT JOIN LATERAL (
        SELECT x.generation FROM generations x
        WHERE x.service_provider = k.sp AND x.mvpd = k.mvpd AND x.key_kind = k.kind
        OFFSET 0) g ON true
    LEFT JOIN LATERAL (
        SELECT x.started_at_ms, x.expires_at_ms, x.used_resources FROM trials x
        WHERE x.id = b.trial_id
        OFFSET 0) t ON true";

/// The statements of the write path, prepared (once per connection) before
/// the transaction starts so that its statements can be pipelined.
pub(crate) struct Statements {
    begin: tokio_postgres::Statement,
    generic_plans: tokio_postgres::Statement,
    generic_plans_and_lock_timeout: tokio_postgres::Statement,
    /// [`BATCH_LOCK_TIMEOUT`] as PostgreSQL reads it.
    lock_timeout: String,
    commit: tokio_postgres::Statement,
    lock_generations_and_keys: tokio_postgres::Statement,
    lock_trials: tokio_postgres::Statement,
    find: tokio_postgres::Statement,
    writes: WriteStatements,
}

impl Statements {
    pub(crate) async fn prepare(conn: &mut Conn) -> Result<Self, StoreError> {
        Ok(Self {
            begin: conn.prepare(BEGIN).await?,
            generic_plans: conn.prepare(GENERIC_PLANS).await?,
            generic_plans_and_lock_timeout: conn.prepare(GENERIC_PLANS_AND_LOCK_TIMEOUT).await?,
            lock_timeout: format!("{}ms", BATCH_LOCK_TIMEOUT.as_millis()),
            commit: conn.prepare(COMMIT).await?,
            lock_generations_and_keys: conn.prepare(LOCK_SHARED_THEN_EXCLUSIVE).await?,
            lock_trials: conn.prepare(LOCK_BATCH_TRIALS).await?,
            find: conn.prepare(FIND_BATCH).await?,
            writes: WriteStatements::prepare(conn).await?,
        })
    }
}

impl Statements {
    /// The settings statement of a transaction: generic plans, and unless
    /// `patient` the lock timeout, whose parameter is `lock_timeout`.
    fn settings<'p>(
        &'p self,
        patient: bool,
        lock_timeout: &'p [Param<'p>; 1],
    ) -> (&'p tokio_postgres::Statement, &'p [Param<'p>]) {
        if patient { (&self.generic_plans, &[]) } else { (&self.generic_plans_and_lock_timeout, &lock_timeout[..]) }
    }
}

/// Why a transaction attempt stopped: PostgreSQL's error (some are worth a
/// retry), or the store's own.
pub(crate) enum TxError {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error)
    }
}

impl From<StoreError> for TxError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl TxError {
    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            Self::Db(error) => to_store_error(error),
            Self::Store(error) => error,
        }
    }

    /// PostgreSQL broke a deadlock or a serialization conflict: the whole transaction may run again.
    pub(crate) fn worth_retrying(&self) -> bool {
        let Self::Db(error) = self else { return false };
        matches!(error.code(), Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE)
    }

    /// A lock was not granted within [`BATCH_LOCK_TIMEOUT`].
    pub(crate) fn lock_not_granted(&self) -> bool {
        matches!(self, Self::Db(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE))
    }

    /// The error of `START_NEW_BATCH` when one of its keys has a binding.
    pub(crate) fn binds_a_bound_key(&self) -> bool {
        let Self::Db(error) = self else { return false };
        error.as_db_error().is_some_and(|db| {
            *db.code() == SqlState::UNIQUE_VIOLATION
                && db.table() == Some("bindings")
                && db.constraint() == Some("bindings_pkey")
        })
    }
}

/// What a job of a transaction came to, once it committed.
pub(crate) enum Outcome {
    /// Committed; an error here is this job's alone.
    Done(Result<AuthorizeOutcome, StoreError>),
    /// A key of it moved to a trial the transaction had not locked: it runs
    /// again in the next transaction, and that counts as an attempt.
    StartOver,
    /// Its trial is written by an earlier job of the same transaction: it
    /// runs again in the next transaction, which is not its fault.
    Deferred,
}

/// The keys of the jobs of one transaction, one element per key: the
/// parameters of its locks and its reads.
struct TxKeys<'a> {
    generation_locks: Vec<i64>,
    key_locks: Vec<i64>,
    positions: Vec<i32>,
    sps: Vec<&'a str>,
    mvpds: Vec<&'a str>,
    kinds: Vec<i16>,
    keys: Vec<&'a str>,
    since: Vec<i64>,
}

impl<'a> TxKeys<'a> {
    fn new(jobs: &'a [WriteJob], together: &[usize]) -> Self {
        let mut tx = Self {
            generation_locks: Vec::new(),
            key_locks: Vec::new(),
            positions: Vec::new(),
            sps: Vec::new(),
            mvpds: Vec::new(),
            kinds: Vec::new(),
            keys: Vec::new(),
            since: Vec::new(),
        };
        for (position, job) in together.iter().map(|&index| &jobs[index]).enumerate() {
            tx.key_locks.extend(job.key_locks());
            let lookup = job.request().lookup;
            for (kind, key) in job.keys() {
                tx.generation_locks.push(generation_lock(lookup.scope, kind));
                tx.positions.push(position as i32);
                tx.sps.push(lookup.scope.service_provider.as_str());
                tx.mvpds.push(lookup.scope.mvpd.as_str());
                tx.kinds.push(kind.code());
                tx.keys.push(key);
                tx.since.push(lookup.valid_since.as_millis());
            }
        }
        tx.generation_locks = sorted(std::mem::take(&mut tx.generation_locks));
        tx.key_locks = sorted(std::mem::take(&mut tx.key_locks));
        tx
    }

    fn locks(&self) -> [Param<'_>; 2] {
        [&self.generation_locks, &self.key_locks]
    }

    fn trials(&self) -> [Param<'_>; 4] {
        [&self.sps, &self.mvpds, &self.kinds, &self.keys]
    }

    fn find(&self) -> [Param<'_>; 6] {
        [&self.positions, &self.sps, &self.mvpds, &self.kinds, &self.keys, &self.since]
    }
}

/// The transaction for jobs whose keys may be bound: it takes every lock in
/// the global order, then reads each job's bindings again (a snapshot taken
/// once the trial locks are granted: a concurrent merge may have moved a key
/// to a trial not locked here while the locks waited, even deleting the trial
/// that was), plans, writes and commits. Unless `patient`, a lock not granted
/// within [`BATCH_LOCK_TIMEOUT`] fails it with `LOCK_NOT_AVAILABLE`.
pub(crate) async fn run_locked(
    conn: &mut Conn,
    s: &Statements,
    jobs: &[WriteJob],
    together: &[usize],
    patient: bool,
) -> Result<Vec<(usize, Outcome)>, TxError> {
    let keys = TxKeys::new(jobs, together);
    let (locks, trials, find) = (keys.locks(), keys.trials(), keys.find());
    let lock_timeout: [Param<'_>; 1] = [&s.lock_timeout];
    let reads = [
        (&s.begin, &[][..]),
        s.settings(patient, &lock_timeout),
        (&s.lock_generations_and_keys, &locks[..]),
        (&s.lock_trials, &trials[..]),
        (&s.find, &find[..]),
    ];
    conn.transaction_opening();
    let mut answers = conn.pipeline(&reads).await?;
    let (Some(found_rows), Some(trial_locks)) = (answers.pop(), answers.pop()) else {
        return Err(StoreError::Internal("the reads of a batch went unanswered".into()).into());
    };
    let locked = trial_locks.iter().map(|row| row.try_get::<_, i64>(0)).collect::<Result<BTreeSet<i64>, _>>()?;
    let reads = reads_of(together.len(), &found_rows)?;
    let planned = settle(jobs, together, &reads, &locked);
    write_and_commit(conn, s, planned, &[], false).await
}

/// The transaction for jobs all of whose keys this server never saw bound:
/// it decides as if no key had a binding, and sends the locks, the writes and
/// the commit at once. Their keys are written by `START_NEW_BATCH`, a plain
/// insert that fails on any key that has a binding after all — bound by
/// another server, of an old generation, or moved by a merge — whichever
/// trial it points to; the caller then runs the jobs again the usual way.
/// Once the insert has succeeded, the unique index holds back any other
/// insert of those keys until this transaction ends: no key had a binding,
/// so no trial is found, which is what the decisions assumed. `patient` as
/// for [`run_locked`]: a slow job alone keeps its first use, without the lock timeout.
pub(crate) async fn run_first_uses(
    conn: &mut Conn,
    s: &Statements,
    jobs: &[WriteJob],
    together: &[usize],
    patient: bool,
) -> Result<Vec<(usize, Outcome)>, TxError> {
    let keys = TxKeys::new(jobs, together);
    let (locks, lock_timeout): ([Param<'_>; 2], [Param<'_>; 1]) = (keys.locks(), [&s.lock_timeout]);
    let first = [(&s.begin, &[][..]), s.settings(patient, &lock_timeout), (&s.lock_generations_and_keys, &locks[..])];
    let reads: Vec<Read> = together.iter().map(|_| Read::default()).collect();
    let planned = settle(jobs, together, &reads, &BTreeSet::new());
    conn.transaction_opening();
    write_and_commit(conn, s, planned, &first, true).await
}

/// The bindings [`FIND_BATCH`] read, per job of the transaction.
fn reads_of(jobs: usize, rows: &[Row]) -> Result<Vec<Read>, TxError> {
    let mut reads: Vec<Read> = (0..jobs).map(|_| Read::default()).collect();
    for row in rows {
        let position: i32 = row.try_get(0)?;
        let Some(read) = usize::try_from(position).ok().and_then(|position| reads.get_mut(position)) else {
            return Err(StoreError::Internal(format!("a binding was read for job {position} of {jobs}")).into());
        };
        read.add(row, 1)?;
    }
    Ok(reads)
}

/// What a job of a transaction came to, before its writes.
enum Settled<'a> {
    Planned(Box<Writes<'a>>),
    /// It could not be planned (a bug): it writes nothing and is answered this error.
    Failed(StoreError),
    StartOver,
    Deferred,
}

/// Plans each job from its bindings. A job with a key that points to a
/// trial not locked here starts over. Two jobs with no key in common can
/// still find one trial (two devices of one promotional pass): each decides
/// from what the reads saw, so only the first may write it in this
/// transaction; the others are deferred to the next.
fn settle<'a>(
    jobs: &'a [WriteJob],
    together: &[usize],
    reads: &[Read],
    locked: &BTreeSet<i64>,
) -> Vec<(usize, Settled<'a>)> {
    let mut claimed = HashSet::new();
    together
        .iter()
        .zip(reads)
        .map(|(&index, read)| {
            let settled = if !read.existing.iter().all(|id| locked.contains(&id.0)) {
                Settled::StartOver
            } else if read.found.referenced().any(|id| claimed.contains(&id)) {
                Settled::Deferred
            } else {
                claimed.extend(read.found.referenced());
                match Writes::new(&jobs[index], read) {
                    Ok(writes) => Settled::Planned(Box::new(writes)),
                    Err(error) => Settled::Failed(error),
                }
            };
            (index, settled)
        })
        .collect()
}

/// Sends `first` (what was not sent yet), the new trials of every plan in
/// one statement, each plan's other writes, and the commit, at once; answers
/// what each job came to.
async fn write_and_commit(
    conn: &mut Conn,
    s: &Statements,
    planned: Vec<(usize, Settled<'_>)>,
    first: &[(&tokio_postgres::Statement, &[Param<'_>])],
    first_uses: bool,
) -> Result<Vec<(usize, Outcome)>, TxError> {
    let mut new_trials = NewTrials::default();
    let start_rows: Vec<Option<usize>> = planned
        .iter()
        .map(|(_, settled)| match settled {
            Settled::Planned(writes) => new_trials.push(writes),
            _ => None,
        })
        .collect();
    let mut writes: Vec<(&tokio_postgres::Statement, Vec<Param<'_>>)> =
        first.iter().map(|(statement, params)| (*statement, params.to_vec())).collect();
    let start_at = writes.len();
    if !new_trials.is_empty() {
        writes.push((if first_uses { &s.writes.start_new } else { &s.writes.start }, new_trials.params()));
    }
    for (_, settled) in &planned {
        if let Settled::Planned(job) = settled {
            job.push(&s.writes, &mut writes);
        }
    }
    writes.push((&s.commit, vec![]));
    let writes: Vec<(&tokio_postgres::Statement, &[Param<'_>])> =
        writes.iter().map(|(statement, params)| (*statement, params.as_slice())).collect();
    let answers = conn.pipeline(&writes).await?;
    conn.transaction_closed();
    let started_ids: &[Row] = if new_trials.is_empty() { &[] } else { &answers[start_at] };
    Ok(planned
        .into_iter()
        .zip(start_rows)
        .map(|((index, settled), start_row)| (index, outcome(settled, start_row.and_then(|row| started_ids.get(row)))))
        .collect())
}

/// What a committed job came to; `started` is the row of the id of the trial it started, if any.
fn outcome(settled: Settled<'_>, started: Option<&Row>) -> Outcome {
    match settled {
        Settled::StartOver => Outcome::StartOver,
        Settled::Deferred => Outcome::Deferred,
        Settled::Failed(error) => Outcome::Done(Err(error)),
        Settled::Planned(writes) => {
            let id = match started.map(|row| row.try_get::<_, i64>(0)) {
                Some(Ok(id)) => Some(TrialId(id)),
                Some(Err(error)) => return Outcome::Done(Err(to_store_error(error))),
                None => None,
            };
            Outcome::Done(writes.outcome(id))
        }
    }
}

#[cfg(all(test, feature = "testing"))]
#[path = "plan_cache_tests.rs"]
mod plan_cache_tests;
