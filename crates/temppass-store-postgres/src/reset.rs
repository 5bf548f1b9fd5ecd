//! Resets (SPEC.md §2, §7): one key's binding, in a short transaction that
//! follows the lock order of `locks.rs`, or every key of a kind in O(1), by
//! bumping the generation.

use std::collections::BTreeSet;

use temppass_core::RuleScope;
use temppass_store::{KeyKind, StoreError};

use crate::batch_tx::TxError;
use crate::batch_writes::DELETE_UNBOUND;
use crate::connection::{BEGIN, COMMIT, Conn, Param};
use crate::locks::{LOCK_EXCLUSIVE, LOCK_KEY_TRIAL, LOCK_TRIAL_IDS, generation_lock, key_lock};

/// How often a reset of one key starts over after a deadlock before the store reports itself unavailable.
const MAX_ATTEMPTS: usize = 8;

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
            for _ in 0..MAX_ATTEMPTS {
                match reset_one_once(conn, &statements, scope, kind, key).await {
                    Ok(()) => return Ok(()),
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
