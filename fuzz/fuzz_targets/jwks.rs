//! A key set read from the wire (`/.well-known/jwks.json`, fetched by the
//! verifier CLI and `JwksClient`), by `temppass_token::Jwks::from_json`.
//!
//! Holds: no panic; an accepted key set writes back to JSON that reads back
//! equal, and a token of the fixed key never verifies against it unless it
//! holds the fixed key's public half.
#![no_main]

use libfuzzer_sys::fuzz_target;
use temppass_fuzz::{KEY, NOW_SECS};
use temppass_token::{Jwks, MediaTokenClaims, Verdict, VerifyOptions, issue_media_token, verify_media_token};

temppass_fuzz::bound_allocations!();

fuzz_target!(|data: &[u8]| {
    let Ok(jwks) = Jwks::from_json(data) else { return };
    let json = serde_json::to_vec(&jwks).expect("a key set serializes");
    assert_eq!(Jwks::from_json(&json).ok().as_ref(), Some(&jwks));
    let claims = MediaTokenClaims {
        iss: "https://temppass.example".into(),
        sp: "REF30".into(),
        mvpd: "TempPass".into(),
        resource: "news".into(),
        sid: "trial-1".into(),
        iat: NOW_SECS,
        exp: NOW_SECS + 420,
        jti: "token-1".into(),
    };
    let token = issue_media_token(&KEY, &claims);
    let holds_our_key = jwks.keys.iter().any(|k| k.kid == KEY.kid() && k.x == KEY.public_jwk().x);
    let verdict = verify_media_token(&token, &jwks, &VerifyOptions::new(NOW_SECS));
    if !holds_our_key {
        assert_eq!(verdict, Verdict::InvalidSignature);
    }
});
