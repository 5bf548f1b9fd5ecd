//! HTTP integration tests of temppass-http: one test binary (STYLE.md), every
//! request through `app(state)` with a SQLite store and a manual clock.

// An integration test is test code throughout, but clippy's allow-expect-in-tests
// covers only #[test] functions, not the helpers beside them (rust-clippy#13981).
#![allow(clippy::expect_used, reason = "test code")]

mod api;
mod concurrency;
mod cors;
mod dcr;
mod decisions;
mod demo;
mod errors;
mod hostile;
mod observe;
mod reset;
mod support;
mod tokens;
