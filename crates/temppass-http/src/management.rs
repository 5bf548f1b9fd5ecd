//! The management listener's router (`server.management_listen`): what a
//! scraper, an orchestrator and a dashboard call, on a socket of its own that
//! the public listener never routes to.
//!
//! - `GET /metrics`: every metric, OpenMetrics text (`docs/operating.md`);
//! - `GET /health/live`: the process answers;
//! - `GET /health/ready`: the store answered a read within `storage.timeout`;
//! - `GET /stats?since=YYYY-MM-DD&service_provider=ID`: the daily figures as JSON.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use temppass_core::{Day, ServiceProviderId};
use temppass_store::{DailyFigures, FiguresQuery};

use crate::error::{ApiError, ErrorCode, json_response};
use crate::state::AppState;

/// The management API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/stats", get(stats))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound) })
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(metrics) = state.observer().metrics() else {
        return ApiError::with_details(ErrorCode::NotFound, "metrics are off").into_response();
    };
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn live() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "live" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.store().signing_keys().await {
        Ok(_) => json_response(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
        Err(error) => {
            tracing::warn!(%error, "not ready: the store did not answer");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "unavailable", "reason": "the store did not answer within storage.timeout" }),
            )
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    since: Option<String>,
    service_provider: Option<String>,
}

/// Parses `since` and `service_provider`; a bad value is a 400 naming it.
pub fn figures_query(since: Option<&str>, service_provider: Option<&str>) -> Result<FiguresQuery, String> {
    let since = since.map(Day::parse).transpose().map_err(|e| format!("since: {e}"))?;
    let service_provider =
        service_provider.map(ServiceProviderId::parse).transpose().map_err(|e| format!("service_provider {e}"))?;
    Ok(FiguresQuery { since, service_provider })
}

/// One row of `/stats` and of `temppass stats --json`.
pub fn figures_json(rows: &[DailyFigures]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "service_provider": row.service_provider.as_str(),
                "mvpd": row.mvpd.as_str(),
                "day": row.day.to_string(),
                "trials_started": row.counts.trials_started,
                "trials_ended": row.counts.trials_ended,
                "trials_exhausted": row.counts.trials_exhausted,
                "resources_used": row.counts.resources_used,
                "resets": row.counts.resets,
            })
        })
        .collect();
    serde_json::json!({ "figures": rows })
}

async fn stats(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let query: StatsQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::with_details(ErrorCode::BadRequest, format!("the query is malformed: {e}")))?;
    let query = figures_query(query.since.as_deref(), query.service_provider.as_deref())
        .map_err(|details| ApiError::with_details(ErrorCode::BadRequest, details))?;
    let rows = state.store_call(state.store().figures(&query)).await?;
    Ok(json_response(StatusCode::OK, &figures_json(&rows)))
}
