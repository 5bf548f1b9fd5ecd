//! Trials, bindings and generations in PostgreSQL (SPEC.md §2 and §7).
//!
//! The tables and their meaning are the SQLite backend's: a trial is found
//! through a binding `(service provider, mvpd, key kind, key) → trial`, which
//! counts only while its generation is the current one of its
//! `(service provider, mvpd, key kind)`. The decision is
//! `temppass_core::authorize`; this module loads, locks and stores.
//!
//! Several servers write at once, so every write transaction takes its locks
//! in one global order, which rules out lock cycles between them:
//!
//! 1. shared advisory locks on the generations it reads (an "all" reset takes
//!    one exclusively, so it waits for the authorizations in flight and they
//!    never bind with a generation that is being superseded);
//! 2. exclusive advisory locks on its lookup keys, sorted (two first
//!    authorizations of one key queue here; the second then finds the trial,
//!    or, if it took the first-use path below, fails on the key's binding and
//!    runs again to find it);
//! 3. `FOR UPDATE` row locks on the trials those keys point to, sorted by id.
//!
//! Rule that makes the row locks enough: the set of bindings pointing to a
//! trial changes only under that trial's row lock (bind, merge, reset,
//! reclaim all take it). So once a transaction holds the rows, a statement
//! started after that reads bindings that nobody else can change until it
//! commits. A key's binding can still move between the read that chose the
//! rows and the lock (a concurrent merge); the transaction reads again after
//! locking and starts over when a key now points to a trial it did not lock.
//!
//! First uses on keys this server never saw bound take no row locks and read
//! nothing (see `authorize_together`): what makes that safe is the unique
//! index of `bindings`. Their plain insert fails on any row of their keys,
//! whatever its generation or trial, and once it has succeeded no other
//! transaction can insert those keys before they commit.

use std::collections::BTreeSet;

use temppass_core::{
    AuthorizeVerdict, IdentityHash, ResourceId, Rule, RuleScope, Timestamp, Trial, TrialId, TrialUpdate,
    authorize as decide, merge,
};
use temppass_store::{AuthorizeOutcome, BoundKeys, FoundTrials, OwnedLookup, ReclaimReport, StoreError, TrialLookup};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::connection::{Conn, Param};
use crate::to_store_error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Device = 0,
    Identity = 1,
}

// The filter of bound keys is loaded from `bindings.key_kind`: the codes must agree.
const _: () = assert!(
    KeyKind::Device as i64 == temppass_store::DEVICE_KEY && KeyKind::Identity as i64 == temppass_store::IDENTITY_KEY
);

impl KeyKind {
    fn code(self) -> i16 {
        self as i16
    }
}

/// How often a write transaction starts over (a concurrent merge moved a key,
/// or PostgreSQL reported a deadlock) before the store reports itself unavailable.
const MAX_ATTEMPTS: usize = 8;

// --- statements -------------------------------------------------------------

const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
/// Every statement of a batch's transaction runs its cached generic plan.
/// Their parameters are arrays, whose lengths make each custom plan look a
/// little cheaper than the generic one, so under the default
/// `plan_cache_mode` PostgreSQL planned every statement of every batch
/// again: a seventh of its CPU per first use in a profile. The generic plans
/// of the lookups are point probes (see the `plans` tests).
const GENERIC_PLANS: &str = "SELECT set_config('plan_cache_mode', 'force_generic_plan', true)";
/// [`GENERIC_PLANS`], and how long a batch's transaction waits for a lock
/// before it gives up: its authorizations then run one by one, and one that
/// still cannot get its lock runs last, alone, waiting as long as its
/// statements may. One contended key must not hold back, or fail, the
/// unrelated authorizations batched with it.
const GENERIC_PLANS_AND_LOCK_TIMEOUT: &str = "
    SELECT set_config('plan_cache_mode', 'force_generic_plan', true), set_config('lock_timeout', '200ms', true)";
const COMMIT: &str = "COMMIT";
/// The locks of an authorization in one statement: the generations' shared
/// ($1), then the keys' exclusive ($2). An `Append` runs its branches in
/// order and `unnest` yields each array in order, so the global lock order
/// holds; the lock functions are `PARALLEL RESTRICTED`, so no Parallel Append
/// can run the branches side by side.
const LOCK_SHARED_THEN_EXCLUSIVE: &str = "
    SELECT pg_advisory_xact_lock_shared(k) FROM unnest($1::bigint[]) AS k
    UNION ALL
    SELECT pg_advisory_xact_lock(k) FROM unnest($2::bigint[]) AS k";
// `unnest` yields the array in order, so the locks are taken in the (sorted) order given.
const LOCK_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k";

/// One branch of [`FIND`]: the binding of kind `$kind` whose key is parameter `$key`.
macro_rules! find_branch {
    ($kind:literal, $key:literal) => {
        concat!(
            "SELECT ",
            $kind,
            "::smallint AS kind, b.trial_id,
                    COALESCE(b.generation = COALESCE(g.generation, 0) AND t.started_at_ms >= $5, false) AS valid,
                    t.started_at_ms, t.expires_at_ms, t.used_resources
             FROM bindings b
             LEFT JOIN generations g ON g.service_provider = $1 AND g.mvpd = $2 AND g.key_kind = ",
            $kind,
            "
             LEFT JOIN trials t ON t.id = b.trial_id
             WHERE b.service_provider = $1 AND b.mvpd = $2 AND b.key_kind = ",
            $kind,
            " AND b.key = ",
            $key,
            "::text"
        )
    };
}

/// The bindings of a device and (optionally) an identity, whatever their
/// generation, with their trials: $1 service provider, $2 mvpd, $3 device id,
/// $4 identity hash or NULL, $5 valid since (ms). One statement: per key, one
/// primary-key probe into `bindings`, `generations` and `trials` each.
///
/// Each key is its own branch with the whole primary key bound, so every plan
/// PostgreSQL may cache for it — including a generic plan made while the
/// tables were nearly empty and never analyzed since — is a point probe. (A
/// join against a `VALUES` list of both keys was planned as a scan of every
/// binding of the service provider and MVPD, filtered by key: O(trials) per
/// request until an ANALYZE, found by `bench/load` on a database without autovacuum.)
pub(crate) const FIND: &str = concat!(find_branch!("0", "$3"), " UNION ALL ", find_branch!("1", "$4"));

/// Locks, in id order, the trials that the keys of a batch point to: $1
/// service providers, $2 mvpds, $3 key kinds, $4 keys, one element per key.
/// Each key is a correlated probe of `bindings` by its whole primary key, not
/// a join: a join against the keys may be planned as a scan of every binding
/// (see [`FIND`]).
const LOCK_BATCH_TRIALS: &str = "
    SELECT t.id FROM trials t
    WHERE t.id = ANY(ARRAY(
        SELECT (SELECT b.trial_id FROM bindings b
                WHERE b.service_provider = k.sp AND b.mvpd = k.mvpd AND b.key_kind = k.kind AND b.key = k.key)
        FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[]) AS k (sp, mvpd, kind, key)))
    ORDER BY t.id
    FOR UPDATE OF t";

const LOCK_TRIAL_IDS: &str = "SELECT id FROM trials WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE";

/// Binds keys ($3 kinds, $4 keys) to trial $5 with the current generation.
const BIND: &str = "
    INSERT INTO bindings (service_provider, mvpd, key_kind, key, generation, trial_id)
    SELECT $1, $2, k.kind, k.key, COALESCE(g.generation, 0), $5
    FROM unnest($3::smallint[], $4::text[]) AS k (kind, key)
    LEFT JOIN generations g ON g.service_provider = $1 AND g.mvpd = $2 AND g.key_kind = k.kind
    ON CONFLICT (service_provider, mvpd, key_kind, key)
    DO UPDATE SET generation = excluded.generation, trial_id = excluded.trial_id";

/// [`FIND`] for every job of a batch's transaction, in one statement: $1 job
/// positions (0-based), $2 service providers, $3 mvpds, $4 key kinds, $5 keys, $6
/// valid since (ms), one element per key. Answers the job position, then
/// [`FIND`]'s columns, for each key that has a binding.
///
/// Each probe is a `LATERAL` subquery with `OFFSET 0`, which PostgreSQL never
/// flattens into a join: it runs once per key with the key bound, so every
/// plan is a point probe by the whole primary key (a join against the keys
/// may be planned as a scan, see [`FIND`]).
const FIND_BATCH: &str = "
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

/// [`START_BATCH`] and [`START_NEW_BATCH`], which differ only in what a key
/// that is bound already does: `$on_conflict`.
macro_rules! start_batch {
    ($on_conflict:literal) => {
        concat!(
            "
    WITH new AS MATERIALIZED (
        SELECT nextval('trials_id_seq') AS id, n.*
        FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::int[], $6::int[])
             WITH ORDINALITY AS n (sp, mvpd, started, expires, first, count, position)
    ), trial AS (
        INSERT INTO trials (id, service_provider, mvpd, started_at_ms, expires_at_ms, used_resources)
        OVERRIDING SYSTEM VALUE
        SELECT id, sp, mvpd, started, expires, ($7::text[])[first:first + count - 1] FROM new
    ), bound AS (
        INSERT INTO bindings (service_provider, mvpd, key_kind, key, generation, trial_id)
        SELECT new.sp, new.mvpd, k.kind, k.key, COALESCE(g.generation, 0), new.id
        FROM unnest($8::bigint[], $9::smallint[], $10::text[]) AS k (position, kind, key)
        JOIN new ON new.position = k.position
        LEFT JOIN LATERAL (
            SELECT x.generation FROM generations x
            WHERE x.service_provider = new.sp AND x.mvpd = new.mvpd AND x.key_kind = k.kind
            OFFSET 0) g ON true",
            $on_conflict,
            "
    )
    SELECT id FROM new ORDER BY position"
        )
    };
}

/// Starts the new trials of a batch's transaction and binds their keys, in
/// one statement: per trial $1 service provider, $2 mvpd, $3 started, $4
/// expires (ms), and its used resources, `$6` of them from position `$5`
/// (1-based) of $7; per key $8 its trial's position (1-based) in $1, $9 its
/// kind, $10 the key. Answers the new ids in the order of $1.
///
/// The ids are drawn from the identity column's sequence first, so that each
/// is known to belong to its trial (`RETURNING` promises no order). Each
/// key's generation is a point probe, as in [`FIND_BATCH`].
const START_BATCH: &str = start_batch!(
    "
        ON CONFLICT (service_provider, mvpd, key_kind, key)
        DO UPDATE SET generation = excluded.generation, trial_id = excluded.trial_id"
);

