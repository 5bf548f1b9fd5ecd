//! End-to-end tests of the `temppass` binary: real processes, real sockets, a real SQLite file
//! (and a real PostgreSQL database when `TEMPPASS_TEST_POSTGRES_URL` is set).

// An integration test is test code throughout, but clippy's allow-expect-in-tests
// covers only #[test] functions, not the helpers beside them (rust-clippy#13981).
#![allow(clippy::expect_used, reason = "test code")]

mod cli;
mod exposure;
mod faults;
mod observe;
mod postgres;
mod restart;
mod support;
mod verify;
