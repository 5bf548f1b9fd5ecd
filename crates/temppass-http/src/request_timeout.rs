//! The request deadline (`limits.request_timeout`): a request that takes
//! longer is answered `internal_server_error` with action `retry` instead of
//! hanging.
//!
//! A tower layer of its own rather than `middleware::from_fn`: that clones
//! the rest of the stack and boxes two futures for every request, a share of
//! an authorize that `bench/load` can see. This one wraps the inner future
//! in `tokio::time::timeout`, which arms no timer when the answer is ready on
//! the first poll.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::Map;
use tokio::time::Timeout;
use tower::{Layer, Service};

use crate::error::{Action, ApiError, ErrorBody, ErrorCode};

#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestTimeoutLayer {
    pub(crate) timeout: Duration,
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout { inner, timeout: self.timeout }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

type Answered = Result<Response, Infallible>;
type Raced = Result<Answered, tokio::time::error::Elapsed>;

impl<S> Service<Request> for RequestTimeout<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Map<Timeout<S::Future>, fn(Raced) -> Answered>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        tokio::time::timeout(self.timeout, self.inner.call(request)).map(answer_or_retry as fn(Raced) -> Answered)
    }
}

fn answer_or_retry(raced: Raced) -> Answered {
    raced.unwrap_or_else(|_| {
        let body = ErrorBody::new(ErrorCode::InternalServerError).with_action(Action::Retry);
        tracing::warn!(trace = %body.trace, "request timed out");
        Ok(ApiError::from_body(body).into_response())
    })
}
