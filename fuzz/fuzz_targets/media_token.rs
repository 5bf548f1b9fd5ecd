//! The media token verifier (SPEC.md §8), `temppass_token::verify_media_token`,
//! on arbitrary text against a fixed key set; also `token_kid` and `verify_jws`.
//!
//! Holds: no panic; `Valid` only for a token whose compact form carries the
//! fixed key's own signature, whose claims are current at the given time and
//! for the resource asked about; `verify_jws` accepts only compact tokens
//! that the fixed key signed.
#![no_main]

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use libfuzzer_sys::fuzz_target;
use temppass_fuzz::{JWKS, NOW_SECS, signed_by_the_fixed_key};
use temppass_token::{DEFAULT_SKEW_SECS, Verdict, VerifyOptions, token_kid, verify_jws, verify_media_token};

temppass_fuzz::bound_allocations!();

/// The compact JWS inside a token, by the rule SPEC.md §8 states: as is, or one Base64 wrapping.
fn compact_form(token: &str) -> Option<String> {
    if token.contains('.') {
        return Some(token.to_owned());
    }
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [alphabet::URL_SAFE, alphabet::STANDARD]
        .iter()
        .find_map(|alphabet| GeneralPurpose::new(alphabet, config).decode(token).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let _ = token_kid(token);
    if verify_jws(token, &JWKS).is_ok() {
        assert!(signed_by_the_fixed_key(token), "{token:?} verified but is not ours");
    }
    for resource in [None, Some("news")] {
        let options = VerifyOptions { resource, ..VerifyOptions::new(NOW_SECS) };
        if let Verdict::Valid(claims) = verify_media_token(token, &JWKS, &options) {
            let compact = compact_form(token);
            assert!(compact.as_deref().is_some_and(signed_by_the_fixed_key), "{token:?} is valid but not ours");
            assert!(claims.iat <= NOW_SECS + DEFAULT_SKEW_SECS && NOW_SECS < claims.exp + DEFAULT_SKEW_SECS);
            assert!(resource.is_none_or(|r| r == claims.resource));
        }
    }
});
