//! Integration tests of the SQLite backend: the shared conformance suite, and
//! what only a file-backed store can show (data survives reopening the file).

// An integration test is test code throughout, but clippy's allow-expect-in-tests
// covers only #[test] functions, not the helpers beside them (rust-clippy#13981).
#![allow(clippy::expect_used, reason = "test code")]

use std::path::Path;
use std::sync::Arc;

use temppass_core::{DeviceId, ResourceId, Rule, RuleScope, Timestamp};
use temppass_store::Authorization;
use temppass_store::Store;
use temppass_store::conformance::{StoreWithGuard, bound_keys_loaded, device_id as device, device_lookup as lookup};
use temppass_store_sqlite::{SqliteOptions, SqliteStore};

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A new, empty store in a temporary directory that lives as long as the store.
async fn fresh_sqlite_store() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir.path().join("temppass.db"));
    StoreWithGuard::shared(store, dir)
}

mod conformance {
    use super::fresh_sqlite_store;

    temppass_store::conformance_tests!(fresh_sqlite_store);
}

/// The scope, rule and resource of these tests.
fn scope() -> RuleScope {
    temppass_store::conformance::scope("REF30", "flexibleTempPass")
}

fn promotional_rule() -> Rule {
    temppass_store::conformance::promotional_rule(2, "4h")
}

fn resource() -> ResourceId {
    temppass_store::conformance::resource("res-1")
}

#[tokio::test]
async fn a_trial_survives_reopening_the_database_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("nested").join("temppass.db");
    let (scope, device) = (scope(), device("device-1"));
    let lookup = lookup(&scope, &device);
    let (rule, resource) = (promotional_rule(), resource());
    let now = Timestamp::from_millis(1_700_000_000_000);

    let store = open(&path);
    let permit = store.authorize(Authorization::new(lookup, &rule, &resource, now)).await.expect("authorize succeeds");
    assert_eq!(permit.decision, Ok(()));
    let trial = permit.trial;
    drop(store);

    let store = open(&path);
    let found = store.find_trial(lookup).await.expect("find_trial succeeds");
    assert_eq!(found.as_ref(), Some(&trial), "the trial changed or vanished when the file was reopened");
    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    let again = store.authorize(Authorization::new(lookup, &rule, &resource, later)).await.expect("authorize succeeds");
    assert_eq!(again.decision, Ok(()));
    assert_eq!(again.trial, trial, "the reopened store did not continue the trial");
}

#[tokio::test]
async fn keys_bound_before_reopening_are_known_once_loaded_and_others_are_not() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("temppass.db");
    let scope = scope();
    // More than one chunk of the loader's walk (10,000 keys).
    let devices: Vec<DeviceId> = (0..12_000).map(|n| device(&format!("device-{n}"))).collect();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let store = open(&path);
    for device in &devices {
        let permit =
            store.authorize(Authorization::new(lookup(&scope, device), &promotional_rule(), &resource(), now)).await;
        assert_eq!(permit.expect("authorize succeeds").decision, Ok(()));
    }
    drop(store);

    let store = open(&path);
    bound_keys_loaded(store.bound_keys()).await;
    let forgotten = devices.iter().filter(|d| !store.bound_keys().may_all_be_bound(lookup(&scope, d))).count();
    assert_eq!(forgotten, 0, "bound keys the reopened store does not know");
    let new_devices = (0..1_000).filter(|n| {
        let device = device(&format!("new-device-{n}"));
        store.bound_keys().may_all_be_bound(lookup(&scope, &device))
    });
    assert!(new_devices.count() < 50, "most never-bound keys should be known as never bound");
}

#[tokio::test]
async fn a_device_bound_behind_the_filters_back_is_still_found_by_the_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("temppass.db");
    let (scope, device) = (scope(), device("device-1"));
    let now = Timestamp::from_millis(1_700_000_000_000);
    // Two stores on one file: the second never sees the first's keys.
    let first = open(&path);
    let second = open(&path);
    bound_keys_loaded(second.bound_keys()).await;
    let permit =
        first.authorize(Authorization::new(lookup(&scope, &device), &promotional_rule(), &resource(), now)).await;
    let trial = permit.expect("authorize succeeds").trial;
    assert!(!second.bound_keys().may_all_be_bound(lookup(&scope, &device)), "the second store learnt the key");

    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    let again =
        second.authorize(Authorization::new(lookup(&scope, &device), &promotional_rule(), &resource(), later)).await;
    let again = again.expect("authorize succeeds");
    assert_eq!(again.decision, Ok(()));
    assert_eq!(again.trial, trial, "a key the filter did not know started a second trial");
    assert!(second.bound_keys().may_all_be_bound(lookup(&scope, &device)), "the write path did not teach the filter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authorizations_while_the_bound_keys_load_continue_old_trials_and_start_new_ones() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("temppass.db");
    let now = Timestamp::from_millis(1_700_000_000_000);
    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    // Enough keys that loading them takes a while; seeded concurrently, so the writer batches them.
    let store = Arc::new(open(&path));
    let trials = authorize_all(&store, (0..50_000).map(|n| format!("device-{n}")), now).await;
    drop(store);

    let store = Arc::new(open(&path));
    let loading_at_start = !store.bound_keys().is_complete();
    let old = (0..50_000).step_by(97).map(|n| format!("device-{n}"));
    let new = (0..500).map(|n| format!("new-device-{n}"));
    let again = authorize_all(&store, old.clone().chain(new.clone()), later).await;
    for device in old {
        assert_eq!(again[&device], trials[&device], "{device} did not continue its trial");
    }
    for device in new {
        assert_eq!(again[&device].started_at, later, "{device} did not start a trial of its own");
    }
    // Not an assertion: on a fast machine the loader may have finished first.
    println!("the filter was still loading when the authorizations started: {loading_at_start}");
}

/// Authorizes the devices a thousand at a time (one task each, so the writer
/// batches them, and few enough that none waits past the store timeout) and
/// answers each device's trial.
async fn authorize_all(
    store: &Arc<SqliteStore>,
    devices: impl Iterator<Item = String>,
    now: Timestamp,
) -> std::collections::HashMap<String, temppass_core::Trial> {
    let devices: Vec<String> = devices.collect();
    let mut trials = std::collections::HashMap::new();
    for wave in devices.chunks(1_000) {
        let mut tasks = tokio::task::JoinSet::new();
        for name in wave.iter().cloned() {
            let store = Arc::clone(store);
            tasks.spawn(async move {
                let (scope, device) = (scope(), device(&name));
                let outcome = store
                    .authorize(Authorization::new(lookup(&scope, &device), &promotional_rule(), &resource(), now))
                    .await;
                let outcome = outcome.unwrap_or_else(|e| panic!("authorize {name}: {e}"));
                assert_eq!(outcome.decision, Ok(()), "{name} was denied");
                let trial = outcome.trial;
                (name, trial)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (name, trial) = joined.expect("an authorization task finishes");
            trials.insert(name, trial);
        }
    }
    trials
}
