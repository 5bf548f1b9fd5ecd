//! The library half of the `temppass` binary: what the binary's commands
//! share and what tools outside it (the fuzz targets in `fuzz/`) must reach.
//! Everything else stays private to `main.rs`.

pub mod config;
