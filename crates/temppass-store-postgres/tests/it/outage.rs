//! PostgreSQL out of reach: operations fail as `Unavailable` (never a panic,
//! never a hang), and the store works again by itself once PostgreSQL is back.
//!
//! Only a bound on hanging is asserted, never a speed: speed is measured in bench/.

use std::future::Future;
use std::time::Duration;

use temppass_core::{
    DeviceId, DurationMs, MvpdId, ResourceId, Rule, RuleKind, RuleScope, ServiceProviderId, Timestamp,
};
use temppass_store::Authorization;
use temppass_store::{Store, StoreError, StoredSigningKey, TrialLookup};
use temppass_store_postgres::testing::{TcpProxy, TestDatabase, with_address};
use temppass_store_postgres::{PostgresOptions, PostgresStore};
use tokio::net::TcpListener;

/// Far longer than any timeout configured here: reaching it means the store hung.
const HANG: Duration = Duration::from_secs(60);

fn short_timeouts() -> PostgresOptions {
    PostgresOptions {
        pool_size: 4,
        connect_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_millis(500),
        ..PostgresOptions::default()
    }
}

async fn without_hanging<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, work).await.unwrap_or_else(|_| panic!("{what} hung for {HANG:?}"))
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("{what}: expected StoreError::Unavailable, got {other:?}"),
    }
}

/// A loopback port with nothing listening on it.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port to listen on");
    let port = listener.local_addr().expect("the listener's address").port();
    drop(listener);
    port
}

#[tokio::test]
async fn a_store_pointed_at_a_closed_port_fails_as_unavailable_naming_the_server() {
    let port = closed_port().await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let result = without_hanging("connecting to a closed port", PostgresStore::connect(&url, short_timeouts())).await;
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains(&format!("127.0.0.1:{port}")), "the message names no server: {message}");
        }
        other => panic!("expected StoreError::Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_store_whose_server_accepts_but_never_answers_fails_as_unavailable_instead_of_hanging() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port to listen on");
    let port = listener.local_addr().expect("the listener's address").port();
    // Accepts connections and keeps them open without a word, like a frozen server.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let result = without_hanging("connecting to a silent server", PostgresStore::connect(&url, short_timeouts())).await;
    assert_unavailable(result.map(drop), "connecting to a server that never answers");
    silent.abort();
}

struct Fixture {
    scope: RuleScope,
    device: DeviceId,
    rule: Rule,
    resource: ResourceId,
}

impl Fixture {
    fn new() -> Self {
        Self {
            scope: RuleScope {
                service_provider: ServiceProviderId::parse("REF30").expect("a valid service provider id"),
                mvpd: MvpdId::parse("flexibleTempPass").expect("a valid mvpd id"),
            },
            device: DeviceId::parse("living-room").expect("a valid device id"),
            rule: Rule {
                kind: RuleKind::Promotional { max_resources: 2, identity_key: "email".into() },
                ttl: DurationMs::parse("4h").expect("a valid duration"),
                reset: None,
            },
            resource: ResourceId::parse("res-1").expect("a valid resource id"),
        }
    }

