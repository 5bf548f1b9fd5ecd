//! Reclaiming, in bounded steps, what nothing can find any more: bindings of
//! a superseded generation and the trials only they found, and expired
//! sessions, access tokens and idle clients (`Store::reclaim`).

use temppass_core::Timestamp;
use temppass_store::{ReclaimReport, StoreError};
use tokio_postgres::Row;

use crate::batch_writes::DELETE_UNBOUND;
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
    let s = Statements::prepare(conn).await?;
    let (after_sp, after_mvpd, after_kind, after_key) =
        cursor.0.unwrap_or_else(|| (String::new(), String::new(), -1, String::new()));
    let limit = i64::try_from(budget).unwrap_or(i64::MAX);
    conn.transaction_opening();
    let answers = conn
        .pipeline(&[(&s.begin, &[]), (&s.page, &[&after_sp, &after_mvpd, &after_kind, &after_key, &limit])])
        .await
        .map_err(to_store_error)?;
    let rows = &answers[1];
    let pass_complete = rows.len() < budget;
    let page = Page::read(rows)?;
    let report = ReclaimReport { pass_complete, ..delete(conn, &s, &page, now, limit).await? };
    let cursor = if pass_complete { ReclaimCursor(None) } else { ReclaimCursor(page.last) };
    Ok((report, cursor))
}

struct Statements {
    begin: tokio_postgres::Statement,
    commit: tokio_postgres::Statement,
    page: tokio_postgres::Statement,
    lock_trial_ids: tokio_postgres::Statement,
    delete_superseded: tokio_postgres::Statement,
    delete_unbound: tokio_postgres::Statement,
    delete_sessions: tokio_postgres::Statement,
    delete_tokens: tokio_postgres::Statement,
    delete_clients: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(conn: &mut Conn) -> Result<Self, StoreError> {
        Ok(Self {
            begin: conn.prepare(BEGIN).await?,
            commit: conn.prepare(COMMIT).await?,
            page: conn.prepare(RECLAIM_PAGE).await?,
            lock_trial_ids: conn.prepare(LOCK_TRIAL_IDS).await?,
            delete_superseded: conn.prepare(DELETE_SUPERSEDED).await?,
            delete_unbound: conn.prepare(DELETE_UNBOUND).await?,
            delete_sessions: conn.prepare(DELETE_EXPIRED_SESSIONS).await?,
            delete_tokens: conn.prepare(DELETE_EXPIRED_TOKENS).await?,
            delete_clients: conn.prepare(DELETE_IDLE_CLIENTS).await?,
        })
    }
}

/// The superseded bindings of one page of the walk, as the parameters of
/// [`DELETE_SUPERSEDED`], the trials they point to, and the last key walked.
#[derive(Default)]
struct Page {
    sps: Vec<String>,
    mvpds: Vec<String>,
    kinds: Vec<i16>,
    keys: Vec<String>,
    currents: Vec<i64>,
    trials: Vec<i64>,
    last: Option<(String, String, i16, String)>,
}

impl Page {
    fn read(rows: &[Row]) -> Result<Self, StoreError> {
        let mut page = Self::default();
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
                page.sps.push(sp.clone());
                page.mvpds.push(mvpd.clone());
                page.kinds.push(kind);
                page.keys.push(key.clone());
                page.currents.push(current);
                page.trials.push(trial);
            }
            page.last = Some((sp, mvpd, kind, key));
        }
        page.trials = sorted(std::mem::take(&mut page.trials));
        Ok(page)
    }
}

/// Deletes what `page` found superseded, and up to `limit` expired sessions,
/// expired tokens and idle clients, then commits; answers the counts.
async fn delete(
    conn: &mut Conn,
    s: &Statements,
    page: &Page,
    now: Timestamp,
    limit: i64,
) -> Result<ReclaimReport, StoreError> {
    let now_ms = now.as_millis();
    let superseded: [Param<'_>; 5] = [&page.sps, &page.mvpds, &page.kinds, &page.keys, &page.currents];
    let trial_ids: [Param<'_>; 1] = [&page.trials];
    let expired: [Param<'_>; 2] = [&now_ms, &limit];
    let idle_before_ms = now_ms - temppass_store::CLIENT_IDLE_MS;
    let idle: [Param<'_>; 2] = [&idle_before_ms, &limit];
    let mut batch: Vec<(&tokio_postgres::Statement, &[Param<'_>])> = Vec::new();
    // Where each counted answer lands in `answers`, recorded as it is pushed.
    let (mut at_bindings, mut at_trials) = (None, None);
    if !page.trials.is_empty() {
        batch.push((&s.lock_trial_ids, &trial_ids));
        at_bindings = Some(batch.len());
        batch.push((&s.delete_superseded, &superseded));
        at_trials = Some(batch.len());
        batch.push((&s.delete_unbound, &trial_ids));
    }
    let at_sessions = batch.len();
    batch.push((&s.delete_sessions, &expired));
    let at_tokens = batch.len();
    batch.push((&s.delete_tokens, &expired));
    let at_clients = batch.len();
    batch.push((&s.delete_clients, &idle));
    batch.push((&s.commit, &[]));
    let answers = conn.pipeline(&batch).await.map_err(to_store_error)?;
    conn.transaction_closed();
    let count = |index: usize| answers.get(index).map_or(0, Vec::len);
    Ok(ReclaimReport {
        bindings: at_bindings.map_or(0, count),
        trials: at_trials.map_or(0, count),
        sessions: count(at_sessions),
        access_tokens: count(at_tokens),
        clients: count(at_clients),
        pass_complete: false,
    })
}
