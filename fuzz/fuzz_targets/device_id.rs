//! `AP-Device-Identifier: fingerprint <base64>` (SPEC.md §4), parsed by the
//! handlers' own `temppass_http::headers::device_id`.
//!
//! Holds: no panic; an accepted id is 1..=256 bytes without control
//! characters, and sending it back the canonical way yields the same id.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use temppass_core::DeviceId;
use temppass_http::headers::{DEVICE_IDENTIFIER, device_id};

temppass_fuzz::bound_allocations!();

fuzz_target!(|data: &[u8]| {
    let Some(headers) = temppass_fuzz::one_header(DEVICE_IDENTIFIER, data) else { return };
    let Ok(device) = device_id(&headers) else { return };
    let id = device.as_str();
    assert!(!id.is_empty() && id.len() <= DeviceId::MAX_LEN, "{id:?}");
    assert!(!id.chars().any(char::is_control), "{id:?}");
    let canonical = format!("fingerprint {}", STANDARD.encode(id));
    let again = temppass_fuzz::one_header(DEVICE_IDENTIFIER, canonical.as_bytes()).map(|h| device_id(&h));
    assert!(matches!(again, Some(Ok(ref d)) if *d == device), "{canonical:?} did not give back {id:?}");
});
