//! `AppState`: what every handler can reach. No globals.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use temppass_core::{DurationMs, ServiceProviderId, Timestamp};
use temppass_store::{Store, StoreError, StoredSigningKey};
use temppass_token::{Jwks, SigningKey};

use crate::clock::Clock;
use crate::error::ApiError;
use crate::grant_cache::GrantCache;
use crate::observe::Observer;
use crate::settings::{ServiceProvider, Settings};

/// A new key signs only once it has been in the store this long, so every
/// server (which publishes what the store holds on each JWKS request) has
/// published it before any token signed with it exists (SPEC.md §10).
pub const KEY_SIGNING_DELAY_MS: i64 = 30_000;

/// By then every running server signs with the newest key: the signing delay
/// plus the interval at which servers re-read keys (`serve` uses 15 s).
pub const KEY_ADOPTION_MS: i64 = 60_000;

/// The signing keys in use: the newest key old enough to sign, and every key
/// that may still have valid tokens, published.
pub struct KeySet {
    pub signing: SigningKey,
    /// The published key set (`/.well-known/jwks.json`): media tokens verify against it.
    pub jwks: Jwks,
    /// `/.well-known/jwks.json`, serialised once per change of keys.
    pub jwks_json: Vec<u8>,
    /// Every key ever made: software statements never expire, so one signed
    /// before a rotation must still register after the old key is unpublished.
    pub statement_keys: Jwks,
}

impl KeySet {
    /// Builds the set from stored keys, newest first; `None` when there is none.
    ///
    /// The signing key is the newest one stored at least [`KEY_SIGNING_DELAY_MS`]
    /// ago (the oldest key when none is: a server's very first key signs at once).
    /// With `retention` (the media token TTL), a key superseded at instant S
    /// is published until S + [`KEY_ADOPTION_MS`] + `retention` + the
    /// verifier's skew: after that no token it signed can still be valid.
    /// Without it every key is published.
    pub fn from_stored(stored: &[StoredSigningKey], now: Timestamp, retention: Option<DurationMs>) -> Option<Self> {
        let keys: Vec<SigningKey> = stored.iter().map(|k| SigningKey::from_seed(k.seed)).collect();
        let statement_keys = Jwks { keys: keys.iter().map(SigningKey::public_jwk).collect() };
        let signing_index = stored
            .iter()
            .position(|k| k.created_at.as_millis() + KEY_SIGNING_DELAY_MS <= now.as_millis())
            .unwrap_or(stored.len().saturating_sub(1));
        let published = keys
            .iter()
            .enumerate()
            .filter(|(index, _)| {
                // The signing key, and every newer one, is always published.
                if *index <= signing_index {
                    return true;
                }
                let (Some(retention), Some(superseded_by)) = (retention, stored.get(signing_index)) else {
                    return true;
                };
                let retired_at = superseded_by.created_at.as_millis()
                    + KEY_ADOPTION_MS
                    + retention.as_millis()
                    + temppass_token::DEFAULT_SKEW_SECS * 1000;
                now.as_millis() < retired_at
            })
            .map(|(_, key)| key.public_jwk())
            .collect();
        let jwks = Jwks { keys: published };
        let jwks_json = serde_json::to_vec(&jwks).ok()?;
        let signing = keys.into_iter().nth(signing_index)?;
        Some(Self { signing, jwks, jwks_json, statement_keys })
    }
}

/// Shared state behind every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) service_provider_index: HashMap<ServiceProviderId, usize>,
    /// `configuration` responses, serialised once at start-up.
    pub(crate) configuration_json: Vec<Vec<u8>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    keys: RwLock<Arc<KeySet>>,
    /// When `keys` was last read from the store (epoch ms), for `reload_keys_if_older_than`.
    keys_loaded_at: AtomicI64,
    /// `X-Device-Info` values that were not base64 JSON objects, since start-up.
    malformed_device_info: AtomicU64,
    grant_cache: Option<GrantCache>,
    observer: Observer,
}

impl AppState {
    /// Loads the signing keys from the store, creating the first one if the store has none.
    pub async fn new(settings: Settings, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::observed(settings, store, clock, Observer::default()).await
    }

