//! The HTTP face of temppass: REST API V2 for TempPass, dynamic client
//! registration, the JWKS, and the one mapping from errors to HTTP.
//!
//! `app(state)` builds the whole router without a socket, so tests drive it
//! with `tower::ServiceExt::oneshot`; the binary serves it.

mod access;
mod api;
pub mod auth;
pub mod clock;
mod cors;
mod dcr;
mod demo;
mod edge;
pub mod error;
mod grant_cache;
pub mod headers;
pub mod listener;
pub mod management;
pub mod observe;
mod request_timeout;
mod reset;
pub mod settings;
mod state;
mod wire;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};

pub use api::decision_resources;
pub use dcr::{issue_software_statement, random_secret, verify_software_statement};
pub use demo::DemoSettings;
pub use state::{AppState, KEY_ADOPTION_MS, KEY_SIGNING_DELAY_MS, KeySet, load_or_create_keys};

use crate::error::{ApiError, ErrorCode, json_bytes_response, json_response};

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let limits = state.settings().limits.clone();
    let timeout = request_timeout::RequestTimeoutLayer { timeout: limits.request_timeout };
    // What a browser may call (SPEC.md §11); the reset API is for back ends.
    // Whole paths, not `nest("/api/v2", …)`: a nested router rebuilds every
    // request's URI, a measurable share of an authorize.
    let browser = Router::new()
        .route("/api/v2/{sp}/configuration", get(api::configuration))
        .route("/api/v2/{sp}/sessions", post(api::create_session))
        .route("/api/v2/{sp}/sessions/{code}", get(api::session_status).post(api::resume_session))
        .route("/api/v2/{sp}/profiles", get(api::all_profiles))
        .route("/api/v2/{sp}/profiles/{mvpd}", get(api::mvpd_profile))
        .route("/api/v2/{sp}/profiles/code/{code}", get(api::code_profile))
        .route("/api/v2/{sp}/decisions/authorize/{mvpd}", post(api::authorize))
        .route("/api/v2/{sp}/decisions/preauthorize/{mvpd}", post(api::preauthorize))
        .route("/api/v2/{sp}/logout/{mvpd}", get(api::logout))
        .route("/api/v2/{sp}/profiles/", get(api::missing_mvpd))
        .route("/api/v2/{sp}/decisions/authorize/", post(api::missing_mvpd))
        .route("/api/v2/{sp}/decisions/preauthorize/", post(api::missing_mvpd))
        .route("/api/v2/{sp}/logout/", get(api::missing_mvpd))
        .route("/o/client/register", post(dcr::register))
        .route("/o/client/token", post(dcr::token))
        .route("/.well-known/jwks.json", get(jwks))
        // Before the CORS layer, so a preflight is answered by CORS, not as a 405.
        .method_not_allowed_fallback(method_not_allowed)
        // Inside CORS, so a browser can read the `retry` of a request that timed out.
        .layer(timeout)
        .layer(cors::layer(state.settings()));
    let demo = if state.settings().demo.is_some() { demo::routes() } else { Router::new() };
    let back_end = Router::new()
        .merge(demo)
        .route("/reset-tempass/v3/reset", delete(reset::reset_devices))
        .route("/reset-tempass/v3/reset/generic", delete(reset::reset_identities))
        .route("/reset-tempass/v2.1/reset", delete(reset::reset_devices))
        .route("/reset-tempass/v2.1/reset/generic", delete(reset::reset_identities))
        .route("/reset-tempass/v2/reset", delete(reset::reset_devices_with_api_key))
        .route("/health", get(health))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(timeout);
    Router::new()
        .merge(browser)
        .merge(back_end)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        // A body over the limit is refused before it is read, and every
        // error answer leaves with a §5 body.
        .layer(edge::EdgeLayer { body_bytes: limits.body_bytes, body_timeout: limits.body_timeout })
        // Outermost, so it logs and times the answer as it leaves; inside
        // the router, so it sees the route template.
        .layer(access::AccessLayer { metrics: state.observer().metrics().cloned() })
        .with_state(state)
}

/// Re-read from the store at most once a second, so a key added by `temppass
/// key rotate` is published by every server at once (SPEC.md §10) — well before
/// any server signs with it; if the store cannot be read, the keys this server
/// already holds are served.
async fn jwks(State(state): State<AppState>) -> Response {
    if let Err(error) = state.reload_keys_if_older_than(1_000).await {
        tracing::warn!(%error, "cannot re-read signing keys for the JWKS; serving the ones in memory");
    }
    json_bytes_response(StatusCode::OK, state.keys().jwks_json.clone())
}

/// The cheapest endpoint: no store, no signature. Load tests compare against it.
async fn health() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed)
}
