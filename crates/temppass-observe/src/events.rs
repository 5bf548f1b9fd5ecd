//! Tracking events: one JSON object per decision, reset, registration,
//! access token and admin change, for the programmer's analytics.
//!
//! A handler builds an [`Event`] and hands it to [`EventSink::emit`], which
//! never blocks and never fails: the event goes into a bounded queue, and one
//! thread serialises it and writes it to the JSON-lines file (rotated by size)
//! and/or to the `temppass::events` tracing target. When the queue is full
//! the event is dropped and counted (`temppass_events_dropped_total`); a
//! failed write is counted (`temppass_event_sink_errors_total`) and logged.
//!
//! No event carries a device id, an identity or its hash, or a token: the
//! device appears as its tracking id, the trial as the `sid` of its media
//! tokens, an identity only as whether one was present.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::Metrics;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Decision,
    Reset,
    Registration,
    AccessToken,
    AdminChange,
}

/// One tracking event; fields that do not apply are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mvpd: Option<String>,
    /// `basic` or `promotional`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// `authorize` or `preauthorize` for a decision; the API (`v3`, `v2.1`, `v2`) for a reset;
    /// the command for an admin change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `permit` or `deny` for a decision; `ok` for the rest.
    pub outcome: &'static str,
    /// The §5 code of a deny.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Hex SHA-256 of the device id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<String>,
    /// The trial as its media tokens' `sid` (a hash of the trial id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<String>,
    /// Promotional rules: whether the request carried an identity (never the identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_present: Option<bool>,
    /// This decision started the trial.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub trial_started: bool,
    /// A reset's scope (`one` or `all`) and key kind (`device` or `identity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_kind: Option<&'static str>,
    /// An admin change's subject: an application name, a key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Event {
    /// An event of `event_type` at `time` with `outcome`, every other field empty.
    pub fn new(event_type: EventType, time: String, outcome: &'static str) -> Self {
        Self {
            time,
            event_type,
            service_provider: None,
            mvpd: None,
            rule: None,
            action: None,
            resource: None,
            outcome,
            code: None,
            tracking_id: None,
            trial: None,
            identity_present: None,
            trial_started: false,
            scope: None,
            key_kind: None,
            subject: None,
        }
    }
}

/// Where events go (`[events]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    /// A JSON-lines file, appended to; `None`: no file.
    pub file: Option<PathBuf>,
    /// Past this size the file is renamed `<file>.1` (and `.1` to `.2`, …) and a new one begun.
    pub file_max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub file_keep: u32,
    /// Also log each event at info under the `temppass::events` target.
    pub log: bool,
    /// Events waiting for the writer thread; past it they are dropped and counted.
    pub queue: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self { file: None, file_max_bytes: 100 * 1024 * 1024, file_keep: 5, log: false, queue: 65_536 }
    }
}

impl EventSettings {
    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.log
    }
}

/// The file cannot be opened for appending.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the event file {path}: {source}")]
pub struct EventFileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

enum Message {
    Event(Box<Event>),
    /// Write everything queued before, then answer.
    Flush(mpsc::Sender<()>),
}

/// The queue to the event writer thread; cheap to share.
pub struct EventSink {
    queue: Option<SyncSender<Message>>,
    metrics: Option<Arc<Metrics>>,
    _thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink").field("enabled", &self.queue.is_some()).finish()
    }
}

impl EventSink {
    /// A sink that keeps nothing.
    pub fn disabled() -> Self {
        Self { queue: None, metrics: None, _thread: None }
    }

    /// Opens the file (an error here stops start-up) and starts the writer thread.
    pub fn start(settings: &EventSettings, metrics: Option<Arc<Metrics>>) -> Result<Self, EventFileError> {
        if !settings.enabled() {
            return Ok(Self::disabled());
        }
        let file = match &settings.file {
            Some(path) => Some(RotatingFile::open(path, settings.file_max_bytes, settings.file_keep)?),
            None => None,
        };
        let (queue, receiver) = mpsc::sync_channel(settings.queue.max(1));
        let writer = Writer { file, log: settings.log, metrics: metrics.clone() };
        let thread = std::thread::Builder::new()
            .name("temppass-events".into())
            .spawn(move || writer.run(&receiver))
            .map_err(|source| EventFileError { path: PathBuf::from("(event writer thread)"), source })?;
        Ok(Self { queue: Some(queue), metrics, _thread: Some(thread) })
    }

    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues `event`; never waits. A full queue drops it and counts it.
    pub fn emit(&self, event: Event) {
        let Some(queue) = &self.queue else { return };
        let refused = matches!(
            queue.try_send(Message::Event(Box::new(event))),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
        );
        if let (true, Some(metrics)) = (refused, &self.metrics) {
            metrics.event_dropped();
        }
    }

    /// Waits, at most `timeout`, until every event queued so far is written
    /// and flushed (at shutdown, and in tests).
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(queue) = &self.queue else { return true };
        let (done, wait) = mpsc::channel();
        if queue.send(Message::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }
}

struct Writer {
    file: Option<RotatingFile>,
    log: bool,
    metrics: Option<Arc<Metrics>>,
}

