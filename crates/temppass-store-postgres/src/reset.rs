//! Resets (SPEC.md §2, §7): one key, in a short transaction that follows the
//! lock order of `locks.rs`, ending the trial the key finds with every
//! binding of it (`temppass_store::plan_reset`); or every key of the scope in
//! O(1), by moving the generations of both kinds on.

use std::collections::BTreeSet;

use temppass_core::{RuleScope, TrialId};
use temppass_store::{KeyKind, ResetPlan, ResetTarget, StoreError, plan_reset};

use crate::batch_tx::TxError;
use crate::batch_writes::DELETE_UNBOUND;
use crate::connection::{BEGIN, COMMIT, Conn, Param};
use crate::locks::{LOCK_EXCLUSIVE, LOCK_KEY_TRIAL, LOCK_TRIAL_IDS, generation_lock, key_lock, sorted};

/// How often a reset of one key starts over after a deadlock before the store reports itself unavailable.
const MAX_ATTEMPTS: usize = 8;

/// The binding of one key ($1 service provider, $2 mvpd, $3 kind, $4 key):
/// its trial, and whether it is of the current generation.
const READ_TARGET: &str = "
    SELECT b.trial_id, b.generation = COALESCE(
        (SELECT g.generation FROM generations g
         WHERE g.service_provider = $1 AND g.mvpd = $2 AND g.key_kind = $3), 0)
    FROM bindings b WHERE b.service_provider = $1 AND b.mvpd = $2 AND b.key_kind = $3 AND b.key = $4";

const DELETE_BINDING: &str =
    "DELETE FROM bindings WHERE service_provider = $1 AND mvpd = $2 AND key_kind = $3 AND key = $4";

/// Ends trial $1: every binding of it, then the trial. The caller holds its row lock.
const DELETE_BINDINGS_OF_TRIAL: &str = "DELETE FROM bindings WHERE trial_id = $1";
const DELETE_TRIAL: &str = "DELETE FROM trials WHERE id = $1";

/// The O(1) reset of every key of a scope ($1 service provider, $2 mvpd):
/// takes the generations' advisory locks ($3, sorted) exclusively, so it
/// waits for the authorizations that read them (they hold them shared), then
/// moves the generation of each kind ($4) on. The locks are taken by an
/// InitPlan, before the first row is inserted.
const BUMP_GENERATIONS: &str = "
    WITH exclusive AS MATERIALIZED (SELECT pg_advisory_xact_lock(k) FROM unnest($3::bigint[]) AS k)
    INSERT INTO generations (service_provider, mvpd, key_kind, generation)
    SELECT $1, $2, kind, 1 FROM unnest($4::smallint[]) AS kind
    WHERE (SELECT count(*) FROM exclusive) >= 0
    ON CONFLICT (service_provider, mvpd, key_kind) DO UPDATE SET generation = generations.generation + 1";

/// Resets one key of `kind`, or, with `None`, every key of the scope.
pub(crate) async fn reset(
    conn: &mut Conn,
    scope: &RuleScope,
    kind: KeyKind,
    key: Option<&str>,
) -> Result<(), StoreError> {
    let (sp, mvpd) = (scope.service_provider.as_str(), scope.mvpd.as_str());
    match key {
        None => {
            let locks = sorted(KeyKind::ALL.iter().map(|&every| generation_lock(scope, every)).collect());
            let kinds: Vec<i16> = KeyKind::ALL.iter().map(|every| every.code()).collect();
            conn.query(BUMP_GENERATIONS, &[&sp, &mvpd, &locks, &kinds]).await?;
            Ok(())
        }
        Some(key) => {
            let statements = ResetStatements::prepare(conn).await?;
            for _ in 0..MAX_ATTEMPTS {
                match reset_one_once(conn, &statements, scope, kind, key).await {
                    Ok(true) => return Ok(()),
                    // The key's binding moved twice while this reset waited: start over.
                    Ok(false) => conn.rollback().await?,
                    // PostgreSQL broke a deadlock (see `reset_one_once`): start over.
                    Err(error) if error.worth_retrying() => conn.rollback().await?,
                    // Any other error drops the connection mid-transaction, which closes it.
                    Err(error) => return Err(error.into_store_error()),
                }
            }
            Err(StoreError::Unavailable(format!(
                "a reset did not settle after {MAX_ATTEMPTS} attempts under contention"
            )))
        }
    }
}

