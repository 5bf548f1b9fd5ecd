//! The reset API (SPEC.md §7): start trials over for one device or identity, or all of them.
//!
//! Checks, in order: credentials (401, then 403 for a revoked application or a
//! token without `temporary:passes:owner`), parameters (400), then the
//! binding of the credentials to the service provider (403). The store does
//! the reset; "all" costs one generation bump whatever the number of trials.

use axum::extract::{MatchedPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use temppass_core::{DeviceId, IdentityHash, MvpdId, Rule, RuleScope};

use crate::auth::{Bearer, SCOPE_RESET, bearer_grant, secret_hash};
use crate::error::{ApiError, ErrorCode};
use crate::settings::{MvpdRef, ServiceProvider};
use crate::state::AppState;

/// The legacy reset API's credential header (seed 000).
const API_KEY_HEADER: &str = "apikey";

/// Query parameters; anything else (`appId`, `deviceUser`, `environment` from older clients) is ignored.
#[derive(Debug, Default, Deserialize)]
struct ResetQuery {
    requestor_id: Option<String>,
    mvpd_id: Option<String>,
    device_id: Option<String>,
    key: Option<String>,
}

fn parse_query(query: Option<&str>) -> Result<ResetQuery, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::with_details(ErrorCode::InvalidParameterServiceProvider, "the query is malformed"))
}

/// The service provider and TempPass scope named by `requestor_id` and `mvpd_id`.
fn scope<'s>(state: &'s AppState, query: &ResetQuery) -> Result<(&'s ServiceProvider, RuleScope, &'s Rule), ApiError> {
    let requestor = query.requestor_id.as_deref().filter(|r| !r.is_empty()).ok_or_else(|| {
        ApiError::with_details(ErrorCode::InvalidParameterServiceProvider, "requestor_id is required")
    })?;
    let (_, sp) = state.service_provider(requestor).ok_or_else(|| {
        ApiError::with_details(
            ErrorCode::InvalidParameterServiceProvider,
            "requestor_id is not a known service provider",
        )
    })?;
    let raw_mvpd = query.mvpd_id.as_deref().unwrap_or("");
    let mvpd = MvpdId::parse(raw_mvpd)
        .map_err(|e| ApiError::with_details(ErrorCode::InvalidParameterMvpd, format!("mvpd_id {e}")))?;
    match sp.mvpd(&mvpd) {
        Some(MvpdRef::TempPass(temppass)) => Ok((sp, sp.scope(&mvpd), &temppass.rule)),
        _ => Err(ApiError::with_details(
            ErrorCode::InvalidIntegration,
            format!("{mvpd} is not a TempPass MVPD of {}", sp.id),
        )),
    }
}

/// `None` means every key: the parameter is absent, empty or `all`.
fn one_or_all(raw: Option<&str>) -> Option<&str> {
    raw.filter(|value| !value.is_empty() && *value != "all")
}

fn device(query: &ResetQuery) -> Result<Option<DeviceId>, ApiError> {
    one_or_all(query.device_id.as_deref())
        .map(|raw| {
            DeviceId::parse(raw)
                .map_err(|e| ApiError::with_details(ErrorCode::InvalidParameterDeviceId, format!("device_id {e}")))
        })
        .transpose()
}

fn identity(query: &ResetQuery) -> Result<Option<IdentityHash>, ApiError> {
    one_or_all(query.key.as_deref())
        .map(|raw| {
            IdentityHash::from_value(raw)
                .map_err(|e| ApiError::with_details(ErrorCode::InvalidParameterKey, format!("key: {e}")))
        })
        .transpose()
}

/// The bearer checks of the reset API; returns the service providers the application may reset.
async fn reset_grant(state: &AppState, headers: &HeaderMap) -> Result<Vec<temppass_core::ServiceProviderId>, ApiError> {
    match bearer_grant(state, headers).await? {
        Bearer::Invalid => Err(ApiError::new(ErrorCode::InvalidAccessTokenClientApplication)),
        Bearer::Revoked => {
            Err(ApiError::with_details(ErrorCode::ResetNotPermitted, "the token's application was revoked"))
        }
        Bearer::Valid(grant) if !grant.token.scopes.iter().any(|s| s == SCOPE_RESET) => Err(ApiError::with_details(
            ErrorCode::ResetNotPermitted,
            format!("the token lacks the {SCOPE_RESET} scope"),
        )),
        Bearer::Valid(grant) => Ok(grant.application.service_providers.clone()),
    }
}

