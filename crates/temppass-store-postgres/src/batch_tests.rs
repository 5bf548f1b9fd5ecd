//! The batch writer against a real database: which jobs share a transaction,
//! and what each caller is told. Needs PostgreSQL (`TEMPPASS_TEST_POSTGRES_URL`).

#![allow(
    clippy::expect_used,
    reason = "test code behind cfg(all(test, feature)), which clippy 1.95 does not count as a test"
)]

use temppass_core::{DenyReason, Timestamp};
use temppass_store::Authorization;
use temppass_store::conformance::{basic_rule, device_id, device_lookup, identity, promotional_rule, resource, scope};
use temppass_store::{Store, TrialLookup};

use temppass_store::{AuthorizeOutcome, StoreError};

use super::{Callers, FirstUseBackoff, WriteJob, authorize_batch};
use crate::batch_writes::{DELETE_TRIAL, MOVE_BINDINGS};
use crate::testing::TestDatabase;
use crate::{PostgresOptions, PostgresStore, connection};

/// A store on a database of its own, when PostgreSQL is configured for tests.
async fn fresh_store() -> Option<(TestDatabase, PostgresStore)> {
    let database = TestDatabase::create().await?;
    let store = PostgresStore::connect(database.url(), PostgresOptions::default())
        .await
        .expect("PostgreSQL accepts a connection");
    Some((database, store))
}

/// The answers of a batch's jobs, the order they came in, and the jobs
/// whose callers gave up, for a test to look at.
struct Answers(Vec<Option<Result<AuthorizeOutcome, StoreError>>>, Vec<usize>, Vec<usize>);

impl Answers {
    fn for_jobs(count: usize) -> Self {
        Self((0..count).map(|_| None).collect(), Vec::new(), Vec::new())
    }
}

impl Callers for Answers {
    fn waiting(&self, index: usize) -> bool {
        self.0[index].is_none() && !self.2.contains(&index)
    }

    fn answer(&mut self, index: usize, answer: Result<AuthorizeOutcome, StoreError>) {
        self.0[index] = Some(answer);
        self.1.push(index);
    }
}

/// Runs `jobs` as one batch on a connection of `pool`, as a writer would;
/// the callers of `gave_up` have stopped waiting before it starts.
async fn run_batch(pool: &deadpool_postgres::Pool, target: &str, jobs: &[WriteJob], gave_up: &[usize]) -> Answers {
    let mut conn = connection::get(pool, target).await.expect("a pooled connection");
    let mut answers = Answers::for_jobs(jobs.len());
    answers.2.extend(gave_up);
    authorize_batch(&mut conn, jobs, &mut answers, &FirstUseBackoff::default()).await;
    answers
}

/// A caller that gave up (its deadline passed while the job queued) is
/// told nothing, and nothing is written for it.
#[tokio::test]
async fn a_job_whose_caller_gave_up_is_never_run() {
    let Some((_database, store)) = fresh_store().await else { return };
    let scope = scope("REF30", "TempPass");
    let (gone, staying) = (device_id("gone-device"), device_id("staying-device"));
    let now = Timestamp::from_millis(1_700_000_000_000);
    let jobs = [
        WriteJob::new(Authorization::new(device_lookup(&scope, &gone), &basic_rule("4h"), &resource("res-1"), now)),
        WriteJob::new(Authorization::new(device_lookup(&scope, &staying), &basic_rule("4h"), &resource("res-1"), now)),
    ];
    let answers = run_batch(&store.pool, &store.target, &jobs, &[0]).await;

    assert_eq!(answers.1, vec![1], "only the caller still waiting is answered");
    let found = |device| store.find_trial(device_lookup(&scope, device));
    assert_eq!(found(&gone).await.expect("the lookup succeeds"), None, "a trial nobody was told of");
    assert!(found(&staying).await.expect("the lookup succeeds").is_some(), "the waiting caller's trial");
}

