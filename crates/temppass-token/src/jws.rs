//! Compact JWS (RFC 7515) checks shared by media tokens and software statements: the three segments, the
//! header, the algorithm, the key lookup and the signature.
//!
//! Only what we sign is accepted: `alg` exactly `"EdDSA"`, a `kid` present in the key set, strict Base64url
//! without padding (so that no two spellings of a segment decode to the same bytes), and no `crit` header
//! (we understand no extensions, and RFC 7515 §4.1.11 requires rejecting what we do not understand).
//! Signatures are checked with `verify_strict`, which refuses weak keys and non-canonical signatures.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::jwks::Jwks;
use crate::{ALGORITHM, MAX_TOKEN_BYTES};

/// Why a compact JWS did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not a compact JWS we can read: too long, not three Base64url segments, a header that is not a JSON
    /// object with a string `alg`, or a `crit` header.
    #[error("the token is not a well-formed compact JWS")]
    Format,
    /// The header has no `kid`, or no Ed25519 key in the key set has that `kid`.
    #[error("the token names no key of the key set")]
    UnknownKey,
    /// The header's `alg` is not exactly `"EdDSA"`.
    #[error("the token's algorithm is not EdDSA")]
    Algorithm,
    /// The signature is not a valid Ed25519 signature of the token by the named key.
    #[error("the token's signature does not verify")]
    Signature,
}

/// Verifies a compact JWS against the key set and returns its payload bytes.
///
/// The token must be compact as is; unlike [`crate::verify_media_token`], no Base64 wrapping is undone. Checks in
/// order: format ([`JwsError::Format`]), then `alg` ([`JwsError::Algorithm`]), then `kid`
/// ([`JwsError::UnknownKey`]), then the signature ([`JwsError::Signature`]). The payload is returned unparsed.
pub fn verify_jws(token: &str, jwks: &Jwks) -> Result<Vec<u8>, JwsError> {
    let jws = UnverifiedJws::parse(token)?;
    jws.verify(jwks)?;
    Ok(jws.into_verified_payload())
}

/// A compact JWS whose segments decode, but whose signature has not been checked yet.
pub(crate) struct UnverifiedJws<'a> {
    /// `header.payload`, exactly as received: the signature covers these bytes, not a re-encoding.
    signing_input: &'a str,
    header: UnverifiedHeader,
    unverified_payload: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Deserialize)]
struct UnverifiedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

impl<'a> UnverifiedJws<'a> {
    pub(crate) fn parse(token: &'a str) -> Result<Self, JwsError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwsError::Format);
        }
        let (signing_input, signature_b64) = token.rsplit_once('.').ok_or(JwsError::Format)?;
        let (header_b64, payload_b64) = signing_input.split_once('.').ok_or(JwsError::Format)?;
        if payload_b64.contains('.') {
            return Err(JwsError::Format);
        }
        let header: UnverifiedHeader = parse_json_object(&decode_segment(header_b64)?)?;
        if header.crit.is_some() {
            return Err(JwsError::Format);
        }
        Ok(Self {
            signing_input,
            header,
            unverified_payload: decode_segment(payload_b64)?,
            signature: decode_segment(signature_b64)?,
        })
    }

    pub(crate) fn kid(&self) -> Option<&str> {
        self.header.kid.as_deref()
    }

    /// The payload, for format checks that must come before the signature check. Trust nothing in it yet.
    pub(crate) fn unverified_payload(&self) -> &[u8] {
        &self.unverified_payload
    }

    pub(crate) fn verify(&self, jwks: &Jwks) -> Result<(), JwsError> {
        // The algorithm comes from the attacker-controlled header, so it is compared, never dispatched on.
        if self.header.alg != ALGORITHM {
            return Err(JwsError::Algorithm);
        }
        let kid = self.header.kid.as_deref().ok_or(JwsError::UnknownKey)?;
        let key = jwks.verifying_key(kid).ok_or(JwsError::UnknownKey)?;
        let signature = <[u8; 64]>::try_from(self.signature.as_slice()).map_err(|_| JwsError::Signature)?;
        key.verify_strict(self.signing_input.as_bytes(), &ed25519_dalek::Signature::from_bytes(&signature))
            .map_err(|_| JwsError::Signature)
    }

    /// The payload; call only after [`UnverifiedJws::verify`] succeeded.
    pub(crate) fn into_verified_payload(self) -> Vec<u8> {
        self.unverified_payload
    }
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| JwsError::Format)
}

