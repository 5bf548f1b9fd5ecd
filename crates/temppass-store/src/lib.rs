//! The storage contract of temppass: one trait, its records and its error type.
//!
//! Backends (SQLite embedded, PostgreSQL shared) implement [`Store`]; every
//! backend runs the one conformance suite in [`conformance`] (feature
//! `conformance`). The trait speaks in SPEC.md operations, not in tables, so
//! a backend can make each operation one atomic step in whatever way its
//! engine allows (one writer transaction in SQLite, one short transaction with
//! row locks in PostgreSQL).

mod bound_keys;
mod figures;
mod plan;
mod records;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use temppass_core::{DeviceId, IdentityHash, ResourceId, Rule, RuleScope, Timestamp, Trial};

pub use bound_keys::BoundKeys;
pub use figures::{DailyFigures, FigureCounts, FigureDelta, FiguresQuery, StoreLoad};
pub use plan::{Bound, Found, KeyKind, Merge, NewTrial, Plan, PlannedTrial, ResetPlan, ResetTarget, plan, plan_reset};
pub use records::{
    AccessGrant, AccessToken, ApiKey, Application, CLIENT_IDLE_MS, Client, ReclaimReport, Session, StoredSigningKey,
    holds_nul,
};

/// Failures of the store itself. Denials are not errors: see [`AuthorizeOutcome`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time; the client may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A unique value (application name, client id, session code) already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend's write queue is full (`max_queued_writes`): the write was
    /// refused at once, without running, so the client may retry shortly.
    #[error("store busy: {0}")]
    Busy(String),
    /// A value no backend can hold, such as text with a NUL character
    /// (PostgreSQL refuses it); nothing was written. The HTTP layer refuses
    /// such input first, so this is a bug where it reaches a client.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// Anything else: a bug, a corrupt row, a failed migration.
    #[error("store failure: {0}")]
    Internal(String),
}

/// Writes a backend lets wait for its writer, by default; past them a write
/// fails at once with [`StoreError::Busy`] (`storage.max_queued_writes`).
pub const DEFAULT_MAX_QUEUED_WRITES: usize = 4096;

/// The keys that find a trial under one rule.
#[derive(Debug, Clone, Copy)]
pub struct TrialLookup<'a> {
    pub scope: &'a RuleScope,
    pub device: &'a DeviceId,
    /// Promotional rules only: the identity hash from `AP-TempPass-Identity`.
    pub identity: Option<&'a IdentityHash>,
    /// Trials that started before this instant count as absent (the rule's
    /// scheduled reset, [`Rule::valid_since`]); `Timestamp::from_millis(i64::MIN)` when none.
    /// [`TrialLookup::new`] is the one place that computes it.
    pub valid_since: Timestamp,
}

impl<'a> TrialLookup<'a> {
    /// The lookup of a request under `rule` at `now`: which trials count follows from the rule's scheduled reset.
    pub fn new(
        scope: &'a RuleScope,
        device: &'a DeviceId,
        identity: Option<&'a IdentityHash>,
        rule: &Rule,
        now: Timestamp,
    ) -> Self {
        Self { scope, device, identity, valid_since: rule.valid_since(now) }
    }

    /// The lookup's key of `kind`, as bound: `None` for an identity it does not have.
    pub fn key(&self, kind: KeyKind) -> Option<(KeyKind, &'a str)> {
        match kind {
            KeyKind::Device => Some((kind, self.device.as_str())),
            KeyKind::Identity => self.identity.map(|identity| (kind, identity.as_str())),
        }
    }
}

/// A [`TrialLookup`] that owns its keys, for one that waits in a queue (a
/// backend's writer) beyond the borrow of its caller.
#[derive(Debug, Clone)]
pub struct OwnedLookup {
    pub scope: RuleScope,
    pub device: DeviceId,
    pub identity: Option<IdentityHash>,
    pub valid_since: Timestamp,
}

impl OwnedLookup {
    pub fn new(lookup: TrialLookup<'_>) -> Self {
        Self {
            scope: lookup.scope.clone(),
            device: lookup.device.clone(),
            identity: lookup.identity.cloned(),
            valid_since: lookup.valid_since,
        }
    }

    pub fn borrow(&self) -> TrialLookup<'_> {
        TrialLookup {
            scope: &self.scope,
            device: &self.device,
            identity: self.identity.as_ref(),
            valid_since: self.valid_since,
        }
    }
}

/// One authorization for a store to decide and record: the keys, the rule,
/// the one resource and the time.
#[derive(Debug, Clone, Copy)]
pub struct Authorization<'a> {
    pub lookup: TrialLookup<'a>,
    pub rule: &'a Rule,
    pub resource: &'a ResourceId,
    pub now: Timestamp,
}

impl<'a> Authorization<'a> {
    pub fn new(lookup: TrialLookup<'a>, rule: &'a Rule, resource: &'a ResourceId, now: Timestamp) -> Self {
        Self { lookup, rule, resource, now }
    }
}

/// An [`Authorization`] that owns its parts, for one that waits in a queue
/// (a backend's writer) beyond the borrow of its caller.
#[derive(Debug, Clone)]
pub struct OwnedAuthorization {
    lookup: OwnedLookup,
    rule: Rule,
    resource: ResourceId,
    now: Timestamp,
}

impl OwnedAuthorization {
    pub fn new(request: Authorization<'_>) -> Self {
        let Authorization { lookup, rule, resource, now } = request;
        Self { lookup: OwnedLookup::new(lookup), rule: rule.clone(), resource: resource.clone(), now }
    }