/// A key bound by another server since this one filled its filter of
/// bound keys reads here as never bound; the transaction that starts
/// trials without reading finds it bound when it writes, and its jobs run
/// again the usual way: that trial continues, the new device starts one.
#[tokio::test]
async fn first_uses_on_a_key_bound_elsewhere_continue_its_trial() {
    let Some((_database, store)) = fresh_store().await else { return };
    let scope = scope("REF30", "TempPass");
    let rule = basic_rule("4h");
    let (bound, new) = (device_id("bound-elsewhere"), device_id("new-device"));
    let now = Timestamp::from_millis(1_700_000_000_000);
    let first = store
        .authorize(Authorization::new(device_lookup(&scope, &bound), &rule, &resource("res-1"), now))
        .await
        .expect("the authorization succeeds");
    let started = Some((first.trial.id, first.trial.expires_at));
    assert!(started.is_some(), "the first authorization started no trial");

    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    let jobs = [
        WriteJob::new(Authorization::new(device_lookup(&scope, &bound), &rule, &resource("res-1"), later))
            .keys_never_bound(true),
        WriteJob::new(Authorization::new(device_lookup(&scope, &new), &rule, &resource("res-1"), later))
            .keys_never_bound(true),
    ];
    let mut answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
    let [continued, fresh] = [0, 1].map(|index| match answers.0[index].take() {
        Some(Ok(outcome)) => outcome,
        other => panic!("job {index}: {other:?}"),
    });

    assert_eq!(continued.decision, Ok(()));
    assert_eq!(Some((continued.trial.id, continued.trial.expires_at)), started, "the device got a second trial");
    assert_eq!(fresh.decision, Ok(()));
    let fresh = fresh.trial;
    assert_ne!(Some(fresh.id), started.map(|(id, _)| id));
    assert_eq!(fresh.started_at, later);
}

/// A new device with an identity another server bound: both keys read as
/// never bound here, the insert fails on the identity's binding, and the
/// device joins the identity's trial (SPEC.md §2: known identity, new device).
#[tokio::test]
async fn a_first_use_of_a_new_device_with_an_identity_bound_elsewhere_joins_its_trial() {
    let Some((_database, store)) = fresh_store().await else { return };
    let scope = scope("REF30", "flexibleTempPass");
    let rule = promotional_rule(3, "4h");
    let (phone, tablet, viewer) = (device_id("phone"), device_id("tablet"), identity("viewer@example.com"));
    let lookup = |device| TrialLookup {
        scope: &scope,
        device,
        identity: Some(&viewer),
        valid_since: Timestamp::from_millis(i64::MIN),
    };
    let now = Timestamp::from_millis(1_700_000_000_000);
    let first = store.authorize(Authorization::new(lookup(&phone), &rule, &resource("res-1"), now)).await;
    let started = Some(first.expect("the first authorization succeeds").trial.id);

    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    let jobs =
        [WriteJob::new(Authorization::new(lookup(&tablet), &rule, &resource("res-2"), later)).keys_never_bound(true)];
    let mut answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
    let outcome = answers.0.remove(0).expect("an answer").expect("the authorization succeeds");

    assert_eq!(outcome.decision, Ok(()));
    let trial = outcome.trial;
    assert_eq!(Some(trial.id), started, "the identity got a second trial");
    assert_eq!(trial.used_resources, vec![resource("res-1"), resource("res-2")]);
    let by_tablet = store.find_trial(TrialLookup { identity: None, ..lookup(&tablet) }).await;
    assert_eq!(by_tablet.expect("the lookup succeeds").map(|t| t.id), started, "the tablet is not bound");
}

/// After "reset all" the device's binding is of an old generation: a
/// first use that believes the key never bound fails on it, reads, and
/// starts a fresh trial with a fresh clock, rebinding the key.
#[tokio::test]
async fn a_first_use_on_a_key_reset_by_reset_all_starts_a_fresh_trial() {
    let Some((_database, store)) = fresh_store().await else { return };
    let scope = scope("REF30", "TempPass");
    let rule = basic_rule("4h");
    let device = device_id("reset-device");
    let now = Timestamp::from_millis(1_700_000_000_000);
    let before = store
        .authorize(Authorization::new(device_lookup(&scope, &device), &rule, &resource("res-1"), now))
        .await
        .expect("the authorization succeeds")
        .trial;
    store.reset_devices(&scope, None).await.expect("the reset succeeds");

    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    let jobs = [WriteJob::new(Authorization::new(device_lookup(&scope, &device), &rule, &resource("res-1"), later))
        .keys_never_bound(true)];
    let mut answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
    let outcome = answers.0.remove(0).expect("an answer").expect("the authorization succeeds");

    assert_eq!(outcome.decision, Ok(()));
    let fresh = outcome.trial;
    assert_ne!(fresh.id, before.id, "the reset trial came back");
    assert_eq!(fresh.started_at, later, "the clock did not start again");
    let found = store.find_trial(device_lookup(&scope, &device)).await.expect("the lookup succeeds");
    assert_eq!(found.map(|t| t.id), Some(fresh.id), "the key is not bound to the fresh trial");
}

