//! The request headers of SPEC.md §4, parsed into domain values.
//!
//! Raw header values are `unverified` until these functions accept them.
//! They are public so that the fuzz targets (`fuzz/`) drive the very code the
//! handlers run.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use temppass_core::{DeviceId, IdentityHash};

use crate::error::{ApiError, ErrorCode};

/// The device identifier header (SPEC.md §4), lower-case as `HeaderMap` keys are.
pub const DEVICE_IDENTIFIER: &str = "ap-device-identifier";
/// The promotional identity header (SPEC.md §4), lower-case as `HeaderMap` keys are.
pub const TEMPPASS_IDENTITY: &str = "ap-temppass-identity";

/// Header values longer than this are refused before decoding.
const MAX_HEADER_BYTES: usize = 4096;

/// Decodes base64 in any of the alphabets apps use (standard or URL-safe, padded or not).
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD].iter().find_map(|engine| engine.decode(text).ok())
}

/// `AP-Device-Identifier: fingerprint <base64 of the device id>`.
pub fn device_id(headers: &HeaderMap) -> Result<DeviceId, ApiError> {
    let unverified = headers.get(DEVICE_IDENTIFIER).ok_or_else(|| {
        ApiError::with_details(ErrorCode::InvalidHeaderDeviceIdentifier, "the AP-Device-Identifier header is missing")
    })?;
    device_id_of(unverified)
}

/// The device id of one `AP-Device-Identifier` value.
pub fn device_id_of(unverified: &axum::http::HeaderValue) -> Result<DeviceId, ApiError> {
    let invalid = |details: &str| ApiError::with_details(ErrorCode::InvalidHeaderDeviceIdentifier, details);
    let unverified = unverified
        .to_str()
        .ok()
        .filter(|v| v.len() <= MAX_HEADER_BYTES)
        .ok_or_else(|| invalid("the AP-Device-Identifier header is not readable text"))?;
    let (scheme, value) =
        unverified.trim().split_once(' ').ok_or_else(|| invalid("expected \"fingerprint <base64>\""))?;
    if !scheme.eq_ignore_ascii_case("fingerprint") {
        return Err(invalid("the only supported scheme is \"fingerprint\""));
    }
    let bytes = decode_base64(value.trim()).ok_or_else(|| invalid("the fingerprint is not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| invalid("the decoded device identifier is not UTF-8"))?;
    DeviceId::parse(&text).map_err(|e| invalid(&format!("the decoded device identifier {e}")))
}

/// `X-Device-Info` is informational (SPEC.md §4): `true` when present but not
/// base64 of a JSON object — counted, never refused, because real
/// apps (and Adobe's own sample) send such values.
pub fn device_info_is_malformed(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("x-device-info") else {
        return false;
    };
    let decoded = value.to_str().ok().filter(|v| v.len() <= MAX_HEADER_BYTES).and_then(|v| decode_base64(v.trim()));
    !decoded.is_some_and(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v.is_object()))
}

/// Why `AP-TempPass-Identity` was refused: always `invalid_header_identity_for_temporary_access`.
#[derive(Debug)]
pub struct InvalidIdentity(pub &'static str);

/// `AP-TempPass-Identity: <base64 of a JSON object>`; `Ok(None)` when absent.
pub fn identity(headers: &HeaderMap, identity_key: &str) -> Result<Option<IdentityHash>, InvalidIdentity> {
    let Some(unverified) = headers.get(TEMPPASS_IDENTITY) else {
        return Ok(None);
    };
    let text = unverified
        .to_str()
        .ok()
        .filter(|v| v.len() <= MAX_HEADER_BYTES)
        .ok_or(InvalidIdentity("the AP-TempPass-Identity header is too long or not text"))?;
    let bytes = decode_base64(text.trim()).ok_or(InvalidIdentity("the AP-TempPass-Identity header is not base64"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| InvalidIdentity("the AP-TempPass-Identity header is not JSON"))?;
    let object = json.as_object().ok_or(InvalidIdentity("the AP-TempPass-Identity header is not a JSON object"))?;
    let value = object
        .get(identity_key)
        .ok_or(InvalidIdentity("the AP-TempPass-Identity header lacks the rule's identity key"))?;
    let value = value.as_str().ok_or(InvalidIdentity("the identity value is not a string"))?;
    IdentityHash::from_value(value).map(Some).map_err(|e| match e {
        temppass_core::IdentityError::Empty => InvalidIdentity("the identity value is empty"),
        temppass_core::IdentityError::TooLong { .. } => InvalidIdentity("the identity value is too long"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_str(value).expect("a valid header value"));
        map
    }

    #[test]
    fn a_fingerprint_decodes_to_the_device_id() {
        let device = device_id(&headers(DEVICE_IDENTIFIER, "fingerprint ZGV2aWNlLTE=")).map(|d| d.to_string());
        assert_eq!(device.ok().as_deref(), Some("device-1"));
    }

    #[test]
    fn every_malformed_device_identifier_is_refused() {
        let too_long = STANDARD.encode("d".repeat(257));
        for value in [
            "",
            "fingerprint",
            "bearer ZGV2aWNl",
            "fingerprint !!!",
            "fingerprint ",
            &format!("fingerprint {too_long}"),
        ] {
            let result = device_id(&headers(DEVICE_IDENTIFIER, value));
            assert_eq!(result.map_err(|e| e.code()).err(), Some("invalid_header_device_identifier"), "{value:?}");
        }
        assert!(device_id(&HeaderMap::new()).is_err());
    }

    #[test]
    fn every_malformed_identity_is_refused() {
        let cases = [
            STANDARD.encode("not json"),
            STANDARD.encode("[1,2]"),
            STANDARD.encode(r#"{"name":"x"}"#),
            STANDARD.encode(r#"{"email":""}"#),
            STANDARD.encode(r#"{"email":42}"#),
            STANDARD.encode(format!(r#"{{"email":"{}"}}"#, "x".repeat(2000))),
            "%%%".to_owned(),
        ];
        for value in cases {
            assert!(identity(&headers(TEMPPASS_IDENTITY, &value), "email").is_err(), "{value:?}");
        }
    }

    #[test]
    fn device_info_that_is_not_base64_json_is_noticed_and_a_good_one_is_not() {
        assert!(!device_info_is_malformed(&HeaderMap::new()));
        let good = STANDARD.encode(r#"{"model":"TV"}"#);
        assert!(!device_info_is_malformed(&headers("x-device-info", &good)));
        for bad in ["not base64!", &STANDARD.encode("[1]"), &STANDARD.encode("{model:TV}")] {
            assert!(device_info_is_malformed(&headers("x-device-info", bad)), "{bad}");
        }
    }

    #[test]
    fn an_email_in_the_identity_header_becomes_its_sha256() {
        let value = STANDARD.encode(r#"{"email":"user@domain.com"}"#);
        let hash = identity(&headers(TEMPPASS_IDENTITY, &value), "email").ok().flatten();
        assert_eq!(
            hash.as_ref().map(IdentityHash::as_str),
            Some("f7ee5ec7312165148b69fcca1d29075b14b8aef0b5048a332b18b88d09069fb7")
        );
    }
}
