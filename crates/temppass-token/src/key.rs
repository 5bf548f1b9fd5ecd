//! The private signing key: its key id, its public JWK, and signing claims as a compact JWS.
//!
//! Signing is the server's hot path (one signature per authorization), so the Base64url header is computed once
//! per key and a token costs two allocations: the claims JSON and the token string itself.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer as _;
use sha2::{Digest as _, Sha256};

use crate::ALGORITHM;
use crate::jwks::Jwk;

/// Length of the Base64url encoding (no padding) of a 64-byte Ed25519 signature.
const SIGNATURE_B64_LEN: usize = 86;

/// A private Ed25519 signing key with its key id.
///
/// The secret is zeroized on drop (ed25519-dalek's `zeroize` feature); copies handed out by [`SigningKey::seed`]
/// are the caller's to protect. `Debug` prints the key id only.
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    kid: String,
    /// `base64url({"alg":"EdDSA","kid":..,"typ":"JWT"})`, the first segment of every token this key signs.
    header_b64: String,
}

impl SigningKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        Self::from_inner(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key for a stored 32-byte seed; the same seed always gives the same key and key id.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::from_inner(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for storing the key (see [`SigningKey::from_seed`]).
    pub fn seed(&self) -> [u8; 32] {
        self.inner.to_bytes()
    }

    /// The key id: the first 16 hex characters of the SHA-256 of the 32-byte public key. Derived rather than
    /// random so that every server sharing a store names a key the same way.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JSON Web Key, for `/.well-known/jwks.json`.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: URL_SAFE_NO_PAD.encode(self.inner.verifying_key().as_bytes()),
            kid: self.kid.clone(),
            use_: Some("sig".to_owned()),
            alg: Some(ALGORITHM.to_owned()),
        }
    }

    /// Compact JWS of arbitrary JSON claims, header `{"alg":"EdDSA","kid":..,"typ":"JWT"}`.
    ///
    /// # Panics
    ///
    /// When `claims` cannot be serialized to JSON (a `Serialize` impl that fails, or a map with non-string keys).
    /// That is a programming error, never a property of the input: plain structs of strings and numbers, such
    /// as [`crate::MediaTokenClaims`], always serialize. Use [`SigningKey::try_sign_json`] for anything else.
    pub fn sign_json(&self, claims: &impl serde::Serialize) -> String {
        match self.try_sign_json(claims) {
            Ok(token) => token,
            Err(error) => panic!("claims must serialize to JSON: {error}"),
        }
    }

    /// Like [`SigningKey::sign_json`], but returns the serialization error instead of panicking.
    pub fn try_sign_json(&self, claims: &impl serde::Serialize) -> Result<String, serde_json::Error> {
        let claims_json = serde_json::to_vec(claims)?;
        // The capacity is only a hint; an overflow (impossible for real claims) just means one regrowth.
        let payload_b64_len = base64::encoded_len(claims_json.len(), false).unwrap_or(0);
        let mut token = String::with_capacity(self.header_b64.len() + 1 + payload_b64_len + 1 + SIGNATURE_B64_LEN);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
        // The signing input is exactly what has been written so far: `header.payload`.
        let signature = self.inner.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }

    fn from_inner(inner: ed25519_dalek::SigningKey) -> Self {
        let kid = kid_of(inner.verifying_key().as_bytes());
        // The kid is 16 lowercase hex characters, so it needs no JSON escaping.
        let header_json = format!(r#"{{"alg":"{ALGORITHM}","kid":"{kid}","typ":"JWT"}}"#);
        let header_b64 = URL_SAFE_NO_PAD.encode(header_json);
        Self { inner, kid, header_b64 }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// First 16 hex characters (8 bytes) of the SHA-256 of a public key.
fn kid_of(public_key: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(public_key);
    let mut kid = String::with_capacity(16);
    for byte in digest.iter().take(8) {
        kid.push(char::from(HEX[usize::from(byte >> 4)]));
        kid.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    kid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_segment(segment: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(segment).expect("a base64url segment")
    }

    #[test]
    fn the_kid_is_the_first_16_hex_chars_of_the_sha256_of_the_public_key() {
        let key = SigningKey::from_seed([7; 32]);
        let digest = Sha256::digest(key.inner.verifying_key().as_bytes());
        let expected: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(key.kid(), expected);
        assert_eq!(key.kid().len(), 16);
    }

    #[test]
    fn the_same_seed_gives_the_same_kid_and_the_same_tokens() {
        let first = SigningKey::from_seed([7; 32]);
        let second = SigningKey::from_seed([7; 32]);
        assert_eq!(first.kid(), second.kid());
        // Ed25519 signatures are deterministic, so equal keys sign equal claims identically.
        assert_eq!(first.sign_json(&serde_json::json!({"a": 1})), second.sign_json(&serde_json::json!({"a": 1})));
        assert_ne!(first.kid(), SigningKey::from_seed([8; 32]).kid());
    }

    #[test]
    fn a_generated_key_round_trips_through_its_seed() {
        let key = SigningKey::generate();
        let restored = SigningKey::from_seed(key.seed());
        assert_eq!(restored.kid(), key.kid());
        assert_eq!(restored.public_jwk(), key.public_jwk());
        assert_ne!(SigningKey::generate().kid(), key.kid());
    }

    #[test]
    fn debug_output_of_a_signing_key_shows_the_kid_but_not_the_seed() {
        let key = SigningKey::from_seed([0xab; 32]);
        assert_eq!(format!("{key:?}"), format!("SigningKey {{ kid: {:?}, .. }}", key.kid()));
    }

    #[test]
    fn the_header_names_the_algorithm_the_kid_and_the_type() {
        let key = SigningKey::from_seed([7; 32]);
        let token = key.sign_json(&serde_json::json!({}));
        let header_b64 = token.split('.').next().unwrap_or_default();
        let header: serde_json::Value = serde_json::from_slice(&decode_segment(header_b64)).expect("a JSON header");
        assert_eq!(header, serde_json::json!({"alg": "EdDSA", "kid": key.kid(), "typ": "JWT"}));
    }

    #[test]
    fn a_token_is_three_base64url_segments_with_a_64_byte_signature() {
        let key = SigningKey::from_seed([7; 32]);
        let token = key.sign_json(&serde_json::json!({"sub": "x"}));
        let segments: Vec<&str> = token.split('.').collect();
        assert_eq!(segments.len(), 3, "{token}");
        assert_eq!(decode_segment(segments[1]), br#"{"sub":"x"}"#);
        assert_eq!(decode_segment(segments[2]).len(), 64);
        // The token string is allocated once, at its exact final size.
        assert_eq!(token.capacity(), token.len());
    }

    #[test]
    fn the_public_jwk_is_an_okp_ed25519_signing_key() {
        let key = SigningKey::from_seed([7; 32]);
        let jwk = key.public_jwk();
        assert_eq!(jwk.kty, "OKP");
        assert_eq!(jwk.crv, "Ed25519");
        assert_eq!(jwk.kid, key.kid());
        assert_eq!(jwk.use_.as_deref(), Some("sig"));
        assert_eq!(jwk.alg.as_deref(), Some("EdDSA"));
        assert_eq!(decode_segment(&jwk.x), key.inner.verifying_key().as_bytes());
    }

    #[test]
    fn claims_that_cannot_be_serialized_are_an_error_from_try_sign_json() {
        let key = SigningKey::from_seed([7; 32]);
        let claims: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
        assert!(key.try_sign_json(&claims).is_err());
    }
}