/// A merge elsewhere moves a device's binding to the older trial and
/// deletes the one the device pointed to, while this authorization waits
/// for that trial's row lock: the lock then locks nothing, and only the
/// bindings' read after it shows where the device went. It continues
/// the merged trial; it must not start a trial of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_waiting_on_a_trial_merged_away_continues_the_merged_trial() {
    let Some((database, store)) = fresh_store().await else { return };
    let scope = scope("REF30", "flexibleTempPass");
    let rule = promotional_rule(3, "4h");
    let (older_device, device) = (device_id("older-device"), device_id("device"));
    let (older_identity, viewer) = (identity("older@example.com"), identity("viewer@example.com"));
    // The device comes back with an identity of its own, so that it
    // shares no key lock with the merge, which comes from (older device, viewer).
    let guest = identity("guest@example.com");
    let lookup = |device, identity| TrialLookup {
        scope: &scope,
        device,
        identity: Some(identity),
        valid_since: Timestamp::from_millis(i64::MIN),
    };
    let start = |device, identity, at_ms| {
        let store = &store;
        let lookup = lookup(device, identity);
        let rule = &rule;
        async move {
            let outcome = store
                .authorize(Authorization::new(lookup, rule, &resource("res-1"), Timestamp::from_millis(at_ms)))
                .await
                .expect("the authorization succeeds");
            outcome.trial.id.0
        }
    };
    let survivor = start(&older_device, &older_identity, 1_700_000_000_000).await;
    let absorbed = start(&device, &viewer, 1_700_000_060_000).await;

    // Another session merges, as a transaction of another server would:
    // it holds the absorbed trial's row lock while this authorization waits.
    let (merger, connection) =
        tokio_postgres::connect(database.url(), tokio_postgres::NoTls).await.expect("PostgreSQL accepts a connection");
    tokio::spawn(connection);
    merger.batch_execute("BEGIN").await.expect("the statement runs");
    merger.execute("SELECT id FROM trials WHERE id = $1 FOR UPDATE", &[&absorbed]).await.expect("the statement runs");
    let jobs = [WriteJob::new(Authorization::new(
        lookup(&device, &guest),
        &rule,
        &resource("res-2"),
        Timestamp::from_millis(1_700_000_120_000),
    ))];
    let (pool, target) = (store.pool.clone(), store.target.clone());
    let waiting = tokio::spawn(async move { run_batch(&pool, &target, &jobs, &[]).await.0.remove(0) });
    let waits = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let mut seen_waiting = false;
    for _ in 0..200 {
        let row = merger.query_one(waits, &[]).await.expect("the query answers");
        if row.get::<_, i64>(0) > 0 {
            seen_waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(seen_waiting, "the authorization never waited for the trial's row lock");
    merger.execute(MOVE_BINDINGS, &[&survivor, &absorbed]).await.expect("the statement runs");
    merger.execute(DELETE_TRIAL, &[&absorbed]).await.expect("the statement runs");
    merger.batch_execute("COMMIT").await.expect("the statement runs");

    let answer = waiting.await.expect("the waiting task finishes");
    let outcome = answer.expect("an answer").expect("the authorization succeeds");
    assert_eq!(outcome.decision, Ok(()));
    assert_eq!(outcome.trial.id.0, survivor, "the device left the merged trial");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_elsewhere_holds_back_no_other_authorization_of_its_batch() {
    let Some((database, store)) = fresh_store().await else { return };
    let scope = scope("REF30", "TempPass");
    let rule = basic_rule("4h");
    let (busy, free) = (device_id("busy-device"), device_id("free-device"));
    let now = Timestamp::from_millis(1_700_000_000_000);
    let jobs = [
        WriteJob::new(Authorization::new(device_lookup(&scope, &busy), &rule, &resource("res-1"), now)),
        WriteJob::new(Authorization::new(device_lookup(&scope, &free), &rule, &resource("res-1"), now)),
    ];
    // Another session holds the busy device's key lock for a while, as a
    // transaction of another server would.
    let (holder, connection) =
        tokio_postgres::connect(database.url(), tokio_postgres::NoTls).await.expect("PostgreSQL accepts a connection");
    tokio::spawn(connection);
    let key = crate::locks::key_lock(&scope, temppass_store::KeyKind::Device, busy.as_str());
    holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("the statement runs");
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        holder.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.expect("the statement runs");
    });

    let answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
    release.await.expect("the task finishes");

    assert_eq!(answers.1, vec![1, 0], "the free device waited for the busy one");
    for answer in answers.0 {
        let decision = answer.expect("an answer").map(|o| o.decision);
        assert_eq!(decision.expect("the authorization succeeds"), Ok(()));
    }
}