    pub fn borrow(&self) -> Authorization<'_> {
        Authorization::new(self.lookup.borrow(), &self.rule, &self.resource, self.now)
    }
}

/// The answer of [`Store::authorize`]: a permit or a deny, and the trial it
/// was decided on as it stands after the authorization (a deny always has
/// one: only a trial can run out; a permit with none started one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeOutcome {
    pub decision: Result<(), temppass_core::DenyReason>,
    pub trial: Trial,
    /// This authorization started the trial (a first use).
    pub started: bool,
    /// The resource took a slot of the trial it did not have (promotional rules).
    pub uses_new_resource: bool,
}

/// Everything temppass keeps. Every method is one atomic operation.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- trials (SPEC.md §2) ---

    /// The trial these keys find, without changing anything. When a device and
    /// an identity find two different trials, the answer is the trial their
    /// merge would give (the merge itself happens on the next authorization).
    async fn find_trial(&self, lookup: TrialLookup<'_>) -> Result<Option<Trial>, StoreError>;

    /// Decides and records one authorization atomically: reads the bindings
    /// of the lookup's keys, and writes the [`plan`] made from them, so
    /// concurrent calls behave as if they ran one after another. Which trials
    /// count is `lookup.valid_since` (see [`TrialLookup::new`]).
    async fn authorize(&self, request: Authorization<'_>) -> Result<AuthorizeOutcome, StoreError>;

    /// Resets one device under `scope`: ends the trial it finds, with all of
    /// its bindings ([`plan_reset`]); or, with `None`, ends every trial of the
    /// scope in O(1) (SPEC.md §2).
    async fn reset_devices(&self, scope: &RuleScope, device: Option<&DeviceId>) -> Result<(), StoreError>;

    /// Resets one identity under `scope` as [`Store::reset_devices`] resets a
    /// device; with `None`, ends every trial of the scope in O(1), exactly as a
    /// reset of all devices does.
    async fn reset_identities(&self, scope: &RuleScope, identity: Option<&IdentityHash>) -> Result<(), StoreError>;

    // --- registered applications, clients and access tokens (SPEC.md §6) ---

    /// Fails with [`StoreError::Conflict`] when an application of that name exists.
    async fn create_application(&self, application: &Application) -> Result<(), StoreError>;
    async fn find_application(&self, id: &str) -> Result<Option<Application>, StoreError>;
    /// The application of that name that is not revoked (names are unique among those).
    async fn find_active_application(&self, name: &str) -> Result<Option<Application>, StoreError>;
    /// Marks the application of that name revoked; `false` when there is none (or it already was).
    async fn revoke_application(&self, name: &str, now: Timestamp) -> Result<bool, StoreError>;

    async fn create_client(&self, client: &Client) -> Result<(), StoreError>;
    async fn find_client(&self, client_id: &str) -> Result<Option<Client>, StoreError>;

    async fn create_access_token(&self, token: &AccessToken) -> Result<(), StoreError>;
    /// The token with this hash and its application, whatever their state; callers check expiry and revocation.
    async fn find_access_grant(&self, token_hash: &str) -> Result<Option<AccessGrant>, StoreError>;

    // --- second-screen sessions (SPEC.md §3) ---

    /// Fails with [`StoreError::Conflict`] when the code is taken.
    async fn create_session(&self, session: &Session) -> Result<(), StoreError>;
    async fn find_session(&self, code: &str) -> Result<Option<Session>, StoreError>;
    async fn update_session(&self, session: &Session) -> Result<(), StoreError>;

    // --- legacy reset API keys (SPEC.md §7) ---

    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Marks the key revoked; `false` when there is none (or it already was).
    async fn revoke_api_key(&self, key_hash: &str, now: Timestamp) -> Result<bool, StoreError>;

    // --- housekeeping ---

    /// Reclaims the storage of what nothing can find any more: bindings of a
    /// superseded generation (after an "all" reset), trials no binding points
    /// to, expired sessions and access tokens, and clients that registered
    /// more than [`CLIENT_IDLE_MS`] ago and hold no token. Does at most about `budget` rows
    /// of work in one short transaction and resumes where it stopped on the
    /// next call, so it never holds the store long; never on a request path.
    async fn reclaim(&self, now: Timestamp, budget: usize) -> Result<ReclaimReport, StoreError>;

    // --- daily figures (docs/operating.md) ---

    /// Adds one server's counts, each delta in one atomic write: the counts as given,
    /// and to `trials_ended` the trials of `ended_trials` whose end no
    /// earlier call counted. A trial that no longer exists (reset or merged
    /// away since its deny) counts, as it cannot be marked: if two servers
    /// report such a trial, its end counts twice.
    async fn add_figures(&self, deltas: &[FigureDelta]) -> Result<(), StoreError>;

    /// The figures of `query`, by service provider, MVPD and day.
    async fn figures(&self, query: &FiguresQuery) -> Result<Vec<DailyFigures>, StoreError>;

    /// The backend's queues and pool now; never waits.
    fn load(&self) -> StoreLoad;

    // --- signing keys (SPEC.md §8, §9) ---

    /// Stores `candidate` only if the store holds no signing key yet, then
    /// returns every key, newest first. Safe when several servers start at once.
    async fn ensure_signing_key(&self, candidate: &StoredSigningKey) -> Result<Vec<StoredSigningKey>, StoreError>;
    async fn add_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError>;
    /// Every key, newest first: by `created_at`, and among equal ones the last added first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError>;
}
