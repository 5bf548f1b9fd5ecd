//! End-to-end tests of the `temppass` binary: real processes, real sockets, a real SQLite file
//! (and a real PostgreSQL database when `TEMPPASS_TEST_POSTGRES_URL` is set).

mod cli;
mod exposure;
mod faults;
mod postgres;
mod restart;
mod support;
mod verify;