/// [`START_BATCH`] for keys believed never bound: a key that has any row in
/// `bindings` after all (bound by another server, of an old generation, from
/// before a scheduled reset, moved by a merge) fails the statement with a
/// unique violation of `bindings_pkey`, and with it the transaction (see
/// `authorize_together`'s `first_uses`). A row being deleted (background
/// reclaiming) makes it wait for that delete, within the lock timeout.
const START_NEW_BATCH: &str = start_batch!("");

const UPDATE_RESOURCES: &str = "UPDATE trials SET used_resources = $2 WHERE id = $1";
const MOVE_BINDINGS: &str = "UPDATE bindings SET trial_id = $1 WHERE trial_id = $2";
const DELETE_TRIAL: &str = "DELETE FROM trials WHERE id = $1";
/// Deletes those of the trials $1 that no binding points to; the caller holds their row locks.
const DELETE_UNBOUND: &str = "
    DELETE FROM trials t
    WHERE t.id = ANY($1::bigint[]) AND NOT EXISTS (SELECT 1 FROM bindings b WHERE b.trial_id = t.id)
    RETURNING t.id";

const LOCK_KEY_TRIAL: &str = "
    SELECT t.id FROM trials t
    WHERE t.id IN (SELECT trial_id FROM bindings
                   WHERE service_provider = $1 AND mvpd = $2 AND key_kind = $3 AND key = $4)
    ORDER BY t.id
    FOR UPDATE OF t";
const DELETE_BINDING: &str = "
    DELETE FROM bindings WHERE service_provider = $1 AND mvpd = $2 AND key_kind = $3 AND key = $4
    RETURNING trial_id";
/// The O(1) reset of all keys of a kind: waits for the authorizations that
/// read this generation (they hold its advisory lock shared), then bumps it.
const BUMP_GENERATION: &str = "
    WITH exclusive AS (SELECT pg_advisory_xact_lock($4))
    INSERT INTO generations (service_provider, mvpd, key_kind, generation)
    SELECT $1, $2, $3, 1 FROM exclusive
    ON CONFLICT (service_provider, mvpd, key_kind) DO UPDATE SET generation = generations.generation + 1";

const RECLAIM_PAGE: &str = "
    SELECT b.service_provider, b.mvpd, b.key_kind, b.key, b.generation, b.trial_id, COALESCE(g.generation, 0)
    FROM bindings b
    LEFT JOIN generations g
      ON g.service_provider = b.service_provider AND g.mvpd = b.mvpd AND g.key_kind = b.key_kind
    WHERE (b.service_provider, b.mvpd, b.key_kind, b.key) > ($1, $2, $3, $4)
    ORDER BY b.service_provider, b.mvpd, b.key_kind, b.key
    LIMIT $5";
/// Deletes bindings still older than the generation read with them (an
/// authorization may have re-bound one since: that one stays).
const DELETE_SUPERSEDED: &str = "
    DELETE FROM bindings b
    USING unnest($1::text[], $2::text[], $3::smallint[], $4::text[], $5::bigint[]) AS d (sp, mvpd, kind, key, current)
    WHERE b.service_provider = d.sp AND b.mvpd = d.mvpd AND b.key_kind = d.kind AND b.key = d.key
      AND b.generation < d.current
    RETURNING 1";
const DELETE_EXPIRED_SESSIONS: &str = "
    DELETE FROM sessions WHERE code IN
      (SELECT code FROM sessions WHERE expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2)
    RETURNING 1";
const DELETE_EXPIRED_TOKENS: &str = "
    DELETE FROM access_tokens WHERE token_hash IN
      (SELECT token_hash FROM access_tokens WHERE expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2)
    RETURNING 1";
/// Clients that registered before $1 (now − `CLIENT_IDLE_MS`) and hold no access token.
const DELETE_IDLE_CLIENTS: &str = "
    DELETE FROM clients WHERE client_id IN
      (SELECT c.client_id FROM clients c
       WHERE c.issued_at_ms <= $1
         AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.client_id = c.client_id)
       ORDER BY c.issued_at_ms LIMIT $2)
    RETURNING 1";

// --- advisory lock keys -------------------------------------------------------

/// A 64-bit FNV-1a hash: the same on every server, unlike std's seeded
/// hasher. Each part is length-prefixed so no two key tuples share an input.
/// A collision only makes two unrelated keys wait for each other.
fn lock_key(parts: &[&[u8]]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash as i64
}

fn generation_lock(scope: &RuleScope, kind: KeyKind) -> i64 {
    let sp = scope.service_provider.as_str().as_bytes();
    lock_key(&[b"generation", sp, scope.mvpd.as_str().as_bytes(), &[kind as u8]])
}

fn key_lock(scope: &RuleScope, kind: KeyKind, key: &str) -> i64 {
    let sp = scope.service_provider.as_str().as_bytes();
    lock_key(&[b"binding", sp, scope.mvpd.as_str().as_bytes(), &[kind as u8], key.as_bytes()])
}

fn sorted(mut keys: Vec<i64>) -> Vec<i64> {
    keys.sort_unstable();
    keys.dedup();
    keys
}

// --- reading ------------------------------------------------------------------

fn decode_trial(id: i64, started_at_ms: i64, expires_at_ms: i64, used: Vec<String>) -> Result<Trial, StoreError> {
    let used_resources = used
        .iter()
        .map(|raw| {
            ResourceId::parse(raw).map_err(|e| StoreError::Internal(format!("trial {id}: resource {raw:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Trial {
        id: TrialId(id),
        started_at: Timestamp::from_millis(started_at_ms),
        expires_at: Timestamp::from_millis(expires_at_ms),
        used_resources,
    })
}

/// A key's binding as stored, whatever its generation.
struct Binding {
    trial_id: i64,
    /// Of the current generation, and its trial started at or after `valid_since`.
    valid: bool,
    /// `None` only if the binding points to a trial that is gone, which the locking rules prevent.
    trial: Option<Trial>,
}

/// What [`FIND`] answers for the two keys of a lookup.
#[derive(Default)]
struct Bindings {
    device: Option<Binding>,
    identity: Option<Binding>,
}

impl Bindings {
    fn from_rows(rows: &[Row]) -> Result<Self, StoreError> {
        let mut bindings = Self::default();
        for row in rows {
            bindings.add(row, 0)?;
        }
        Ok(bindings)
    }

    /// Adds the binding of `row`, whose [`FIND`] columns start at `first`.
    fn add(&mut self, row: &Row, first: usize) -> Result<(), StoreError> {
        let kind: i16 = row.try_get(first).map_err(to_store_error)?;
        let trial_id: i64 = row.try_get(first + 1).map_err(to_store_error)?;
        let valid: bool = row.try_get(first + 2).map_err(to_store_error)?;
        let started: Option<i64> = row.try_get(first + 3).map_err(to_store_error)?;
        let expires: Option<i64> = row.try_get(first + 4).map_err(to_store_error)?;
        let used: Option<Vec<String>> = row.try_get(first + 5).map_err(to_store_error)?;
        let trial = match (started, expires, used) {
            (Some(started), Some(expires), Some(used)) => Some(decode_trial(trial_id, started, expires, used)?),
            _ => None,
        };
        let binding = Some(Binding { trial_id, valid: valid && trial.is_some(), trial });
        if kind == KeyKind::Device.code() {
            self.device = binding;
        } else {
            self.identity = binding;
        }
        Ok(())
    }

    /// The ids of the trials these bindings point to, where the trial exists.
    fn trial_ids(&self) -> impl Iterator<Item = i64> + '_ {
        [&self.device, &self.identity].into_iter().flatten().filter(|b| b.trial.is_some()).map(|b| b.trial_id)
    }

    /// The ids of every trial these bindings point to, existing or not.
    fn referenced_trials(&self) -> impl Iterator<Item = i64> + '_ {
        [&self.device, &self.identity].into_iter().flatten().map(|b| b.trial_id)
    }

    fn found(&self) -> FoundTrials {
        let valid = |binding: &Option<Binding>| binding.as_ref().filter(|b| b.valid).and_then(|b| b.trial.clone());
        FoundTrials { by_device: valid(&self.device), by_identity: valid(&self.identity) }
    }
}

/// The parameters of [`FIND`].
struct LookupParams<'a> {
    service_provider: &'a str,
    mvpd: &'a str,
    device: &'a str,
    identity: Option<&'a str>,
    valid_since_ms: i64,
}

impl<'a> LookupParams<'a> {
    fn new(lookup: TrialLookup<'a>) -> Self {
        Self {
            service_provider: lookup.scope.service_provider.as_str(),
            mvpd: lookup.scope.mvpd.as_str(),
            device: lookup.device.as_str(),
            identity: lookup.identity.map(|i| i.as_str()),
            valid_since_ms: lookup.valid_since.as_millis(),
        }
    }

    fn all(&self) -> [Param<'_>; 5] {
        [&self.service_provider, &self.mvpd, &self.device, &self.identity, &self.valid_since_ms]
    }
}

/// The trials of a lookup's keys: one statement, on a connection that other
/// reads share (see `shared_reads.rs`); `find` is [`FIND`] prepared on it.
pub(crate) async fn find(
    client: &tokio_postgres::Client,
    find: &tokio_postgres::Statement,
    lookup: TrialLookup<'_>,
) -> Result<FoundTrials, StoreError> {
    let params = LookupParams::new(lookup);
    let rows = client.query(find, &params.all()).await.map_err(to_store_error)?;
    Ok(Bindings::from_rows(&rows)?.found())
}

// --- authorizing ----------------------------------------------------------------

