//! What the commands print. A command's result — a software statement, an
//! API key — goes alone to stdout, so `$(…)` and `| head -1` get exactly it;
//! everything else goes to stderr. A stdout closed early (`| head`) ends the
//! command quietly with status 141, as a Unix tool killed by SIGPIPE does,
//! instead of a panic.

use std::io::Write;

use temppass::config::{Config, StorageUrl};

/// The reader of stdout went away before the result was written.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub(crate) struct ClosedPipe;

/// Writes the command's result, one line (or lines), to stdout, in one write.
pub(crate) fn result(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(format!("{line}\n").as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Err(ClosedPipe.into()),
        Err(error) => Err(anyhow::Error::new(error).context("cannot write to stdout")),
    }
}

/// A line for the person at the terminal, on stderr; never fails the command.
pub(crate) fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Says which configuration and which store a command uses.
pub(crate) fn announce(config: &Config) {
    note(&format!("configuration: {}", config.origin));
    note(&format!("store: {}", describe_store(&config.storage)));
}

pub(crate) fn describe_store(storage: &StorageUrl) -> String {
    match storage {
        StorageUrl::Sqlite(path) => format!("SQLite {}", path.display()),
        StorageUrl::Postgres(url) => format!("PostgreSQL {}", url.redacted()),
    }
}
