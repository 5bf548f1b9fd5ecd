//! The log: to stderr through `tracing-appender`'s non-blocking writer (a
//! request never waits for the terminal or the disk; past its buffer lines
//! are dropped, not waited for), as text — coloured only when stderr is a
//! terminal — or JSON (`log.format = "json"` or `TEMPPASS_LOG_FORMAT=json`).
//! The level is `RUST_LOG` (default `info`); the access log is the
//! `temppass::access` target, the tracking events `temppass::events`.

use std::io::IsTerminal;

use temppass::config::{LogFormat, parse_log_format};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// `TEMPPASS_LOG_FORMAT` wins over the configuration file.
pub(crate) fn format(configured: LogFormat) -> anyhow::Result<LogFormat> {
    match std::env::var("TEMPPASS_LOG_FORMAT") {
        Ok(raw) if !raw.is_empty() => parse_log_format("TEMPPASS_LOG_FORMAT (environment)", &raw),
        _ => Ok(configured),
    }
}

/// The target of the one start-up line (configuration, store, listeners):
/// at info whatever `RUST_LOG` says, unless `RUST_LOG` names it.
pub(crate) const STARTUP: &str = "temppass::startup";

/// Installs the subscriber; the guard flushes the lines still buffered when dropped.
pub(crate) fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let named = std::env::var("RUST_LOG").is_ok_and(|directives| directives.contains(STARTUP));
    if let (false, Ok(directive)) = (named, format!("{STARTUP}=info").parse()) {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    guard
}
