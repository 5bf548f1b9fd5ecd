//! The one conformance suite every storage backend passes (SPEC.md §2, §6, §7, §8).
//!
//! Each `pub async fn` here is one behaviour of [`Store`], named as a
//! sentence, run on a fresh, empty store with pinned times (never the clock)
//! and the real rules of `temppass_core`. A failure panics with a message that
//! says what the store got wrong.
//!
//! A backend runs the whole suite with one line in its integration tests:
//!
//! ```text
//! async fn fresh_store() -> Arc<dyn Store> { … }
//! temppass_store::conformance_tests!(fresh_store);
//! ```
//!
//! which expands to one multi-threaded `#[tokio::test]` per behaviour, each on
//! a store of its own. The calling crate needs `tokio` (with `macros` and
//! `rt-multi-thread`) among its dependencies. [`StoreWithGuard`] keeps a
//! temporary directory or database alive exactly as long as its store.

// Test code that ships behind a feature, so clippy's allow-expect-in-tests
// does not see it as a test: a step the suite relies on says so with expect.
#![allow(clippy::expect_used, reason = "the conformance suite is test code")]

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use temppass_core::{
    DailyReset, Day, DenyReason, DeviceId, DurationMs, IdentityHash, MvpdId, ResourceId, Rule, RuleKind, RuleScope,
    ServiceProviderId, Timestamp, Trial, TrialId,
};
use tokio::sync::Barrier;

use crate::{
    AccessGrant, AccessToken, ApiKey, Application, Authorization, AuthorizeOutcome, BoundKeys, CLIENT_IDLE_MS, Client,
    DailyFigures, FigureCounts, FigureDelta, FiguresQuery, ReclaimReport, Session, Store, StoreError, StoreLoad,
    StoredSigningKey, TrialLookup,
};

/// Expands to one `#[tokio::test]` per conformance case, each calling
/// `$make().await` for a fresh, empty `Arc<dyn Store>`. A backend that needs
/// a server may return `Option<Arc<dyn Store>>` instead: `None` skips the
/// case (the make function says why), so a plain `cargo test` passes without it.
#[macro_export]
macro_rules! conformance_tests {
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                match $crate::conformance::FreshStore::into_store(($make)().await) {
                    Some(store) => $crate::conformance::$case(store).await,
                    None => ::std::eprintln!("skipped {}: no store to run it on", ::std::stringify!($case)),
                }
            }
        )*
    };
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            finding_an_unknown_device_returns_none_and_creates_nothing,
            the_first_authorization_starts_a_trial_that_later_authorizations_continue,
            a_trial_is_denied_from_its_expiry_on_for_ever,
            trials_are_isolated_by_device_mvpd_and_service_provider,
            concurrent_first_authorizations_create_one_trial,
            concurrent_writes_of_which_some_conflict_keep_every_other_write,
            a_promotional_trial_permits_used_resources_and_new_ones_only_while_a_slot_is_free,
            concurrent_authorizations_never_use_more_than_max_resources,
            a_new_identity_on_a_new_device_starts_a_trial_bound_to_both,
            a_known_identity_on_a_new_device_continues_its_trial_and_binds_the_device,
            a_new_identity_on_a_known_device_continues_its_trial_and_binds_the_identity,
            a_known_identity_on_its_own_device_continues_the_one_trial,
            a_device_and_an_identity_of_different_trials_merge_into_the_older_trial,
            concurrent_requests_from_new_devices_with_a_known_identity_never_split_the_trial,
            a_reset_racing_new_devices_of_its_trial_ends_it_and_leaves_no_key_on_it,
            a_trial_started_before_the_scheduled_reset_is_absent_and_replaced,
            resetting_one_device_starts_it_afresh_and_touches_nothing_else,
            resetting_all_devices_starts_every_device_of_the_scope_afresh_and_touches_no_other_scope,
            resetting_one_identity_ends_its_trial_for_every_device_of_it,
            resetting_all_identities_ends_every_trial_of_the_scope_only,
            resetting_a_device_ends_its_promotional_trial_for_its_identity_too,
            a_new_trial_never_reuses_the_id_of_a_removed_trial,
            applications_are_created_found_and_revoked_by_name,
            a_revoked_application_name_may_be_reused,
            clients_and_access_tokens_round_trip_with_their_application,
            sessions_are_created_found_and_updated_and_their_codes_are_unique,
            ensuring_a_signing_key_keeps_the_first_one,
            concurrent_ensures_store_exactly_one_signing_key,
            added_signing_keys_come_newest_first,
            api_keys_are_created_found_and_revoked,
            reclaiming_after_a_reset_all_removes_superseded_bindings_and_their_trials_only,
            reclaiming_removes_expired_sessions_and_access_tokens_only,
            reclaiming_removes_clients_idle_for_thirty_days_that_hold_no_token,
            text_with_a_nul_is_refused_and_looked_up_as_absent_by_every_backend_alike,
            an_outcome_says_whether_it_started_the_trial_and_whether_it_used_a_new_resource,
            daily_figures_add_up_across_flushes_and_are_read_from_a_day_and_by_service_provider,
            a_trials_end_is_counted_once_however_many_flushes_report_it_at_once,
        );
    };
}

/// What a make function of [`conformance_tests!`] may return: a store, or
/// maybe a store (`None` when its server is not configured).
pub trait FreshStore {
    fn into_store(self) -> Option<Arc<dyn Store>>;
}

impl FreshStore for Arc<dyn Store> {
    fn into_store(self) -> Option<Arc<dyn Store>> {
        Some(self)
    }
}

impl FreshStore for Option<Arc<dyn Store>> {
    fn into_store(self) -> Option<Arc<dyn Store>> {
        self
    }
}

/// A store that keeps `guard` alive as long as itself: the temporary directory
/// of a SQLite file, a throwaway database. Every call goes to the inner store.
pub struct StoreWithGuard<G> {
    // Declared first so the store closes before its guard goes.
    store: Arc<dyn Store>,
    _guard: G,
}

impl<G: Send + Sync + 'static> StoreWithGuard<G> {
    /// The store as the `Arc<dyn Store>` the conformance cases take.
    pub fn shared(store: impl Store, guard: G) -> Arc<dyn Store> {
        Arc::new(Self { store: Arc::new(store), _guard: guard })
    }
}

#[async_trait]
impl<G: Send + Sync + 'static> Store for StoreWithGuard<G> {
    async fn find_trial(&self, lookup: TrialLookup<'_>) -> Result<Option<Trial>, StoreError> {
        self.store.find_trial(lookup).await
    }

    async fn authorize(&self, request: Authorization<'_>) -> Result<AuthorizeOutcome, StoreError> {
        self.store.authorize(request).await
    }

    async fn reset_devices(&self, scope: &RuleScope, device: Option<&DeviceId>) -> Result<(), StoreError> {
        self.store.reset_devices(scope, device).await
    }

    async fn reset_identities(&self, scope: &RuleScope, identity: Option<&IdentityHash>) -> Result<(), StoreError> {
        self.store.reset_identities(scope, identity).await
    }

    async fn create_application(&self, application: &Application) -> Result<(), StoreError> {
        self.store.create_application(application).await
    }

    async fn find_application(&self, id: &str) -> Result<Option<Application>, StoreError> {
        self.store.find_application(id).await
    }

    async fn find_active_application(&self, name: &str) -> Result<Option<Application>, StoreError> {
        self.store.find_active_application(name).await
    }

    async fn revoke_application(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.store.revoke_application(name, now).await
    }

    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        self.store.create_client(client).await
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.store.find_client(client_id).await
    }

    async fn create_access_token(&self, token: &AccessToken) -> Result<(), StoreError> {
        self.store.create_access_token(token).await
    }

    async fn find_access_grant(&self, token_hash: &str) -> Result<Option<AccessGrant>, StoreError> {
        self.store.find_access_grant(token_hash).await
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        self.store.create_session(session).await
    }

    async fn find_session(&self, code: &str) -> Result<Option<Session>, StoreError> {
        self.store.find_session(code).await
    }

    async fn update_session(&self, session: &Session) -> Result<(), StoreError> {
        self.store.update_session(session).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.store.create_api_key(key).await
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.store.find_api_key(key_hash).await
    }

    async fn revoke_api_key(&self, key_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.store.revoke_api_key(key_hash, now).await
    }

    async fn reclaim(&self, now: Timestamp, budget: usize) -> Result<ReclaimReport, StoreError> {
        self.store.reclaim(now, budget).await
    }

    async fn ensure_signing_key(&self, candidate: &StoredSigningKey) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.store.ensure_signing_key(candidate).await
    }

    async fn add_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        self.store.add_signing_key(key).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.store.signing_keys().await
    }

    async fn add_figures(&self, deltas: &[FigureDelta]) -> Result<(), StoreError> {
        self.store.add_figures(deltas).await
    }

    async fn figures(&self, query: &FiguresQuery) -> Result<Vec<DailyFigures>, StoreError> {
        self.store.figures(query).await
    }

    fn load(&self) -> StoreLoad {
        self.store.load()
    }
}

// --- fixtures -------------------------------------------------------------

/// 2023-11-14T22:13:20Z: an arbitrary pinned "now".
const T0_MS: i64 = 1_700_000_000_000;
/// 2023-11-15T00:00:00Z, the first UTC midnight after `T0_MS`.
const MIDNIGHT_UTC_MS: i64 = 1_700_006_400_000;
const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn no_reset() -> Timestamp {
    Timestamp::from_millis(i64::MIN)
}

// --- helpers, public for a backend's own tests ---

/// A resource id; panics on an invalid one.
pub fn resource(raw: &str) -> ResourceId {
    ResourceId::parse(raw).unwrap_or_else(|e| panic!("resource id {raw:?} {e}"))
}

/// The hash of an identity value; panics on an invalid one.
pub fn identity(raw: &str) -> IdentityHash {
    IdentityHash::from_value(raw).unwrap_or_else(|e| panic!("identity {raw:?}: {e}"))
}

fn service_provider(raw: &str) -> ServiceProviderId {
    ServiceProviderId::parse(raw).unwrap_or_else(|e| panic!("service provider id {raw:?} {e}"))
}

/// A rule scope; panics on an invalid service provider or MVPD id.
pub fn scope(service_provider_id: &str, mvpd: &str) -> RuleScope {
    RuleScope {
        service_provider: service_provider(service_provider_id),
        mvpd: MvpdId::parse(mvpd).unwrap_or_else(|e| panic!("mvpd id {mvpd:?} {e}")),
    }
}