/// The statements of the write path, prepared (once per connection) before
/// the transaction starts so that its statements can be pipelined.
struct AuthorizeStatements {
    begin: tokio_postgres::Statement,
    generic_plans: tokio_postgres::Statement,
    generic_plans_and_lock_timeout: tokio_postgres::Statement,
    commit: tokio_postgres::Statement,
    lock_generations_and_keys: tokio_postgres::Statement,
    lock_trials: tokio_postgres::Statement,
    find: tokio_postgres::Statement,
    start: tokio_postgres::Statement,
    start_new: tokio_postgres::Statement,
    bind: tokio_postgres::Statement,
    update_resources: tokio_postgres::Statement,
    move_bindings: tokio_postgres::Statement,
    delete_trial: tokio_postgres::Statement,
    delete_unbound: tokio_postgres::Statement,
}

impl AuthorizeStatements {
    async fn prepare(conn: &mut Conn) -> Result<Self, StoreError> {
        Ok(Self {
            begin: conn.prepare(BEGIN).await?,
            generic_plans: conn.prepare(GENERIC_PLANS).await?,
            generic_plans_and_lock_timeout: conn.prepare(GENERIC_PLANS_AND_LOCK_TIMEOUT).await?,
            commit: conn.prepare(COMMIT).await?,
            lock_generations_and_keys: conn.prepare(LOCK_SHARED_THEN_EXCLUSIVE).await?,
            lock_trials: conn.prepare(LOCK_BATCH_TRIALS).await?,
            find: conn.prepare(FIND_BATCH).await?,
            start: conn.prepare(START_BATCH).await?,
            start_new: conn.prepare(START_NEW_BATCH).await?,
            bind: conn.prepare(BIND).await?,
            update_resources: conn.prepare(UPDATE_RESOURCES).await?,
            move_bindings: conn.prepare(MOVE_BINDINGS).await?,
            delete_trial: conn.prepare(DELETE_TRIAL).await?,
            delete_unbound: conn.prepare(DELETE_UNBOUND).await?,
        })
    }
}

/// Why a transaction attempt stopped: PostgreSQL's error (some are worth a
/// retry), or the store's own.
enum TxError {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error)
    }
}

impl TxError {
    fn into_store_error(self) -> StoreError {
        match self {
            Self::Db(error) => to_store_error(error),
            Self::Store(error) => error,
        }
    }
}

impl From<StoreError> for TxError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// The error of [`START_NEW_BATCH`] when one of its keys has a binding.
fn binds_a_bound_key(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION
            && db.table() == Some("bindings")
            && db.constraint() == Some("bindings_pkey")
    })
}

fn worth_retrying(error: &tokio_postgres::Error) -> bool {
    matches!(error.code(), Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// Runs `attempt` until it is done, starting over (after a rollback) when
/// PostgreSQL broke a deadlock, at most [`MAX_ATTEMPTS`] times.
/// On any other error the connection is dropped mid-transaction, which closes it.
macro_rules! with_retries {
    ($conn:expr, $what:literal, $attempt:expr) => {{
        let mut outcome = Err(StoreError::Unavailable(format!(
            "{} did not settle after {MAX_ATTEMPTS} attempts under contention",
            $what
        )));
        for _ in 0..MAX_ATTEMPTS {
            match $attempt {
                Ok(value) => {
                    outcome = Ok(value);
                    break;
                }
                Err(TxError::Db(error)) if worth_retrying(&error) => $conn.rollback().await?,
                Err(TxError::Db(error)) => return Err(to_store_error(error)),
                Err(TxError::Store(error)) => return Err(error),
            }
        }
        outcome
    }};
}

/// An authorization that needs the write path, owned so that it can wait
/// for a batch (see `PostgresStore::authorize`).
pub(crate) struct WriteJob {
    lookup: OwnedLookup,
    rule: Rule,
    resource: ResourceId,
    now: Timestamp,
    /// The filter of bound keys said that none of its keys was ever bound: a
    /// hint that lets its transaction skip the reads (see `authorize_together`).
    keys_never_bound: bool,
}

impl WriteJob {
    pub(crate) fn new(lookup: TrialLookup<'_>, rule: &Rule, resource: &ResourceId, now: Timestamp) -> Self {
        let lookup = OwnedLookup::new(lookup);
        Self { lookup, rule: rule.clone(), resource: resource.clone(), now, keys_never_bound: false }
    }

    /// Marks whether the filter of bound keys said that none of its keys was ever bound.
    pub(crate) fn keys_never_bound(self, keys_never_bound: bool) -> Self {
        Self { keys_never_bound, ..self }
    }

    /// The advisory locks of its keys, as `lock_key` numbers.
    fn key_locks(&self) -> impl Iterator<Item = i64> + '_ {
        let OwnedLookup { scope, device, identity, .. } = &self.lookup;
        let device = key_lock(scope, KeyKind::Device, device.as_str());
        let identity = identity.as_ref().map(|i| key_lock(scope, KeyKind::Identity, i.as_str()));
        std::iter::once(device).chain(identity)
    }
}

/// Runs `jobs` in as few transactions as it can, each job exactly as it
/// would run alone: one transaction takes every job whose keys no job before
/// it in that transaction shares (the others wait for the next one), locks
/// all their generations and keys in one statement and all their trials in
/// another (each in the global order), reads each job's bindings, decides
/// each job, writes them all and commits once; each job's answer is kept
/// only once that commit is answered, and its caller hears it then. A job
/// whose caller stopped waiting is not run. A job whose key moved to an unlocked
/// trial, or whose trial an earlier job of the transaction writes, runs again
/// in the next transaction; so does one that waited for a lock longer than
/// the lock timeout of [`GENERIC_PLANS_AND_LOCK_TIMEOUT`], last and alone; a deadlock reported by
/// PostgreSQL runs the whole transaction again; any other error rolls it back
/// and its jobs run one per transaction from then on, so an error belongs to
/// one job. A transaction whose jobs all have keys never bound (and that
/// `backoff` allows) is a first-use transaction instead, which locks only
/// the keys and reads nothing; when its insert meets a key bound after all,
/// it rolls back and its jobs run again the usual way, an attempt that is not
/// counted. A job that took part in [`MAX_ATTEMPTS`] transactions without an
/// answer is answered `Unavailable`.
pub(crate) async fn authorize_batch(
    conn: &mut Conn,
    jobs: &[WriteJob],
    callers: &mut impl Callers,
    backoff: &FirstUseBackoff,
) {
    let statements = match AuthorizeStatements::prepare(conn).await {
        Ok(statements) => statements,
        Err(error) => {
            for index in 0..jobs.len() {
                callers.answer(index, Err(error.clone()));
            }
            return;
        }
    };
    let mut attempts = vec![0_usize; jobs.len()];
    // Jobs that could not get a lock quickly: they run last, alone, waiting
    // as long as their statements may, so that they hold back nobody else.
    let mut slow = vec![false; jobs.len()];
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    let mut one_at_a_time = false;
    // Jobs still believed to start trials on keys never bound; cleared for
    // the jobs of a transaction that found a key bound after all.
    let mut never_bound: Vec<bool> = jobs.iter().map(|job| job.keys_never_bound).collect();
    loop {
        // A caller whose deadline passed is gone: its job is not run, so
        // nothing is written that nobody was told of.
        pending.retain(|&index| callers.waiting(index));
        if pending.is_empty() {
            return;
        }
        // Quick jobs first, the slow ones alone once nothing else is left.
        let quick: Vec<usize> = pending.iter().copied().filter(|&index| !slow[index]).collect();
        let (now, later) = if quick.is_empty() {
            (vec![pending[0]], pending[1..].to_vec())
        } else {
            let (now, mut later) = disjoint(jobs, &quick, one_at_a_time);
            later.extend(pending.iter().copied().filter(|&index| slow[index]));
            (now, later)
        };
        for &index in &now {
            attempts[index] += 1;
        }
        let patient = now.len() == 1 && slow[now[0]];
        let first_uses = now.iter().all(|&index| never_bound[index]) && backoff.allow();
        let mut again = Vec::new();
        match authorize_together(conn, &statements, jobs, &now, patient, first_uses).await {
            Ok(outcomes) => {
                if first_uses {
                    backoff.succeeded();
                }
                // Committed: each caller hears at once, not after the rest of the batch.
                for (index, outcome) in outcomes {
                    match outcome {
                        Outcome::Done(answer) => callers.answer(index, answer),
                        Outcome::StartOver => again.push(index),
                        Outcome::Deferred => {
                            attempts[index] -= 1;
                            again.push(index);
                        }
                    }
                }
            }
            Err(error) => {
                // Whatever failed, the transaction is over for PostgreSQL or
                // must be ended here; a connection that cannot even roll back
                // fails every job still waiting.
                if let Err(lost) = conn.rollback().await {
                    for &index in &pending {
                        callers.answer(index, Err(lost.clone()));
                    }
                    return;
                }
                match error {
                    TxError::Db(error) if worth_retrying(&error) => again.extend(&now),
                    TxError::Db(error) if now.len() == 1 && error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                        slow[now[0]] = true;
                        again.extend(&now);
                    }
                    // A key believed never bound was bound (by another
                    // server): the jobs run again, reading their bindings.
                    TxError::Db(error) if first_uses && binds_a_bound_key(&error) => {
                        backoff.failed();
                        for &index in &now {
                            never_bound[index] = false;
                            attempts[index] -= 1;
                        }
                        again.extend(&now);
                    }
                    error if now.len() > 1 => {
                        let error = error.into_store_error();
                        tracing::debug!(%error, jobs = now.len(), "a batch of authorizations failed; running them one by one");
                        one_at_a_time = true;
                        again.extend(&now);
                    }
                    error => callers.answer(now[0], Err(error.into_store_error())),
                }
            }
        }
        let mut settled = Vec::new();
        for index in again {
            if attempts[index] >= MAX_ATTEMPTS {
                callers.answer(
                    index,
                    Err(StoreError::Unavailable(format!(
                        "an authorization did not settle after {MAX_ATTEMPTS} attempts under contention"
                    ))),
                );
            } else {
                settled.push(index);
            }
        }
        pending = later.into_iter().chain(settled).collect();
    }
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
    skip: std::sync::atomic::AtomicU32,
    /// The last number skipped after a failure; 0 once a transaction of first uses succeeds.
    next: std::sync::atomic::AtomicU32,
}

impl FirstUseBackoff {
    const MAX_SKIPPED: u32 = 1024;

    /// Whether the next transaction of first uses may skip its reads.
    fn allow(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.skip.fetch_update(Relaxed, Relaxed, |skip| skip.checked_sub(1)).is_err()
    }