/// Writers gather first uses behind the batch in flight, but never
/// behind one that waits for a lock held elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_use_waiting_for_a_lock_held_elsewhere_holds_back_no_other() {
    let Some((database, store)) = fresh_store().await else { return };
    let store = std::sync::Arc::new(store);
    let scope = scope("REF30", "TempPass");
    let (busy, free) = (device_id("busy-device"), device_id("free-device"));
    let now = Timestamp::from_millis(1_700_000_000_000);
    let (holder, connection) =
        tokio_postgres::connect(database.url(), tokio_postgres::NoTls).await.expect("PostgreSQL accepts a connection");
    tokio::spawn(connection);
    let key = crate::locks::key_lock(&scope, temppass_store::KeyKind::Device, busy.as_str());
    holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("the statement runs");

    let waiting = {
        let (store, scope, busy) = (store.clone(), scope.clone(), busy.clone());
        tokio::spawn(async move {
            store
                .authorize(Authorization::new(device_lookup(&scope, &busy), &basic_rule("4h"), &resource("res-1"), now))
                .await
        })
    };
    // Until the busy device's batch waits for the lock.
    let waiters = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    while holder.query_one(waiters, &[]).await.map(|row| row.get::<_, i64>(0)).expect("the query answers") == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let answer = store
        .authorize(Authorization::new(device_lookup(&scope, &free), &basic_rule("4h"), &resource("res-1"), now))
        .await;
    assert_eq!(answer.map(|o| o.decision).ok(), Some(Ok(())), "the free device waited for the held lock");
    assert!(!waiting.is_finished(), "the busy device did not wait for its lock");

    holder.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.expect("the statement runs");
    let answer = waiting.await.expect("the waiting task finishes");
    assert_eq!(answer.map(|o| o.decision).ok(), Some(Ok(())), "the busy device was not permitted once free");
}

/// A first use whose key lock is held elsewhere longer than eight lock
/// timeouts (another server's transaction) runs alone and patient, as its
/// first use still, and is permitted once the lock is free, instead of
/// failing as unavailable after eight 200 ms attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_use_held_back_by_a_lock_longer_than_eight_lock_timeouts_waits_patiently() {
    let Some(database) = TestDatabase::create().await else { return };
    let options =
        PostgresOptions { operation_timeout: std::time::Duration::from_secs(20), ..PostgresOptions::default() };
    let store = PostgresStore::connect(database.url(), options).await.expect("the store connects");
    // Until the filter of bound keys is loaded, every key may be bound and no first use skips its reads.
    while !store.bound_keys().is_complete() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let scope = scope("REF30", "TempPass");
    let busy = device_id("busy-device");
    let now = Timestamp::from_millis(1_700_000_000_000);
    let (holder, connection) =
        tokio_postgres::connect(database.url(), tokio_postgres::NoTls).await.expect("PostgreSQL accepts a connection");
    tokio::spawn(connection);
    let key = crate::locks::key_lock(&scope, temppass_store::KeyKind::Device, busy.as_str());
    holder.execute("SELECT pg_advisory_lock($1)", &[&key]).await.expect("the statement runs");
    let held = 8 * crate::locks::BATCH_LOCK_TIMEOUT + std::time::Duration::from_millis(1_500);
    let release = tokio::spawn(async move {
        tokio::time::sleep(held).await;
        holder.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.expect("the statement runs");
    });

    let answer = store
        .authorize(Authorization::new(device_lookup(&scope, &busy), &basic_rule("4h"), &resource("res-1"), now))
        .await;
    release.await.expect("the releasing task finishes");

    let decision = answer.map(|o| o.decision);
    assert!(matches!(decision, Ok(Ok(()))), "the first use gave up before the lock was free: {decision:?}");
}