/// The rule's scope, another MVPD of the same service provider, and the same MVPD id at another service provider.
fn three_scopes() -> [RuleScope; 3] {
    [scope("REF30", "TempPass"), scope("REF30", "flexibleTempPass"), scope("OTHER", "TempPass")]
}

fn ttl(text: &str) -> DurationMs {
    DurationMs::parse(text).unwrap_or_else(|e| panic!("duration {text:?}: {e}"))
}

/// A basic rule of `ttl_text` (e.g. `"4h"`), no scheduled reset.
pub fn basic_rule(ttl_text: &str) -> Rule {
    Rule { kind: RuleKind::Basic, ttl: ttl(ttl_text), reset: None }
}

/// A promotional rule keyed on `email`, no scheduled reset.
pub fn promotional_rule(max_resources: u32, ttl_text: &str) -> Rule {
    Rule {
        kind: RuleKind::Promotional { max_resources, identity_key: "email".into() },
        ttl: ttl(ttl_text),
        reset: None,
    }
}

/// A device id; panics on an invalid one.
pub fn device_id(raw: &str) -> DeviceId {
    DeviceId::parse(raw).unwrap_or_else(|e| panic!("device id {raw:?} {e}"))
}

/// The lookup of one device under `scope`: no identity, no scheduled reset.
pub fn device_lookup<'a>(scope: &'a RuleScope, device: &'a DeviceId) -> TrialLookup<'a> {
    TrialLookup { scope, device, identity: None, valid_since: no_reset() }
}

/// Waits until a store has loaded its filter of bound keys; panics after 5 s.
pub async fn bound_keys_loaded(keys: &BoundKeys) {
    for _ in 0..500 {
        if keys.is_complete() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the bound keys were not loaded within 5 s");
}

/// Owned keys of a lookup, so concurrent tasks can carry them.
type Keys = crate::OwnedLookup;

impl Keys {
    fn device(scope: &RuleScope, device: &str) -> Self {
        Self { scope: scope.clone(), device: device_id(device), identity: None, valid_since: no_reset() }
    }

    fn promotional(scope: &RuleScope, device: &str, identity_value: &str) -> Self {
        Self { identity: Some(identity(identity_value)), ..Self::device(scope, device) }
    }

    fn valid_since(self, valid_since: Timestamp) -> Self {
        Self { valid_since, ..self }
    }
}

async fn find(store: &dyn Store, keys: &Keys) -> Option<Trial> {
    store.find_trial(keys.borrow()).await.unwrap_or_else(|e| panic!("find_trial({keys:?}) failed: {e}"))
}

/// The trial `keys` find; panics when they find none.
async fn found(store: &dyn Store, keys: &Keys) -> Trial {
    find(store, keys).await.unwrap_or_else(|| panic!("find_trial({keys:?}) found no trial, expected one"))
}

async fn authorize(store: &dyn Store, keys: &Keys, rule: &Rule, resource_id: &str, now_ms: i64) -> AuthorizeOutcome {
    store
        .authorize(Authorization::new(keys.borrow(), rule, &resource(resource_id), at(now_ms)))
        .await
        .unwrap_or_else(|e| panic!("authorize({keys:?}, {resource_id:?}, now {now_ms}) failed: {e}"))
}

/// Authorizes and returns the trial of the permit; panics on a deny.
async fn permit(store: &dyn Store, keys: &Keys, rule: &Rule, resource_id: &str, now_ms: i64) -> Trial {
    let outcome = authorize(store, keys, rule, resource_id, now_ms).await;
    assert_eq!(
        outcome.decision,
        Ok(()),
        "authorize({keys:?}, {resource_id:?}, now {now_ms}) should permit: {outcome:?}"
    );
    outcome.trial
}

/// Authorizes and returns the trial of the deny; panics unless the deny is `reason`.
async fn deny(
    store: &dyn Store,
    keys: &Keys,
    rule: &Rule,
    resource_id: &str,
    now_ms: i64,
    reason: DenyReason,
) -> Trial {
    let outcome = authorize(store, keys, rule, resource_id, now_ms).await;
    assert_eq!(
        outcome.decision,
        Err(reason),
        "authorize({keys:?}, {resource_id:?}, now {now_ms}) should deny with {reason:?}: {outcome:?}"
    );
    outcome.trial
}

fn resource_set(trial: &Trial) -> BTreeSet<&str> {
    let set: BTreeSet<&str> = trial.used_resources.iter().map(ResourceId::as_str).collect();
    assert_eq!(set.len(), trial.used_resources.len(), "used resources hold a duplicate: {trial:?}");
    set
}

fn assert_same_trial(actual: &Trial, expected: &Trial, context: &str) {
    assert_eq!(
        (actual.id, actual.started_at, actual.expires_at),
        (expected.id, expected.started_at, expected.expires_at),
        "{context}: expected trial {expected:?}, got {actual:?}"
    );
}

/// Runs `count` tasks made by `task`, released together by a barrier, and returns their results in order.
async fn concurrently<T, F, Fut>(count: usize, task: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(count));
    let handles: Vec<_> = (0..count)
        .map(|k| {
            let barrier = Arc::clone(&barrier);
            let work = task(k);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(count);
    for handle in handles {
        results.push(handle.await.expect("a concurrent task finishes"));
    }
    results
}

// --- trials: basic rule (SPEC.md §2) --------------------------------------

pub async fn finding_an_unknown_device_returns_none_and_creates_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, promotional_scope, _] = three_scopes();
    let keys = Keys::device(&scope, "device-1");
    assert_eq!(find(store, &keys).await, None, "an unknown device found a trial");
    assert_eq!(find(store, &keys).await, None, "finding a trial created one");
    let promotional = Keys::promotional(&promotional_scope, "device-1", "viewer@example.com");
    assert_eq!(find(store, &promotional).await, None, "an unknown device and identity found a trial");
    let same_identity = Keys::promotional(&promotional_scope, "device-2", "viewer@example.com");
    assert_eq!(find(store, &same_identity).await, None, "finding a trial bound an identity");

    // Nothing started a clock: the first authorization, later, starts it.
    let trial = permit(store, &keys, &basic_rule("10m"), "res-1", T0_MS + 5 * MINUTE_MS).await;
    assert_eq!(trial.started_at, at(T0_MS + 5 * MINUTE_MS), "a find started the clock");
}

pub async fn the_first_authorization_starts_a_trial_that_later_authorizations_continue(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, promotional_scope, _] = three_scopes();
    let rule = basic_rule("10m");
    let keys = Keys::device(&scope, "device-1");
    let first = permit(store, &keys, &rule, "res-1", T0_MS).await;
    assert_eq!(first.started_at, at(T0_MS), "started_at is not the first authorization's now");
    assert_eq!(first.expires_at, at(T0_MS + 10 * MINUTE_MS), "expires_at is not now + ttl");
    assert!(first.used_resources.is_empty(), "a basic trial records resources: {first:?}");
    assert_eq!(find(store, &keys).await, Some(first.clone()), "find_trial disagrees with the permit");

    for (step, resource_id) in [(1, "res-2"), (5, "res-1"), (9, "res-3")] {
        let later = permit(store, &keys, &rule, resource_id, T0_MS + step * MINUTE_MS).await;
        assert_eq!(later, first, "authorization {step} minutes later changed the trial");
    }
    assert_eq!(find(store, &keys).await, Some(first), "the trial changed");

    let rule = promotional_rule(3, "24h");
    let keys = Keys::promotional(&promotional_scope, "device-1", "viewer@example.com");
    let first = permit(store, &keys, &rule, "res-1", T0_MS + HOUR_MS).await;
    assert_eq!((first.started_at, first.expires_at), (at(T0_MS + HOUR_MS), at(T0_MS + HOUR_MS + DAY_MS)));
    assert_eq!(resource_set(&first), BTreeSet::from(["res-1"]), "the first resource is not recorded");
    let again = permit(store, &keys, &rule, "res-1", T0_MS + 2 * HOUR_MS).await;
    assert_eq!(again, first, "a promotional authorization of a used resource changed the trial");
}

pub async fn a_trial_is_denied_from_its_expiry_on_for_ever(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, promotional_scope, _] = three_scopes();
    let rule = basic_rule("10m");
    let keys = Keys::device(&scope, "device-1");
    let trial = permit(store, &keys, &rule, "res-1", T0_MS).await;
    let expires_ms = T0_MS + 10 * MINUTE_MS;
    let last = permit(store, &keys, &rule, "res-1", expires_ms - 1).await;
    assert_eq!(last, trial, "the last millisecond changed the trial");
    for now_ms in [expires_ms, expires_ms + 1, expires_ms + HOUR_MS, expires_ms + 365 * DAY_MS] {
        let denied = deny(store, &keys, &rule, "res-1", now_ms, DenyReason::DurationLimitExceeded).await;
        assert_eq!(denied, trial, "a deny at {now_ms} changed or restarted the trial");
    }
    assert_eq!(find(store, &keys).await, Some(trial), "an expired trial is lost");

    let rule = promotional_rule(2, "1h");
    let keys = Keys::promotional(&promotional_scope, "device-1", "viewer@example.com");
    let trial = permit(store, &keys, &rule, "res-1", T0_MS).await;
    let expires_ms = T0_MS + HOUR_MS;
    deny(store, &keys, &rule, "res-1", expires_ms, DenyReason::DurationLimitExceeded).await;
    let denied = deny(store, &keys, &rule, "res-2", expires_ms, DenyReason::DurationLimitExceeded).await;
    assert_eq!(denied, trial, "an expired promotional trial used a slot");
}

