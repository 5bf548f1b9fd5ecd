//! What an operator sees of temppass, knowing no HTTP and no SQL: the
//! Prometheus metrics ([`Metrics`], [`MeteredStore`], the process and store
//! collectors), the tracking events ([`EventSink`]), the daily figures
//! waiting for their flush ([`Figures`]), and the tracking id.
//!
//! Nothing here may block or fail a request: counters are atomics, events go
//! through a bounded queue to a thread of their own, figures are flushed by
//! `serve`. See docs/operating.md for every metric and field.

mod events;
mod figures;
mod metered;
mod metrics;
mod process;

pub use events::{Event, EventFileError, EventSettings, EventSink, EventType};
pub use figures::Figures;
pub use metered::{MeteredStore, store_error_label};
pub use metrics::{DecisionKind, Metrics, status_class};

use sha2::{Digest, Sha256};

/// The tracking id of a device: the hex SHA-256 of its device id, as TempPass
/// hands analytics a hash of the device id. Unsalted on purpose, so that a
/// programmer who holds the device id (the app does) can join temppass's
/// figures to their own; it reveals nothing to whoever does not.
pub fn tracking_id(device_id: &str) -> String {
    hex::encode(Sha256::digest(device_id.as_bytes()))
}

/// An instant as RFC 3339 in UTC with milliseconds, as events carry it.
pub fn rfc3339(now: temppass_core::Timestamp) -> String {
    match jiff::Timestamp::from_millisecond(now.as_millis()) {
        Ok(instant) => format!("{instant:.3}"),
        Err(_) => now.as_millis().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracking_id_is_the_hex_sha256_of_the_device_id() {
        assert_eq!(tracking_id("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn event_times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(temppass_core::Timestamp::from_millis(1_796_441_400_123)), "2026-12-05T03:30:00.123Z");
    }
}
