//! HTTP integration tests of temppass-http: one test binary (STYLE.md), every
//! request through `app(state)` with a SQLite store and a manual clock.

mod api;
mod concurrency;
mod cors;
mod dcr;
mod decisions;
mod demo;
mod errors;
mod hostile;
mod reset;
mod support;
mod tokens;
