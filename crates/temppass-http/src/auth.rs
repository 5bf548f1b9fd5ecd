//! Bearer checks (SPEC.md §5, §6): token first, then the service provider and its binding.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use temppass_store::AccessGrant;

use crate::error::{ApiError, ErrorCode};
use crate::settings::ServiceProvider;
use crate::state::AppState;

/// The scope of REST API V2 calls.
pub const SCOPE_API: &str = "api:client:v2";
/// The scope of the reset API.
pub const SCOPE_RESET: &str = "temporary:passes:owner";
/// Every scope an application may hold.
pub const SCOPES: &[&str] = &[SCOPE_API, SCOPE_RESET];

/// Secrets, access tokens and API keys are random 256-bit values, so a plain
/// SHA-256 is enough to make a leaked table useless (no password stretching needed).
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The bearer token of the `Authorization` header, if well formed.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 512).then_some(token)
}

/// What the `Authorization` header amounts to.
pub(crate) enum Bearer {
    /// No header, another scheme, or an unknown or expired token.
    Invalid,
    /// A known, unexpired token whose application was revoked.
    Revoked,
    Valid(Arc<AccessGrant>),
}

pub(crate) async fn bearer_grant(state: &AppState, headers: &HeaderMap) -> Result<Bearer, ApiError> {
    let Some(token) = bearer(headers) else {
        return Ok(Bearer::Invalid);
    };
    let hash = secret_hash(token);
    let now = state.now();
    let cache = state.grant_cache();
    let grant = match cache.and_then(|cache| cache.get(&hash, now)) {
        Some(grant) => Some(grant),
        None => {
            let found = state.store_call(state.store().find_access_grant(&hash)).await?.map(Arc::new);
            if let (Some(cache), Some(grant)) = (cache, &found) {
                cache.put(&hash, Arc::clone(grant), now);
            }
            found
        }
    };
    Ok(match grant {
        Some(grant) if now < grant.token.expires_at => {
            if grant.application.revoked_at.is_some() {
                Bearer::Revoked
            } else {
                Bearer::Valid(grant)
            }
        }
        _ => Bearer::Invalid,
    })
}

/// The checks every `/api/v2` call starts with, in the order of SPEC.md §5.
pub(crate) async fn api_call<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    service_provider: &str,
) -> Result<(usize, &'s ServiceProvider), ApiError> {
    let grant = match bearer_grant(state, headers).await? {
        Bearer::Valid(grant) if grant.token.scopes.iter().any(|s| s == SCOPE_API) => grant,
        _ => return Err(ApiError::new(ErrorCode::InvalidAccessTokenClientApplication)),
    };
    let (index, sp) = state
        .service_provider(service_provider)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidParameterServiceProvider))?;
    if !grant.application.service_providers.contains(&sp.id) {
        return Err(ApiError::new(ErrorCode::InvalidAccessTokenServiceProvider));
    }
    if crate::headers::device_info_is_malformed(headers) {
        let count = state.count_malformed_device_info();
        tracing::debug!(count, "X-Device-Info is not base64 of a JSON object; ignored");
    }
    Ok((index, sp))
}
