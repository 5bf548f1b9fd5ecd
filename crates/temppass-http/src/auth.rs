//! Bearer checks (SPEC.md §5, §6): token first, then the service provider and its binding.

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

/// A valid, unexpired token of an application that is not revoked, or the reason why not.
pub(crate) async fn grant(state: &AppState, headers: &HeaderMap) -> Result<Option<AccessGrant>, ApiError> {
    let Some(token) = bearer(headers) else {
        return Ok(None);
    };
    let hash = secret_hash(token);
    let grant = state.store_call(state.store().find_access_grant(&hash)).await?;
    let now = state.now();
    Ok(grant.filter(|g| now < g.token.expires_at && g.application.revoked_at.is_none()))
}

/// The checks every `/api/v2` call starts with, in the order of SPEC.md §5.
pub(crate) async fn api_call<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    service_provider: &str,
) -> Result<(usize, &'s ServiceProvider), ApiError> {
    let grant = grant(state, headers).await?;
    let grant = grant
        .filter(|g| g.token.scopes.iter().any(|s| s == SCOPE_API))
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidAccessTokenClientApplication))?;
    let (index, sp) = state
        .service_provider(service_provider)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidParameterServiceProvider))?;
    if !grant.application.service_providers.contains(&sp.id) {
        return Err(ApiError::new(ErrorCode::InvalidAccessTokenServiceProvider));
    }
    Ok((index, sp))
}
