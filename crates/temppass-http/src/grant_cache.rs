//! A short-lived, bounded cache of access grants (token → application).
//!
//! With a shared PostgreSQL store the bearer lookup is a network round trip on
//! every request; caching a grant for a second or two halves the round trips
//! of an authorization. SPEC.md §6 allows a revocation to take up to 5 s to
//! reach every server, so the TTL is capped below that. Only grants that were
//! found are cached; token expiry is still checked on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use temppass_core::{DurationMs, Timestamp};
use temppass_store::AccessGrant;

/// Entries kept at most; a cache that is full drops what has expired, then everything.
const MAX_ENTRIES: usize = 100_000;

pub(crate) struct GrantCache {
    ttl_ms: i64,
    entries: Mutex<HashMap<String, (Arc<AccessGrant>, Timestamp)>>,
}

impl GrantCache {
    pub(crate) fn new(ttl: DurationMs) -> Self {
        Self { ttl_ms: ttl.as_millis(), entries: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn get(&self, token_hash: &str, now: Timestamp) -> Option<Arc<AccessGrant>> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (grant, cached_at) = entries.get(token_hash)?;
        (now.as_millis() - cached_at.as_millis() < self.ttl_ms).then(|| Arc::clone(grant))
    }

    pub(crate) fn put(&self, token_hash: &str, grant: Arc<AccessGrant>, now: Timestamp) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            let ttl_ms = self.ttl_ms;
            entries.retain(|_, (_, cached_at)| now.as_millis() - cached_at.as_millis() < ttl_ms);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(token_hash.to_owned(), (grant, now));
    }
}