/// Parses JSON that must be an object: serde's derived structs would also accept an array of the fields.
pub(crate) fn parse_json_object<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, JwsError> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(JwsError::Format);
    }
    serde_json::from_slice(json).map_err(|_| JwsError::Format)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::SigningKey;
    use sha2::{Digest as _, Sha256};

    pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with whatever header, payload and signature a forger likes.
    pub(crate) fn forge(header: &serde_json::Value, payload: &[u8], signature: &[u8]) -> String {
        format!("{}.{}.{}", b64(header.to_string()), b64(payload), b64(signature))
    }

    /// HMAC-SHA256 (RFC 2104), to forge the classic alg-confusion token: HS256 keyed with the public key.
    pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let inner_pad: Vec<u8> = block.iter().map(|byte| byte ^ 0x36).collect();
        let outer_pad: Vec<u8> = block.iter().map(|byte| byte ^ 0x5c).collect();
        let inner = Sha256::new().chain_update(&inner_pad).chain_update(message).finalize();
        Sha256::new().chain_update(&outer_pad).chain_update(inner).finalize().into()
    }

    /// Signs any signing input with the key, to build tokens `SigningKey::sign_json` would never produce.
    pub(crate) fn sign_raw(key: &SigningKey, signing_input: &str) -> String {
        use ed25519_dalek::Signer as _;
        b64(ed25519_dalek::SigningKey::from_bytes(&key.seed()).sign(signing_input.as_bytes()).to_bytes())
    }

    fn key_and_jwks() -> (SigningKey, Jwks) {
        let key = SigningKey::from_seed([7; 32]);
        let jwks = Jwks { keys: vec![key.public_jwk()] };
        (key, jwks)
    }

    fn segments(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn hmac_sha256_matches_the_rfc_4231_test_vector() {
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There");
        let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    }

    #[test]
    fn verify_jws_returns_the_signed_payload() {
        let (key, jwks) = key_and_jwks();
        let token = key.sign_json(&serde_json::json!({"software_id": "app"}));
        assert_eq!(verify_jws(&token, &jwks), Ok(br#"{"software_id":"app"}"#.to_vec()));
    }

    #[test]
    fn verify_jws_does_not_unwrap_base64() {
        let (key, jwks) = key_and_jwks();
        let token = key.sign_json(&serde_json::json!({}));
        assert_eq!(verify_jws(&b64(&token), &jwks), Err(JwsError::Format));
    }

    #[test]
    fn a_jws_signed_by_an_unknown_kid_is_an_unknown_key() {
        let (_, jwks) = key_and_jwks();
        let token = SigningKey::from_seed([8; 32]).sign_json(&serde_json::json!({}));
        assert_eq!(verify_jws(&token, &jwks), Err(JwsError::UnknownKey));
        assert_eq!(verify_jws(&token, &Jwks::default()), Err(JwsError::UnknownKey));
    }

    #[test]
    fn a_jws_without_a_kid_is_an_unknown_key() {
        let (key, jwks) = key_and_jwks();
        let original = segments(&key.sign_json(&serde_json::json!({})));
        let header = b64(r#"{"alg":"EdDSA","typ":"JWT"}"#);
        let signing_input = format!("{header}.{}", original[1]);
        let token = format!("{signing_input}.{}", sign_raw(&key, &signing_input));
        assert_eq!(verify_jws(&token, &jwks), Err(JwsError::UnknownKey));
    }

    #[test]
    fn a_jws_correctly_signed_with_an_extra_header_field_verifies() {
        let (key, jwks) = key_and_jwks();
        let header = b64(format!(r#"{{"alg":"EdDSA","kid":"{}","cty":"x"}}"#, key.kid()));
        let signing_input = format!("{header}.{}", b64("{}"));
        let token = format!("{signing_input}.{}", sign_raw(&key, &signing_input));
        assert_eq!(verify_jws(&token, &jwks), Ok(b"{}".to_vec()));
    }

    #[test]
    fn alg_none_is_refused_as_the_wrong_algorithm() {
        let (key, jwks) = key_and_jwks();
        let token = forge(&serde_json::json!({"alg": "none", "kid": key.kid()}), b"{}", b"");
        assert_eq!(verify_jws(&token, &jwks), Err(JwsError::Algorithm));
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_refused_as_the_wrong_algorithm() {
        let (key, jwks) = key_and_jwks();
        let public_key = ed25519_dalek::SigningKey::from_bytes(&key.seed()).verifying_key().to_bytes();
        let header = b64(serde_json::json!({"alg": "HS256", "kid": key.kid(), "typ": "JWT"}).to_string());
        let signing_input = format!("{header}.{}", b64("{}"));
        for secret in [public_key.to_vec(), key.public_jwk().x.into_bytes()] {
            let token = format!("{signing_input}.{}", b64(hmac_sha256(&secret, signing_input.as_bytes())));
            assert_eq!(verify_jws(&token, &jwks), Err(JwsError::Algorithm));
        }
    }

    #[test]
    fn an_algorithm_name_in_another_case_is_refused() {
        let (key, jwks) = key_and_jwks();
        for alg in ["eddsa", "EDDSA", "EdDSA ", "Ed25519", ""] {
            let token = forge(&serde_json::json!({"alg": alg, "kid": key.kid()}), b"{}", &[0; 64]);
            assert_eq!(verify_jws(&token, &jwks), Err(JwsError::Algorithm), "{alg:?}");
        }
    }

    #[test]
    fn a_signature_of_the_wrong_length_is_an_invalid_signature() {
        let (key, jwks) = key_and_jwks();
        let original = segments(&key.sign_json(&serde_json::json!({})));
        for length in [0, 63, 65] {
            let token = format!("{}.{}.{}", original[0], original[1], b64(vec![0; length]));
            assert_eq!(verify_jws(&token, &jwks), Err(JwsError::Signature), "{length}");
        }
    }

    #[test]
    fn a_header_with_crit_is_a_format_error() {
        let (key, jwks) = key_and_jwks();
        let token = forge(&serde_json::json!({"alg": "EdDSA", "kid": key.kid(), "crit": ["exp"]}), b"{}", &[0; 64]);
        assert_eq!(verify_jws(&token, &jwks), Err(JwsError::Format));
    }

    #[test]
    fn a_header_that_is_not_a_json_object_with_a_string_alg_is_a_format_error() {
        let (key, jwks) = key_and_jwks();
        let original = segments(&key.sign_json(&serde_json::json!({})));
        for header in [
            "[\"EdDSA\",\"k\"]".to_owned(),
            "{}".to_owned(),
            r#"{"alg":1}"#.to_owned(),
            r#"{"alg":"EdDSA","alg":"EdDSA"}"#.to_owned(),
            format!(r#"{{"alg":"EdDSA","kid":{}}}"#, 5),
            "not json".to_owned(),
        ] {
            let token = format!("{}.{}.{}", b64(&header), original[1], original[2]);
            assert_eq!(verify_jws(&token, &jwks), Err(JwsError::Format), "{header}");
        }
    }

    #[test]
    fn segments_that_are_not_strict_base64url_are_a_format_error() {
        let (key, jwks) = key_and_jwks();
        let token = key.sign_json(&serde_json::json!({"a": "b"}));
        let original = segments(&token);
        let candidates = [
            format!("{}=.{}.{}", original[0], original[1], original[2]),
            format!("{}.{}.{}==", original[0], original[1], original[2]),
            format!("{}.{}+.{}", original[0], original[1], original[2]),
            format!("{}.{}.{}", original[0], original[1], original[2].replace('-', "+").replace('_', "/")),
            format!(" {token}"),
            format!("{token}\n"),
        ];
        for candidate in candidates {
            if candidate != token {
                assert_eq!(verify_jws(&candidate, &jwks), Err(JwsError::Format), "{candidate}");
            }
        }
    }

    #[test]
    fn a_signature_segment_with_nonzero_trailing_bits_is_a_format_error() {
        let (key, jwks) = key_and_jwks();
        let token = key.sign_json(&serde_json::json!({}));
        // 64 bytes take 86 characters whose last one carries 4 unused bits; flipping one of them must not
        // yield a second spelling of the same signature.
        let Some(last) = token.chars().last() else { panic!("empty token") };
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let Some(position) = alphabet.iter().position(|&c| char::from(c) == last) else { panic!("not base64url") };
        let sibling = char::from(alphabet[position ^ 1]);
        let mut mutated = token.clone();
        mutated.pop();
        mutated.push(sibling);
        assert_eq!(verify_jws(&mutated, &jwks), Err(JwsError::Format));
    }

    #[test]
    fn a_token_without_exactly_three_segments_is_a_format_error() {
        let (key, jwks) = key_and_jwks();
        let token = key.sign_json(&serde_json::json!({}));
        let original = segments(&token);
        for candidate in [
            String::new(),
            ".".to_owned(),
            "..".to_owned(),
            format!("{}.{}", original[0], original[1]),
            format!("{token}."),
            format!("{token}.{}", original[2]),
            format!("{}..{}.{}", original[0], original[1], original[2]),
        ] {
            assert_eq!(verify_jws(&candidate, &jwks), Err(JwsError::Format), "{candidate}");
        }
    }

    #[test]
    fn a_token_longer_than_the_limit_is_a_format_error() {
        let (key, jwks) = key_and_jwks();
        let claims = serde_json::json!({"padding": "a".repeat(MAX_TOKEN_BYTES)});
        assert_eq!(verify_jws(&key.sign_json(&claims), &jwks), Err(JwsError::Format));
    }
}