    /// [`AppState::new`] telling `observer` what happens (metrics, events, figures).
    pub async fn observed(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        observer: Observer,
    ) -> Result<Self, StoreError> {
        let now = clock.now();
        let stored = load_or_create_stored_keys(store.as_ref(), now).await?;
        let keys = KeySet::from_stored(&stored, now, Some(settings.media_token_ttl))
            .ok_or_else(|| StoreError::Internal("the store holds no signing key".into()))?;
        let configuration_json = settings.service_providers.iter().map(crate::wire::configuration_json).collect();
        let service_provider_index = settings.index();
        let grant_cache = settings.access_grant_cache_ttl.map(GrantCache::new);
        Ok(Self(Arc::new(Inner {
            settings,
            service_provider_index,
            configuration_json,
            store,
            clock,
            keys: RwLock::new(Arc::new(keys)),
            keys_loaded_at: AtomicI64::new(now.as_millis()),
            malformed_device_info: AtomicU64::new(0),
            grant_cache,
            observer,
        })))
    }

    pub fn observer(&self) -> &Observer {
        &self.0.observer
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    pub fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    /// Counts one more malformed `X-Device-Info` and returns the total.
    pub(crate) fn count_malformed_device_info(&self) -> u64 {
        self.0.observer.malformed_device_info();
        self.0.malformed_device_info.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Malformed `X-Device-Info` values seen since start-up (SPEC.md §4: ignored, counted).
    pub fn malformed_device_info(&self) -> u64 {
        self.0.malformed_device_info.load(Ordering::Relaxed)
    }

    pub(crate) fn grant_cache(&self) -> Option<&GrantCache> {
        self.0.grant_cache.as_ref()
    }

    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.0.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Re-reads the keys from the store, so a `temppass key rotate` reaches
    /// running servers and retired keys leave the published set.
    pub async fn reload_keys(&self) -> Result<(), StoreError> {
        let now = self.now();
        self.0.keys_loaded_at.store(now.as_millis(), Ordering::Relaxed);
        let stored = self.0.store.signing_keys().await?;
        if let Some(keys) = KeySet::from_stored(&stored, now, Some(self.0.settings.media_token_ttl)) {
            *self.0.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        }
        Ok(())
    }

    /// Re-reads the keys unless that was done less than `max_age_ms` ago.
    pub(crate) async fn reload_keys_if_older_than(&self, max_age_ms: i64) -> Result<(), StoreError> {
        let loaded_at = self.0.keys_loaded_at.load(Ordering::Relaxed);
        if self.now().as_millis() - loaded_at < max_age_ms {
            return Ok(());
        }
        self.reload_keys().await
    }

    pub(crate) fn service_provider(&self, id: &str) -> Option<(usize, &ServiceProvider)> {
        let id = ServiceProviderId::parse(id).ok()?;
        let index = *self.0.service_provider_index.get(&id)?;
        Some((index, &self.0.settings.service_providers[index]))
    }

    /// Runs a store operation and maps its failure to the §5 answer. The
    /// store bounds each operation itself (`storage.timeout`: past it, it
    /// answers `Unavailable`, which is `internal_server_error` with action
    /// `retry`); the whole request is bounded by `limits.request_timeout`
    /// (`request_timeout.rs`). No third timer here (docs/ARCHITECTURE.md, "Deadlines").
    pub(crate) async fn store_call<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, ApiError> {
        operation.await.map_err(ApiError::from)
    }
}

/// The store's keys, creating the first one if there is none (admin commands sign software statements with it).
pub async fn load_or_create_keys(store: &dyn Store, now: Timestamp) -> Result<KeySet, StoreError> {
    let stored = load_or_create_stored_keys(store, now).await?;
    KeySet::from_stored(&stored, now, None).ok_or_else(|| StoreError::Internal("the store holds no signing key".into()))
}

async fn load_or_create_stored_keys(store: &dyn Store, now: Timestamp) -> Result<Vec<StoredSigningKey>, StoreError> {
    let stored = store.signing_keys().await?;
    if !stored.is_empty() {
        return Ok(stored);
    }
    let key = SigningKey::generate();
    let candidate = StoredSigningKey { kid: key.kid().to_owned(), seed: key.seed(), created_at: now };
    store.ensure_signing_key(&candidate).await
}
