//! The media token verifier (SPEC.md §8) on tokens built from structured
//! input: a header, claims of the right or wrong types, a signature by the
//! fixed key, another key or none, an optional Base64 wrapping, and the
//! verifier's time, skew and resource. Mutations then reach the checks past
//! the decoding, which random text rarely does.
//!
//! Holds: the verdict equals the one a model of SPEC.md §8 and the verifier's
//! documented order of checks predicts (format, signature, time, resource).
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ed25519_dalek::Signer as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use temppass_fuzz::{JWKS, KEY, NOW_SECS, signature_of};
use temppass_token::{MAX_TOKEN_BYTES, MediaTokenClaims, Verdict, VerifyOptions, verify_media_token};

temppass_fuzz::bound_allocations!();

#[derive(Debug, Arbitrary)]
enum Text {
    Ours,
    Other(String),
    Absent,
    Null,
    Number(i64),
}

#[derive(Debug, Arbitrary)]
enum Time {
    Offset(i32),
    Absent,
    Float(f64),
    Text(String),
    Extreme(i64),
}

#[derive(Debug, Arbitrary)]
enum Signature {
    FixedKey,
    OtherKey([u8; 32]),
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Wrapping {
    None,
    Standard,
    StandardNoPad,
    UrlSafe,
    UrlSafeNoPad,
}

#[derive(Debug, Arbitrary)]
struct Input {
    alg: Text,
    kid: Text,
    crit: Option<Option<Vec<String>>>,
    header_extra: Option<(String, String)>,
    header_is_array: bool,
    iss: Text,
    sp: Text,
    mvpd: Text,
    resource: Text,
    sid: Text,
    jti: Text,
    iat: Time,
    exp: Time,
    claims_extra: Option<(String, i64)>,
    signature: Signature,
    wrapping: Wrapping,
    now_offset_secs: i32,
    skew_secs: i16,
    ask_resource: Option<bool>,
}

/// A string-valued field: `ours` is what a real token says.
fn text(field: &Text, ours: &str) -> Option<Value> {
    match field {
        Text::Ours => Some(json!(ours)),
        Text::Other(other) => Some(json!(other)),
        Text::Absent => None,
        Text::Null => Some(Value::Null),
        Text::Number(n) => Some(json!(n)),
    }
}

fn time(field: &Time) -> Option<Value> {
    match field {
        Time::Offset(offset) => Some(json!(NOW_SECS + i64::from(*offset))),
        Time::Absent => None,
        Time::Float(f) => Some(json!(f)),
        Time::Text(t) => Some(json!(t)),
        Time::Extreme(t) => Some(json!(t)),
    }
}

fn insert(map: &mut Map<String, Value>, name: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(name.to_owned(), value);
    }
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fuzz_target!(|input: Input| {
    // The header, and whether the verifier can read it: an object, with a string `alg`, a string or absent
    // `kid` (null reads as absent), and no `crit`.
    let mut header = Map::new();
    if let Some((name, value)) = &input.header_extra {
        if !matches!(name.as_str(), "alg" | "kid" | "crit") {
            header.insert(name.clone(), json!(value));
        }
    }
    insert(&mut header, "alg", text(&input.alg, "EdDSA"));
    insert(&mut header, "kid", text(&input.kid, KEY.kid()));
    match &input.crit {
        None => {}
        Some(None) => {
            header.insert("crit".to_owned(), Value::Null);
        }
        Some(Some(names)) => {
            header.insert("crit".to_owned(), json!(names));
        }
    }
    let header_readable = !input.header_is_array
        && header.get("alg").is_some_and(Value::is_string)
        && header.get("kid").is_none_or(|kid| kid.is_string() || kid.is_null())
        && header.get("crit").is_none_or(Value::is_null);
    let header_json = if input.header_is_array {
        Value::Array(header.values().cloned().collect())
    } else {
        Value::Object(header.clone())
    };

    // The claims, and whether they are those of a media token.
    let mut claims = Map::new();
    if let Some((name, value)) = &input.claims_extra {
        claims.insert(name.clone(), json!(value));
    }
    insert(&mut claims, "iss", text(&input.iss, "https://temppass.example"));
    insert(&mut claims, "sp", text(&input.sp, "REF30"));
    insert(&mut claims, "mvpd", text(&input.mvpd, "TempPass"));
    insert(&mut claims, "resource", text(&input.resource, "news"));
    insert(&mut claims, "sid", text(&input.sid, "trial-1"));
    insert(&mut claims, "jti", text(&input.jti, "token-1"));
    insert(&mut claims, "iat", time(&input.iat));
    insert(&mut claims, "exp", time(&input.exp));
    let claims_value = Value::Object(claims);
    let typed: Option<MediaTokenClaims> = serde_json::from_value(claims_value.clone()).ok();

    let signing_input =
        format!("{}.{}", encode(header_json.to_string().as_bytes()), encode(claims_value.to_string().as_bytes()));
    let signature = match &input.signature {
        Signature::FixedKey => signature_of(&signing_input),
        Signature::OtherKey(seed) => {
            encode(&ed25519_dalek::SigningKey::from_bytes(seed).sign(signing_input.as_bytes()).to_bytes())
        }
        Signature::Bytes(bytes) => encode(bytes),
    };
    let compact = format!("{signing_input}.{signature}");
    let token = match input.wrapping {
        Wrapping::None => compact.clone(),
        Wrapping::Standard => STANDARD.encode(&compact),
        Wrapping::StandardNoPad => STANDARD_NO_PAD.encode(&compact),
        Wrapping::UrlSafe => URL_SAFE.encode(&compact),
        Wrapping::UrlSafeNoPad => URL_SAFE_NO_PAD.encode(&compact),
    };

    let now = NOW_SECS + i64::from(input.now_offset_secs);
    let skew_secs = i64::from(input.skew_secs);
    let resource = input.ask_resource.map(|ours| if ours { "news" } else { "other" });
    let options = VerifyOptions { now, skew_secs, resource };
    let verdict = verify_media_token(&token, &JWKS, &options);

    let signed_by_us = signature == signature_of(&signing_input);
    let expected = match typed {
        _ if token.len() > MAX_TOKEN_BYTES || compact.len() > MAX_TOKEN_BYTES => Verdict::InvalidFormat,
        _ if !header_readable => Verdict::InvalidFormat,
        None => Verdict::InvalidFormat,
        Some(claims) if claims.exp < claims.iat => Verdict::InvalidFormat,
        Some(_) if header.get("alg") != Some(&json!("EdDSA")) => Verdict::InvalidSignature,
        Some(_) if header.get("kid") != Some(&json!(KEY.kid())) || !signed_by_us => Verdict::InvalidSignature,
        Some(claims) if claims.iat > now.saturating_add(skew_secs.max(0)) => Verdict::InvalidFormat,
        Some(claims) if now >= claims.exp.saturating_add(skew_secs.max(0)) => Verdict::Expired,
        Some(claims) if resource.is_some_and(|r| r != claims.resource) => Verdict::InvalidResource,
        Some(claims) => Verdict::Valid(claims),
    };
    assert_eq!(verdict, expected, "token {token:?} at {now} with skew {skew_secs} and resource {resource:?}");
});