impl Writer {
    fn run(mut self, queue: &Receiver<Message>) {
        let mut failing = false;
        while let Ok(message) = queue.recv() {
            let mut next = Some(message);
            while let Some(message) = next.take() {
                match message {
                    Message::Event(event) => self.write(&event, &mut failing),
                    Message::Flush(done) => {
                        self.flush(&mut failing);
                        let _ = done.send(());
                    }
                }
                next = queue.try_recv().ok();
            }
            // The queue is empty: what was written reaches the file now.
            self.flush(&mut failing);
        }
        self.flush(&mut failing);
    }

    fn write(&mut self, event: &Event, failing: &mut bool) {
        let Ok(line) = serde_json::to_string(event) else { return };
        if self.log {
            tracing::info!(target: "temppass::events", "{line}");
        }
        if let Some(file) = &mut self.file {
            let result = file.write_line(&line);
            self.report(result, failing);
        }
    }

    fn flush(&mut self, failing: &mut bool) {
        if let Some(file) = &mut self.file {
            let result = file.flush();
            self.report(result, failing);
        }
    }

    /// Counts every failed write; logs the first of a run of failures and the recovery.
    fn report(&self, result: std::io::Result<()>, failing: &mut bool) {
        match result {
            Ok(()) if *failing => {
                *failing = false;
                tracing::info!("tracking events are written again");
            }
            Ok(()) => {}
            Err(error) => {
                if let Some(metrics) = &self.metrics {
                    metrics.event_sink_error();
                }
                if !*failing {
                    *failing = true;
                    tracing::warn!(%error, "cannot write tracking events; counting them in temppass_event_sink_errors_total");
                }
            }
        }
    }
}

/// A JSON-lines file renamed to `.1` (`.1` to `.2`, …, `.keep` dropped) once it passes `max_bytes`.
struct RotatingFile {
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
    max_bytes: u64,
    keep: u32,
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RotatingFile {
    fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, EventFileError> {
        let error = |source| EventFileError { path: path.to_owned(), source };
        let file = append(path).map_err(error)?;
        let bytes = file.metadata().map_err(error)?.len();
        Ok(Self { path: path.to_owned(), out: BufWriter::new(file), bytes, max_bytes: max_bytes.max(1), keep })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if self.bytes > 0 && self.bytes + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.out = BufWriter::new(append(&self.path)?);
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Event {
        Event {
            subject: Some(format!("event-{n:03}")),
            ..Event::new(EventType::AdminChange, "2026-12-04T00:00:00.000Z".into(), "ok")
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).map(|text| text.lines().map(str::to_owned).collect()).unwrap_or_default()
    }

    #[test]
    fn events_are_written_as_json_lines_and_the_file_rotates_by_size_keeping_the_newest() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("events.jsonl");
        let line_bytes = serde_json::to_string(&event(0)).expect("json").len() as u64 + 1;
        let settings = EventSettings {
            file: Some(path.clone()),
            file_max_bytes: line_bytes * 10,
            file_keep: 2,
            ..EventSettings::default()
        };
        let sink = EventSink::start(&settings, None).expect("the sink starts");
        for n in 0..45 {
            sink.emit(event(n));
        }
        assert!(sink.flush(Duration::from_secs(10)), "the sink did not flush");
        let current = lines(&path);
        let (first, second) = (lines(&dir.path().join("events.jsonl.1")), lines(&dir.path().join("events.jsonl.2")));
        assert_eq!((current.len(), first.len(), second.len()), (5, 10, 10), "45 events in files of 10 lines, 2 kept");
        assert!(!dir.path().join("events.jsonl.3").exists(), "more rotated files than `file_keep`");
        let parsed: serde_json::Value = serde_json::from_str(&current[4]).expect("a JSON line");
        assert_eq!(parsed["subject"], "event-044");
        assert_eq!(parsed["type"], "admin_change");
        assert!(parsed.get("tracking_id").is_none(), "an empty field is written: {parsed}");
    }

    #[test]
    fn a_full_queue_drops_events_and_counts_them_without_waiting() {
        let metrics = Arc::new(Metrics::new(None));
        // A writer that cannot keep up: its queue holds one event and it logs to nowhere.
        let settings = EventSettings { log: true, queue: 1, ..EventSettings::default() };
        let sink = EventSink::start(&settings, Some(Arc::clone(&metrics))).expect("the sink starts");
        for n in 0..10_000 {
            sink.emit(event(n));
        }
        let scrape = metrics.render();
        let dropped: u64 = scrape
            .lines()
            .find_map(|line| line.strip_prefix("temppass_events_dropped_total "))
            .and_then(|value| value.parse().ok())
            .expect("the dropped counter is scraped");
        assert!(dropped > 0, "10,000 events into a queue of one dropped none");
    }

    #[test]
    fn an_event_file_that_cannot_be_opened_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let settings = EventSettings {
            file: Some(dir.path().join("missing-dir").join("events.jsonl")),
            ..EventSettings::default()
        };
        let error = EventSink::start(&settings, None).expect_err("a file in a missing directory opens");
        assert!(error.to_string().contains("missing-dir"), "{error}");
    }
}