pub async fn trials_are_isolated_by_device_mvpd_and_service_provider(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, other_mvpd, other_service_provider] = three_scopes();
    let rule = basic_rule("10m");
    let keys = [
        Keys::device(&scope, "device-1"),
        Keys::device(&scope, "device-2"),
        Keys::device(&other_mvpd, "device-1"),
        Keys::device(&other_service_provider, "device-1"),
    ];
    let mut trials = Vec::new();
    for (step, keys) in (0..).zip(&keys) {
        let trial = permit(store, keys, &rule, "res-1", T0_MS + step * MINUTE_MS).await;
        assert_eq!(trial.started_at, at(T0_MS + step * MINUTE_MS), "{keys:?} continued another key's trial");
        trials.push(trial);
    }
    let ids: BTreeSet<TrialId> = trials.iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), keys.len(), "two keys share a trial: {trials:?}");
    for (keys, trial) in keys.iter().zip(&trials) {
        assert_eq!(find(store, keys).await.as_ref(), Some(trial), "{keys:?} finds another trial");
    }
    // Only the first trial has expired at T0 + 10 min.
    deny(store, &keys[0], &rule, "res-1", T0_MS + 10 * MINUTE_MS, DenyReason::DurationLimitExceeded).await;
    for (keys, trial) in keys.iter().zip(&trials).skip(1) {
        let later = permit(store, keys, &rule, "res-1", T0_MS + 10 * MINUTE_MS).await;
        assert_eq!(&later, trial, "{keys:?} expired with another key's trial");
    }

    // The same identity under two rules is two trials.
    let rule = promotional_rule(1, "24h");
    let first = Keys::promotional(&scope, "device-9", "viewer@example.com");
    let trial = permit(store, &first, &rule, "res-1", T0_MS).await;
    let elsewhere = Keys::promotional(&other_mvpd, "device-10", "viewer@example.com");
    assert_eq!(find(store, &elsewhere).await, None, "an identity found a trial of another mvpd");
    let other = permit(store, &elsewhere, &rule, "res-2", T0_MS + MINUTE_MS).await;
    assert_ne!(other.id, trial.id, "one identity shares a trial across mvpds");
    assert_eq!(resource_set(&other), BTreeSet::from(["res-2"]));
}

pub async fn concurrent_first_authorizations_create_one_trial(store: Arc<dyn Store>) {
    const TASKS: usize = 128;
    let [scope, _, _] = three_scopes();
    let rule = basic_rule("10m");
    let keys = Keys::device(&scope, "device-1");
    let outcomes = concurrently(TASKS, |k| {
        let (store, keys, rule) = (Arc::clone(&store), keys.clone(), rule.clone());
        // Slightly different nows, as on a real server.
        let now_ms = T0_MS + (k % 8) as i64;
        async move { authorize(&*store, &keys, &rule, "res-1", now_ms).await }
    })
    .await;
    let mut trials = BTreeSet::new();
    for outcome in outcomes {
        assert_eq!(outcome.decision, Ok(()), "a concurrent first authorization was denied: {outcome:?}");
        let trial = outcome.trial;
        trials.insert((trial.id, trial.started_at, trial.expires_at));
    }
    assert_eq!(trials.len(), 1, "{TASKS} concurrent first authorizations saw several trials: {trials:?}");
    let trial = found(&*store, &keys).await;
    assert!(trials.contains(&(trial.id, trial.started_at, trial.expires_at)), "find_trial disagrees: {trial:?}");
    assert!((at(T0_MS)..=at(T0_MS + 7)).contains(&trial.started_at), "started_at is no task's now: {trial:?}");
    assert_eq!(trial.expires_at, trial.started_at.saturating_add(rule.ttl));
}

// --- trials: promotional rule (SPEC.md §2) --------------------------------

pub async fn a_promotional_trial_permits_used_resources_and_new_ones_only_while_a_slot_is_free(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, _, _] = three_scopes();
    let rule = promotional_rule(2, "24h");
    let keys = Keys::promotional(&scope, "device-1", "viewer@example.com");
    let trial = permit(store, &keys, &rule, "res-a", T0_MS).await;
    assert_eq!(resource_set(&trial), BTreeSet::from(["res-a"]));
    let trial = permit(store, &keys, &rule, "res-a", T0_MS + 1).await;
    assert_eq!(resource_set(&trial), BTreeSet::from(["res-a"]), "a used resource took a second slot");
    let trial = permit(store, &keys, &rule, "res-b", T0_MS + 2).await;
    assert_eq!(resource_set(&trial), BTreeSet::from(["res-a", "res-b"]), "a new resource was not recorded");

    let denied = deny(store, &keys, &rule, "res-c", T0_MS + 3, DenyReason::ResourcesLimitExceeded).await;
    assert_eq!(denied, trial, "a denied resource changed the trial");
    for resource_id in ["res-a", "res-b"] {
        let again = permit(store, &keys, &rule, resource_id, T0_MS + HOUR_MS).await;
        assert_eq!(again, trial, "re-using {resource_id} on an exhausted trial changed it");
    }
    deny(store, &keys, &rule, "res-c", T0_MS + 2 * HOUR_MS, DenyReason::ResourcesLimitExceeded).await;
    assert_eq!(find(store, &keys).await, Some(trial), "the stored trial differs from the answers");
}

pub async fn concurrent_authorizations_never_use_more_than_max_resources(store: Arc<dyn Store>) {
    const TASKS: usize = 50;
    let [scope, _, _] = three_scopes();
    let rule = promotional_rule(3, "24h");
    let keys = Keys::promotional(&scope, "device-1", "viewer@example.com");
    let outcomes = concurrently(TASKS, |k| {
        let (store, keys, rule) = (Arc::clone(&store), keys.clone(), rule.clone());
        async move {
            let resource_id = format!("res-{k}");
            let outcome = authorize(&*store, &keys, &rule, &resource_id, T0_MS + (k % 5) as i64).await;
            (resource_id, outcome)
        }
    })
    .await;
    let mut permitted = BTreeSet::new();
    let mut trial_ids = BTreeSet::new();
    for (resource_id, outcome) in &outcomes {
        match outcome.decision {
            Ok(()) => {
                permitted.insert(resource_id.as_str());
                let trial = &outcome.trial;
                assert!(trial.used_resources.contains(&resource(resource_id)), "{resource_id} permitted but not used");
                trial_ids.insert(trial.id);
            }
            Err(DenyReason::ResourcesLimitExceeded) => {}
            Err(other) => panic!("{resource_id} was denied with {other:?}, expected ResourcesLimitExceeded"),
        }
    }
    assert_eq!(permitted.len(), 3, "{TASKS} concurrent new resources with max_resources 3 gave {permitted:?}");
    assert_eq!(trial_ids.len(), 1, "the permits name several trials: {trial_ids:?}");
    let trial = found(&*store, &keys).await;
    assert_eq!(resource_set(&trial), permitted, "the trial's resources are not exactly the permitted ones");
}

pub async fn a_new_identity_on_a_new_device_starts_a_trial_bound_to_both(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, _, _] = three_scopes();
    let rule = promotional_rule(2, "24h");
    let keys = Keys::promotional(&scope, "device-1", "viewer@example.com");
    let trial = permit(store, &keys, &rule, "res-1", T0_MS).await;
    assert_eq!(trial.started_at, at(T0_MS));
    let by_device = found(store, &Keys::device(&scope, "device-1")).await;
    assert_same_trial(&by_device, &trial, "the device alone");
    let by_identity = found(store, &Keys::promotional(&scope, "device-2", "viewer@example.com")).await;
    assert_same_trial(&by_identity, &trial, "the identity on another device");
}

pub async fn a_known_identity_on_a_new_device_continues_its_trial_and_binds_the_device(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, _, _] = three_scopes();
    let rule = promotional_rule(2, "24h");
    let trial = permit(store, &Keys::promotional(&scope, "phone", "viewer@example.com"), &rule, "res-1", T0_MS).await;
    let tv = Keys::promotional(&scope, "tv", "viewer@example.com");
    assert_same_trial(&found(store, &tv).await, &trial, "a known identity on a new device, before authorizing");
    let continued = permit(store, &tv, &rule, "res-2", T0_MS + HOUR_MS).await;
    assert_same_trial(&continued, &trial, "a known identity on a new device");
    assert_eq!(resource_set(&continued), BTreeSet::from(["res-1", "res-2"]), "the slots are not shared");
    // The device is bound too: found without the identity.
    let by_device = found(store, &Keys::device(&scope, "tv")).await;
    assert_same_trial(&by_device, &trial, "the new device alone, after authorizing");
    deny(store, &tv, &rule, "res-3", T0_MS + 2 * HOUR_MS, DenyReason::ResourcesLimitExceeded).await;
}

pub async fn a_new_identity_on_a_known_device_continues_its_trial_and_binds_the_identity(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, _, _] = three_scopes();
    let rule = promotional_rule(2, "24h");
    let trial = permit(store, &Keys::promotional(&scope, "tv", "first@example.com"), &rule, "res-1", T0_MS).await;
    let second = Keys::promotional(&scope, "tv", "second@example.com");
    let continued = permit(store, &second, &rule, "res-2", T0_MS + HOUR_MS).await;
    assert_same_trial(&continued, &trial, "a new identity on a known device");
    let by_identity = found(store, &Keys::promotional(&scope, "phone", "second@example.com")).await;
    assert_same_trial(&by_identity, &trial, "the new identity on another device");
    assert_eq!(resource_set(&by_identity), BTreeSet::from(["res-1", "res-2"]));
}

pub async fn a_known_identity_on_its_own_device_continues_the_one_trial(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, _, _] = three_scopes();
    let rule = promotional_rule(2, "24h");
    let keys = Keys::promotional(&scope, "tv", "viewer@example.com");
    let trial = permit(store, &keys, &rule, "res-1", T0_MS).await;
    let again = permit(store, &keys, &rule, "res-2", T0_MS + MINUTE_MS).await;
    assert_same_trial(&again, &trial, "the same device and identity");
    assert_eq!(find(store, &keys).await, Some(again));
}

