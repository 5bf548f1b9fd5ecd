//! Public keys as JSON Web Keys (RFC 7517, RFC 8037), and reading a key set from the wire.
//!
//! A key set fetched from `/.well-known/jwks.json` may be served by a proxy that adds keys of its own, so reading
//! it skips keys that are not Ed25519 signing keys instead of failing; an Ed25519 key that is itself broken is
//! an error, because silently dropping it would turn every token it signed into a mysterious `InvalidSignature`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ALGORITHM;

/// Largest key set [`Jwks::from_json`] reads. A few dozen keys fit in 4 KiB; rotation never keeps that many.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// One public key as a JSON Web Key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Jwk {
    /// Key type: `"OKP"`.
    pub kty: String,
    /// Curve: `"Ed25519"`.
    pub crv: String,
    /// The 32-byte public key, Base64url without padding.
    pub x: String,
    /// Key id, matched against the `kid` of a token's header.
    pub kid: String,
    /// Intended use: `"sig"`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Algorithm: `"EdDSA"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

impl Jwk {
    /// The key, when this JWK is an Ed25519 signing key whose `x` decodes to a valid public key.
    pub(crate) fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        let fits = self.kty == "OKP"
            && self.crv == "Ed25519"
            && self.use_.as_deref().is_none_or(|use_| use_ == "sig")
            && self.alg.as_deref().is_none_or(|alg| alg == ALGORITHM);
        if !fits {
            return None;
        }
        let decoded = URL_SAFE_NO_PAD.decode(&self.x).ok()?;
        let public_key = <[u8; 32]>::try_from(decoded.as_slice()).ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&public_key).ok()
    }
}

/// A JSON Web Key Set: the body of `/.well-known/jwks.json`.
///
/// Deserializing (through [`Jwks::from_json`] or serde) keeps only Ed25519 signing keys: entries of another
/// `kty`, `crv`, `use` or `alg` are skipped, unknown fields are ignored.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Jwks {
    #[serde(deserialize_with = "deserialize_ed25519_keys")]
    pub keys: Vec<Jwk>,
}

/// Why a key set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the key set is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the key set is not a valid JWKS: {0}")]
    Json(#[from] serde_json::Error),
}

impl Jwks {
    /// Reads a key set from JSON, skipping keys that are not Ed25519 signing keys (see [`Jwks`]).
    pub fn from_json(bytes: &[u8]) -> Result<Jwks, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The first usable key with this key id.
    pub(crate) fn verifying_key(&self, kid: &str) -> Option<ed25519_dalek::VerifyingKey> {
        self.keys.iter().filter(|jwk| jwk.kid == kid).find_map(Jwk::verifying_key)
    }
}

fn deserialize_ed25519_keys<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Jwk>, D::Error> {
    let entries = Vec::<serde_json::Value>::deserialize(deserializer)?;
    let mut keys = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        if !is_ed25519_signing_key(&entry) {
            continue;
        }
        let jwk: Jwk =
            serde_json::from_value(entry).map_err(|error| D::Error::custom(format!("key {index}: {error}")))?;
        if jwk.verifying_key().is_none() {
            return Err(D::Error::custom(format!(
                "key {index} (kid {:?}): x is not a 32-byte Ed25519 public key in base64url",
                jwk.kid
            )));
        }
        keys.push(jwk);
    }
    Ok(keys)
}

