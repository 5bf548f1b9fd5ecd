//! Schema migrations, tracked with `PRAGMA user_version`.

use rusqlite::Connection;
use temppass_store::StoreError;

use crate::to_store_error;

/// In order; the position (1-based) is the schema version. Never edit a shipped entry.
const MIGRATIONS: &[&str] =
    &[include_str!("migrations/0001_initial.sql"), include_str!("migrations/0002_daily_figures.sql")];

pub(crate) fn run(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive).map_err(to_store_error)?;
    let version: usize =
        tx.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0)).map_err(to_store_error)? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "the database has schema version {version}, newer than this temppass knows ({}); upgrade temppass",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql).map_err(to_store_error)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64).map_err(to_store_error)?;
    }
    tx.commit().map_err(to_store_error)
}