pub async fn a_device_and_an_identity_of_different_trials_merge_into_the_older_trial(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, other_scope, _] = three_scopes();
    let rule = promotional_rule(2, "24h");
    // The older trial: identity A on devices a1 and a2.
    let older = permit(store, &Keys::promotional(&scope, "a1", "a@example.com"), &rule, "res-a", T0_MS).await;
    permit(store, &Keys::promotional(&scope, "a2", "a@example.com"), &rule, "res-a", T0_MS + SECOND_MS).await;
    // The newer trial: identities B and B2, devices b1 and b2, two resources.
    let b1 = Keys::promotional(&scope, "b1", "b@example.com");
    let newer = permit(store, &b1, &rule, "res-b", T0_MS + MINUTE_MS).await;
    permit(store, &Keys::promotional(&scope, "b1", "b2@example.com"), &rule, "res-b2", T0_MS + 2 * MINUTE_MS).await;
    permit(store, &Keys::promotional(&scope, "b2", "b@example.com"), &rule, "res-b", T0_MS + 3 * MINUTE_MS).await;
    assert_ne!(older.id, newer.id);
    let union = BTreeSet::from(["res-a", "res-b", "res-b2"]);

    // Device b1 (newer trial) with identity A (older trial).
    let crossing = Keys::promotional(&scope, "b1", "a@example.com");
    let preview = found(store, &crossing).await;
    assert_same_trial(&preview, &older, "find_trial before the merge");
    assert_eq!(resource_set(&preview), union, "find_trial before the merge does not show the union");
    assert_same_trial(&found(store, &Keys::device(&scope, "b1")).await, &newer, "find_trial merged something");

    let merged = permit(store, &crossing, &rule, "res-b2", T0_MS + 4 * MINUTE_MS).await;
    assert_same_trial(&merged, &older, "the merge");
    assert_eq!(resource_set(&merged), union, "the merged trial lost a resource (the cap is not re-applied)");
    deny(store, &crossing, &rule, "res-new", T0_MS + 5 * MINUTE_MS, DenyReason::ResourcesLimitExceeded).await;

    let every_key = [
        Keys::device(&scope, "a1"),
        Keys::device(&scope, "a2"),
        Keys::device(&scope, "b1"),
        Keys::device(&scope, "b2"),
        Keys::promotional(&scope, "fresh", "a@example.com"),
        Keys::promotional(&scope, "fresh", "b@example.com"),
        Keys::promotional(&scope, "fresh", "b2@example.com"),
    ];
    for keys in &every_key {
        let trial = found(store, keys).await;
        assert_same_trial(&trial, &older, &format!("{keys:?} after the merge"));
        assert_eq!(resource_set(&trial), union, "{keys:?} sees other resources after the merge");
    }
    for (step, keys) in (10..).zip(&every_key) {
        let trial = permit(store, keys, &rule, "res-b", T0_MS + step * MINUTE_MS).await;
        assert_same_trial(&trial, &older, &format!("authorizing {keys:?} after the merge"));
    }

    // The other way round: the device's trial is the older one.
    let older = permit(store, &Keys::promotional(&other_scope, "d1", "x@example.com"), &rule, "res-1", T0_MS).await;
    let newer = permit(store, &Keys::promotional(&other_scope, "d2", "y@example.com"), &rule, "res-2", T0_MS + 1).await;
    assert_ne!(older.id, newer.id);
    let merged =
        permit(store, &Keys::promotional(&other_scope, "d1", "y@example.com"), &rule, "res-1", T0_MS + 2).await;
    assert_same_trial(&merged, &older, "the merge with the device's trial older");
    assert_same_trial(&found(store, &Keys::device(&other_scope, "d2")).await, &older, "device d2 after the merge");
}

pub async fn concurrent_requests_from_new_devices_with_a_known_identity_never_split_the_trial(store: Arc<dyn Store>) {
    const TASKS: usize = 100;
    const DEVICES: usize = 20;
    let [scope, _, _] = three_scopes();
    let rule = promotional_rule(2, "24h");
    let trial =
        permit(&*store, &Keys::promotional(&scope, "device-0", "viewer@example.com"), &rule, "res-1", T0_MS).await;
    let outcomes = concurrently(TASKS, |k| {
        let (store, rule) = (Arc::clone(&store), rule.clone());
        // Each new device sends several requests at once.
        let keys = Keys::promotional(&scope, &format!("new-device-{}", k % DEVICES), "viewer@example.com");
        async move { authorize(&*store, &keys, &rule, "res-1", T0_MS + SECOND_MS).await }
    })
    .await;
    for outcome in &outcomes {
        assert_eq!(outcome.decision, Ok(()), "a new device with a known identity was denied: {outcome:?}");
        let continued = &outcome.trial;
        assert_same_trial(continued, &trial, "a new device with a known identity");
    }
    for k in 0..DEVICES {
        let by_device = found(&*store, &Keys::device(&scope, &format!("new-device-{k}"))).await;
        assert_same_trial(&by_device, &trial, "a new device alone after the concurrent requests");
    }

    // A new identity on a new device, many requests at once: one trial.
    let keys = Keys::promotional(&scope, "another-device", "another@example.com");
    let outcomes = concurrently(TASKS, |_| {
        let (store, keys, rule) = (Arc::clone(&store), keys.clone(), rule.clone());
        async move { authorize(&*store, &keys, &rule, "res-1", T0_MS + MINUTE_MS).await }
    })
    .await;
    let ids: BTreeSet<TrialId> = outcomes
        .iter()
        .map(|o| {
            assert_eq!(o.decision, Ok(()), "a first authorization was denied: {o:?}");
            o.trial.id
        })
        .collect();
    assert_eq!(ids.len(), 1, "concurrent first authorizations of one device and identity split: {ids:?}");
    assert!(!ids.contains(&trial.id), "a new identity on a new device joined another trial");
}

pub async fn a_reset_racing_new_devices_of_its_trial_ends_it_and_leaves_no_key_on_it(store: Arc<dyn Store>) {
    const TASKS: usize = 24;
    let [scope, _, _] = three_scopes();
    let rule = promotional_rule(3, "24h");
    let viewer = "viewer@example.com";
    let old = permit(&*store, &Keys::promotional(&scope, "tv", viewer), &rule, "res-1", T0_MS).await;
    // New devices of the viewer join the trial while a support agent resets the viewer's identity.
    let outcomes = concurrently(TASKS, |k| {
        let (store, rule) = (Arc::clone(&store), rule.clone());
        let keys = Keys::promotional(&scope, &format!("device-{k}"), viewer);
        let scope = scope.clone();
        async move {
            if k == 0 {
                store.reset_identities(&scope, Some(&identity(viewer))).await.expect("the racing reset succeeds");
                None
            } else {
                Some(authorize(&*store, &keys, &rule, "res-1", T0_MS + SECOND_MS).await)
            }
        }
    })
    .await;
    for outcome in outcomes.iter().flatten() {
        assert_eq!(outcome.decision, Ok(()), "a device joining during a reset was denied: {outcome:?}");
    }

    assert_eq!(find(&*store, &Keys::device(&scope, "tv")).await, None, "a racing join kept the reset trial alive");
    let by_identity = find(&*store, &Keys::promotional(&scope, "fresh-device", viewer)).await;
    assert!(by_identity.as_ref().is_none_or(|t| t.id != old.id), "the identity still finds the reset trial");
    for k in 1..TASKS {
        let by_device = find(&*store, &Keys::device(&scope, &format!("device-{k}"))).await;
        if let Some(trial) = &by_device {
            assert_ne!(trial.id, old.id, "device-{k} is bound to the reset trial");
            assert_eq!(Some(trial), by_identity.as_ref(), "device-{k} is on a trial its identity does not find");
        }
    }
    let again =
        permit(&*store, &Keys::promotional(&scope, "device-1", viewer), &rule, "res-1", T0_MS + MINUTE_MS).await;
    assert_ne!(again.id, old.id, "an authorization after the race continued the reset trial");
}

pub async fn a_trial_started_before_the_scheduled_reset_is_absent_and_replaced(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, promotional_scope, _] = three_scopes();
    let reset = DailyReset::parse("00:00", "UTC").expect("a valid daily reset");
    // A TTL longer than a day: only the reset can end the first trial.
    let rule = Rule { kind: RuleKind::Basic, ttl: ttl("2d"), reset: Some(reset.clone()) };
    let keys_at = |now_ms: i64| Keys::device(&scope, "device-1").valid_since(rule.valid_since(at(now_ms)));

    let before_ms = MIDNIGHT_UTC_MS - HOUR_MS;
    let old = permit(store, &keys_at(before_ms), &rule, "res-1", before_ms).await;
    let still_ms = MIDNIGHT_UTC_MS - MINUTE_MS;
    assert_eq!(find(store, &keys_at(still_ms)).await.as_ref(), Some(&old), "the trial is lost before the reset");
    assert_eq!(permit(store, &keys_at(still_ms), &rule, "res-1", still_ms).await, old);

    let after_ms = MIDNIGHT_UTC_MS + MINUTE_MS;
    assert_eq!(find(store, &keys_at(after_ms)).await, None, "a trial from before the scheduled reset is found");
    let fresh = permit(store, &keys_at(after_ms), &rule, "res-1", after_ms).await;
    assert_ne!(fresh.id, old.id, "the scheduled reset did not start a new trial");
    assert_eq!((fresh.started_at, fresh.expires_at), (at(after_ms), at(after_ms + 2 * DAY_MS)));
    let later_ms = after_ms + HOUR_MS;
    assert_eq!(find(store, &keys_at(later_ms)).await, Some(fresh.clone()), "the new trial is not found");
    assert_eq!(permit(store, &keys_at(later_ms), &rule, "res-1", later_ms).await, fresh);

    // Promotional: neither the device nor the identity finds yesterday's trial and slots.
    let rule = Rule { reset: Some(reset), ..promotional_rule(1, "2d") };
    let keys_at = |device: &str, now_ms: i64| {
        Keys::promotional(&promotional_scope, device, "viewer@example.com").valid_since(rule.valid_since(at(now_ms)))
    };
    let old = permit(store, &keys_at("tv", before_ms), &rule, "res-1", before_ms).await;
    deny(store, &keys_at("tv", still_ms), &rule, "res-2", still_ms, DenyReason::ResourcesLimitExceeded).await;
    assert_eq!(find(store, &keys_at("phone", after_ms)).await, None, "the identity finds yesterday's trial");
    let fresh = permit(store, &keys_at("tv", after_ms), &rule, "res-2", after_ms).await;
    assert_ne!(fresh.id, old.id, "the new trial reuses the id of yesterday's trial");
    assert_eq!(resource_set(&fresh), BTreeSet::from(["res-2"]), "yesterday's resources carried over");
    assert_same_trial(&found(store, &keys_at("phone", later_ms)).await, &fresh, "the identity after the reset");
}

// --- resets (SPEC.md §2, §7) ----------------------------------------------

