//! Durations of the configuration file (`"500ms"`, `"2s"`, `"10m"`, `"4h"`,
//! `"1d"`, SPEC.md §10), parsed by `temppass_core::DurationMs::parse`.
//!
//! Holds: no panic (no overflow either: debug assertions are on); an accepted
//! duration is positive and at most `MAX_DAYS` days, and its own rendering
//! (`"<n>ms"`) parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use temppass_core::DurationMs;

temppass_fuzz::bound_allocations!();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(duration) = DurationMs::parse(text) else { return };
    let ms = duration.as_millis();
    assert!(0 < ms && ms <= DurationMs::MAX_DAYS * 86_400_000, "{text:?} gave {ms} ms");
    assert_eq!(DurationMs::parse(&duration.to_string()), Ok(duration));
    assert_eq!(DurationMs::from_millis(ms), Ok(duration));
});
