//! What every request and answer passes first and last (the outermost layer):
//! - a declared `Content-Length` over `limits.body_bytes` is answered 413
//!   `payload_too_large` at once, before any byte of the body is read;
//! - a body that has not fully arrived `server.body_timeout` after the
//!   request started ends with an error the handlers answer 408
//!   `request_timeout` (not 500 `retry`: the client, not the store, is slow);
//! - an error answer without a JSON body (an axum extractor's rejection, such
//!   as a path segment that is not UTF-8) gets the §5 body of its status, so
//!   no error answer is ever empty or `text/plain` — which is also what lets
//!   `listener::io` recognise hyper's own bodiless answers.
//!
//! A tower layer written to clone nothing per request, like `cors.rs`: a
//! request without a body and an answer with a success status pass through
//! with two header lookups.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::error::{ApiError, ErrorCode};

#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeLayer {
    pub(crate) body_bytes: usize,
    pub(crate) body_timeout: Duration,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge { inner, limits: *self }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Edge<S> {
    inner: S,
    limits: EdgeLayer,
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let declared = declared_length(request.headers());
        if declared.is_some_and(|length| length > self.limits.body_bytes as u64) {
            let refused = ApiError::with_details(
                ErrorCode::PayloadTooLarge,
                format!("the body is larger than {} bytes", self.limits.body_bytes),
            );
            return EdgeFuture::Refused { answer: Some(refused.into_response()) };
        }
        let has_body = declared.map_or_else(|| request.headers().contains_key(header::TRANSFER_ENCODING), |n| n > 0);
        let request = if has_body {
            let deadline = Instant::now() + self.limits.body_timeout;
            request.map(|body| Body::new(DeadlineBody { inner: body, deadline, sleep: None }))
        } else {
            request
        };
        EdgeFuture::Inner { future: self.inner.call(request) }
    }
}

pin_project_lite::pin_project! {
    #[project = EdgeProjection]
    pub(crate) enum EdgeFuture<F> {
        Refused { answer: Option<Response> },
        Inner { #[pin] future: F },
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EdgeProjection::Refused { answer } => Poll::Ready(Ok(answer
                .take()
                .unwrap_or_else(|| ApiError::new(ErrorCode::InternalServerError).into_response()))),
            EdgeProjection::Inner { future } => {
                let answer = ready!(future.poll(cx))?;
                Poll::Ready(Ok(with_json_error_body(answer)))
            }
        }
    }
}

/// An error answer keeps its status and gets the §5 body of it, unless it has a JSON body already.
fn with_json_error_body(answer: Response) -> Response {
    let status = answer.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return answer;
    }
    let is_json = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return answer;
    }
    // The body and its type are replaced; the other headers (CORS, `Allow`,
    // `WWW-Authenticate`) stay, so a browser can still read the answer.
    let (mut parts, _) = answer.into_parts();
    let (replaced, body) = ApiError::new(ErrorCode::for_status(status)).into_response().into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &replaced.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

/// The error a body ends with when `server.body_timeout` passed before its end.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub(crate) struct BodyTimedOut;

/// Whether a body could not be read because it timed out (see [`BodyTimedOut`]).
pub(crate) fn is_body_timeout(rejection: &BytesRejection) -> bool {
    let mut error: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(current) = error {
        if current.is::<BodyTimedOut>() {
            return true;
        }
        error = current.source();
    }
    false
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyTimedOut`] once its deadline passes. The
    /// timer is armed only when the body first makes the reader wait, so a
    /// body that came in one packet with its head costs no timer.
    struct DeadlineBody {
        #[pin]
        inner: Body,
        deadline: Instant,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        let timed_out = this.sleep.as_pin_mut().is_some_and(|sleep| sleep.poll(cx).is_ready());
        if timed_out { Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut)))) } else { Poll::Pending }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
