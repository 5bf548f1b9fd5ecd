//! `JwksClient` (feature `client`): fetches a server's `/.well-known/jwks.json`
//! over HTTP(S), caches it (see `cache.rs`) and verifies media tokens with it.

use std::sync::Mutex;
use std::time::Duration;

use crate::{CachePolicy, Jwks, JwksCache, MAX_JWKS_BYTES, Verdict, VerifyOptions};

/// Why a key set could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot fetch {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("{url} did not answer a JSON Web Key Set: {detail}")]
    Body { url: String, detail: String },
}

/// Fetches one key set, with a timeout and a size limit.
pub fn fetch_jwks(url: &str, timeout: Duration) -> Result<Jwks, FetchError> {
    use std::io::Read;
    let http = |detail: String| FetchError::Http { url: url.to_owned(), detail };
    let response =
        ureq::AgentBuilder::new().timeout(timeout).build().get(url).call().map_err(|e| http(e.to_string()))?;
    let mut body = Vec::new();
    response.into_reader().take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut body).map_err(|e| http(e.to_string()))?;
    Jwks::from_json(&body).map_err(|e| FetchError::Body { url: url.to_owned(), detail: e.to_string() })
}

/// A verifier for one server's tokens: the key set is fetched on first use and
/// cached; a token signed by a key the cache has not seen causes at most one
/// refetch per `min_refetch_interval_secs` (key rotation reaches verifiers that way).
pub struct JwksClient {
    url: String,
    timeout: Duration,
    cache: Mutex<JwksCache>,
}

impl JwksClient {
    pub fn new(url: impl Into<String>, policy: CachePolicy) -> Self {
        Self { url: url.into(), timeout: Duration::from_secs(5), cache: Mutex::new(JwksCache::new(policy)) }
    }

    /// Verifies a media token; `Err` only when no key set could ever be fetched.
    pub fn verify(&self, token: &str, options: &VerifyOptions<'_>) -> Result<Verdict, FetchError> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.verify(token, options, || fetch_jwks(&self.url, self.timeout))
    }
}
