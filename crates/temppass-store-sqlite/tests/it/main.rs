//! Integration tests of the SQLite backend: the shared conformance suite, and
//! what only a file-backed store can show (data survives reopening the file).

use std::path::Path;
use std::sync::Arc;

use temppass_core::{
    DeviceId, DurationMs, MvpdId, ResourceId, Rule, RuleKind, RuleScope, ServiceProviderId, Timestamp,
};
use temppass_store::conformance::StoreWithGuard;
use temppass_store::{Store, TrialLookup};
use temppass_store_sqlite::{SqliteOptions, SqliteStore};

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A new, empty store in a temporary directory that lives as long as the store.
async fn fresh_sqlite_store() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let store = open(&dir.path().join("temppass.db"));
    StoreWithGuard::shared(store, dir)
}

mod conformance {
    use super::fresh_sqlite_store;

    temppass_store::conformance_tests!(fresh_sqlite_store);
}

#[tokio::test]
async fn a_trial_survives_reopening_the_database_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let path = dir.path().join("nested").join("temppass.db");
    let scope = RuleScope {
        service_provider: ServiceProviderId::parse("REF30").unwrap_or_else(|e| panic!("{e}")),
        mvpd: MvpdId::parse("flexibleTempPass").unwrap_or_else(|e| panic!("{e}")),
    };
    let device = DeviceId::parse("device-1").unwrap_or_else(|e| panic!("{e}"));
    let lookup =
        TrialLookup { scope: &scope, device: &device, identity: None, valid_since: Timestamp::from_millis(i64::MIN) };
    let rule = Rule {
        kind: RuleKind::Promotional { max_resources: 2, identity_key: "email".into() },
        ttl: DurationMs::parse("4h").unwrap_or_else(|e| panic!("{e}")),
        reset: None,
    };
    let resource = ResourceId::parse("res-1").unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::from_millis(1_700_000_000_000);

    let store = open(&path);
    let permit = store.authorize(lookup, &rule, &resource, now).await.unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(permit.decision, Ok(()));
    let trial = permit.trial.unwrap_or_else(|| panic!("a permit came without its trial"));
    drop(store);

    let store = open(&path);
    let found = store.find_trial(lookup).await.unwrap_or_else(|e| panic!("find_trial: {e}"));
    assert_eq!(found.as_ref(), Some(&trial), "the trial changed or vanished when the file was reopened");
    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    let again = store.authorize(lookup, &rule, &resource, later).await.unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(again.decision, Ok(()));
    assert_eq!(again.trial, Some(trial), "the reopened store did not continue the trial");
}