fn not_bound(sp: &ServiceProvider) -> ApiError {
    ApiError::with_details(ErrorCode::ResetNotPermitted, format!("the credentials are not bound to {}", sp.id))
}

/// What a reset removes: device or identity bindings, of one key or all (`None`).
enum Target {
    Devices(Option<DeviceId>),
    Identities(Option<IdentityHash>),
}

#[derive(Clone, Copy)]
enum KeyKind {
    Device,
    Identity,
}

fn target(query: &ResetQuery, kind: KeyKind) -> Result<Target, ApiError> {
    Ok(match kind {
        KeyKind::Device => Target::Devices(device(query)?),
        KeyKind::Identity => Target::Identities(identity(query)?),
    })
}

/// Which reset API a route is, for the metrics and events: `v3`, `v2.1` or `v2`.
fn api(route: &MatchedPath) -> &'static str {
    match route.as_str() {
        path if path.starts_with("/reset-tempass/v3/") => "v3",
        path if path.starts_with("/reset-tempass/v2.1/") => "v2.1",
        _ => "v2",
    }
}

async fn apply(state: &AppState, reset: Reset<'_>, target: Target) -> Result<StatusCode, ApiError> {
    let (one, key_kind) = match &target {
        Target::Devices(device) => (device.is_some(), "device"),
        Target::Identities(identity) => (identity.is_some(), "identity"),
    };
    match target {
        Target::Devices(device) => state.store_call(state.store().reset_devices(reset.scope, device.as_ref())).await?,
        Target::Identities(identity) => {
            state.store_call(state.store().reset_identities(reset.scope, identity.as_ref())).await?
        }
    }
    state.observer().reset(reset.scope, reset.rule, api(reset.route), one, key_kind, state.now());
    Ok(StatusCode::NO_CONTENT)
}

/// The rule a reset applies to, and the route it came by.
#[derive(Clone, Copy)]
struct Reset<'a> {
    scope: &'a RuleScope,
    rule: &'a Rule,
    route: &'a MatchedPath,
}

/// The bearer-token reset of v3 and v2.1, in the order of checks of this module.
async fn bearer_reset(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    kind: KeyKind,
    route: &MatchedPath,
) -> Result<StatusCode, ApiError> {
    let allowed = reset_grant(state, headers).await?;
    let query = parse_query(query)?;
    let (sp, scope, rule) = scope(state, &query)?;
    let target = target(&query, kind)?;
    if !allowed.contains(&sp.id) {
        return Err(not_bound(sp));
    }
    apply(state, Reset { scope: &scope, rule, route }, target).await
}

/// `DELETE /reset-tempass/v3/reset` (and `/v2.1/reset`): device bindings.
pub(crate) async fn reset_devices(
    State(state): State<AppState>,
    route: MatchedPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    bearer_reset(&state, query.as_deref(), &headers, KeyKind::Device, &route).await
}

/// `DELETE /reset-tempass/v3/reset/generic` (and `/v2.1/reset/generic`): identity bindings.
pub(crate) async fn reset_identities(
    State(state): State<AppState>,
    route: MatchedPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    bearer_reset(&state, query.as_deref(), &headers, KeyKind::Identity, &route).await
}

/// `DELETE /reset-tempass/v2/reset` with an `ApiKey` header (seed 000): device bindings.
pub(crate) async fn reset_devices_with_api_key(
    State(state): State<AppState>,
    route: MatchedPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let key = headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 512)
        .ok_or_else(|| ApiError::new(ErrorCode::ApiKeyMissing))?
        .to_owned();
    let query = parse_query(query.as_deref())?;
    let (sp, scope, rule) = scope(&state, &query)?;
    let target = target(&query, KeyKind::Device)?;
    let api_key = state.store_call(state.store().find_api_key(&secret_hash(&key))).await?;
    match api_key {
        Some(api_key) if api_key.revoked_at.is_none() && api_key.service_provider == sp.id => {}
        _ => {
            return Err(ApiError::with_details(
                ErrorCode::ResetNotPermitted,
                "the API key is unknown, revoked or of another service provider",
            ));
        }
    }
    apply(&state, Reset { scope: &scope, rule, route: &route }, target).await
}