pub async fn resetting_one_device_starts_it_afresh_and_touches_nothing_else(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, other_mvpd, other_service_provider] = three_scopes();
    let rule = basic_rule("1h");
    let reset = Keys::device(&scope, "device-1");
    let untouched = [
        Keys::device(&scope, "device-2"),
        Keys::device(&other_mvpd, "device-1"),
        Keys::device(&other_service_provider, "device-1"),
    ];
    let old = permit(store, &reset, &rule, "res-1", T0_MS).await;
    let mut kept = Vec::new();
    for keys in &untouched {
        kept.push(permit(store, keys, &rule, "res-1", T0_MS).await);
    }

    let device = reset.device.clone();
    store.reset_devices(&scope, Some(&device)).await.expect("reset_devices succeeds");
    assert_eq!(find(store, &reset).await, None, "the reset device still finds its trial");
    for (keys, trial) in untouched.iter().zip(&kept) {
        assert_eq!(find(store, keys).await.as_ref(), Some(trial), "resetting device-1 changed {keys:?}");
    }
    let fresh = permit(store, &reset, &rule, "res-1", T0_MS + MINUTE_MS).await;
    assert_ne!(fresh.id, old.id, "the reset device continued its old trial");
    assert_eq!(fresh.started_at, at(T0_MS + MINUTE_MS), "the reset device has no fresh clock");

    // The usual reason for a reset: an expired trial becomes a fresh one.
    let expired_ms = T0_MS + 2 * HOUR_MS;
    deny(store, &untouched[0], &rule, "res-1", expired_ms, DenyReason::DurationLimitExceeded).await;
    let device = untouched[0].device.clone();
    store.reset_devices(&scope, Some(&device)).await.expect("reset_devices succeeds");
    let fresh = permit(store, &untouched[0], &rule, "res-1", expired_ms).await;
    assert_eq!(fresh.started_at, at(expired_ms), "an expired device is still expired after its reset");

    // Resetting an unknown device succeeds and changes nothing.
    let unknown = Keys::device(&scope, "never-seen").device;
    store.reset_devices(&scope, Some(&unknown)).await.expect("resetting an unknown device succeeds");
    assert_eq!(find(store, &untouched[1]).await.as_ref(), Some(&kept[1]));
}

pub async fn resetting_all_devices_starts_every_device_of_the_scope_afresh_and_touches_no_other_scope(
    store: Arc<dyn Store>,
) {
    let store = &*store;
    let [scope, other_mvpd, other_service_provider] = three_scopes();
    let rule = basic_rule("1h");
    let reset: Vec<Keys> = (1..=3).map(|k| Keys::device(&scope, &format!("device-{k}"))).collect();
    let untouched = [Keys::device(&other_mvpd, "device-1"), Keys::device(&other_service_provider, "device-1")];
    for keys in &reset {
        permit(store, keys, &rule, "res-1", T0_MS).await;
    }
    let mut kept = Vec::new();
    for keys in &untouched {
        kept.push(permit(store, keys, &rule, "res-1", T0_MS).await);
    }

    store.reset_devices(&scope, None).await.expect("reset_devices(all) succeeds");
    for keys in &reset {
        assert_eq!(find(store, keys).await, None, "{keys:?} still finds its trial after a reset of all devices");
    }
    for (keys, trial) in untouched.iter().zip(&kept) {
        assert_eq!(find(store, keys).await.as_ref(), Some(trial), "a reset of all devices changed {keys:?}");
    }
    let fresh = permit(store, &reset[0], &rule, "res-1", T0_MS + MINUTE_MS).await;
    assert_eq!(fresh.started_at, at(T0_MS + MINUTE_MS), "a device has no fresh clock after a reset of all");
    assert_eq!(find(store, &reset[1]).await, None, "a new authorization revived another device's old trial");

    // A second reset of all works as the first.
    store.reset_devices(&scope, None).await.expect("a second reset_devices(all) succeeds");
    assert_eq!(find(store, &reset[0]).await, None, "a second reset of all devices missed a new trial");
    let fresh = permit(store, &reset[0], &rule, "res-1", T0_MS + 2 * MINUTE_MS).await;
    assert_eq!(fresh.started_at, at(T0_MS + 2 * MINUTE_MS));
    for (keys, trial) in untouched.iter().zip(&kept) {
        assert_eq!(find(store, keys).await.as_ref(), Some(trial), "two resets of all devices changed {keys:?}");
    }
}

pub async fn resetting_one_identity_ends_its_trial_for_every_device_of_it(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, other_mvpd, other_service_provider] = three_scopes();
    let rule = promotional_rule(3, "24h");
    let first = permit(store, &Keys::promotional(&scope, "d1", "one@example.com"), &rule, "res-1", T0_MS).await;
    // A second device of the same viewer joins the trial.
    permit(store, &Keys::promotional(&scope, "d1b", "one@example.com"), &rule, "res-1", T0_MS).await;
    let second = permit(store, &Keys::promotional(&scope, "d2", "two@example.com"), &rule, "res-1", T0_MS).await;
    let mut elsewhere = Vec::new();
    for other in [&other_mvpd, &other_service_provider] {
        elsewhere.push(permit(store, &Keys::promotional(other, "d1", "one@example.com"), &rule, "res-1", T0_MS).await);
    }

    let one = identity("one@example.com");
    store.reset_identities(&scope, Some(&one)).await.expect("reset_identities succeeds");
    let by_identity = Keys::promotional(&scope, "fresh-device", "one@example.com");
    assert_eq!(find(store, &by_identity).await, None, "the reset identity still finds its trial");
    for device in ["d1", "d1b"] {
        let by_device = Keys::device(&scope, device);
        assert_eq!(find(store, &by_device).await, None, "{device} still finds the trial of the reset identity");
    }
    let other = Keys::promotional(&scope, "fresh-device", "two@example.com");
    assert_same_trial(&found(store, &other).await, &second, "another identity");
    for (other, trial) in [&other_mvpd, &other_service_provider].into_iter().zip(&elsewhere) {
        let keys = Keys::promotional(other, "fresh-device", "one@example.com");
        assert_same_trial(&found(store, &keys).await, trial, "the same identity under another rule");
    }
    // The viewer on the same device starts afresh: the device did not keep the old trial.
    let same_device = Keys::promotional(&scope, "d1", "one@example.com");
    let fresh = permit(store, &same_device, &rule, "res-2", T0_MS + MINUTE_MS).await;
    assert_ne!(fresh.id, first.id, "the reset identity continued its old trial");
    assert_eq!(fresh.started_at, at(T0_MS + MINUTE_MS), "the reset identity has no fresh clock");
    assert_eq!(resource_set(&fresh), BTreeSet::from(["res-2"]), "the reset identity kept its old resources");
}

pub async fn resetting_all_identities_ends_every_trial_of_the_scope_only(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, other_mvpd, other_service_provider] = three_scopes();
    let rule = promotional_rule(3, "24h");
    let values = ["one@example.com", "two@example.com", "three@example.com"];
    let mut trials = Vec::new();
    for (k, value) in values.iter().enumerate() {
        trials.push(permit(store, &Keys::promotional(&scope, &format!("d{k}"), value), &rule, "res-1", T0_MS).await);
    }
    let mut elsewhere = Vec::new();
    for other in [&other_mvpd, &other_service_provider] {
        elsewhere.push(permit(store, &Keys::promotional(other, "d0", values[0]), &rule, "res-1", T0_MS).await);
    }

    store.reset_identities(&scope, None).await.expect("reset_identities(all) succeeds");
    for (k, value) in values.iter().enumerate() {
        let keys = Keys::promotional(&scope, "fresh-device", value);
        assert_eq!(find(store, &keys).await, None, "{value} still finds a trial after a reset of all identities");
        let by_device = Keys::device(&scope, &format!("d{k}"));
        assert_eq!(
            find(store, &by_device).await,
            None,
            "a device still finds its trial after a reset of all identities"
        );
    }
    for (other, trial) in [&other_mvpd, &other_service_provider].into_iter().zip(&elsewhere) {
        let keys = Keys::promotional(other, "fresh-device", values[0]);
        assert_same_trial(&found(store, &keys).await, trial, "a reset of all identities reached another rule");
    }
    let keys = Keys::promotional(&scope, "d0", values[0]);
    let fresh = permit(store, &keys, &rule, "res-2", T0_MS + MINUTE_MS).await;
    assert!(trials.iter().all(|t| t.id != fresh.id), "a viewer continued a trial after a reset of all identities");
    assert_eq!(resource_set(&fresh), BTreeSet::from(["res-2"]), "the fresh trial kept old resources");
    let other = Keys::promotional(&scope, "another-fresh-device", values[1]);
    assert_eq!(find(store, &other).await, None, "a new authorization revived another identity's binding");
}

pub async fn resetting_a_device_ends_its_promotional_trial_for_its_identity_too(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, other_scope, _] = three_scopes();
    let rule = promotional_rule(2, "24h");
    let keys = Keys::promotional(&scope, "tv", "viewer@example.com");
    let trial = permit(store, &keys, &rule, "res-1", T0_MS).await;
    permit(store, &keys, &rule, "res-2", T0_MS).await;
    deny(store, &keys, &rule, "res-3", T0_MS, DenyReason::ResourcesLimitExceeded).await;

    // The support desk's case: the viewer's titles ran out and their TV is reset.
    store.reset_devices(&scope, Some(&keys.device)).await.expect("reset_devices succeeds");
    assert_eq!(find(store, &Keys::device(&scope, "tv")).await, None, "the reset device still finds the trial");
    let by_identity = Keys::promotional(&scope, "phone", "viewer@example.com");
    assert_eq!(find(store, &by_identity).await, None, "the identity kept the trial of the reset device");
    let fresh = permit(store, &keys, &rule, "res-3", T0_MS + MINUTE_MS).await;
    // Trial ids are never reused: media tokens carry a `sid` derived from the id.
    assert_ne!(fresh.id, trial.id, "the new trial reuses the id of the trial it replaces");
    assert_eq!(fresh.started_at, at(T0_MS + MINUTE_MS), "the new trial has no fresh clock");
    assert_eq!(resource_set(&fresh), BTreeSet::from(["res-3"]), "the new trial kept old resources");

    // A reset of all devices ends the trials that identities find too.
    let keys = Keys::promotional(&other_scope, "tv", "viewer@example.com");
    permit(store, &keys, &rule, "res-1", T0_MS).await;
    store.reset_devices(&other_scope, None).await.expect("reset_devices(all) succeeds");
    assert_eq!(find(store, &Keys::device(&other_scope, "tv")).await, None);
    let by_identity = Keys::promotional(&other_scope, "phone", "viewer@example.com");
    assert_eq!(find(store, &by_identity).await, None, "the identity kept its trial through a reset of all devices");
    // A key left behind by the reset of all can still be reset on its own.
    store.reset_identities(&other_scope, Some(&identity("viewer@example.com"))).await.expect("a stale reset succeeds");
    assert_eq!(find(store, &keys).await, None, "a reset of a superseded key found a trial");
    let fresh = permit(store, &keys, &rule, "res-2", T0_MS + MINUTE_MS).await;
    assert_eq!(resource_set(&fresh), BTreeSet::from(["res-2"]), "the fresh trial kept old resources");
}

