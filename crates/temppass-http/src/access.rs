//! The access log and the request histogram: one line per request at info
//! under the `temppass::access` target (method, route template, status,
//! duration, §5 code of an error, tracking id, request id) and one
//! observation of `temppass_http_server_request_duration_seconds`.
//!
//! A layer inside the router (`Router::layer`), so it sees the route
//! template (`MatchedPath`), never the raw path with its ids. The device
//! appears only as its tracking id. The request id is the client's
//! `X-Request-Id` when it is a short token, else a new one; the response
//! carries it back. A tower layer of its own, for the reason given in
//! `request_timeout.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use temppass_observe::{Metrics, tracking_id};
use tower::{Layer, Service};

use crate::error::ErrorTag;

const REQUEST_ID: &str = "x-request-id";
/// The route label of a request no route matched (a 404 or 405).
const UNMATCHED: &str = "unmatched";

#[derive(Clone)]
pub(crate) struct AccessLayer {
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Access { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Access<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

/// A client's request id is kept when it is 1 to 64 characters of `[A-Za-z0-9._-]`.
fn client_request_id(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let fits = (1..=64).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    fits.then(|| value.clone())
}

fn new_request_id() -> HeaderValue {
    let id = format!("{:016x}", rand::random::<u64>());
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

impl<S> Service<Request> for Access<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let seen = Seen {
            started: Instant::now(),
            method: request.method().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
            device: request.headers().get(crate::headers::DEVICE_IDENTIFIER).cloned(),
            request_id: request.headers().get(REQUEST_ID).and_then(client_request_id).unwrap_or_else(new_request_id),
            metrics: self.metrics.clone(),
        };
        AccessFuture { inner: self.inner.call(request), seen: Some(seen) }
    }
}

/// What the layer noted of a request before it ran.
struct Seen {
    started: Instant,
    method: Method,
    route: Option<MatchedPath>,
    device: Option<HeaderValue>,
    request_id: HeaderValue,
    metrics: Option<Arc<Metrics>>,
}

impl Seen {
    fn answered(self, response: &mut Response) {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let route = self.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
        let tag = response.extensions().get::<ErrorTag>().copied();
        if let Some(metrics) = &self.metrics {
            metrics.request(route, status, elapsed);
            if let Some(ErrorTag { code, auth_failure: true }) = tag {
                metrics.auth_failure(code);
            }
        }
        tracing::info!(
            target: "temppass::access",
            method = %self.method,
            route,
            status,
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            code = tag.map(|tag| tag.code),
            tracking_id = self.device.as_ref().and_then(device_tracking_id),
            request_id = self.request_id.to_str().unwrap_or(""),
            "request"
        );
        response.headers_mut().insert(REQUEST_ID, self.request_id);
    }
}

/// The tracking id of the device an `AP-Device-Identifier` names, when it parses.
fn device_tracking_id(value: &HeaderValue) -> Option<String> {
    crate::headers::device_id_of(value).ok().map(|device| tracking_id(device.as_str()))
}

pin_project_lite::pin_project! {
    pub(crate) struct AccessFuture<F> {
        #[pin]
        inner: F,
        seen: Option<Seen>,
    }
}

impl<F> Future for AccessFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(mut response)) => {
                if let Some(seen) = this.seen.take() {
                    seen.answered(&mut response);
                }
                Poll::Ready(Ok(response))
            }
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Poll::Pending,
        }
    }
}
