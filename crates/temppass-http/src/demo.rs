//! The demo pages (SPEC.md §11), embedded in the binary: `/demo/` when `[demo] enabled = true`.
//!
//! The pages are plain HTML that use only the web SDK (`web/dist/temppass.js`,
//! committed so a fresh clone builds without npm). `demo-config.json` hands them
//! the software statement of the demo application the server registered at start-up.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;

use crate::error::{ApiError, ErrorCode, json_response};
use crate::state::AppState;

/// What the demo pages need from the server.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    pub service_provider: temppass_core::ServiceProviderId,
    pub software_statement: String,
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file served under `/demo/`, by name.
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("../../../web/demo/index.html")),
    ("auto-login.html", HTML, include_str!("../../../web/demo/auto-login.html")),
    ("picker.html", HTML, include_str!("../../../web/demo/picker.html")),
    ("multi-temppass.html", HTML, include_str!("../../../web/demo/multi-temppass.html")),
    ("promotional.html", HTML, include_str!("../../../web/demo/promotional.html")),
    ("demo.css", CSS, include_str!("../../../web/demo/demo.css")),
    ("common.js", JAVASCRIPT, include_str!("../../../web/demo/common.js")),
    ("temppass.js", JAVASCRIPT, include_str!("../../../web/dist/temppass.js")),
];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route("/demo/", get(|| async { file("index.html") }))
        .route("/demo/demo-config.json", get(config))
        .route("/demo/{name}", get(|Path(name): Path<String>| async move { file(&name) }))
}

fn file(name: &str) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => {
            let mut response = (StatusCode::OK, *body).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => ApiError::new(ErrorCode::NotFound).into_response(),
    }
}

async fn config(State(state): State<AppState>) -> Response {
    match &state.settings().demo {
        Some(demo) => json_response(
            StatusCode::OK,
            &json!({
                "softwareStatement": demo.software_statement,
                "serviceProvider": demo.service_provider.as_str(),
            }),
        ),
        None => ApiError::new(ErrorCode::NotFound).into_response(),
    }
}