pub async fn a_new_trial_never_reuses_the_id_of_a_removed_trial(store: Arc<dyn Store>) {
    // Media tokens carry a `sid` derived from the trial id: a reused id would
    // make a fresh trial look like the one it replaced.
    let store = &*store;
    let [scope, promotional_scope, _] = three_scopes();
    let rule = basic_rule("10m");
    let keys = Keys::device(&scope, "device-1");
    let mut seen = BTreeSet::new();
    for step in 0..3 {
        let trial = permit(store, &keys, &rule, "res-1", T0_MS + step * MINUTE_MS).await;
        assert!(seen.insert(trial.id), "a trial after {step} resets reuses an old id: {trial:?}");
        store.reset_devices(&scope, Some(&keys.device)).await.expect("reset_devices succeeds");
    }

    // A merge removes the absorbed trial; its id stays retired too.
    let rule = promotional_rule(2, "24h");
    permit(store, &Keys::promotional(&promotional_scope, "d1", "a@example.com"), &rule, "res-1", T0_MS).await;
    let absorbed =
        permit(store, &Keys::promotional(&promotional_scope, "d2", "b@example.com"), &rule, "res-1", T0_MS + 1).await;
    let merged =
        permit(store, &Keys::promotional(&promotional_scope, "d1", "b@example.com"), &rule, "res-1", T0_MS + 2).await;
    assert_ne!(merged.id, absorbed.id, "the newer trial survived the merge");
    let next =
        permit(store, &Keys::promotional(&promotional_scope, "d3", "c@example.com"), &rule, "res-1", T0_MS + 3).await;
    assert_ne!(next.id, absorbed.id, "a new trial reuses the id of a trial absorbed by a merge");
    assert_ne!(next.id, merged.id);
}

// --- applications, clients, access tokens (SPEC.md §6) --------------------

fn application(id: &str, name: &str, created_ms: i64) -> Application {
    Application {
        id: id.into(),
        name: name.into(),
        service_providers: vec![service_provider("REF30"), service_provider("OTHER")],
        scopes: vec!["api:client:v2".into(), "temporary:passes:owner".into()],
        created_at: at(created_ms),
        revoked_at: None,
    }
}

async fn create_application(store: &dyn Store, application: &Application) {
    store
        .create_application(application)
        .await
        .unwrap_or_else(|e| panic!("create_application({:?}) failed: {e}", application.name));
}

async fn find_application(store: &dyn Store, id: &str) -> Option<Application> {
    store.find_application(id).await.unwrap_or_else(|e| panic!("find_application({id:?}) failed: {e}"))
}

async fn revoke_application(store: &dyn Store, name: &str, now_ms: i64) -> bool {
    store
        .revoke_application(name, at(now_ms))
        .await
        .unwrap_or_else(|e| panic!("revoke_application({name:?}) failed: {e}"))
}

fn assert_conflict(result: Result<(), StoreError>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected StoreError::Conflict, got {other:?}"),
    }
}

pub async fn applications_are_created_found_and_revoked_by_name(store: Arc<dyn Store>) {
    let store = &*store;
    let demo = application("app-1", "demo", T0_MS);
    create_application(store, &demo).await;
    assert_eq!(find_application(store, "app-1").await, Some(demo.clone()), "the application does not round-trip");
    assert_eq!(find_application(store, "app-unknown").await, None);

    let same_name = application("app-2", "demo", T0_MS + 1);
    assert_conflict(store.create_application(&same_name).await, "a second application named demo");
    assert_eq!(find_application(store, "app-2").await, None, "a refused application was stored");
    let same_id = application("app-1", "another-name", T0_MS + 1);
    assert_conflict(store.create_application(&same_id).await, "a second application with id app-1");
    assert_eq!(find_application(store, "app-1").await, Some(demo.clone()), "a refused application overwrote one");
    let by_name = |name: &'static str| async move {
        store
            .find_active_application(name)
            .await
            .unwrap_or_else(|e| panic!("find_active_application({name:?}) failed: {e}"))
    };
    assert_eq!(by_name("demo").await, Some(demo.clone()), "the application is not found by its name");
    assert_eq!(by_name("another-name").await, None);

    assert!(revoke_application(store, "demo", T0_MS + DAY_MS).await, "revoking demo answered false");
    assert_eq!(by_name("demo").await, None, "a revoked application is found by its name");
    assert!(!revoke_application(store, "demo", T0_MS + 2 * DAY_MS).await, "revoking demo twice answered true");
    assert!(!revoke_application(store, "unknown", T0_MS).await, "revoking an unknown application answered true");
    let revoked = Application { revoked_at: Some(at(T0_MS + DAY_MS)), ..demo };
    assert_eq!(find_application(store, "app-1").await, Some(revoked), "revoked_at is not the first revocation's now");
}

/// Writes that run at the same moment may share a transaction (SQLite commits
/// them in batches): one that fails must undo only itself.
pub async fn concurrent_writes_of_which_some_conflict_keep_every_other_write(store: Arc<dyn Store>) {
    const NAMES: usize = 32;
    // Every name twice: exactly one of each pair is created, the other conflicts.
    let outcomes = concurrently(2 * NAMES, |k| {
        let store = Arc::clone(&store);
        let app = application(&format!("app-{k}"), &format!("name-{}", k % NAMES), T0_MS);
        async move { (k, store.create_application(&app).await) }
    })
    .await;
    let mut created = BTreeSet::new();
    for (k, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                created.insert(k);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("app-{k}: expected success or a conflict, got {other:?}"),
        }
    }
    for name in 0..NAMES {
        let pair = [name, name + NAMES];
        let reported: Vec<_> = pair.iter().filter(|k| created.contains(k)).collect();
        assert_eq!(reported.len(), 1, "name-{name}: {} of its two writes reported success", reported.len());
        for k in pair {
            let kept = find_application(&*store, &format!("app-{k}")).await.is_some();
            assert_eq!(kept, created.contains(&k), "app-{k}: kept {kept}, but its write said otherwise");
        }
    }
}

pub async fn a_revoked_application_name_may_be_reused(store: Arc<dyn Store>) {
    let store = &*store;
    let first = application("app-1", "demo", T0_MS);
    create_application(store, &first).await;
    assert!(revoke_application(store, "demo", T0_MS + HOUR_MS).await);
    let second = Application {
        service_providers: vec![service_provider("REF30")],
        scopes: vec![],
        ..application("app-2", "demo", T0_MS + DAY_MS)
    };
    create_application(store, &second).await;
    assert_eq!(find_application(store, "app-2").await, Some(second.clone()), "the reused name does not round-trip");
    let first_revoked = Application { revoked_at: Some(at(T0_MS + HOUR_MS)), ..first };
    assert_eq!(find_application(store, "app-1").await, Some(first_revoked.clone()));
    assert_conflict(
        store.create_application(&application("app-3", "demo", T0_MS + DAY_MS)).await,
        "a second active application named demo",
    );

    assert!(revoke_application(store, "demo", T0_MS + 2 * DAY_MS).await, "the active demo was not revoked");
    let second_revoked = Application { revoked_at: Some(at(T0_MS + 2 * DAY_MS)), ..second };
    assert_eq!(find_application(store, "app-2").await, Some(second_revoked));
    assert_eq!(find_application(store, "app-1").await, Some(first_revoked), "an old revocation was overwritten");
}

pub async fn clients_and_access_tokens_round_trip_with_their_application(store: Arc<dyn Store>) {
    let store = &*store;
    let demo = application("app-1", "demo", T0_MS);
    create_application(store, &demo).await;

    let client = Client {
        client_id: "client-1".into(),
        secret_hash: "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8".into(),
        application_id: demo.id.clone(),
        redirect_uris: vec!["https://example.com/callback".into()],
        issued_at: at(T0_MS + SECOND_MS),
    };
    let bare = Client { client_id: "client-2".into(), redirect_uris: vec![], ..client.clone() };
    for client in [&client, &bare] {
        store.create_client(client).await.unwrap_or_else(|e| panic!("create_client({}) failed: {e}", client.client_id));
        let found = store.find_client(&client.client_id).await.expect("find_client succeeds");
        assert_eq!(found.as_ref(), Some(client), "the client does not round-trip");
    }
    let unknown = store.find_client("client-unknown").await.expect("find_client succeeds");
    assert_eq!(unknown, None);
    let duplicate = Client { secret_hash: "another".into(), ..client.clone() };
    assert_conflict(store.create_client(&duplicate).await, "a second client with id client-1");

    let token = AccessToken {
        id: "token-1".into(),
        token_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        client_id: client.client_id.clone(),
        application_id: demo.id.clone(),
        scopes: vec!["api:client:v2".into()],
        created_at: at(T0_MS + MINUTE_MS),
        expires_at: at(T0_MS + MINUTE_MS + 6 * HOUR_MS),
    };
    store.create_access_token(&token).await.expect("create_access_token succeeds");
    let grant = |hash: &'static str| async move {
        store.find_access_grant(hash).await.unwrap_or_else(|e| panic!("find_access_grant({hash:?}) failed: {e}"))
    };
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let expected = AccessGrant { token: token.clone(), application: demo.clone() };
    assert_eq!(grant(hash).await, Some(expected), "the access grant does not round-trip");
    assert_eq!(grant("unknown-hash").await, None, "an unknown token hash found a grant");

    assert!(revoke_application(store, "demo", T0_MS + HOUR_MS).await);
    let revoked = Application { revoked_at: Some(at(T0_MS + HOUR_MS)), ..demo };
    let expected = AccessGrant { token, application: revoked };
    assert_eq!(grant(hash).await, Some(expected), "the grant of a revoked application is lost or not marked revoked");
}

// --- second-screen sessions (SPEC.md §3) ----------------------------------