/// Whether an entry of `keys` claims to be an Ed25519 signing key; such an entry must then be well formed.
fn is_ed25519_signing_key(entry: &serde_json::Value) -> bool {
    let field = |name: &str| entry.get(name);
    let is = |name: &str, expected: &str| field(name).and_then(serde_json::Value::as_str) == Some(expected);
    let absent_or = |name: &str, expected: &str| field(name).is_none_or(|_| is(name, expected));
    is("kty", "OKP") && is("crv", "Ed25519") && absent_or("use", "sig") && absent_or("alg", ALGORITHM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    fn parse(json: &str) -> Result<Jwks, JwksError> {
        Jwks::from_json(json.as_bytes())
    }

    #[test]
    fn a_key_set_serializes_to_json_that_reads_back_equal() -> Result<(), Box<dyn std::error::Error>> {
        let jwks = Jwks {
            keys: vec![SigningKey::from_seed([1; 32]).public_jwk(), SigningKey::from_seed([2; 32]).public_jwk()],
        };
        let json = serde_json::to_vec(&jwks)?;
        assert_eq!(Jwks::from_json(&json)?, jwks);
        Ok(())
    }

    #[test]
    fn a_jwk_serializes_use_and_alg_under_their_jose_names() -> Result<(), Box<dyn std::error::Error>> {
        let jwk = SigningKey::from_seed([1; 32]).public_jwk();
        let json = serde_json::to_value(&jwk)?;
        assert_eq!(
            json,
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": jwk.x, "kid": jwk.kid, "use": "sig", "alg": "EdDSA"})
        );
        Ok(())
    }

    #[test]
    fn reading_a_key_set_skips_other_key_types_and_ignores_unknown_fields() -> Result<(), Box<dyn std::error::Error>> {
        let ours = SigningKey::from_seed([1; 32]).public_jwk();
        let json = serde_json::json!({
            "keys": [
                {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa"},
                {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "ec"},
                {"kty": "OKP", "crv": "X25519", "x": "AA", "kid": "x25519"},
                {"kty": "OKP", "crv": "Ed25519", "x": ours.x, "kid": "encryption", "use": "enc"},
                {"kty": "OKP", "crv": "Ed25519", "x": ours.x, "kid": "other-alg", "alg": "Ed448"},
                "not even an object",
                {"kty": "OKP", "crv": "Ed25519", "x": ours.x, "kid": ours.kid, "use": "sig", "alg": "EdDSA", "x5c": [], "extra": 1},
            ],
            "extra": true,
        });
        let jwks = Jwks::from_json(&serde_json::to_vec(&json)?)?;
        assert_eq!(jwks.keys, vec![ours]);
        Ok(())
    }

    #[test]
    fn a_jwk_without_use_or_alg_is_read() -> Result<(), Box<dyn std::error::Error>> {
        let ours = SigningKey::from_seed([1; 32]).public_jwk();
        let json = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}","kid":"k"}}]}}"#, ours.x);
        let jwks = parse(&json)?;
        assert_eq!(jwks.keys.len(), 1);
        assert_eq!(jwks.keys[0].use_, None);
        assert!(jwks.verifying_key("k").is_some());
        Ok(())
    }

    #[test]
    fn an_ed25519_key_whose_x_is_not_32_bytes_is_an_error() {
        let json = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"short"}]}"#;
        match parse(json) {
            Err(JwksError::Json(error)) => assert!(error.to_string().contains("key 0"), "{error}"),
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn an_ed25519_key_without_a_kid_is_an_error() {
        let x = SigningKey::from_seed([1; 32]).public_jwk().x;
        let json = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#);
        assert!(matches!(parse(&json), Err(JwksError::Json(_))));
    }

    #[test]
    fn a_document_without_keys_or_not_json_is_an_error() {
        assert!(matches!(parse("{}"), Err(JwksError::Json(_))));
        assert!(matches!(parse("not json"), Err(JwksError::Json(_))));
        assert!(matches!(parse(r#"{"keys":{}}"#), Err(JwksError::Json(_))));
        assert!(matches!(parse(r#"{"keys":[]}"#), Ok(jwks) if jwks.keys.is_empty()));
    }

    #[test]
    fn a_key_set_larger_than_the_limit_is_refused_before_parsing() {
        let json = format!(r#"{{"keys":[],"padding":"{}"}}"#, "a".repeat(MAX_JWKS_BYTES));
        assert!(matches!(parse(&json), Err(JwksError::TooLarge)));
    }

    #[test]
    fn looking_up_a_kid_finds_only_a_usable_key_with_that_kid() {
        let ours = SigningKey::from_seed([1; 32]).public_jwk();
        let broken = Jwk { x: "AAAA".to_owned(), ..ours.clone() };
        let jwks = Jwks { keys: vec![broken.clone()] };
        assert!(jwks.verifying_key(&ours.kid).is_none());
        let jwks = Jwks { keys: vec![broken, ours.clone()] };
        assert!(jwks.verifying_key(&ours.kid).is_some());
        assert!(jwks.verifying_key("unknown").is_none());
    }
}