    fn succeeded(&self) {
        self.next.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn failed(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let next = self.next.load(Relaxed).saturating_mul(2).clamp(2, Self::MAX_SKIPPED);
        self.next.store(next, Relaxed);
        self.skip.store(next, Relaxed);
    }
}

/// Whoever waits for the jobs of a batch.
pub(crate) trait Callers {
    /// Whether someone still waits for job `index`'s answer.
    fn waiting(&self, index: usize) -> bool;
    /// Job `index`'s answer: called once per job that ran, as soon as it is known.
    fn answer(&mut self, index: usize, answer: Result<AuthorizeOutcome, StoreError>);
}

/// The jobs of `pending` that can share a transaction, in order: each whose
/// keys no job taken before it has (or only the first, `one_at_a_time`); and the rest.
fn disjoint(jobs: &[WriteJob], pending: &[usize], one_at_a_time: bool) -> (Vec<usize>, Vec<usize>) {
    let mut taken_keys = std::collections::HashSet::new();
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for &index in pending {
        let keys: Vec<i64> = jobs[index].key_locks().collect();
        let room = !one_at_a_time || now.is_empty();
        let fits = room && keys.iter().all(|key| !taken_keys.contains(key));
        if fits {
            taken_keys.extend(keys);
            now.push(index);
        } else {
            later.push(index);
        }
    }
    (now, later)
}

/// One transaction for the jobs `together` (no two share a key). Answers what
/// each job came to. Two round trips: the locks and every read, then every
/// write and the commit; one for `first_uses`, which reads nothing. Unless
/// `patient`, a lock not granted within the lock timeout of
/// [`GENERIC_PLANS_AND_LOCK_TIMEOUT`] fails the transaction with `LOCK_NOT_AVAILABLE`.
async fn authorize_together(
    conn: &mut Conn,
    s: &AuthorizeStatements,
    jobs: &[WriteJob],
    together: &[usize],
    patient: bool,
    first_uses: bool,
) -> Result<Vec<(usize, Outcome)>, TxError> {
    let mut generation_locks = Vec::new();
    let mut key_locks = Vec::new();
    // One element per key, for the trial locks and the bindings' read.
    let (mut positions, mut sps, mut mvpds, mut kinds, mut keys, mut since) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (position, &index) in together.iter().enumerate() {
        let job = &jobs[index];
        key_locks.extend(job.key_locks());
        let identity = job.lookup.identity.as_ref().map(|identity| (KeyKind::Identity, identity.as_str()));
        for (kind, key) in std::iter::once((KeyKind::Device, job.lookup.device.as_str())).chain(identity) {
            generation_locks.push(generation_lock(&job.lookup.scope, kind));
            positions.push(position as i32);
            sps.push(job.lookup.scope.service_provider.as_str());
            mvpds.push(job.lookup.scope.mvpd.as_str());
            kinds.push(kind.code());
            keys.push(key);
            since.push(job.lookup.valid_since.as_millis());
        }
    }
    let (generation_locks, key_locks) = (sorted(generation_locks), sorted(key_locks));
    let lock_keys: [Param<'_>; 2] = [&generation_locks, &key_locks];
    let lock_trials: [Param<'_>; 4] = [&sps, &mvpds, &kinds, &keys];
    let find: [Param<'_>; 6] = [&positions, &sps, &mvpds, &kinds, &keys, &since];
    let mut reads: Vec<(&tokio_postgres::Statement, &[Param<'_>])> = vec![(&s.begin, &[])];
    reads.push((if patient { &s.generic_plans } else { &s.generic_plans_and_lock_timeout }, &[]));
    reads.push((&s.lock_generations_and_keys, &lock_keys));

    // First uses (every key of every job never bound, as far as this server
    // knows) read nothing: they decide as if no key had a binding, and send
    // the locks, the writes and the commit at once. Their keys are written by
    // START_NEW_BATCH, a plain insert that fails on any key that has a
    // binding after all — bound by another server, of an old generation, or
    // moved by a merge — whichever trial it points to; then the transaction
    // rolls back and the jobs run again the usual way. Once the insert has
    // succeeded, the unique index holds back any other insert of those keys
    // until this transaction ends: no key had a binding, so no trial is
    // found, which is what the decisions assumed.
    let (locked, found_rows) = if first_uses {
        (BTreeSet::new(), Vec::new())
    } else {
        // The bindings are read again after the trial locks, in a statement
        // of its own (a snapshot taken once they are granted): a concurrent
        // merge may have moved a key to a trial not locked here while the
        // locks waited, even deleting the trial that was (see the module doc).
        reads.push((&s.lock_trials, &lock_trials));
        reads.push((&s.find, &find));
        conn.transaction_opening();
        let mut answers = conn.pipeline(&reads).await?;
        reads.clear();
        let (Some(found_rows), Some(trial_locks)) = (answers.pop(), answers.pop()) else {
            return Err(StoreError::Internal("the reads of a batch went unanswered".into()).into());
        };
        let locked = trial_locks.iter().map(|row| row.try_get::<_, i64>(0)).collect::<Result<BTreeSet<i64>, _>>()?;
        (locked, found_rows)
    };
    let mut found: Vec<Bindings> = together.iter().map(|_| Bindings::default()).collect();
    for row in &found_rows {
        let position: i32 = row.try_get(0)?;
        let bindings = usize::try_from(position).ok().and_then(|position| found.get_mut(position));
        let Some(bindings) = bindings else {
            return Err(
                StoreError::Internal(format!("a binding was read for job {position} of {}", together.len())).into()
            );
        };
        bindings.add(row, 1)?;
    }
    let mut plans = Vec::with_capacity(together.len());
    // Two jobs with no key in common can still find one trial (two devices of
    // one promotional pass): each decides from what the reads saw, so only the
    // first may write it in this transaction; the others wait for the next.
    let mut claimed = std::collections::HashSet::new();
    for (&index, bindings) in together.iter().zip(&found) {
        let plan = if !bindings.trial_ids().all(|id| locked.contains(&id)) {
            Settled::StartOver
        } else if bindings.referenced_trials().any(|id| claimed.contains(&id)) {
            Settled::Deferred
        } else {
            claimed.extend(bindings.referenced_trials());
            Settled::Planned(Box::new(Plan::new(&jobs[index], bindings)?))
        };
        plans.push((index, plan));
    }

    // The new trials first, in one statement; then each job's other writes.
    // A job's own writes keep their order (its start binds its keys before
    // anything it pointed to is deleted), and no two jobs write one row.
    let mut new_trials = NewTrials::default();
    let start_at: Vec<Option<usize>> = plans
        .iter()
        .map(|(_, plan)| match plan {
            Settled::Planned(plan) if plan.start.is_some() => Some(new_trials.push(plan)),
            _ => None,
        })
        .collect();
    // What was not sent yet of the reads (all of them, for first uses) goes first.
    let mut writes: Vec<(&tokio_postgres::Statement, Vec<Param<'_>>)> =
        reads.iter().map(|(statement, params)| (*statement, params.to_vec())).collect();
    let first_write = writes.len();
    if !new_trials.sps.is_empty() {
        writes.push((if first_uses { &s.start_new } else { &s.start }, new_trials.params()));
    }
    for (_, plan) in &plans {
        if let Settled::Planned(plan) = plan {
            plan.push_writes(s, &mut writes);
        }
    }
    writes.push((&s.commit, vec![]));
    let writes: Vec<(&tokio_postgres::Statement, &[Param<'_>])> =
        writes.iter().map(|(statement, params)| (*statement, params.as_slice())).collect();
    if first_uses {
        conn.transaction_opening();
    }
    let answers = conn.pipeline(&writes).await?;
    conn.transaction_closed();
    let started_ids: &[Row] = if new_trials.sps.is_empty() { &[] } else { &answers[first_write] };

    let mut outcomes = Vec::with_capacity(plans.len());
    for ((index, plan), start_at) in plans.into_iter().zip(start_at) {
        let plan = match plan {
            Settled::Planned(plan) => plan,
            Settled::StartOver => {
                outcomes.push((index, Outcome::StartOver));
                continue;
            }
            Settled::Deferred => {
                outcomes.push((index, Outcome::Deferred));
                continue;
            }
        };
        // Committed: a failure from here on belongs to this job alone.
        let mut trial = Ok(plan.trial);
        if let Some((started_at, expires_at, used_resources)) = plan.start {
            let id = start_at.and_then(|row| started_ids.get(row)).map(|row| row.try_get(0));
            trial = match id {
                Some(Ok(id)) => Ok(Some(Trial { id: TrialId(id), started_at, expires_at, used_resources })),
                Some(Err(error)) => Err(to_store_error(error)),
                None => Err(StoreError::Internal("starting a trial returned no id".into())),
            };
        }
        let answer = trial.map(|trial| AuthorizeOutcome { decision: plan.decision, trial });
        outcomes.push((index, Outcome::Done(answer)));
    }
    Ok(outcomes)
}

/// What a job of a transaction came to, before its writes.
enum Settled<'a> {
    Planned(Box<Plan<'a>>),
    /// A key of it moved to a trial the transaction had not locked.
    StartOver,
    /// Its trial is written by an earlier job of the same transaction.
    Deferred,
}

/// What a job of a transaction came to, once it committed.
enum Outcome {
    /// Committed; an error here is this job's alone.
    Done(Result<AuthorizeOutcome, StoreError>),
    /// Runs again in the next transaction, and that counts as an attempt.
    StartOver,
    /// Runs again in the next transaction, which is not its fault.
    Deferred,
}

/// What one job decided, and the rows it writes.
struct Plan<'a> {
    decision: Result<(), temppass_core::DenyReason>,
    /// The trial after the decision; for a new trial, filled in with its id after the write.
    trial: Option<Trial>,
    start: Option<(Timestamp, Timestamp, Vec<ResourceId>)>,
    merged: Option<(i64, i64)>,
    resources_changed: bool,
    service_provider: &'a str,
    mvpd: &'a str,
    /// The keys to (re)bind, their kinds, and the trials they pointed to before.
    kinds: Vec<i16>,
    keys: Vec<&'a str>,
    previous: Vec<i64>,
    survivor_id: i64,
    survivor_resources: Vec<String>,
    started_ms: i64,
    expires_ms: i64,
    start_resources: Vec<String>,
}

impl<'a> Plan<'a> {
    /// Merges, decides and chooses the writes of `job`, whose bindings are `bindings`.
    fn new(job: &'a WriteJob, bindings: &Bindings) -> Result<Self, StoreError> {
        let FoundTrials { by_device, by_identity } = bindings.found();
        let device_trial = by_device.as_ref().map(|t| t.id);
        let identity_trial = by_identity.as_ref().map(|t| t.id);
        let mut merged = None;
        let mut trial = match (by_device, by_identity) {
            (Some(a), Some(b)) if a.id != b.id => {
                let (survivor, absorbed) = merge(a, b);
                merged = Some((survivor.id.0, absorbed.id.0));
                Some(survivor)
            }
            (a, b) => a.or(b),
        };
        let mut resources_changed = merged.is_some();
        let mut start = None;
        let decision = match decide(&job.rule, trial.as_ref(), &job.resource, job.now) {
            AuthorizeVerdict::Deny(reason) => Err(reason),
            AuthorizeVerdict::Permit(TrialUpdate::Unchanged) => Ok(()),
            AuthorizeVerdict::Permit(TrialUpdate::Start { started_at, expires_at, used_resources }) => {
                start = Some((started_at, expires_at, used_resources));
                Ok(())
            }
            AuthorizeVerdict::Permit(TrialUpdate::AddResource(resource)) => {
                let Some(current) = trial.as_mut() else {
                    return Err(StoreError::Internal("a resource was added to no trial".into()));
                };
                current.used_resources.push(resource);
                resources_changed = true;
                Ok(())
            }
        };

        // The keys to (re)bind, and the trials they pointed to before: such a
        // trial (absent since a scheduled or "all" reset) is deleted once nothing
        // else finds it — lazy, O(1) reclaiming on the path that made it garbage.
        let final_id = trial.as_ref().map(|t| t.id);
        let (mut kinds, mut keys, mut previous) = (Vec::new(), Vec::new(), Vec::new());
        let device_rebinds = start.is_some() || (final_id.is_some() && device_trial != final_id);
        let identity_rebinds = start.is_some() || (final_id.is_some() && identity_trial != final_id);
        let candidates = [
            (KeyKind::Device, Some(job.lookup.device.as_str()).filter(|_| device_rebinds), &bindings.device),
            (
                KeyKind::Identity,
                job.lookup.identity.as_ref().map(IdentityHash::as_str).filter(|_| identity_rebinds),
                &bindings.identity,
            ),
        ];
        for (kind, key, binding) in candidates {
            let Some(key) = key else { continue };
            kinds.push(kind.code());
            keys.push(key);
            if let Some(old) = binding.as_ref().filter(|b| b.trial.is_some()).map(|b| b.trial_id) {
                previous.push(old);
            }
        }
        previous.retain(|old| Some(TrialId(*old)) != final_id);

        let survivor_id = final_id.map_or(0, |id| id.0);
        let survivor_resources = trial
            .as_ref()
            .map(|t| t.used_resources.iter().map(|r| r.as_str().to_owned()).collect())
            .unwrap_or_default();
        let (started_ms, expires_ms, start_resources) = match &start {
            Some((started_at, expires_at, used)) => {
                (started_at.as_millis(), expires_at.as_millis(), used.iter().map(|r| r.as_str().to_owned()).collect())
            }
            None => (0, 0, Vec::new()),
        };
        Ok(Self {
            decision,
            trial,
            start,
            merged,
            resources_changed,
            service_provider: job.lookup.scope.service_provider.as_str(),
            mvpd: job.lookup.scope.mvpd.as_str(),
            kinds,
            keys,
            previous,
            survivor_id,
            survivor_resources,
            started_ms,
            expires_ms,
            start_resources,
        })
    }

    /// Appends this job's writes but its start (see [`NewTrials`]).
    fn push_writes<'p>(
        &'p self,
        s: &'p AuthorizeStatements,
        writes: &mut Vec<(&'p tokio_postgres::Statement, Vec<Param<'p>>)>,
    ) {
        if let Some((survivor, absorbed)) = &self.merged {
            writes.push((&s.move_bindings, vec![survivor, absorbed]));
            writes.push((&s.delete_trial, vec![absorbed]));
        }
        if self.resources_changed && self.start.is_none() {
            writes.push((&s.update_resources, vec![&self.survivor_id, &self.survivor_resources]));
        }
        if self.start.is_none() && !self.keys.is_empty() {
            writes
                .push((&s.bind, vec![&self.service_provider, &self.mvpd, &self.kinds, &self.keys, &self.survivor_id]));
        }
        if !self.previous.is_empty() {
            writes.push((&s.delete_unbound, vec![&self.previous]));
        }
    }
}

/// The trials a batch's transaction starts, with their keys: the parameters of [`START_BATCH`].
#[derive(Default)]
struct NewTrials<'p> {
    sps: Vec<&'p str>,
    mvpds: Vec<&'p str>,
    started_ms: Vec<i64>,
    expires_ms: Vec<i64>,
    first_resource: Vec<i32>,
    resource_count: Vec<i32>,
    resources: Vec<&'p str>,
    key_positions: Vec<i64>,
    kinds: Vec<i16>,
    keys: Vec<&'p str>,
}

impl<'p> NewTrials<'p> {
    /// Adds the trial `plan` starts; answers the row of its id in [`START_BATCH`]'s answer.
    fn push(&mut self, plan: &'p Plan<'_>) -> usize {
        let row = self.sps.len();
        self.sps.push(plan.service_provider);
        self.mvpds.push(plan.mvpd);
        self.started_ms.push(plan.started_ms);
        self.expires_ms.push(plan.expires_ms);
        // Positions in SQL arrays count from 1.
        self.first_resource.push(self.resources.len() as i32 + 1);
        self.resource_count.push(plan.start_resources.len() as i32);
        self.resources.extend(plan.start_resources.iter().map(String::as_str));
        for (kind, key) in plan.kinds.iter().zip(&plan.keys) {
            self.key_positions.push(row as i64 + 1);
            self.kinds.push(*kind);
            self.keys.push(key);
        }
        row
    }

    fn params(&self) -> Vec<Param<'_>> {
        vec![
            &self.sps,
            &self.mvpds,
            &self.started_ms,
            &self.expires_ms,
            &self.first_resource,
            &self.resource_count,
            &self.resources,
            &self.key_positions,
            &self.kinds,
            &self.keys,
        ]
    }
}

// --- resetting -------------------------------------------------------------------

/// Removes one binding (and its trial once nothing finds it), or all bindings of a kind in O(1).
pub(crate) async fn reset(
    conn: &mut Conn,
    scope: &RuleScope,
    kind: KeyKind,
    key: Option<&str>,
) -> Result<(), StoreError> {
    let (sp, mvpd) = (scope.service_provider.as_str(), scope.mvpd.as_str());
    match key {
        None => {
            let lock = generation_lock(scope, kind);
            conn.query(BUMP_GENERATION, &[&sp, &mvpd, &kind.code(), &lock]).await?;
            Ok(())
        }
        Some(key) => {
            let statements = ResetStatements::prepare(conn).await?;
            with_retries!(conn, "a reset", reset_one_once(conn, &statements, scope, kind, key).await)
        }
    }
}

struct ResetStatements {
    begin: tokio_postgres::Statement,
    commit: tokio_postgres::Statement,
    lock_exclusive: tokio_postgres::Statement,
    lock_key_trial: tokio_postgres::Statement,
    lock_trial_ids: tokio_postgres::Statement,
    delete_binding: tokio_postgres::Statement,
    delete_unbound: tokio_postgres::Statement,
}

impl ResetStatements {
    async fn prepare(conn: &mut Conn) -> Result<Self, StoreError> {
        Ok(Self {
            begin: conn.prepare(BEGIN).await?,
            commit: conn.prepare(COMMIT).await?,
            lock_exclusive: conn.prepare(LOCK_EXCLUSIVE).await?,
            lock_key_trial: conn.prepare(LOCK_KEY_TRIAL).await?,
            lock_trial_ids: conn.prepare(LOCK_TRIAL_IDS).await?,
            delete_binding: conn.prepare(DELETE_BINDING).await?,
            delete_unbound: conn.prepare(DELETE_UNBOUND).await?,
        })
    }
}

async fn reset_one_once(
    conn: &mut Conn,
    s: &ResetStatements,
    scope: &RuleScope,
    kind: KeyKind,
    key: &str,
) -> Result<(), TxError> {
    let (sp, mvpd, code) = (scope.service_provider.as_str(), scope.mvpd.as_str(), kind.code());
    let locks = vec![key_lock(scope, kind, key)];
    let binding: [Param<'_>; 4] = [&sp, &mvpd, &code, &key];
    conn.transaction_opening();
    let answers = conn
        .pipeline(&[
            (&s.begin, &[]),
            (&s.lock_exclusive, &[&locks]),
            (&s.lock_key_trial, &binding),
            (&s.delete_binding, &binding),
        ])
        .await?;
    let locked = answers[2].iter().map(|row| row.try_get::<_, i64>(0)).collect::<Result<BTreeSet<i64>, _>>()?;
    let removed: Vec<i64> = answers[3].iter().map(|row| row.try_get::<_, i64>(0)).collect::<Result<_, _>>()?;
    let mut batch: Vec<(&tokio_postgres::Statement, &[Param<'_>])> = Vec::new();
    let removed_param: [Param<'_>; 1] = [&removed];
    if !removed.is_empty() {
        // Deleting the trial needs its row lock. The binding can have moved to
        // another trial (a merge) while this transaction waited for the first
        // lock: then that trial is locked now, out of order; PostgreSQL breaks
        // the rare deadlock this may cause and the reset starts over.
        if removed.iter().any(|id| !locked.contains(id)) {
            batch.push((&s.lock_trial_ids, &removed_param));
        }
        batch.push((&s.delete_unbound, &removed_param));
    }
    batch.push((&s.commit, &[]));
    conn.pipeline(&batch).await?;
    conn.transaction_closed();
    Ok(())
}

// --- the filter of bound keys ------------------------------------------------------

/// About how many bindings there are, to plan the filter of bound keys:
/// PostgreSQL's own estimate (kept by ANALYZE and autovacuum), counted only
/// when the table was never analyzed (then `statement_timeout` bounds the count).
pub(crate) async fn estimate_bindings(conn: &mut Conn) -> Result<usize, StoreError> {
    let decode = |rows: Vec<Row>| -> Result<i64, StoreError> {
        rows.first().map_or(Ok(-1), |row| row.try_get(0)).map_err(to_store_error)
    };
    let estimate =
        decode(conn.query("SELECT reltuples::bigint FROM pg_class WHERE oid = 'bindings'::regclass", &[]).await?)?;
    let count = if estimate >= 0 { estimate } else { decode(conn.query("SELECT count(*) FROM bindings", &[]).await?)? };
    Ok(usize::try_from(count).unwrap_or(0))
}

/// One chunk of the walk that loads the bound keys: the bindings after `after` in primary-key order.
const BOUND_KEYS_PAGE: &str = "
    SELECT service_provider, mvpd, key_kind, key FROM bindings
    WHERE (service_provider, mvpd, key_kind, key) > ($1, $2, $3, $4)
    ORDER BY service_provider, mvpd, key_kind, key
    LIMIT $5";

/// The primary key of a binding, where a walk over them stands.
pub(crate) type BindingKey = (String, String, i16, String);

/// Puts up to `chunk` bound keys after `after` into `bound`; answers how many,
/// and where the walk stands or `None` when it has passed the last binding.
pub(crate) async fn load_bound_keys(
    conn: &mut Conn,
    bound: &BoundKeys,
    after: Option<BindingKey>,
    chunk: i64,
) -> Result<(usize, Option<BindingKey>), StoreError> {
    let (sp, mvpd, kind, key) = after.unwrap_or_else(|| (String::new(), String::new(), -1, String::new()));
    let rows = conn.query(BOUND_KEYS_PAGE, &[&sp, &mvpd, &kind, &key, &chunk]).await?;
    let mut last = None;
    for row in &rows {
        let decode = |row: &Row| -> Result<BindingKey, tokio_postgres::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
        };
        let binding = decode(row).map_err(to_store_error)?;
        bound.insert(&binding.0, &binding.1, i64::from(binding.2), &binding.3);
        last = Some(binding);
    }
    Ok((rows.len(), last.filter(|_| rows.len() as i64 == chunk)))
}

// --- reclaiming --------------------------------------------------------------------

/// Where the reclaiming walk over bindings stopped: the last primary key it saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReclaimCursor(Option<(String, String, i16, String)>);

/// Removes up to `budget` superseded bindings (and the trials only they
/// found), walking the bindings in primary-key order from `cursor`, and up to
/// `budget` expired sessions and access tokens, in one short transaction.
/// Answers what it removed and where the walk stands now.
pub(crate) async fn reclaim(
    conn: &mut Conn,
    cursor: ReclaimCursor,
    now: Timestamp,
    budget: usize,
) -> Result<(ReclaimReport, ReclaimCursor), StoreError> {
    let begin = conn.prepare(BEGIN).await?;
    let commit = conn.prepare(COMMIT).await?;
    let page = conn.prepare(RECLAIM_PAGE).await?;
    let lock_trial_ids = conn.prepare(LOCK_TRIAL_IDS).await?;
    let delete_superseded = conn.prepare(DELETE_SUPERSEDED).await?;
    let delete_unbound = conn.prepare(DELETE_UNBOUND).await?;
    let delete_sessions = conn.prepare(DELETE_EXPIRED_SESSIONS).await?;
    let delete_tokens = conn.prepare(DELETE_EXPIRED_TOKENS).await?;
    let delete_clients = conn.prepare(DELETE_IDLE_CLIENTS).await?;

    let (after_sp, after_mvpd, after_kind, after_key) =
        cursor.0.unwrap_or_else(|| (String::new(), String::new(), -1, String::new()));
    let limit = i64::try_from(budget).unwrap_or(i64::MAX);
    conn.transaction_opening();
    let answers = conn
        .pipeline(&[(&begin, &[]), (&page, &[&after_sp, &after_mvpd, &after_kind, &after_key, &limit])])
        .await
        .map_err(to_store_error)?;
    let rows = &answers[1];
    let pass_complete = rows.len() < budget;
    let mut last = None;
    let (mut sps, mut mvpds, mut kinds, mut keys, mut currents) = (vec![], vec![], vec![], vec![], vec![]);
    let mut trials = Vec::new();
    for row in rows {
        let decode = |row: &Row| -> Result<_, tokio_postgres::Error> {
            Ok((
                row.try_get::<_, String>(0)?,
                row.try_get::<_, String>(1)?,
                row.try_get::<_, i16>(2)?,
                row.try_get::<_, String>(3)?,
                row.try_get::<_, i64>(4)?,
                row.try_get::<_, i64>(5)?,
                row.try_get::<_, i64>(6)?,
            ))
        };
        let (sp, mvpd, kind, key, generation, trial, current) = decode(row).map_err(to_store_error)?;
        if generation < current {
            sps.push(sp.clone());
            mvpds.push(mvpd.clone());
            kinds.push(kind);
            keys.push(key.clone());
            currents.push(current);
            trials.push(trial);
        }
        last = Some((sp, mvpd, kind, key));
    }
    let trials = sorted(trials);
    let now_ms = now.as_millis();
    let superseded: [Param<'_>; 5] = [&sps, &mvpds, &kinds, &keys, &currents];
    let trial_ids: [Param<'_>; 1] = [&trials];
    let expired: [Param<'_>; 2] = [&now_ms, &limit];
    let idle_before_ms = now_ms - temppass_store::CLIENT_IDLE_MS;
    let idle: [Param<'_>; 2] = [&idle_before_ms, &limit];
    let mut batch: Vec<(&tokio_postgres::Statement, &[Param<'_>])> = Vec::new();
    // Where each counted answer lands in `answers`, recorded as it is pushed.
    let mut at_bindings = None;
    let mut at_trials = None;
    if !trials.is_empty() {
        batch.push((&lock_trial_ids, &trial_ids));
        at_bindings = Some(batch.len());
        batch.push((&delete_superseded, &superseded));
        at_trials = Some(batch.len());
        batch.push((&delete_unbound, &trial_ids));
    }
    let at_sessions = batch.len();
    batch.push((&delete_sessions, &expired));
    let at_tokens = batch.len();
    batch.push((&delete_tokens, &expired));
    let at_clients = batch.len();
    batch.push((&delete_clients, &idle));
    batch.push((&commit, &[]));
    let answers = conn.pipeline(&batch).await.map_err(to_store_error)?;
    conn.transaction_closed();

    let count = |index: usize| answers.get(index).map_or(0, Vec::len);
    let report = ReclaimReport {
        bindings: at_bindings.map_or(0, count),
        trials: at_trials.map_or(0, count),
        sessions: count(at_sessions),
        access_tokens: count(at_tokens),
        clients: count(at_clients),
        pass_complete,
    };
    let cursor = if pass_complete { ReclaimCursor(None) } else { ReclaimCursor(last) };
    Ok((report, cursor))
}

#[cfg(all(test, feature = "testing"))]
mod batches {
    use temppass_core::{DenyReason, Timestamp};
    use temppass_store::conformance::{
        basic_rule, device_id, device_lookup, identity, promotional_rule, resource, scope,
    };
    use temppass_store::{Store, TrialLookup};

    use temppass_store::{AuthorizeOutcome, StoreError};

    use super::{Callers, DELETE_TRIAL, FirstUseBackoff, MOVE_BINDINGS, WriteJob, authorize_batch};
    use crate::testing::TestDatabase;
    use crate::{PostgresOptions, PostgresStore, connection};

    /// A store on a database of its own, when PostgreSQL is configured for tests.
    async fn fresh_store() -> Option<(TestDatabase, PostgresStore)> {
        let database = TestDatabase::create().await?;
        let store = PostgresStore::connect(database.url(), PostgresOptions::default())
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        Some((database, store))
    }

    /// The answers of a batch's jobs, the order they came in, and the jobs
    /// whose callers gave up, for a test to look at.
    struct Answers(Vec<Option<Result<AuthorizeOutcome, StoreError>>>, Vec<usize>, Vec<usize>);

    impl Answers {
        fn for_jobs(count: usize) -> Self {
            Self((0..count).map(|_| None).collect(), Vec::new(), Vec::new())
        }
    }

    impl Callers for Answers {
        fn waiting(&self, index: usize) -> bool {
            self.0[index].is_none() && !self.2.contains(&index)
        }

        fn answer(&mut self, index: usize, answer: Result<AuthorizeOutcome, StoreError>) {
            self.0[index] = Some(answer);
            self.1.push(index);
        }
    }

    /// Runs `jobs` as one batch on a connection of `pool`, as a writer would;
    /// the callers of `gave_up` have stopped waiting before it starts.
    async fn run_batch(pool: &deadpool_postgres::Pool, target: &str, jobs: &[WriteJob], gave_up: &[usize]) -> Answers {
        let mut conn = connection::get(pool, target).await.unwrap_or_else(|e| panic!("{e}"));
        let mut answers = Answers::for_jobs(jobs.len());
        answers.2.extend(gave_up);
        authorize_batch(&mut conn, jobs, &mut answers, &FirstUseBackoff::default()).await;
        answers
    }

    /// A caller that gave up (its deadline passed while the job queued) is
    /// told nothing, and nothing is written for it.
    #[tokio::test]
    async fn a_job_whose_caller_gave_up_is_never_run() {
        let Some((_database, store)) = fresh_store().await else { return };
        let scope = scope("REF30", "TempPass");
        let (gone, staying) = (device_id("gone-device"), device_id("staying-device"));
        let now = Timestamp::from_millis(1_700_000_000_000);
        let jobs = [
            WriteJob::new(device_lookup(&scope, &gone), &basic_rule("4h"), &resource("res-1"), now),
            WriteJob::new(device_lookup(&scope, &staying), &basic_rule("4h"), &resource("res-1"), now),
        ];
        let answers = run_batch(&store.pool, &store.target, &jobs, &[0]).await;

        assert_eq!(answers.1, vec![1], "only the caller still waiting is answered");
        let found = |device| store.find_trial(device_lookup(&scope, device));
        assert_eq!(found(&gone).await.unwrap_or_else(|e| panic!("{e}")), None, "a trial nobody was told of");
        assert!(found(&staying).await.unwrap_or_else(|e| panic!("{e}")).is_some(), "the waiting caller's trial");
    }

    /// A key bound by another server since this one filled its filter of
    /// bound keys reads here as never bound; the transaction that starts
    /// trials without reading finds it bound when it writes, and its jobs run
    /// again the usual way: that trial continues, the new device starts one.
    #[tokio::test]
    async fn first_uses_on_a_key_bound_elsewhere_continue_its_trial() {
        let Some((_database, store)) = fresh_store().await else { return };
        let scope = scope("REF30", "TempPass");
        let rule = basic_rule("4h");
        let (bound, new) = (device_id("bound-elsewhere"), device_id("new-device"));
        let now = Timestamp::from_millis(1_700_000_000_000);
        let first = store
            .authorize(device_lookup(&scope, &bound), &rule, &resource("res-1"), now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let started = first.trial.map(|t| (t.id, t.expires_at));
        assert!(started.is_some(), "the first authorization started no trial");

        let later = Timestamp::from_millis(now.as_millis() + 60_000);
        let jobs = [
            WriteJob::new(device_lookup(&scope, &bound), &rule, &resource("res-1"), later).keys_never_bound(true),
            WriteJob::new(device_lookup(&scope, &new), &rule, &resource("res-1"), later).keys_never_bound(true),
        ];
        let mut answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
        let [continued, fresh] = [0, 1].map(|index| match answers.0[index].take() {
            Some(Ok(outcome)) => outcome,
            other => panic!("job {index}: {other:?}"),
        });

        assert_eq!(continued.decision, Ok(()));
        assert_eq!(continued.trial.map(|t| (t.id, t.expires_at)), started, "the device got a second trial");
        assert_eq!(fresh.decision, Ok(()));
        let fresh = fresh.trial.unwrap_or_else(|| panic!("the new device started no trial"));
        assert_ne!(Some(fresh.id), started.map(|(id, _)| id));
        assert_eq!(fresh.started_at, later);
    }

    /// A new device with an identity another server bound: both keys read as
    /// never bound here, the insert fails on the identity's binding, and the
    /// device joins the identity's trial (SPEC.md §2: known identity, new device).
    #[tokio::test]
    async fn a_first_use_of_a_new_device_with_an_identity_bound_elsewhere_joins_its_trial() {
        let Some((_database, store)) = fresh_store().await else { return };
        let scope = scope("REF30", "flexibleTempPass");
        let rule = promotional_rule(3, "4h");
        let (phone, tablet, viewer) = (device_id("phone"), device_id("tablet"), identity("viewer@example.com"));
        let lookup = |device| TrialLookup {
            scope: &scope,
            device,
            identity: Some(&viewer),
            valid_since: Timestamp::from_millis(i64::MIN),
        };
        let now = Timestamp::from_millis(1_700_000_000_000);
        let first = store.authorize(lookup(&phone), &rule, &resource("res-1"), now).await;
        let started = first.unwrap_or_else(|e| panic!("{e}")).trial.map(|t| t.id);

        let later = Timestamp::from_millis(now.as_millis() + 60_000);
        let jobs = [WriteJob::new(lookup(&tablet), &rule, &resource("res-2"), later).keys_never_bound(true)];
        let mut answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
        let outcome = answers.0.remove(0).unwrap_or_else(|| panic!("no answer")).unwrap_or_else(|e| panic!("{e}"));

        assert_eq!(outcome.decision, Ok(()));
        let trial = outcome.trial.unwrap_or_else(|| panic!("no trial"));
        assert_eq!(Some(trial.id), started, "the identity got a second trial");
        assert_eq!(trial.used_resources, vec![resource("res-1"), resource("res-2")]);
        let by_tablet = store.find_trial(TrialLookup { identity: None, ..lookup(&tablet) }).await;
        assert_eq!(by_tablet.unwrap_or_else(|e| panic!("{e}")).map(|t| t.id), started, "the tablet is not bound");
    }

    /// After "reset all" the device's binding is of an old generation: a
    /// first use that believes the key never bound fails on it, reads, and
    /// starts a fresh trial with a fresh clock, rebinding the key.
    #[tokio::test]
    async fn a_first_use_on_a_key_reset_by_reset_all_starts_a_fresh_trial() {
        let Some((_database, store)) = fresh_store().await else { return };
        let scope = scope("REF30", "TempPass");
        let rule = basic_rule("4h");
        let device = device_id("reset-device");
        let now = Timestamp::from_millis(1_700_000_000_000);
        let before = store
            .authorize(device_lookup(&scope, &device), &rule, &resource("res-1"), now)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .trial
            .unwrap_or_else(|| panic!("no trial was started"));
        store.reset_devices(&scope, None).await.unwrap_or_else(|e| panic!("{e}"));

        let later = Timestamp::from_millis(now.as_millis() + 60_000);
        let jobs =
            [WriteJob::new(device_lookup(&scope, &device), &rule, &resource("res-1"), later).keys_never_bound(true)];
        let mut answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
        let outcome = answers.0.remove(0).unwrap_or_else(|| panic!("no answer")).unwrap_or_else(|e| panic!("{e}"));

        assert_eq!(outcome.decision, Ok(()));
        let fresh = outcome.trial.unwrap_or_else(|| panic!("no trial"));
        assert_ne!(fresh.id, before.id, "the reset trial came back");
        assert_eq!(fresh.started_at, later, "the clock did not start again");
        let found = store.find_trial(device_lookup(&scope, &device)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.map(|t| t.id), Some(fresh.id), "the key is not bound to the fresh trial");
    }

    /// A merge elsewhere moves a device's binding to the older trial and
    /// deletes the one the device pointed to, while this authorization waits
    /// for that trial's row lock: the lock then locks nothing, and only the
    /// bindings' read after it shows where the device went. It continues
    /// the merged trial; it must not start a trial of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_authorization_waiting_on_a_trial_merged_away_continues_the_merged_trial() {
        let Some((database, store)) = fresh_store().await else { return };
        let scope = scope("REF30", "flexibleTempPass");
        let rule = promotional_rule(3, "4h");
        let (older_device, device) = (device_id("older-device"), device_id("device"));
        let (older_identity, viewer) = (identity("older@example.com"), identity("viewer@example.com"));
        // The device comes back with an identity of its own, so that it
        // shares no key lock with the merge, which comes from (older device, viewer).
        let guest = identity("guest@example.com");
        let lookup = |device, identity| TrialLookup {
            scope: &scope,
            device,
            identity: Some(identity),
            valid_since: Timestamp::from_millis(i64::MIN),
        };
        let start = |device, identity, at_ms| {
            let store = &store;
            let lookup = lookup(device, identity);
            let rule = &rule;
            async move {
                let outcome = store
                    .authorize(lookup, rule, &resource("res-1"), Timestamp::from_millis(at_ms))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                outcome.trial.map(|t| t.id.0).unwrap_or_else(|| panic!("no trial was started"))
            }
        };
        let survivor = start(&older_device, &older_identity, 1_700_000_000_000).await;
        let absorbed = start(&device, &viewer, 1_700_000_060_000).await;

        // Another session merges, as a transaction of another server would:
        // it holds the absorbed trial's row lock while this authorization waits.
        let (merger, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        tokio::spawn(connection);
        merger.batch_execute("BEGIN").await.unwrap_or_else(|e| panic!("{e}"));
        merger
            .execute("SELECT id FROM trials WHERE id = $1 FOR UPDATE", &[&absorbed])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let jobs = [WriteJob::new(
            lookup(&device, &guest),
            &rule,
            &resource("res-2"),
            Timestamp::from_millis(1_700_000_120_000),
        )];
        let (pool, target) = (store.pool.clone(), store.target.clone());
        let waiting = tokio::spawn(async move { run_batch(&pool, &target, &jobs, &[]).await.0.remove(0) });
        let waits =
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
        let mut seen_waiting = false;
        for _ in 0..200 {
            let row = merger.query_one(waits, &[]).await.unwrap_or_else(|e| panic!("{e}"));
            if row.get::<_, i64>(0) > 0 {
                seen_waiting = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(seen_waiting, "the authorization never waited for the trial's row lock");
        merger.execute(MOVE_BINDINGS, &[&survivor, &absorbed]).await.unwrap_or_else(|e| panic!("{e}"));
        merger.execute(DELETE_TRIAL, &[&absorbed]).await.unwrap_or_else(|e| panic!("{e}"));
        merger.batch_execute("COMMIT").await.unwrap_or_else(|e| panic!("{e}"));

        let answer = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        let outcome = answer.unwrap_or_else(|| panic!("no answer")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome.decision, Ok(()));
        assert_eq!(outcome.trial.map(|t| t.id.0), Some(survivor), "the device left the merged trial");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_held_elsewhere_holds_back_no_other_authorization_of_its_batch() {
        let Some((database, store)) = fresh_store().await else { return };
        let scope = scope("REF30", "TempPass");
        let rule = basic_rule("4h");
        let (busy, free) = (device_id("busy-device"), device_id("free-device"));
        let now = Timestamp::from_millis(1_700_000_000_000);
        let jobs = [
            WriteJob::new(device_lookup(&scope, &busy), &rule, &resource("res-1"), now),
            WriteJob::new(device_lookup(&scope, &free), &rule, &resource("res-1"), now),
        ];
        // Another session holds the busy device's key lock for a while, as a
        // transaction of another server would.
        let (holder, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        tokio::spawn(connection);
        let key = super::key_lock(&scope, super::KeyKind::Device, busy.as_str());
        holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap_or_else(|e| panic!("{e}"));
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(800)).await;
            holder.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.unwrap_or_else(|e| panic!("{e}"));
        });

        let answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
        release.await.unwrap_or_else(|e| panic!("{e}"));

        assert_eq!(answers.1, vec![1, 0], "the free device waited for the busy one");
        for answer in answers.0 {
            let decision = answer.unwrap_or_else(|| panic!("no answer")).map(|o| o.decision);
            assert_eq!(decision.unwrap_or_else(|e| panic!("{e}")), Ok(()));
        }
    }

    /// Writers gather first uses behind the batch in flight, but never
    /// behind one that waits for a lock held elsewhere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_use_waiting_for_a_lock_held_elsewhere_holds_back_no_other() {
        let Some((database, store)) = fresh_store().await else { return };
        let store = std::sync::Arc::new(store);
        let scope = scope("REF30", "TempPass");
        let (busy, free) = (device_id("busy-device"), device_id("free-device"));
        let now = Timestamp::from_millis(1_700_000_000_000);
        let (holder, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        tokio::spawn(connection);
        let key = super::key_lock(&scope, super::KeyKind::Device, busy.as_str());
        holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap_or_else(|e| panic!("{e}"));

        let waiting = {
            let (store, scope, busy) = (store.clone(), scope.clone(), busy.clone());
            tokio::spawn(async move {
                store.authorize(device_lookup(&scope, &busy), &basic_rule("4h"), &resource("res-1"), now).await
            })
        };
        // Until the busy device's batch waits for the lock.
        let waiters = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
        while holder.query_one(waiters, &[]).await.map(|row| row.get::<_, i64>(0)).unwrap_or_else(|e| panic!("{e}"))
            == 0
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let answer = store.authorize(device_lookup(&scope, &free), &basic_rule("4h"), &resource("res-1"), now).await;
        assert_eq!(answer.map(|o| o.decision).ok(), Some(Ok(())), "the free device waited for the held lock");
        assert!(!waiting.is_finished(), "the busy device did not wait for its lock");

        holder.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.unwrap_or_else(|e| panic!("{e}"));
        let answer = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.map(|o| o.decision).ok(), Some(Ok(())), "the busy device was not permitted once free");
    }

    /// Several new trials start in one statement: each caller is told the
    /// trial its own keys find, with its own title.
    #[tokio::test]
    async fn trials_started_together_each_go_to_their_own_caller() {
        let Some((_database, store)) = fresh_store().await else { return };
        let (basic, promotional) = (scope("REF30", "TempPass"), scope("REF30", "flexibleTempPass"));
        let (basic_rule, promotional_rule) = (basic_rule("4h"), promotional_rule(3, "4h"));
        let devices: Vec<_> = (0..4).map(|n| device_id(&format!("device-{n}"))).collect();
        let identities: Vec<_> = (0..2).map(|n| identity(&format!("viewer-{n}@example.com"))).collect();
        let lookups = [
            device_lookup(&basic, &devices[0]),
            TrialLookup { identity: Some(&identities[0]), ..device_lookup(&promotional, &devices[1]) },
            device_lookup(&basic, &devices[2]),
            TrialLookup { identity: Some(&identities[1]), ..device_lookup(&promotional, &devices[3]) },
        ];
        let rules = [&basic_rule, &promotional_rule, &basic_rule, &promotional_rule];
        let now = Timestamp::from_millis(1_700_000_000_000);
        let jobs: Vec<_> =
            (0..4).map(|n| WriteJob::new(lookups[n], rules[n], &resource(&format!("res-{n}")), now)).collect();
        let answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;

        let mut ids = std::collections::HashSet::new();
        for (n, answer) in answers.0.into_iter().enumerate() {
            let outcome = answer.unwrap_or_else(|| panic!("job {n} got no answer")).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(outcome.decision, Ok(()), "job {n}");
            let told = outcome.trial.unwrap_or_else(|| panic!("job {n} was told of no trial"));
            let stored = store
                .find_trial(lookups[n])
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("job {n}'s keys find no trial"));
            assert_eq!(told, stored, "job {n} was told of another trial than its keys find");
            let titles = if n % 2 == 1 { vec![resource(&format!("res-{n}"))] } else { vec![] };
            assert_eq!(stored.used_resources, titles, "job {n}'s titles");
            ids.insert(stored.id);
        }
        assert_eq!(ids.len(), 4, "two jobs share a trial");
        let another_device = device_id("another-device");
        let by_identity =
            TrialLookup { identity: Some(&identities[1]), ..device_lookup(&promotional, &another_device) };
        let found = store.find_trial(by_identity).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.map(|t| t.used_resources), Some(vec![resource("res-3")]), "an identity was not bound");
    }

    /// Two devices of one promotional pass in one batch, each with a key the
    /// other lacks: both find the one trial, and only one may write it.
    #[tokio::test]
    async fn two_devices_of_one_pass_in_one_batch_never_exceed_the_cap_nor_lose_a_title() {
        let Some((_database, store)) = fresh_store().await else { return };
        let scope = scope("REF30", "flexibleTempPass");
        let rule = promotional_rule(2, "4h");
        let (living_room, kitchen) = (device_id("living-room"), device_id("kitchen"));
        let (family, guest) = (identity("family@example.com"), identity("guest@example.com"));
        let lookup = |device, identity| TrialLookup {
            scope: &scope,
            device,
            identity: Some(identity),
            valid_since: Timestamp::from_millis(i64::MIN),
        };
        let now = Timestamp::from_millis(1_700_000_000_000);
        for device in [&living_room, &kitchen] {
            let first = store.authorize(lookup(device, &family), &rule, &resource("res-0"), now).await;
            assert_eq!(first.map(|o| o.decision).ok(), Some(Ok(())), "a device of the pass was not bound");
        }

        let jobs = [
            WriteJob::new(lookup(&living_room, &family), &rule, &resource("res-1"), now),
            WriteJob::new(lookup(&kitchen, &guest), &rule, &resource("res-2"), now),
        ];
        let answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
        let answers: Vec<_> =
            answers.0.into_iter().map(|a| a.unwrap_or_else(|| panic!("a job got no answer"))).collect();

        let decisions: Vec<_> =
            answers.iter().map(|a| a.as_ref().map(|o| o.decision).unwrap_or_else(|e| panic!("{e}"))).collect();
        assert_eq!(decisions, vec![Ok(()), Err(DenyReason::ResourcesLimitExceeded)], "one slot was left");
        let trial = store
            .find_trial(lookup(&kitchen, &family))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the trial is gone"));
        assert_eq!(trial.used_resources, vec![resource("res-0"), resource("res-1")], "a permitted title was lost");
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
mod plans {
    use tokio_postgres::NoTls;

    use super::{
        BIND, DELETE_UNBOUND, FIND, FIND_BATCH, LOCK_BATCH_TRIALS, MOVE_BINDINGS, START_BATCH, START_NEW_BATCH,
    };
    use crate::testing::TestDatabase;
    use crate::{PostgresOptions, PostgresStore};

    /// The plan PostgreSQL caches for a prepared statement on a freshly migrated,
    /// never analyzed database: what a pooled connection keeps using while the tables grow.
    async fn generic_plan(client: &tokio_postgres::Client, types: &str, sql: &str, args: &str) -> String {
        client.batch_execute("DEALLOCATE ALL").await.unwrap_or_else(|e| panic!("deallocate: {e}"));
        client.batch_execute(&format!("PREPARE lookup({types}) AS {sql}")).await.unwrap_or_else(|e| panic!("{e}"));
        let rows = client
            .query(&format!("EXPLAIN EXECUTE lookup({args})"), &[])
            .await
            .unwrap_or_else(|e| panic!("explain: {e}"));
        rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn every_cached_plan_of_a_lookup_probes_bindings_by_their_whole_key() {
        let Some(database) = TestDatabase::create().await else { return };
        let store = PostgresStore::connect(database.url(), PostgresOptions::default())
            .await
            .unwrap_or_else(|e| panic!("migrate: {e}"));
        let (client, connection) =
            tokio_postgres::connect(database.url(), NoTls).await.unwrap_or_else(|e| panic!("connect: {e}"));
        tokio::spawn(connection);
        client.batch_execute("SET plan_cache_mode = force_generic_plan").await.unwrap_or_else(|e| panic!("{e}"));
        let keys = "'REF30', 'TempPass', 'device-1', 'identity-1'";
        let batch_keys = "ARRAY['REF30', 'REF30'], ARRAY['TempPass', 'TempPass'], ARRAY[0, 1]::smallint[], \
                          ARRAY['device-1', 'identity-1']";
        for plan in [
            generic_plan(&client, "text, text, text, text, bigint", FIND, &format!("{keys}, 0")).await,
            generic_plan(&client, "text[], text[], smallint[], text[]", LOCK_BATCH_TRIALS, batch_keys).await,
            generic_plan(
                &client,
                "int[], text[], text[], smallint[], text[], bigint[]",
                FIND_BATCH,
                &format!("ARRAY[0, 0], {batch_keys}, ARRAY[0, 0]::bigint[]"),
            )
            .await,
        ] {
            assert!(!plan.contains("Seq Scan"), "a lookup scans a table:\n{plan}");
            let lines: Vec<&str> = plan.lines().collect();
            let probes: Vec<&str> =
                lines.windows(2).filter(|pair| pair[0].contains("on bindings")).map(|pair| pair[1]).collect();
            let whole_key = probes.iter().filter(|cond| cond.contains("Index Cond") && cond.contains("(key =")).count();
            assert!(
                !probes.is_empty() && whole_key == probes.len(),
                "bindings are not probed by their whole key:\n{plan}"
            );
        }
        for start_batch in [START_BATCH, START_NEW_BATCH] {
            let start = generic_plan(
                &client,
                "text[], text[], bigint[], bigint[], int[], int[], text[], bigint[], smallint[], text[]",
                start_batch,
                "ARRAY['REF30'], ARRAY['TempPass'], ARRAY[1]::bigint[], ARRAY[2]::bigint[], ARRAY[1], ARRAY[1], \
                 ARRAY['res-1'], ARRAY[1]::bigint[], ARRAY[0]::smallint[], ARRAY['device-1']",
            )
            .await;
            assert!(!start.contains("Seq Scan"), "starting trials scans a table:\n{start}");
        }
        // The other writes of a batch run on generic plans too.
        for plan in [
            generic_plan(&client, "bigint[]", DELETE_UNBOUND, "ARRAY[1, 2]::bigint[]").await,
            generic_plan(&client, "bigint, bigint", MOVE_BINDINGS, "1, 2").await,
            generic_plan(
                &client,
                "text, text, smallint[], text[], bigint",
                BIND,
                "'REF30', 'TempPass', ARRAY[0]::smallint[], ARRAY['device-1'], 1",
            )
            .await,
        ] {
            assert!(!plan.contains("Seq Scan"), "a write scans a table:\n{plan}");
        }
        drop(store);
    }
}