pub async fn sessions_are_created_found_and_updated_and_their_codes_are_unique(store: Arc<dyn Store>) {
    let store = &*store;
    let session = Session {
        code: "ABCD2345".into(),
        service_provider: service_provider("REF30"),
        device: Some(Keys::device(&three_scopes()[0], "tv").device),
        mvpd: None,
        domain_name: None,
        redirect_url: None,
        created_at: at(T0_MS),
        expires_at: at(T0_MS + 30 * MINUTE_MS),
    };
    let find_session = |code: &'static str| async move {
        store.find_session(code).await.unwrap_or_else(|e| panic!("find_session({code:?}) failed: {e}"))
    };
    store.create_session(&session).await.expect("create_session succeeds");
    assert_eq!(find_session("ABCD2345").await, Some(session.clone()), "the session does not round-trip");
    assert_eq!(find_session("ZZZZ9999").await, None);

    let other = Session { device: None, ..session.clone() };
    assert_conflict(store.create_session(&other).await, "a second session with code ABCD2345");
    assert_eq!(find_session("ABCD2345").await, Some(session.clone()), "a refused session overwrote one");

    let completed = Session {
        mvpd: Some(three_scopes()[0].mvpd.clone()),
        domain_name: Some("example.com".into()),
        redirect_url: Some("https://example.com/done".into()),
        ..session.clone()
    };
    store.update_session(&completed).await.expect("update_session succeeds");
    assert_eq!(find_session("ABCD2345").await, Some(completed), "the update is not stored");

    let deviceless = Session { code: "WXYZ6789".into(), device: None, ..session };
    store.create_session(&deviceless).await.expect("create_session succeeds");
    assert_eq!(find_session("WXYZ6789").await, Some(deviceless), "a session without a device does not round-trip");
}

// --- bytes a backend cannot hold -------------------------------------------

/// PostgreSQL refuses NUL in `text`; SQLite would store it. Every backend
/// answers alike: such a write is refused with `InvalidValue` and writes
/// nothing, and a lookup by such a key finds nothing (not an error).
pub async fn text_with_a_nul_is_refused_and_looked_up_as_absent_by_every_backend_alike(store: Arc<dyn Store>) {
    let store = &*store;
    let demo = application("app-1", "demo", T0_MS);
    create_application(store, &demo).await;
    let invalid = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::InvalidValue(_)) => {}
        other => panic!("{what}: expected StoreError::InvalidValue, got {other:?}"),
    };

    invalid(store.create_application(&application("app-2", "de\0mo", T0_MS)).await, "an application name with NUL");
    let client = Client {
        client_id: "client-1".into(),
        secret_hash: "hash".into(),
        application_id: demo.id.clone(),
        redirect_uris: vec!["https://example.com/a\0b".into()],
        issued_at: at(T0_MS),
    };
    invalid(store.create_client(&client).await, "a redirect URI with NUL");
    let session = Session {
        code: "ABCD2345".into(),
        service_provider: service_provider("REF30"),
        device: None,
        mvpd: None,
        domain_name: Some("exa\0mple.com".into()),
        redirect_url: None,
        created_at: at(T0_MS),
        expires_at: at(T0_MS + 30 * MINUTE_MS),
    };
    invalid(store.create_session(&session).await, "a session domain name with NUL");
    let stored = Session { domain_name: None, ..session.clone() };
    store.create_session(&stored).await.expect("create_session succeeds");
    invalid(store.update_session(&session).await, "an update with a NUL domain name");

    let absent = |what: &str, found: Result<bool, StoreError>| match found {
        Ok(false) => {}
        other => panic!("{what}: expected nothing found, got {other:?}"),
    };
    absent("find_client", store.find_client("client-1").await.map(|c| c.is_some()));
    absent("find_client with NUL", store.find_client("client\0").await.map(|c| c.is_some()));
    absent("find_session with NUL", store.find_session("ABCD\u{0}345").await.map(|s| s.is_some()));
    absent("find_application with NUL", store.find_application("app\0").await.map(|a| a.is_some()));
    absent("find_access_grant with NUL", store.find_access_grant("h\0").await.map(|g| g.is_some()));
    absent("find_api_key with NUL", store.find_api_key("k\0").await.map(|k| k.is_some()));
    absent("revoke_application with NUL", store.revoke_application("de\0mo", at(T0_MS)).await);
    absent("revoke_api_key with NUL", store.revoke_api_key("k\0", at(T0_MS)).await);
    let kept = store.find_session("ABCD2345").await.expect("find_session succeeds");
    assert_eq!(kept, Some(stored), "a refused update changed the session");
}

// --- signing keys (SPEC.md §8, §9) ----------------------------------------

fn signing_key(kid: &str, fill: u8, created_ms: i64) -> StoredSigningKey {
    StoredSigningKey { kid: kid.into(), seed: [fill; 32], created_at: at(created_ms) }
}

async fn ensure_signing_key(store: &dyn Store, candidate: &StoredSigningKey) -> Vec<StoredSigningKey> {
    store
        .ensure_signing_key(candidate)
        .await
        .unwrap_or_else(|e| panic!("ensure_signing_key({}) failed: {e}", candidate.kid))
}

async fn signing_keys(store: &dyn Store) -> Vec<StoredSigningKey> {
    store.signing_keys().await.expect("signing_keys succeeds")
}

pub async fn ensuring_a_signing_key_keeps_the_first_one(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(signing_keys(store).await, vec![], "a fresh store holds a signing key");
    let first = signing_key("first", 1, T0_MS);
    assert_eq!(ensure_signing_key(store, &first).await, vec![first.clone()], "the first candidate is not stored");
    let second = signing_key("second", 2, T0_MS + DAY_MS);
    assert_eq!(
        ensure_signing_key(store, &second).await,
        vec![first.clone()],
        "a second candidate replaced or joined the first key"
    );
    assert_eq!(signing_keys(store).await, vec![first], "the keys differ from what ensure_signing_key answered");
}

pub async fn concurrent_ensures_store_exactly_one_signing_key(store: Arc<dyn Store>) {
    const TASKS: usize = 10;
    let answers = concurrently(TASKS, |k| {
        let store = Arc::clone(&store);
        let candidate = signing_key(&format!("candidate-{k}"), k as u8, T0_MS + k as i64);
        async move { ensure_signing_key(&*store, &candidate).await }
    })
    .await;
    let stored = signing_keys(&*store).await;
    assert_eq!(stored.len(), 1, "{TASKS} servers starting at once stored {} keys", stored.len());
    for answer in answers {
        assert_eq!(answer, stored, "an ensure_signing_key answer differs from the stored key");
    }
}

pub async fn added_signing_keys_come_newest_first(store: Arc<dyn Store>) {
    let store = &*store;
    // Kids sort neither way the creation times do, so only created_at gives the expected order.
    let oldest = signing_key("b", 1, T0_MS);
    let middle = signing_key("c", 2, T0_MS + DAY_MS);
    let newest = signing_key("a", 3, T0_MS + 2 * DAY_MS);
    ensure_signing_key(store, &oldest).await;
    for key in [&middle, &newest] {
        store.add_signing_key(key).await.unwrap_or_else(|e| panic!("add_signing_key({}) failed: {e}", key.kid));
    }
    assert_eq!(signing_keys(store).await, vec![newest.clone(), middle.clone(), oldest.clone()], "not newest first");
    let unchanged = signing_key("d", 4, T0_MS + 3 * DAY_MS);
    assert_eq!(
        ensure_signing_key(store, &unchanged).await,
        vec![newest, middle, oldest],
        "ensure_signing_key added a key to a store that had some"
    );
}

// --- API keys and reclaiming ----------------------------------------------

pub async fn api_keys_are_created_found_and_revoked(store: Arc<dyn Store>) {
    let key = ApiKey {
        key_hash: "a".repeat(64),
        service_provider: service_provider("REF30"),
        created_at: at(T0_MS),
        revoked_at: None,
    };
    store.create_api_key(&key).await.expect("create_api_key succeeds");
    let found = store.find_api_key(&key.key_hash).await.expect("find_api_key succeeds");
    assert_eq!(found.as_ref(), Some(&key));
    assert_eq!(store.find_api_key(&"b".repeat(64)).await.ok().flatten(), None, "an unknown hash found a key");
    assert!(matches!(store.create_api_key(&key).await, Err(StoreError::Conflict(_))), "a duplicate key was stored");
    let revoked = store.revoke_api_key(&key.key_hash, at(T0_MS + 5)).await.expect("revoke_api_key succeeds");
    assert!(revoked, "revoking a live key answered false");
    let again = store.revoke_api_key(&key.key_hash, at(T0_MS + 6)).await.expect("revoke_api_key succeeds");
    assert!(!again, "revoking twice answered true");
    let found = store.find_api_key(&key.key_hash).await.expect("find_api_key succeeds");
    assert_eq!(found.and_then(|k| k.revoked_at), Some(at(T0_MS + 5)));
}

/// Calls `reclaim` until a pass completes, with a small budget so several calls are needed.
async fn reclaim_fully(store: &dyn Store, now_ms: i64) -> ReclaimReport {
    let mut total = ReclaimReport::default();
    for _ in 0..1000 {
        let report = store.reclaim(at(now_ms), 3).await.expect("reclaim succeeds");
        total.bindings += report.bindings;
        total.trials += report.trials;
        total.sessions += report.sessions;
        total.access_tokens += report.access_tokens;
        total.clients += report.clients;
        if report.pass_complete && report.removed() == 0 {
            total.pass_complete = true;
            return total;
        }
    }
    panic!("reclaim never completed a pass that removed nothing");
}

pub async fn reclaiming_after_a_reset_all_removes_superseded_bindings_and_their_trials_only(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let rule = promotional_rule(3, "1d");
    let [here, other_mvpd, other_sp] = three_scopes();
    // Ten device-only trials under `here`, one trial bound to a device and an identity, and trials elsewhere.
    for n in 0..10 {
        permit(store, &Keys::device(&here, &format!("device-{n}")), &rule, "res", T0_MS).await;
    }
    let both = Keys::promotional(&here, "shared-device", "viewer@example.com");
    let both_trial = permit(store, &both, &rule, "res", T0_MS).await;
    let elsewhere = [Keys::device(&other_mvpd, "device-0"), Keys::device(&other_sp, "device-0")];
    let mut elsewhere_trials = Vec::new();
    for keys in &elsewhere {
        elsewhere_trials.push(permit(store, keys, &rule, "res", T0_MS).await);
    }

    store.reset_devices(&here, None).await.expect("reset_devices succeeds");
    let report = reclaim_fully(store, T0_MS + 1).await;
    // A reset of all devices ends every trial of the scope: the identity's binding is superseded too.
    assert_eq!(report.bindings, 12, "every superseded binding, of devices and the identity, should go: {report:?}");
    assert_eq!(report.trials, 11, "every trial of the scope should go: {report:?}");

    let by_identity = Keys { device: DeviceId::parse("new-device").expect("a valid device id"), ..both.clone() };
    assert_eq!(find(store, &by_identity).await, None, "the identity still finds a trial after reclaiming");
    let fresh = permit(store, &both, &rule, "res", T0_MS + 2).await;
    assert_ne!(fresh.id, both_trial.id, "the identity's old trial came back");
    for (keys, trial) in elsewhere.iter().zip(&elsewhere_trials) {
        assert_same_trial(&found(store, keys).await, trial, "a trial of another scope after reclaiming");
    }
    for n in 0..10 {
        assert_eq!(find(store, &Keys::device(&here, &format!("device-{n}"))).await, None);
    }
    let again = reclaim_fully(store, T0_MS + 3).await;
    assert_eq!(again.removed(), 0, "a second pass found more to remove: {again:?}");
}

