//! The plans PostgreSQL caches for the statements of the write path: point
//! probes, never scans, even on a database that was never analyzed.

#![allow(
    clippy::expect_used,
    reason = "test code behind cfg(all(test, feature)), which clippy 1.95 does not count as a test"
)]

use tokio_postgres::NoTls;

use super::FIND_BATCH;
use crate::batch_writes::{BIND, DELETE_UNBOUND, MOVE_BINDINGS, START_BATCH, START_NEW_BATCH};
use crate::locks::LOCK_BATCH_TRIALS;
use crate::lookup::FIND;
use crate::testing::TestDatabase;
use crate::{PostgresOptions, PostgresStore};

/// The plan PostgreSQL caches for a prepared statement on a freshly migrated,
/// never analyzed database: what a pooled connection keeps using while the tables grow.
async fn generic_plan(client: &tokio_postgres::Client, types: &str, sql: &str, args: &str) -> String {
    client.batch_execute("DEALLOCATE ALL").await.expect("deallocate");
    client.batch_execute(&format!("PREPARE lookup({types}) AS {sql}")).await.expect("the statement runs");
    let rows = client.query(&format!("EXPLAIN EXECUTE lookup({args})"), &[]).await.expect("explain");
    rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn every_cached_plan_of_a_lookup_probes_bindings_by_their_whole_key() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = PostgresStore::connect(database.url(), PostgresOptions::default()).await.expect("migrate");
    let (client, connection) = tokio_postgres::connect(database.url(), NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.batch_execute("SET plan_cache_mode = force_generic_plan").await.expect("the statement runs");
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
        assert!(!probes.is_empty() && whole_key == probes.len(), "bindings are not probed by their whole key:\n{plan}");
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