    fn lookup(&self) -> TrialLookup<'_> {
        TrialLookup {
            scope: &self.scope,
            device: &self.device,
            identity: None,
            valid_since: Timestamp::from_millis(i64::MIN),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cut_off_from_postgres_fails_fast_as_unavailable_and_recovers_by_itself() {
    let Some(database) = TestDatabase::create().await else { return };
    let proxy = TcpProxy::start(database.server_address().await).await;
    let url = with_address(database.url(), proxy.address());
    let store = PostgresStore::connect(&url, short_timeouts()).await.expect("the store opens through the proxy");
    let fixture = Fixture::new();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let first = store
        .authorize(Authorization::new(fixture.lookup(), &fixture.rule, &fixture.resource, now))
        .await
        .expect("authorize succeeds before the outage");
    assert_eq!(first.decision, Ok(()));
    let key = StoredSigningKey { kid: "k1".into(), seed: [7; 32], created_at: now };
    store.ensure_signing_key(&key).await.expect("ensure_signing_key succeeds");

    proxy.cut();
    for round in 0..3 {
        let later = Timestamp::from_millis(now.as_millis() + 1_000 + round);
        let result = without_hanging(
            "authorize during the outage",
            store.authorize(Authorization::new(fixture.lookup(), &fixture.rule, &fixture.resource, later)),
        )
        .await;
        assert_unavailable(result, "authorize during the outage");
        let result = without_hanging("find_trial during the outage", store.find_trial(fixture.lookup())).await;
        assert_unavailable(result, "find_trial during the outage");
        let result = without_hanging("signing_keys during the outage", store.signing_keys()).await;
        assert_unavailable(result, "signing_keys during the outage");
        let result =
            without_hanging("a reset during the outage", store.reset_devices(&fixture.scope, Some(&fixture.device)))
                .await;
        assert_unavailable(result, "a reset during the outage");
    }
    // Many callers at once: every one answers, none panics.
    let mut callers = Vec::new();
    let store = std::sync::Arc::new(store);
    for _ in 0..16 {
        let store = std::sync::Arc::clone(&store);
        callers.push(tokio::spawn(async move { store.find_access_grant("no-such-token").await }));
    }
    for caller in callers {
        let result = without_hanging("a caller during the outage", caller)
            .await
            .expect("a caller during the outage does not panic");
        assert_unavailable(result, "find_access_grant during the outage");
    }

    proxy.restore();
    let later = Timestamp::from_millis(now.as_millis() + 60_000);
    let again = without_hanging(
        "authorize after the outage",
        store.authorize(Authorization::new(fixture.lookup(), &fixture.rule, &fixture.resource, later)),
    )
    .await
    .expect("the store recovers by itself");
    assert_eq!((again.decision, again.trial), (first.decision, first.trial), "the trial changed across the outage");
    let keys = store.signing_keys().await.expect("signing_keys succeeds after the outage");
    assert_eq!(keys, vec![key], "the signing keys changed across the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_work_again_after_postgres_closes_the_connections_they_share() {
    let Some(database) = TestDatabase::create().await else { return };
    let store = PostgresStore::connect(database.url(), short_timeouts()).await.expect("the store opens");
    let fixture = Fixture::new();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let first = store
        .authorize(Authorization::new(fixture.lookup(), &fixture.rule, &fixture.resource, now))
        .await
        .expect("authorize succeeds");
    let trial = store.find_trial(fixture.lookup()).await.expect("find_trial succeeds");
    assert_eq!(trial, Some(first.trial.clone()));

    // Every connection of the store is closed by PostgreSQL, as by a restart.
    let (admin, connection) = tokio_postgres::connect(database.url(), tokio_postgres::NoTls)
        .await
        .expect("an admin connection to PostgreSQL");
    tokio::spawn(connection);
    let terminated = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_terminate_backend runs");
    assert!(!terminated.is_empty(), "the store held no connection");

    // A lookup caught on a closed connection may fail, as Unavailable; the
    // next ones find the trial on a new connection.
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(without_hanging("find_trial after the restart", store.find_trial(fixture.lookup())).await);
    }
    for answer in &answers[..1] {
        if let Err(error) = answer {
            assert!(matches!(error, StoreError::Unavailable(_)), "expected Unavailable, got {error:?}");
        }
    }
    for answer in &answers[1..] {
        assert_eq!(answer.as_ref().ok(), Some(&Some(first.trial.clone())), "the lookup did not recover: {answers:?}");
    }
    let later = Timestamp::from_millis(now.as_millis() + 1_000);
    let mut again =
        store.authorize(Authorization::new(fixture.lookup(), &fixture.rule, &fixture.resource, later)).await;
    if matches!(again, Err(StoreError::Unavailable(_))) {
        again = store.authorize(Authorization::new(fixture.lookup(), &fixture.rule, &fixture.resource, later)).await;
    }
    assert_eq!(
        again.ok().map(|a| (a.decision, a.trial)),
        Some((first.decision, first.trial)),
        "authorize did not recover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_connection_that_stops_answering_without_closing_is_replaced() {
    let Some(database) = TestDatabase::create().await else { return };
    let proxy = TcpProxy::start(database.server_address().await).await;
    let url = with_address(database.url(), proxy.address());
    let store = PostgresStore::connect(&url, short_timeouts()).await.expect("the store opens");
    let fixture = Fixture::new();
    let now = Timestamp::from_millis(1_700_000_000_000);
    let first = store
        .authorize(Authorization::new(fixture.lookup(), &fixture.rule, &fixture.resource, now))
        .await
        .expect("authorize succeeds");
    let trial = store.find_trial(fixture.lookup()).await.expect("find_trial succeeds");
    assert_eq!(trial, Some(first.trial.clone()));

    // The connections open now go silent without closing; new ones get through.
    proxy.stall();
    let stalled = without_hanging("a lookup on a silent connection", store.find_trial(fixture.lookup())).await;
    assert_unavailable(stalled, "a lookup on a silent connection");
    let again = without_hanging("the lookup after it", store.find_trial(fixture.lookup()))
        .await
        .expect("the silent connection is replaced");
    assert_eq!(again, Some(first.trial.clone()));
}