pub async fn reclaiming_removes_expired_sessions_and_access_tokens_only(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let application = Application {
        id: "app-reclaim".into(),
        name: "reclaim".into(),
        service_providers: vec![service_provider("REF30")],
        scopes: vec!["api:client:v2".into()],
        created_at: at(T0_MS),
        revoked_at: None,
    };
    store.create_application(&application).await.expect("create_application succeeds");
    for (n, expires_ms) in [(0, T0_MS + MINUTE_MS), (1, T0_MS + HOUR_MS)] {
        let token = AccessToken {
            id: format!("token-{n}"),
            token_hash: format!("{n:064}"),
            client_id: "client".into(),
            application_id: application.id.clone(),
            scopes: vec!["api:client:v2".into()],
            created_at: at(T0_MS),
            expires_at: at(expires_ms),
        };
        store.create_access_token(&token).await.expect("create_access_token succeeds");
        let session = Session {
            code: format!("CODE000{n}"),
            service_provider: service_provider("REF30"),
            device: None,
            mvpd: None,
            domain_name: None,
            redirect_url: None,
            created_at: at(T0_MS),
            expires_at: at(expires_ms),
        };
        store.create_session(&session).await.expect("create_session succeeds");
    }
    let report = reclaim_fully(store, T0_MS + 2 * MINUTE_MS).await;
    assert_eq!((report.sessions, report.access_tokens), (1, 1), "{report:?}");
    assert!(store.find_session("CODE0000").await.ok().flatten().is_none(), "the expired session is still there");
    assert!(store.find_session("CODE0001").await.ok().flatten().is_some(), "a live session was removed");
    assert!(store.find_access_grant(&format!("{:064}", 0)).await.ok().flatten().is_none());
    assert!(store.find_access_grant(&format!("{:064}", 1)).await.ok().flatten().is_some());
}

pub async fn reclaiming_removes_clients_idle_for_thirty_days_that_hold_no_token(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let application = Application {
        id: "app-clients".into(),
        name: "clients".into(),
        service_providers: vec![service_provider("REF30")],
        scopes: vec!["api:client:v2".into()],
        created_at: at(T0_MS),
        revoked_at: None,
    };
    store.create_application(&application).await.expect("create_application succeeds");
    let now_ms = T0_MS + CLIENT_IDLE_MS + DAY_MS;
    // (client id, registered at, holds a live token)
    let clients = [("old-idle", T0_MS, false), ("old-busy", T0_MS, true), ("recent-idle", now_ms - DAY_MS, false)];
    for (client_id, issued_ms, busy) in clients {
        let client = Client {
            client_id: client_id.into(),
            secret_hash: "0".repeat(64),
            application_id: application.id.clone(),
            redirect_uris: vec![],
            issued_at: at(issued_ms),
        };
        store.create_client(&client).await.expect("create_client succeeds");
        if busy {
            let token = AccessToken {
                id: format!("token-of-{client_id}"),
                token_hash: format!("{:064}", 7),
                client_id: client_id.into(),
                application_id: application.id.clone(),
                scopes: vec!["api:client:v2".into()],
                created_at: at(now_ms - HOUR_MS),
                expires_at: at(now_ms + HOUR_MS),
            };
            store.create_access_token(&token).await.expect("create_access_token succeeds");
        }
    }
    let report = reclaim_fully(store, now_ms).await;
    assert_eq!(report.clients, 1, "{report:?}");
    assert!(store.find_client("old-idle").await.ok().flatten().is_none(), "an idle old client is still there");
    assert!(store.find_client("old-busy").await.ok().flatten().is_some(), "a client with a live token was removed");
    assert!(store.find_client("recent-idle").await.ok().flatten().is_some(), "a recent client was removed");
}

// --- daily figures (docs/operating.md) --------------------------------------

pub async fn an_outcome_says_whether_it_started_the_trial_and_whether_it_used_a_new_resource(store: Arc<dyn Store>) {
    let store = &*store;
    let [scope, promotional_scope, _] = three_scopes();
    let flags = |outcome: AuthorizeOutcome| (outcome.decision.is_ok(), outcome.started, outcome.uses_new_resource);
    let rule = basic_rule("10m");
    let keys = Keys::device(&scope, "device-1");
    assert_eq!(flags(authorize(store, &keys, &rule, "res-1", T0_MS).await), (true, true, false), "a basic first use");
    assert_eq!(
        flags(authorize(store, &keys, &rule, "res-2", T0_MS + 1).await),
        (true, false, false),
        "a basic continuation"
    );
    let late = T0_MS + 11 * MINUTE_MS;
    assert_eq!(
        flags(authorize(store, &keys, &rule, "res-1", late).await),
        (false, false, false),
        "a deny for duration"
    );

    let rule = promotional_rule(2, "24h");
    let keys = Keys::promotional(&promotional_scope, "device-1", "viewer@example.com");
    let steps = [("res-1", (true, true, true)), ("res-1", (true, false, false)), ("res-2", (true, false, true))];
    for (step, (resource_id, expected)) in steps.into_iter().enumerate() {
        let outcome = authorize(store, &keys, &rule, resource_id, T0_MS + step as i64).await;
        assert_eq!(flags(outcome), expected, "promotional step {step} ({resource_id})");
    }
    let capped = authorize(store, &keys, &rule, "res-3", T0_MS + 5).await;
    assert_eq!(flags(capped), (false, false, false), "a deny at the cap");
}

fn day(text: &str) -> Day {
    Day::parse(text).expect("a day")
}

fn delta(scope: &RuleScope, on: &str, counts: FigureCounts, ended_trials: Vec<TrialId>) -> FigureDelta {
    FigureDelta { scope: scope.clone(), day: day(on), counts, ended_trials }
}

async fn figures(store: &dyn Store, query: FiguresQuery) -> Vec<DailyFigures> {
    store.figures(&query).await.unwrap_or_else(|e| panic!("figures({query:?}) failed: {e}"))
}

pub async fn daily_figures_add_up_across_flushes_and_are_read_from_a_day_and_by_service_provider(
    store: Arc<dyn Store>,
) {
    let store = &*store;
    let [a, b, c] = three_scopes();
    let counts = |started, exhausted, used, resets| FigureCounts {
        trials_started: started,
        trials_ended: 99, // never taken as given: the store counts ended trials itself
        trials_exhausted: exhausted,
        resources_used: used,
        resets,
    };
    assert_eq!(figures(store, FiguresQuery::default()).await, vec![], "a fresh store has figures");
    let first =
        [delta(&a, "2026-12-03", counts(5, 1, 7, 0), vec![]), delta(&a, "2026-12-04", counts(2, 0, 0, 1), vec![])];
    store.add_figures(&first).await.expect("the first flush");
    let second =
        [delta(&a, "2026-12-04", counts(3, 2, 4, 0), vec![]), delta(&c, "2026-12-04", counts(1, 0, 0, 0), vec![])];
    store.add_figures(&second).await.expect("the second flush");
    store.add_figures(&[]).await.expect("an empty flush");

    let row = |scope: &RuleScope, on: &str, counts: FigureCounts| DailyFigures {
        service_provider: scope.service_provider.clone(),
        mvpd: scope.mvpd.clone(),
        day: day(on),
        counts: FigureCounts { trials_ended: 0, ..counts },
    };
    let all = figures(store, FiguresQuery::default()).await;
    let expected_a = [row(&a, "2026-12-03", counts(5, 1, 7, 0)), row(&a, "2026-12-04", counts(5, 2, 4, 1))];
    let expected_c = row(&c, "2026-12-04", counts(1, 0, 0, 0));
    let mut expected = expected_a.to_vec();
    expected.push(expected_c.clone());
    expected.sort_by(|x, y| {
        (x.service_provider.as_str(), x.mvpd.as_str(), x.day).cmp(&(
            y.service_provider.as_str(),
            y.mvpd.as_str(),
            y.day,
        ))
    });
    assert_eq!(all, expected, "the figures of two flushes do not add up per rule and day");
    assert!(
        !all.iter().any(|r| r.mvpd == b.mvpd && r.service_provider == b.service_provider),
        "a rule with no counts has a row"
    );

    let since = figures(store, FiguresQuery { since: Some(day("2026-12-04")), service_provider: None }).await;
    assert!(since.iter().all(|r| r.day == day("2026-12-04")) && since.len() == 2, "since 4 December: {since:?}");
    let of_c = figures(store, FiguresQuery { since: None, service_provider: Some(c.service_provider.clone()) }).await;
    let of_c_expected: Vec<DailyFigures> =
        expected.iter().filter(|r| r.service_provider == c.service_provider).cloned().collect();
    assert_eq!(of_c, of_c_expected, "the figures of one service provider");
}

pub async fn a_trials_end_is_counted_once_however_many_flushes_report_it_at_once(store: Arc<dyn Store>) {
    let [scope, ..] = three_scopes();
    let rule = basic_rule("10m");
    let mut trials = Vec::new();
    for device in ["device-1", "device-2"] {
        trials.push(permit(&*store, &Keys::device(&scope, device), &rule, "res-1", T0_MS).await.id);
    }
    let gone = TrialId(trials.iter().map(|t| t.0).max().unwrap_or(0) + 1_000);
    // Eight servers saw both trials denied for duration, and one of them a trial since reset (gone: it counts).
    let flushes = concurrently(8, |k| {
        let store = Arc::clone(&store);
        let mut ended = trials.clone();
        if k == 0 {
            ended.push(gone);
        }
        let delta = delta(&scope, "2026-12-04", FigureCounts::default(), ended);
        async move { store.add_figures(&[delta]).await }
    })
    .await;
    for result in flushes {
        result.expect("a concurrent flush");
    }
    store
        .add_figures(&[delta(&scope, "2026-12-05", FigureCounts::default(), trials.clone())])
        .await
        .expect("a later flush");
    let rows = figures(&*store, FiguresQuery::default()).await;
    let ended: Vec<(Day, u64)> = rows.iter().map(|r| (r.day, r.counts.trials_ended)).collect();
    assert_eq!(ended, vec![(day("2026-12-04"), 3)], "each trial's end counts once, on the day first reported");
}
