//! End-to-end tests of the `temppass` binary: real processes, real sockets, a real SQLite file.

mod cli;
mod restart;
mod support;
mod verify;
