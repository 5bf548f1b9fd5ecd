//! Plain records the store keeps besides trials.

use temppass_core::{DeviceId, MvpdId, ServiceProviderId, Timestamp};

/// A registered application (SPEC.md §6), created by `temppass app create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: String,
    pub name: String,
    pub service_providers: Vec<ServiceProviderId>,
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A client registered with a software statement. Only the secret's hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub secret_hash: String,
    pub application_id: String,
    pub redirect_uris: Vec<String>,
    pub issued_at: Timestamp,
}

/// An access token. Only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub id: String,
    pub token_hash: String,
    pub client_id: String,
    pub application_id: String,
    /// The scopes granted to this token (a subset of the application's).
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// An access token with the application it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    pub token: AccessToken,
    pub application: Application,
}

/// A second-screen authentication session, found by its short code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub code: String,
    pub service_provider: ServiceProviderId,
    pub device: Option<DeviceId>,
    pub mvpd: Option<MvpdId>,
    pub domain_name: Option<String>,
    pub redirect_url: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A media token signing key. The seed is the Ed25519 private key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    pub seed: [u8; 32],
    pub created_at: Timestamp,
}

impl std::fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey").field("kid", &self.kid).field("created_at", &self.created_at).finish()
    }
}

/// A legacy reset API key (seed 000), bound to one service provider. Only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub key_hash: String,
    pub service_provider: ServiceProviderId,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A registered client with no access token that registered this long ago is
/// reclaimed: every browser registers its own client, so without this the
/// table only grows. An app whose client is gone registers again.
pub const CLIENT_IDLE_MS: i64 = 30 * 86_400_000;

/// What one [`crate::Store::reclaim`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub bindings: usize,
    pub trials: usize,
    pub sessions: usize,
    pub access_tokens: usize,
    /// Clients registered more than [`CLIENT_IDLE_MS`] ago that hold no access token.
    pub clients: usize,
    /// True when the call found nothing more to scan in this pass (the next call starts a new pass).
    pub pass_complete: bool,
}

impl ReclaimReport {
    pub fn removed(&self) -> usize {
        self.bindings + self.trials + self.sessions + self.access_tokens + self.clients
    }
}

/// Whether a lookup key holds NUL, which no stored text can (see [`Session::check_storable`]):
/// a backend answers such a lookup "not found" without asking its engine.
pub fn holds_nul(key: &str) -> bool {
    key.contains('\0')
}

/// Refuses text no backend can hold — NUL, which PostgreSQL refuses in `text` —
/// the same way in every backend, naming the field, before anything is written.
fn refuse_nul<'a>(
    record: &str,
    fields: impl IntoIterator<Item = (&'static str, &'a str)>,
) -> Result<(), crate::StoreError> {
    match fields.into_iter().find(|(_, value)| holds_nul(value)) {
        Some((field, _)) => Err(crate::StoreError::InvalidValue(format!("{record}.{field} holds a NUL character"))),
        None => Ok(()),
    }
}

impl Session {
    pub fn check_storable(&self) -> Result<(), crate::StoreError> {
        let optional = [("domain_name", &self.domain_name), ("redirect_url", &self.redirect_url)];
        refuse_nul(
            "session",
            std::iter::once(("code", self.code.as_str()))
                .chain(optional.into_iter().filter_map(|(field, value)| Some((field, value.as_deref()?)))),
        )
    }
}

impl Client {
    pub fn check_storable(&self) -> Result<(), crate::StoreError> {
        refuse_nul(
            "client",
            [("client_id", self.client_id.as_str()), ("application_id", self.application_id.as_str())]
                .into_iter()
                .chain(self.redirect_uris.iter().map(|uri| ("redirect_uris", uri.as_str()))),
        )
    }
}

impl Application {
    pub fn check_storable(&self) -> Result<(), crate::StoreError> {
        refuse_nul(
            "application",
            [("id", self.id.as_str()), ("name", self.name.as_str())]
                .into_iter()
                .chain(self.scopes.iter().map(|scope| ("scopes", scope.as_str()))),
        )
    }
}
