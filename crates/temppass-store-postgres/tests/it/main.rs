//! Integration tests of the PostgreSQL backend: the shared conformance suite
//! (each case on a database of its own), and outages: a store that cannot
//! reach PostgreSQL fails fast as unavailable, and recovers by itself.
//!
//! Cases that need a server run when `TEMPPASS_TEST_POSTGRES_URL` is set and
//! pass, saying they were skipped, when it is not.

mod outage;

use std::sync::Arc;
use std::time::Duration;

use temppass_store::Store;
use temppass_store::conformance::StoreWithGuard;
use temppass_store_postgres::testing::TestDatabase;
use temppass_store_postgres::{PostgresOptions, PostgresStore};

/// Options for tests: a small pool (two tests may run at once on one
/// server) and a timeout that a slow CI machine still meets.
fn test_options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 8,
        connect_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(10),
    }
}

/// A new, empty store on a database of its own, dropped with the store;
/// `None` when PostgreSQL tests are skipped.
async fn fresh_pg_store() -> Option<Arc<dyn Store>> {
    let database = TestDatabase::create().await?;
    let store = PostgresStore::connect(database.url(), test_options())
        .await
        .unwrap_or_else(|e| panic!("cannot open the PostgreSQL store: {e}"));
    Some(StoreWithGuard::shared(store, database))
}

mod conformance {
    use super::fresh_pg_store;

    temppass_store::conformance_tests!(fresh_pg_store);
}