struct ResetStatements {
    begin: tokio_postgres::Statement,
    commit: tokio_postgres::Statement,
    lock_exclusive: tokio_postgres::Statement,
    lock_key_trial: tokio_postgres::Statement,
    lock_trial_ids: tokio_postgres::Statement,
    read_target: tokio_postgres::Statement,
    delete_binding: tokio_postgres::Statement,
    delete_unbound: tokio_postgres::Statement,
    delete_bindings_of_trial: tokio_postgres::Statement,
    delete_trial: tokio_postgres::Statement,
}

impl ResetStatements {
    async fn prepare(conn: &mut Conn) -> Result<Self, StoreError> {
        Ok(Self {
            begin: conn.prepare(BEGIN).await?,
            commit: conn.prepare(COMMIT).await?,
            lock_exclusive: conn.prepare(LOCK_EXCLUSIVE).await?,
            lock_key_trial: conn.prepare(LOCK_KEY_TRIAL).await?,
            lock_trial_ids: conn.prepare(LOCK_TRIAL_IDS).await?,
            read_target: conn.prepare(READ_TARGET).await?,
            delete_binding: conn.prepare(DELETE_BINDING).await?,
            delete_unbound: conn.prepare(DELETE_UNBOUND).await?,
            delete_bindings_of_trial: conn.prepare(DELETE_BINDINGS_OF_TRIAL).await?,
            delete_trial: conn.prepare(DELETE_TRIAL).await?,
        })
    }
}

/// One attempt: the key's lock, the lock of the trial it points to, and its
/// binding read after them (one round trip); then what [`plan_reset`] says,
/// and the commit (another). `Ok(false)`: the binding moved under it, start over.
async fn reset_one_once(
    conn: &mut Conn,
    s: &ResetStatements,
    scope: &RuleScope,
    kind: KeyKind,
    key: &str,
) -> Result<bool, TxError> {
    let (sp, mvpd, code) = (scope.service_provider.as_str(), scope.mvpd.as_str(), kind.code());
    let locks = vec![key_lock(scope, kind, key)];
    let binding: [Param<'_>; 4] = [&sp, &mvpd, &code, &key];
    conn.transaction_opening();
    let answers = conn
        .pipeline(&[
            (&s.begin, &[]),
            (&s.lock_exclusive, &[&locks]),
            (&s.lock_key_trial, &binding),
            (&s.read_target, &binding),
        ])
        .await?;
    let locked = answers[2].iter().map(|row| row.try_get::<_, i64>(0)).collect::<Result<BTreeSet<i64>, _>>()?;
    let target = target_of(&answers[3])?;
    if let Some(moved) = target.filter(|target| !locked.contains(&target.trial_id.0)) {
        // Deleting the trial needs its row lock. The binding moved to another
        // trial (a merge) while this transaction waited for the first lock:
        // that trial is locked now, out of order (PostgreSQL breaks the rare
        // deadlock this may cause, and the reset starts over), and the
        // binding read again; should it have moved once more, start over.
        let ids = vec![moved.trial_id.0];
        let again = conn.pipeline(&[(&s.lock_trial_ids, &[&ids]), (&s.read_target, &binding)]).await?;
        if target_of(&again[1])? != target {
            return Ok(false);
        }
    }
    let plan = plan_reset(target);
    let trial: Vec<i64> = match plan {
        ResetPlan::Nothing => Vec::new(),
        ResetPlan::EndTrial(id) | ResetPlan::DropStale(id) => vec![id.0],
    };
    let one = trial.first().copied().unwrap_or_default();
    let (trial_param, one_param): ([Param<'_>; 1], [Param<'_>; 1]) = ([&trial], [&one]);
    let mut batch: Vec<(&tokio_postgres::Statement, &[Param<'_>])> = Vec::new();
    match plan {
        ResetPlan::Nothing => {}
        ResetPlan::EndTrial(_) => {
            batch.push((&s.delete_bindings_of_trial, &one_param));
            batch.push((&s.delete_trial, &one_param));
        }
        ResetPlan::DropStale(_) => {
            batch.push((&s.delete_binding, &binding));
            batch.push((&s.delete_unbound, &trial_param));
        }
    }
    batch.push((&s.commit, &[]));
    conn.pipeline(&batch).await?;
    conn.transaction_closed();
    Ok(true)
}

/// The reset's view of a key's binding, from the rows of [`READ_TARGET`].
fn target_of(rows: &[tokio_postgres::Row]) -> Result<Option<ResetTarget>, tokio_postgres::Error> {
    rows.first().map(|row| Ok(ResetTarget { trial_id: TrialId(row.try_get(0)?), counts: row.try_get(1)? })).transpose()
}
