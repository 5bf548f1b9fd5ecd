//! Integration tests of the PostgreSQL backend: the shared conformance suite
//! (each case on a database of its own), and outages: a store that cannot
//! reach PostgreSQL fails fast as unavailable, and recovers by itself.
//!
//! Cases that need a server run when `TEMPPASS_TEST_POSTGRES_URL` is set and
//! pass, saying they were skipped, when it is not.

// An integration test is test code throughout, but clippy's allow-expect-in-tests
// covers only #[test] functions, not the helpers beside them (rust-clippy#13981).
#![allow(clippy::expect_used, reason = "test code")]

mod outage;

use std::sync::Arc;
use std::time::Duration;

use temppass_core::{DeviceId, Timestamp};
use temppass_store::Authorization;
use temppass_store::Store;
use temppass_store::conformance::{
    StoreWithGuard, basic_rule, bound_keys_loaded, device_id as device, device_lookup as lookup, resource, scope,
};
use temppass_store_postgres::testing::TestDatabase;
use temppass_store_postgres::{PostgresOptions, PostgresStore};

/// Options for tests: a small pool (two tests may run at once on one
/// server) and a timeout that a slow CI machine still meets.
fn test_options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 8,
        connect_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(10),
        ..PostgresOptions::default()
    }
}

/// A new, empty store on a database of its own, dropped with the store;
/// `None` when PostgreSQL tests are skipped.
async fn fresh_pg_store() -> Option<Arc<dyn Store>> {
    let database = TestDatabase::create().await?;
    let store = PostgresStore::connect(database.url(), test_options()).await.expect("the PostgreSQL store opens");
    Some(StoreWithGuard::shared(store, database))
}

mod conformance {
    use super::fresh_pg_store;

    temppass_store::conformance_tests!(fresh_pg_store);
}

async fn connect(database: &TestDatabase) -> PostgresStore {
    let store = PostgresStore::connect(database.url(), test_options()).await;
    let store = store.expect("the PostgreSQL store opens");
    bound_keys_loaded(store.bound_keys()).await;
    store
}

#[tokio::test]
async fn keys_bound_before_a_server_connects_are_known_to_it_once_loaded() {
    let Some(database) = TestDatabase::create().await else { return };
    let (scope, now) = (scope("REF30", "TempPass"), Timestamp::from_millis(1_700_000_000_000));
    // More than one chunk of the loader's walk (10,000 keys).
    let devices: Vec<DeviceId> = (0..12_000).map(|n| device(&format!("device-{n}"))).collect();
    let first = connect(&database).await;
    let permits = futures_util::future::join_all(devices.chunks(1_000).map(|chunk| {
        let (first, scope) = (&first, &scope);
        async move {
            for device in chunk {
                let permit = first
                    .authorize(Authorization::new(lookup(scope, device), &basic_rule("4h"), &resource("res-1"), now))
                    .await;
                assert_eq!(permit.expect("authorize succeeds").decision, Ok(()));
            }
        }
    }));
    permits.await;

    let second = connect(&database).await;
    let forgotten = devices.iter().filter(|d| !second.bound_keys().may_all_be_bound(lookup(&scope, d))).count();
    assert_eq!(forgotten, 0, "bound keys the second server does not know");
    let new_devices = (0..1_000).filter(|n| {
        let device = device(&format!("new-device-{n}"));
        second.bound_keys().may_all_be_bound(lookup(&scope, &device))
    });
    assert!(new_devices.count() < 50, "most never-bound keys should be known as never bound");
}

#[tokio::test]
async fn a_device_another_server_bound_after_this_one_connected_continues_its_trial_here() {
    let Some(database) = TestDatabase::create().await else { return };
    let (scope, device, now) =
        (scope("REF30", "TempPass"), device("device-1"), Timestamp::from_millis(1_700_000_000_000));
    let here = connect(&database).await;
    let there = connect(&database).await;
    let permit =
        there.authorize(Authorization::new(lookup(&scope, &device), &basic_rule("4h"), &resource("res-1"), now)).await;
    let trial = permit.expect("authorize succeeds").trial;
    assert!(!here.bound_keys().may_all_be_bound(lookup(&scope, &device)), "this server learnt the key");

    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    let again =
        here.authorize(Authorization::new(lookup(&scope, &device), &basic_rule("4h"), &resource("res-1"), later)).await;
    let again = again.expect("authorize succeeds");
    assert_eq!(again.decision, Ok(()));
    assert_eq!(again.trial, trial, "a key this server's filter did not know started a second trial");
    assert!(here.bound_keys().may_all_be_bound(lookup(&scope, &device)), "the write path did not teach the filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_write_queue_bound_first_uses_are_refused_busy_and_every_permit_is_stored() {
    let Some(database) = TestDatabase::create().await else { return };
    let options = PostgresOptions { max_queued_writes: 4, ..test_options() };
    let store = PostgresStore::connect(database.url(), options).await;
    let store = store.expect("the PostgreSQL store opens");
    bound_keys_loaded(store.bound_keys()).await;
    let (scope, now) = (scope("REF30", "TempPass"), Timestamp::from_millis(1_700_000_000_000));
    let devices: Vec<DeviceId> = (0..400).map(|n| device(&format!("device-{n}"))).collect();

    let answers = futures_util::future::join_all(devices.iter().map(|device| {
        let (store, scope) = (&store, &scope);
        async move {
            (
                device,
                store
                    .authorize(Authorization::new(lookup(scope, device), &basic_rule("4h"), &resource("res-1"), now))
                    .await,
            )
        }
    }))
    .await;

    let busy = answers.iter().filter(|(_, answer)| matches!(answer, Err(temppass_store::StoreError::Busy(_)))).count();
    let permitted: Vec<&DeviceId> = answers
        .iter()
        .filter(|(_, answer)| answer.as_ref().is_ok_and(|a| a.decision.is_ok()))
        .map(|(d, _)| *d)
        .collect();
    assert!(busy > 0, "400 writes at once never met a queue of 4");
    assert_eq!(busy + permitted.len(), devices.len(), "an answer was neither a permit nor busy: {answers:?}");
    for device in permitted {
        let found = store.find_trial(lookup(&scope, device)).await.expect("find_trial succeeds");
        assert!(found.is_some(), "a permit of {device} is not in the store");
    }
}