/// Several new trials start in one statement: each caller is told the
/// trial its own keys find, with its own title.
#[tokio::test]
async fn trials_started_together_each_go_to_their_own_caller() {
    let Some((_database, store)) = fresh_store().await else { return };
    let (basic, promotional) = (scope("REF30", "TempPass"), scope("REF30", "flexibleTempPass"));
    let (basic_rule, promotional_rule) = (basic_rule("4h"), promotional_rule(3, "4h"));
    let devices: Vec<_> = (0..4).map(|n| device_id(&format!("device-{n}"))).collect();
    let identities: Vec<_> = (0..2).map(|n| identity(&format!("viewer-{n}@example.com"))).collect();
    let lookups = [
        device_lookup(&basic, &devices[0]),
        TrialLookup { identity: Some(&identities[0]), ..device_lookup(&promotional, &devices[1]) },
        device_lookup(&basic, &devices[2]),
        TrialLookup { identity: Some(&identities[1]), ..device_lookup(&promotional, &devices[3]) },
    ];
    let rules = [&basic_rule, &promotional_rule, &basic_rule, &promotional_rule];
    let now = Timestamp::from_millis(1_700_000_000_000);
    let jobs: Vec<_> = (0..4)
        .map(|n| WriteJob::new(Authorization::new(lookups[n], rules[n], &resource(&format!("res-{n}")), now)))
        .collect();
    let answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;

    let mut ids = std::collections::HashSet::new();
    for (n, answer) in answers.0.into_iter().enumerate() {
        let outcome = answer.unwrap_or_else(|| panic!("job {n} got no answer")).expect("the authorization succeeds");
        assert_eq!(outcome.decision, Ok(()), "job {n}");
        let told = outcome.trial;
        let stored = store
            .find_trial(lookups[n])
            .await
            .expect("the lookup succeeds")
            .unwrap_or_else(|| panic!("job {n}'s keys find no trial"));
        assert_eq!(told, stored, "job {n} was told of another trial than its keys find");
        let titles = if n % 2 == 1 { vec![resource(&format!("res-{n}"))] } else { vec![] };
        assert_eq!(stored.used_resources, titles, "job {n}'s titles");
        ids.insert(stored.id);
    }
    assert_eq!(ids.len(), 4, "two jobs share a trial");
    let another_device = device_id("another-device");
    let by_identity = TrialLookup { identity: Some(&identities[1]), ..device_lookup(&promotional, &another_device) };
    let found = store.find_trial(by_identity).await.expect("the lookup succeeds");
    assert_eq!(found.map(|t| t.used_resources), Some(vec![resource("res-3")]), "an identity was not bound");
}

/// Two devices of one promotional pass in one batch, each with a key the
/// other lacks: both find the one trial, and only one may write it.
#[tokio::test]
async fn two_devices_of_one_pass_in_one_batch_never_exceed_the_cap_nor_lose_a_title() {
    let Some((_database, store)) = fresh_store().await else { return };
    let scope = scope("REF30", "flexibleTempPass");
    let rule = promotional_rule(2, "4h");
    let (living_room, kitchen) = (device_id("living-room"), device_id("kitchen"));
    let (family, guest) = (identity("family@example.com"), identity("guest@example.com"));
    let lookup = |device, identity| TrialLookup {
        scope: &scope,
        device,
        identity: Some(identity),
        valid_since: Timestamp::from_millis(i64::MIN),
    };
    let now = Timestamp::from_millis(1_700_000_000_000);
    for device in [&living_room, &kitchen] {
        let first = store.authorize(Authorization::new(lookup(device, &family), &rule, &resource("res-0"), now)).await;
        assert_eq!(first.map(|o| o.decision).ok(), Some(Ok(())), "a device of the pass was not bound");
    }

    let jobs = [
        WriteJob::new(Authorization::new(lookup(&living_room, &family), &rule, &resource("res-1"), now)),
        WriteJob::new(Authorization::new(lookup(&kitchen, &guest), &rule, &resource("res-2"), now)),
    ];
    let answers = run_batch(&store.pool, &store.target, &jobs, &[]).await;
    let answers: Vec<_> = answers.0.into_iter().map(|a| a.unwrap_or_else(|| panic!("a job got no answer"))).collect();

    let decisions: Vec<_> =
        answers.iter().map(|a| a.as_ref().map(|o| o.decision).expect("the authorization succeeds")).collect();
    assert_eq!(decisions, vec![Ok(()), Err(DenyReason::ResourcesLimitExceeded)], "one slot was left");
    let trial = store
        .find_trial(lookup(&kitchen, &family))
        .await
        .expect("the lookup succeeds")
        .unwrap_or_else(|| panic!("the trial is gone"));
    assert_eq!(trial.used_resources, vec![resource("res-0"), resource("res-1")], "a permitted title was lost");
}
