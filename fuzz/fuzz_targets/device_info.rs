//! `X-Device-Info: <base64 of a JSON object>` (SPEC.md §4): informational,
//! only noticed when malformed, by `temppass_http::headers::device_info_is_malformed`.
//!
//! Holds: no panic; when the input is itself a JSON object, its base64 (the
//! way apps send it) is never called malformed.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use temppass_http::headers::device_info_is_malformed;

temppass_fuzz::bound_allocations!();

const DEVICE_INFO: &str = "x-device-info";

fuzz_target!(|data: &[u8]| {
    if let Some(headers) = temppass_fuzz::one_header(DEVICE_INFO, data) {
        let _ = device_info_is_malformed(&headers);
    }
    let is_object = serde_json::from_slice::<serde_json::Value>(data).is_ok_and(|v| v.is_object());
    let encoded = STANDARD.encode(data);
    // Values over the header limit (4 KiB) are called malformed on purpose.
    if is_object && encoded.len() <= 4096 {
        let headers = temppass_fuzz::one_header(DEVICE_INFO, encoded.as_bytes());
        assert!(headers.is_some_and(|h| !device_info_is_malformed(&h)), "{encoded}");
    }
});
