//! The configuration of what an operator sees: `server.management_listen`,
//! `[events]` and `[log]` (docs/operating.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use serde::Deserialize;
use temppass_observe::EventSettings;

/// The management listener's default: loopback only, the port of
/// OpenTelemetry's Prometheus exporter.
pub(super) fn default_management_listen() -> String {
    "127.0.0.1:9464".into()
}

/// `server.management_listen`: an address, or `""` for none.
pub(super) fn management_listen(raw: &str) -> anyhow::Result<Option<SocketAddr>> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse().map(Some).map_err(|_| {
        anyhow!("server.management_listen: {raw:?} is not an address such as \"127.0.0.1:9464\" (or \"\" for none)")
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsSection {
    /// A JSON-lines file; relative paths are resolved as `storage.url`'s.
    file: Option<String>,
    #[serde(default = "default_file_max_bytes")]
    file_max_bytes: i64,
    #[serde(default = "default_file_keep")]
    file_keep: i64,
    /// Also log each event under the `temppass::events` target.
    #[serde(default)]
    log: bool,
    #[serde(default = "default_queue")]
    queue: i64,
}

impl Default for EventsSection {
    fn default() -> Self {
        Self {
            file: None,
            file_max_bytes: default_file_max_bytes(),
            file_keep: default_file_keep(),
            log: false,
            queue: default_queue(),
        }
    }
}

fn default_file_max_bytes() -> i64 {
    EventSettings::default().file_max_bytes as i64
}

fn default_file_keep() -> i64 {
    i64::from(EventSettings::default().file_keep)
}

fn default_queue() -> i64 {
    EventSettings::default().queue as i64
}

pub(super) fn events(section: &EventsSection) -> anyhow::Result<EventSettings> {
    let file = match section.file.as_deref() {
        None | Some("") => None,
        Some(path) => Some(PathBuf::from(path)),
    };
    let file_max_bytes = section.file_max_bytes;
    if !(4096..=1 << 40).contains(&file_max_bytes) {
        bail!("events.file_max_bytes: {file_max_bytes} is outside 4096..=1099511627776");
    }
    if !(0..=1000).contains(&section.file_keep) {
        bail!("events.file_keep: {} is outside 0..=1000", section.file_keep);
    }
    if !(1..=10_000_000).contains(&section.queue) {
        bail!("events.queue: {} is outside 1..=10000000", section.queue);
    }
    Ok(EventSettings {
        file,
        file_max_bytes: file_max_bytes as u64,
        file_keep: section.file_keep as u32,
        log: section.log,
        queue: section.queue as usize,
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogSection {
    format: Option<String>,
}

/// `log.format`; `TEMPPASS_LOG_FORMAT` (read by `serve` before the file) wins.
pub(super) fn log_format(section: &LogSection) -> anyhow::Result<LogFormat> {
    parse_log_format("log.format", section.format.as_deref().unwrap_or("text"))
}

pub fn parse_log_format(field: &str, raw: &str) -> anyhow::Result<LogFormat> {
    match raw {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => bail!("{field}: {other:?} is not a log format: use \"text\" or \"json\""),
    }
}
