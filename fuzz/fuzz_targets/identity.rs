//! `AP-TempPass-Identity: <base64 of a JSON object>` (SPEC.md §4), parsed by
//! the handlers' own `temppass_http::headers::identity`.
//!
//! Input: `identity_key\nheader value`, or only a header value for the key
//! `email` (a header value never holds a newline, so the split is unambiguous).
//!
//! Holds: no panic; a present header is never `Ok(None)`; an accepted
//! identity is a lower-case hex SHA-256 or SHA-512 (64 or 128 characters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use temppass_http::headers::{TEMPPASS_IDENTITY, identity};

temppass_fuzz::bound_allocations!();

fuzz_target!(|data: &[u8]| {
    let (identity_key, value) = match data.iter().position(|&b| b == b'\n') {
        Some(newline) => match std::str::from_utf8(&data[..newline]) {
            Ok(key) => (key, &data[newline + 1..]),
            Err(_) => return,
        },
        None => ("email", data),
    };
    let Some(headers) = temppass_fuzz::one_header(TEMPPASS_IDENTITY, value) else { return };
    match identity(&headers, identity_key) {
        Ok(Some(hash)) => {
            let hash = hash.as_str();
            assert!(matches!(hash.len(), 64 | 128), "{hash:?}");
            assert!(hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{hash:?}");
        }
        Ok(None) => panic!("a present header was taken for an absent one"),
        Err(_) => {}
    }
});
