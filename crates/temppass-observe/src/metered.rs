//! [`MeteredStore`]: a [`Store`] that times every operation of the store it
//! wraps and counts its errors (`temppass_store_operation_duration_seconds`,
//! `temppass_store_errors_total`), so every caller — handlers, `serve`'s
//! background work — is measured in one place and no backend knows metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use temppass_core::{DeviceId, IdentityHash, RuleScope, Timestamp, Trial};
use temppass_store::{
    AccessGrant, AccessToken, ApiKey, Application, Authorization, AuthorizeOutcome, Client, DailyFigures, FigureDelta,
    FiguresQuery, ReclaimReport, Session, Store, StoreError, StoreLoad, StoredSigningKey, TrialLookup,
};

use crate::metrics::Metrics;

/// The `error` label of a store error.
pub fn store_error_label(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Conflict(_) => "conflict",
        StoreError::Busy(_) => "busy",
        StoreError::InvalidValue(_) => "invalid_value",
        StoreError::Internal(_) => "internal",
    }
}

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        // A conflict is an answer (a name taken), not a failure of the store.
        let error = match &result {
            Err(
                error @ (StoreError::Unavailable(_)
                | StoreError::Busy(_)
                | StoreError::InvalidValue(_)
                | StoreError::Internal(_)),
            ) => Some(store_error_label(error)),
            _ => None,
        };
        self.metrics.store_operation(operation, started.elapsed(), error);
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn find_trial(&self, lookup: TrialLookup<'_>) -> Result<Option<Trial>, StoreError> {
        self.timed("find_trial", self.inner.find_trial(lookup)).await
    }

    async fn authorize(&self, request: Authorization<'_>) -> Result<AuthorizeOutcome, StoreError> {
        self.timed("authorize", self.inner.authorize(request)).await
    }

    async fn reset_devices(&self, scope: &RuleScope, device: Option<&DeviceId>) -> Result<(), StoreError> {
        self.timed("reset_devices", self.inner.reset_devices(scope, device)).await
    }

    async fn reset_identities(&self, scope: &RuleScope, identity: Option<&IdentityHash>) -> Result<(), StoreError> {
        self.timed("reset_identities", self.inner.reset_identities(scope, identity)).await
    }

    async fn create_application(&self, application: &Application) -> Result<(), StoreError> {
        self.timed("create_application", self.inner.create_application(application)).await
    }

    async fn find_application(&self, id: &str) -> Result<Option<Application>, StoreError> {
        self.timed("find_application", self.inner.find_application(id)).await
    }

    async fn find_active_application(&self, name: &str) -> Result<Option<Application>, StoreError> {
        self.timed("find_active_application", self.inner.find_active_application(name)).await
    }

    async fn revoke_application(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.timed("revoke_application", self.inner.revoke_application(name, now)).await
    }

    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        self.timed("create_client", self.inner.create_client(client)).await
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.timed("find_client", self.inner.find_client(client_id)).await
    }

    async fn create_access_token(&self, token: &AccessToken) -> Result<(), StoreError> {
        self.timed("create_access_token", self.inner.create_access_token(token)).await
    }

    async fn find_access_grant(&self, token_hash: &str) -> Result<Option<AccessGrant>, StoreError> {
        self.timed("find_access_grant", self.inner.find_access_grant(token_hash)).await
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        self.timed("create_session", self.inner.create_session(session)).await
    }

    async fn find_session(&self, code: &str) -> Result<Option<Session>, StoreError> {
        self.timed("find_session", self.inner.find_session(code)).await
    }

    async fn update_session(&self, session: &Session) -> Result<(), StoreError> {
        self.timed("update_session", self.inner.update_session(session)).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.timed("create_api_key", self.inner.create_api_key(key)).await
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.timed("find_api_key", self.inner.find_api_key(key_hash)).await
    }

    async fn revoke_api_key(&self, key_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.timed("revoke_api_key", self.inner.revoke_api_key(key_hash, now)).await
    }

    async fn reclaim(&self, now: Timestamp, budget: usize) -> Result<ReclaimReport, StoreError> {
        self.timed("reclaim", self.inner.reclaim(now, budget)).await
    }

    async fn add_figures(&self, deltas: &[FigureDelta]) -> Result<(), StoreError> {
        self.timed("add_figures", self.inner.add_figures(deltas)).await
    }

    async fn figures(&self, query: &FiguresQuery) -> Result<Vec<DailyFigures>, StoreError> {
        self.timed("figures", self.inner.figures(query)).await
    }

    fn load(&self) -> StoreLoad {
        self.inner.load()
    }

    async fn ensure_signing_key(&self, candidate: &StoredSigningKey) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.timed("ensure_signing_key", self.inner.ensure_signing_key(candidate)).await
    }

    async fn add_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        self.timed("add_signing_key", self.inner.add_signing_key(key)).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.timed("signing_keys", self.inner.signing_keys()).await
    }
}
