//! Filling the filter of bound keys (`temppass_store::BoundKeys`) from the
//! database when a server connects, in chunks, in the background.

use std::sync::Weak;
use std::time::Duration;

use deadpool_postgres::Pool;
use temppass_store::{BoundKeys, KeyKind, StoreError};
use tokio_postgres::Row;

use crate::connection::{self, Conn};
use crate::to_store_error;

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
type BindingKey = (String, String, i16, String);

/// Puts up to `chunk` bound keys after `after` into `bound`; answers how many,
/// and where the walk stands or `None` when it has passed the last binding.
async fn load_chunk(
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
        // A kind the schema does not have is left out: the filter is a hint (see `BoundKeys`).
        if let Some(kind) = KeyKind::from_code(i64::from(binding.2)) {
            bound.insert(&binding.0, &binding.1, kind, &binding.3);
        }
        last = Some(binding);
    }
    Ok((rows.len(), last.filter(|_| rows.len() as i64 == chunk)))
}

/// Puts every key bound in the database into the filter, a chunk per
/// statement, then marks it complete; stops when the store is dropped. Keys
/// bound meanwhile are put in by `authorize` itself. A chunk that fails (the
/// database is busy or away) is tried again every second; until the walk is
/// over every authorization reads first, as without the filter.
pub(crate) async fn load_in_background(pool: Pool, target: String, bound: Weak<BoundKeys>) {
    const CHUNK: i64 = 10_000;
    let started = std::time::Instant::now();
    let mut after = None;
    let mut keys = 0;
    let mut failing = false;
    loop {
        let Some(filter) = bound.upgrade() else { return };
        let chunk = async {
            let mut conn = connection::get(&pool, &target).await?;
            load_chunk(&mut conn, &filter, after.clone(), CHUNK).await
        };
        match chunk.await {
            Ok((loaded, Some(last))) => {
                keys += loaded;
                after = Some(last);
                failing = false;
            }
            Ok((loaded, None)) => {
                filter.mark_complete();
                keys += loaded;
                tracing::info!(keys, ms = started.elapsed().as_millis() as u64, "bound keys loaded");
                return;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot load the bound keys yet; trying again every second");
                    failing = true;
                }
                drop(filter);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
