//! Schema migrations, recorded in `temppass_schema_version`.
//!
//! Every server migrates at start-up. The whole run is one transaction under
//! a transaction-level advisory lock, so when several servers start at once one
//! migrates and the others wait, then find nothing left to do. PostgreSQL's DDL
//! is transactional: a failed migration leaves the schema as it was.

use temppass_store::StoreError;

use crate::connection::Conn;

/// In order; the position (1-based) is the schema version. Never edit a shipped entry.
const MIGRATIONS: &[&str] =
    &[include_str!("migrations/0001_initial.sql"), include_str!("migrations/0002_daily_figures.sql")];

/// The advisory lock that serialises migrations (the bytes of "tpmigrat").
const MIGRATION_LOCK: i64 = 0x7470_6d69_6772_6174;

/// Long enough for a migration of a large table, and for waiting on another server's.
const MIGRATION_STATEMENT_TIMEOUT: &str = "5min";

pub(crate) async fn run(conn: &mut Conn) -> Result<(), StoreError> {
    conn.transaction_opening();
    conn.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED;
         SET LOCAL statement_timeout = '{MIGRATION_STATEMENT_TIMEOUT}';
         SET LOCAL idle_in_transaction_session_timeout = '{MIGRATION_STATEMENT_TIMEOUT}';
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS temppass_schema_version (
             version    INTEGER     PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let rows = conn.query("SELECT COALESCE(max(version), 0) FROM temppass_schema_version", &[]).await?;
    let version: i32 = rows.first().map_or(Ok(0), |row| row.try_get(0)).map_err(crate::to_store_error)?;
    let known = MIGRATIONS.len();
    let version = usize::try_from(version).unwrap_or(0);
    if version > known {
        conn.rollback().await?;
        return Err(StoreError::Internal(format!(
            "the database has schema version {version}, newer than this temppass knows ({known}); upgrade temppass"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.batch_execute(sql).await?;
        let applied = i32::try_from(index + 1).unwrap_or(i32::MAX);
        conn.query("INSERT INTO temppass_schema_version (version) VALUES ($1)", &[&applied]).await?;
        tracing::info!(version = applied, "PostgreSQL schema migrated");
    }
    conn.batch_execute("COMMIT").await?;
    conn.transaction_closed();
    Ok(())
}
