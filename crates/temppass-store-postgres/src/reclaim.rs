//! Reclaiming, in bounded steps, what nothing can find any more: bindings of
//! a superseded generation and the trials only they found, and expired
//! sessions, access tokens and idle clients (`Store::reclaim`).

use temppass_core::Timestamp;
use temppass_store::{ReclaimReport, StoreError};
use tokio_postgres::Row;

use crate::batch_tx::DELETE_UNBOUND;
use crate::connection::{BEGIN, COMMIT, Conn, Param};
use crate::locks::{LOCK_TRIAL_IDS, sorted};
use crate::to_store_error;

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
