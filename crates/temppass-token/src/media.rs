//! Media tokens (SPEC.md §8): their claims, issuing them, and the verifier's verdicts, which mirror Adobe's Media
//! Token Verifier (`Valid`, `InvalidFormat`, `InvalidSignature`, `Expired`, `InvalidResource`).
//!
//! A verdict is a value, not an error: a rejected token is the normal answer to a bad request, and the caller
//! picks what to do with each verdict.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};

use crate::MAX_TOKEN_BYTES;
use crate::jwks::Jwks;
use crate::jws::{JwsError, UnverifiedJws, parse_json_object};
use crate::key::SigningKey;

/// Clock skew tolerated between the server that issued a token and the back end that verifies it.
pub const DEFAULT_SKEW_SECS: i64 = 30;

/// The claims of a media token. All are required when verifying; unknown claims are ignored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MediaTokenClaims {
    /// The issuing server's public URL.
    pub iss: String,
    /// Service provider (requestor) id.
    pub sp: String,
    /// The MVPD id the temporary pass is configured as.
    pub mvpd: String,
    /// The resource the permit was granted for.
    pub resource: String,
    /// Opaque per-trial id.
    pub sid: String,
    /// Issued at, epoch seconds.
    pub iat: i64,
    /// Expires at, epoch seconds: the token is no longer valid from this second on (plus the skew).
    pub exp: i64,
    /// Unique per token.
    pub jti: String,
}

/// Signs the claims with the key: a compact JWS, `serializedToken` as is.
pub fn issue_media_token(key: &SigningKey, claims: &MediaTokenClaims) -> String {
    key.sign_json(claims)
}

/// The verifier's answer for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a key of the set, within its lifetime, for the expected resource (if one was given).
    Valid(MediaTokenClaims),
    /// Not a media token at all: unreadable, too long, a claim missing or of the wrong type, `exp` before
    /// `iat`, or `iat` further in the future than the skew allows.
    InvalidFormat,
    /// Readable, but not signed by a key of the set: wrong or unknown `kid`, an algorithm other than `EdDSA`
    /// (`none`, `HS256`, ...), or a signature that does not verify.
    InvalidSignature,
    /// Correctly signed, but `now >= exp + skew`.
    Expired,
    /// Correctly signed and current, but for another resource than the one asked about.
    InvalidResource,
}

impl Verdict {
    /// The verdict's name as Adobe's verifier spells it: `"Valid"`, `"InvalidFormat"`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Valid(_) => "Valid",
            Verdict::InvalidFormat => "InvalidFormat",
            Verdict::InvalidSignature => "InvalidSignature",
            Verdict::Expired => "Expired",
            Verdict::InvalidResource => "InvalidResource",
        }
    }
}

/// What the verifier needs besides the token and the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions<'a> {
    /// The current time, epoch seconds.
    pub now: i64,
    /// Tolerated clock skew in seconds, applied to both `iat` and `exp`; a negative value counts as 0.
    pub skew_secs: i64,
    /// When set, the token's `resource` must equal it.
    pub resource: Option<&'a str>,
}

impl VerifyOptions<'_> {
    /// Options at `now` with the default skew ([`DEFAULT_SKEW_SECS`]) and no resource check.
    pub fn new(now: i64) -> Self {
        Self { now, skew_secs: DEFAULT_SKEW_SECS, resource: None }
    }
}

/// Verifies a media token: a compact JWS as issued, or a Base64 wrapping of one (standard or URL-safe
/// alphabet, padded or not), as Adobe-style apps may pass `serializedToken` along.
///
/// Checks run in this order and the first failure is the verdict:
/// 1. format ([`Verdict::InvalidFormat`]): length at most [`MAX_TOKEN_BYTES`], three strict Base64url segments,
///    a JSON object header with a string `alg`, every claim present with its type, `exp >= iat`;
/// 2. signature ([`Verdict::InvalidSignature`]): `alg` exactly `EdDSA`, `kid` present and found in `jwks`, and
///    an Ed25519 signature that passes `verify_strict`. An algorithm other than `EdDSA` is an *invalid
///    signature*, not an invalid format, because the token is readable and simply not signed the way we sign;
/// 3. time: a token whose `iat` is more than the skew in the future is [`Verdict::InvalidFormat`] (we never
///    issue such a token, so it is not a token of ours rather than an expired one); then
///    [`Verdict::Expired`] when `now >= exp + skew_secs`;
/// 4. resource ([`Verdict::InvalidResource`]) when `options.resource` is set and differs from the claim.
///
/// Never panics, whatever the input.
pub fn verify_media_token(token: &str, jwks: &Jwks, options: &VerifyOptions) -> Verdict {
    if token.len() > MAX_TOKEN_BYTES {
        return Verdict::InvalidFormat;
    }
    // A compact JWS always has dots and Base64 never does, so the two forms cannot be confused.
    let unwrapped;
    let compact = if token.contains('.') {
        token
    } else {
        match unwrap_base64(token) {
            Some(inner) => {
                unwrapped = inner;
                unwrapped.as_str()
            }
            None => return Verdict::InvalidFormat,
        }
    };

    let Ok(jws) = UnverifiedJws::parse(compact) else {
        return Verdict::InvalidFormat;
    };
    let Ok(claims) = parse_json_object::<MediaTokenClaims>(jws.unverified_payload()) else {
        return Verdict::InvalidFormat;
    };
    if claims.exp < claims.iat {
        return Verdict::InvalidFormat;
    }

    match jws.verify(jwks) {
        Ok(()) => {}
        Err(JwsError::Format) => return Verdict::InvalidFormat,
        Err(JwsError::UnknownKey | JwsError::Algorithm | JwsError::Signature) => return Verdict::InvalidSignature,
    }

    let skew_secs = options.skew_secs.max(0);
    if claims.iat > options.now.saturating_add(skew_secs) {
        return Verdict::InvalidFormat;
    }
    if options.now >= claims.exp.saturating_add(skew_secs) {
        return Verdict::Expired;
    }
    if options.resource.is_some_and(|resource| resource != claims.resource) {
        return Verdict::InvalidResource;
    }
    Verdict::Valid(claims)
}

/// The `kid` of a token's header (compact or Base64-wrapped), read without
/// verifying anything: for choosing or fetching a key set, never for trust.
pub fn token_kid(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let unwrapped;
    let compact = if token.contains('.') {
        token
    } else {
        unwrapped = unwrap_base64(token)?;
        unwrapped.as_str()
    };
    UnverifiedJws::parse(compact).ok()?.kid().map(str::to_owned)
}

/// Undoes one Base64 wrapping; the result must look like a compact JWS (no nested wrapping).
fn unwrap_base64(token: &str) -> Option<String> {
    const ANY_PADDING: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ANY_PADDING);
    const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ANY_PADDING);

    let bytes = URL_SAFE_ANY_PADDING.decode(token).or_else(|_| STANDARD_ANY_PADDING.decode(token)).ok()?;
    let inner = String::from_utf8(bytes).ok()?;
    inner.contains('.').then_some(inner)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use proptest::prelude::*;

    use super::*;
    use crate::jws::tests::{b64, hmac_sha256, sign_raw};

    const NOW: i64 = 1_700_000_000;
    const TTL_SECS: i64 = 420;

    fn key() -> SigningKey {
        SigningKey::from_seed([7; 32])
    }

    fn jwks() -> Jwks {
        Jwks { keys: vec![key().public_jwk()] }
    }

    fn claims_at(iat: i64) -> MediaTokenClaims {
        MediaTokenClaims {
            iss: "https://temppass.example".to_owned(),
            sp: "acme".to_owned(),
            mvpd: "TempPass".to_owned(),
            resource: "news".to_owned(),
            sid: "trial-1".to_owned(),
            iat,
            exp: iat + TTL_SECS,
            jti: "token-1".to_owned(),
        }
    }

    fn token() -> String {
        issue_media_token(&key(), &claims_at(NOW))
    }

    fn verify_at(token: &str, now: i64) -> Verdict {
        verify_media_token(token, &jwks(), &VerifyOptions::new(now))
    }

    /// The header and payload segments of a token, and its signature segment.
    fn segments(token: &str) -> [String; 3] {
        let parts: Vec<&str> = token.split('.').collect();
        match parts.as_slice() {
            [header, payload, signature] => [(*header).to_owned(), (*payload).to_owned(), (*signature).to_owned()],
            _ => panic!("not a compact JWS: {token}"),
        }
    }

    fn decode_json(segment: &str) -> serde_json::Value {
        let bytes = URL_SAFE_NO_PAD.decode(segment).expect("a base64url segment");
        serde_json::from_slice(&bytes).expect("a JSON segment")
    }

    #[test]
    fn a_freshly_issued_token_is_valid_and_returns_its_claims() {
        assert_eq!(verify_at(&token(), NOW), Verdict::Valid(claims_at(NOW)));
    }

    #[test]
    fn issuing_a_media_token_signs_its_claims_as_json() {
        let [_, payload, _] = segments(&token());
        let expected = serde_json::to_value(claims_at(NOW)).expect("the claims serialize to JSON");
        assert_eq!(decode_json(&payload), expected);
    }

    #[test]
    fn a_token_signed_by_an_older_key_still_in_the_key_set_is_valid() {
        let old_key = SigningKey::from_seed([1; 32]);
        let jwks = Jwks { keys: vec![key().public_jwk(), old_key.public_jwk()] };
        let token = issue_media_token(&old_key, &claims_at(NOW));
        assert_eq!(verify_media_token(&token, &jwks, &VerifyOptions::new(NOW)), Verdict::Valid(claims_at(NOW)));
    }

    #[test]
    fn a_token_signed_by_an_unknown_kid_is_an_invalid_signature() {
        let token = issue_media_token(&SigningKey::from_seed([8; 32]), &claims_at(NOW));
        assert_eq!(verify_at(&token, NOW), Verdict::InvalidSignature);
        assert_eq!(verify_media_token(&token, &Jwks::default(), &VerifyOptions::new(NOW)), Verdict::InvalidSignature);
    }

    #[test]
    fn a_token_signed_by_another_key_under_our_kid_is_an_invalid_signature() {
        let [header, payload, _] = segments(&token());
        let signing_input = format!("{header}.{payload}");
        let token = format!("{signing_input}.{}", sign_raw(&SigningKey::from_seed([8; 32]), &signing_input));
        assert_eq!(verify_at(&token, NOW), Verdict::InvalidSignature);
    }

    #[test]
    fn a_token_without_a_kid_is_an_invalid_signature() {
        let [_, payload, _] = segments(&token());
        let signing_input = format!("{}.{payload}", b64(r#"{"alg":"EdDSA","typ":"JWT"}"#));
        let token = format!("{signing_input}.{}", sign_raw(&key(), &signing_input));
        assert_eq!(verify_at(&token, NOW), Verdict::InvalidSignature);
    }

    #[test]
    fn a_token_with_a_tampered_header_is_an_invalid_signature() {
        let [header, payload, signature] = segments(&token());
        let mut header_json = decode_json(&header);
        header_json["typ"] = serde_json::json!("at+jwt");
        let token = format!("{}.{payload}.{signature}", b64(header_json.to_string()));
        assert_eq!(verify_at(&token, NOW), Verdict::InvalidSignature);
    }

    #[test]
    fn a_token_with_a_tampered_payload_is_an_invalid_signature() {
        let [header, payload, signature] = segments(&token());
        let mut claims = decode_json(&payload);
        claims["resource"] = serde_json::json!("premium");
        claims["exp"] = serde_json::json!(NOW + 1_000_000);
        let token = format!("{header}.{}.{signature}", b64(claims.to_string()));
        assert_eq!(verify_at(&token, NOW), Verdict::InvalidSignature);
    }

    #[test]
    fn a_token_with_a_tampered_signature_is_an_invalid_signature() {
        let [header, payload, signature] = segments(&token());
        let mut signature_bytes = URL_SAFE_NO_PAD.decode(signature).expect("a base64url signature");
        for index in [0, 31, 32, 63] {
            let mut tampered = signature_bytes.clone();
            tampered[index] ^= 0x01;
            let token = format!("{header}.{payload}.{}", b64(&tampered));
            assert_eq!(verify_at(&token, NOW), Verdict::InvalidSignature, "byte {index}");
        }
        signature_bytes.fill(0);
        assert_eq!(verify_at(&format!("{header}.{payload}.{}", b64(&signature_bytes)), NOW), Verdict::InvalidSignature);
    }

    #[test]
    fn alg_none_is_an_invalid_signature() {
        let [_, payload, _] = segments(&token());
        let header = b64(serde_json::json!({"alg": "none", "kid": key().kid(), "typ": "JWT"}).to_string());
        assert_eq!(verify_at(&format!("{header}.{payload}."), NOW), Verdict::InvalidSignature);
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_an_invalid_signature() {
        let [_, payload, _] = segments(&token());
        let header = b64(serde_json::json!({"alg": "HS256", "kid": key().kid(), "typ": "JWT"}).to_string());
        let signing_input = format!("{header}.{payload}");
        let public_key_bytes = URL_SAFE_NO_PAD.decode(key().public_jwk().x).expect("a base64url public key");
        let mac = hmac_sha256(&public_key_bytes, signing_input.as_bytes());
        assert_eq!(verify_at(&format!("{signing_input}.{}", b64(mac)), NOW), Verdict::InvalidSignature);
    }

    #[test]
    fn a_correctly_signed_token_missing_a_claim_is_an_invalid_format() {
        let complete = serde_json::to_value(claims_at(NOW)).expect("the claims serialize to JSON");
        for claim in ["iss", "sp", "mvpd", "resource", "sid", "iat", "exp", "jti"] {
            let mut claims = complete.clone();
            if let Some(object) = claims.as_object_mut() {
                object.remove(claim);
            }
            assert_eq!(verify_at(&key().sign_json(&claims), NOW), Verdict::InvalidFormat, "without {claim}");
        }
    }

    #[test]
    fn a_correctly_signed_token_with_a_claim_of_the_wrong_type_is_an_invalid_format() {
        let complete = serde_json::to_value(claims_at(NOW)).expect("the claims serialize to JSON");
        for (claim, value) in
            [("exp", serde_json::json!("soon")), ("iat", serde_json::json!(1.5)), ("sid", serde_json::json!(1))]
        {
            let mut claims = complete.clone();
            claims[claim] = value;
            assert_eq!(verify_at(&key().sign_json(&claims), NOW), Verdict::InvalidFormat, "{claim}");
        }
    }

    #[test]
    fn a_correctly_signed_payload_that_is_not_a_json_object_is_an_invalid_format() {
        let claims = claims_at(NOW);
        let as_array = serde_json::json!([
            claims.iss,
            claims.sp,
            claims.mvpd,
            claims.resource,
            claims.sid,
            claims.iat,
            claims.exp,
            claims.jti
        ]);
        assert_eq!(verify_at(&key().sign_json(&as_array), NOW), Verdict::InvalidFormat);
        assert_eq!(verify_at(&key().sign_json(&"a string"), NOW), Verdict::InvalidFormat);
    }

    #[test]
    fn a_correctly_signed_token_with_extra_claims_is_valid() {
        let mut claims = serde_json::to_value(claims_at(NOW)).expect("the claims serialize to JSON");
        claims["aud"] = serde_json::json!("cdn");
        assert_eq!(verify_at(&key().sign_json(&claims), NOW), Verdict::Valid(claims_at(NOW)));
    }

    #[test]
    fn a_token_whose_exp_precedes_its_iat_is_an_invalid_format() {
        let claims = MediaTokenClaims { exp: NOW - 1, ..claims_at(NOW) };
        assert_eq!(verify_at(&issue_media_token(&key(), &claims), NOW), Verdict::InvalidFormat);
    }

    #[test]
    fn a_token_issued_more_than_the_skew_in_the_future_is_an_invalid_format() {
        let token = issue_media_token(&key(), &claims_at(NOW + DEFAULT_SKEW_SECS + 1));
        assert_eq!(verify_at(&token, NOW), Verdict::InvalidFormat);
        let token = issue_media_token(&key(), &claims_at(NOW + DEFAULT_SKEW_SECS));
        assert_eq!(verify_at(&token, NOW), Verdict::Valid(claims_at(NOW + DEFAULT_SKEW_SECS)));
    }

    #[test]
    fn a_token_is_valid_until_one_second_before_exp_plus_skew() {
        let exp = NOW + TTL_SECS;
        assert_eq!(verify_at(&token(), exp - 1), Verdict::Valid(claims_at(NOW)));
        assert_eq!(verify_at(&token(), exp), Verdict::Valid(claims_at(NOW)));
        assert_eq!(verify_at(&token(), exp + DEFAULT_SKEW_SECS - 1), Verdict::Valid(claims_at(NOW)));
    }

    #[test]
    fn a_token_is_expired_from_exactly_exp_plus_skew() {
        let exp = NOW + TTL_SECS;
        assert_eq!(verify_at(&token(), exp + DEFAULT_SKEW_SECS), Verdict::Expired);
        assert_eq!(verify_at(&token(), exp + DEFAULT_SKEW_SECS + 1), Verdict::Expired);
    }

    #[test]
    fn the_skew_is_a_parameter_and_a_negative_skew_counts_as_zero() {
        let exp = NOW + TTL_SECS;
        let options = |now, skew_secs| VerifyOptions { skew_secs, ..VerifyOptions::new(now) };
        assert_eq!(verify_media_token(&token(), &jwks(), &options(exp - 1, 0)), Verdict::Valid(claims_at(NOW)));
        assert_eq!(verify_media_token(&token(), &jwks(), &options(exp, 0)), Verdict::Expired);
        assert_eq!(verify_media_token(&token(), &jwks(), &options(exp, -100)), Verdict::Expired);
        assert_eq!(verify_media_token(&token(), &jwks(), &options(exp + 99, 100)), Verdict::Valid(claims_at(NOW)));
        assert_eq!(VerifyOptions::new(NOW).skew_secs, 30);
    }

    #[test]
    fn a_token_for_another_resource_is_an_invalid_resource() {
        let options = |resource| VerifyOptions { resource: Some(resource), ..VerifyOptions::new(NOW) };
        assert_eq!(verify_media_token(&token(), &jwks(), &options("news")), Verdict::Valid(claims_at(NOW)));
        assert_eq!(verify_media_token(&token(), &jwks(), &options("sports")), Verdict::InvalidResource);
        assert_eq!(verify_media_token(&token(), &jwks(), &options("News")), Verdict::InvalidResource);
        assert_eq!(verify_media_token(&token(), &jwks(), &options("")), Verdict::InvalidResource);
    }

    #[test]
    fn checks_run_in_order_format_signature_expiry_resource() {
        let late = VerifyOptions { resource: Some("sports"), ..VerifyOptions::new(NOW + 10_000) };
        // Expired beats a wrong resource.
        assert_eq!(verify_media_token(&token(), &jwks(), &late), Verdict::Expired);
        // A bad signature beats expiry.
        let stranger = issue_media_token(&SigningKey::from_seed([8; 32]), &claims_at(NOW));
        assert_eq!(verify_media_token(&stranger, &jwks(), &late), Verdict::InvalidSignature);
        // A bad format beats a bad signature.
        let mut claims = serde_json::to_value(claims_at(NOW)).expect("the claims serialize to JSON");
        if let Some(object) = claims.as_object_mut() {
            object.remove("jti");
        }
        let malformed = SigningKey::from_seed([8; 32]).sign_json(&claims);
        assert_eq!(verify_media_token(&malformed, &jwks(), &late), Verdict::InvalidFormat);
    }

    #[test]
    fn a_base64_wrapped_token_verifies_in_every_base64_flavour() {
        let token = token();
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let wrapped = engine.encode(&token);
            assert_eq!(verify_at(&wrapped, NOW), Verdict::Valid(claims_at(NOW)), "{wrapped}");
        }
    }

    #[test]
    fn a_wrapped_token_is_checked_like_a_compact_one() {
        let stranger = issue_media_token(&SigningKey::from_seed([8; 32]), &claims_at(NOW));
        assert_eq!(verify_at(&STANDARD.encode(stranger), NOW), Verdict::InvalidSignature);
        assert_eq!(verify_at(&STANDARD.encode(token()), NOW + 10_000), Verdict::Expired);
    }

    #[test]
    fn base64_that_does_not_wrap_a_compact_jws_is_an_invalid_format() {
        for wrapped in [
            STANDARD.encode("no dots here"),
            STANDARD.encode([0xff, 0xfe, b'.', 0x00]),
            STANDARD.encode(STANDARD.encode(token())),
            "not base64!".to_owned(),
            "QQ=".to_owned(),
            String::new(),
        ] {
            assert_eq!(verify_at(&wrapped, NOW), Verdict::InvalidFormat, "{wrapped}");
        }
    }

    #[test]
    fn a_token_longer_than_8_kib_is_an_invalid_format() {
        let mut claims = claims_at(NOW);
        claims.jti = "j".repeat(MAX_TOKEN_BYTES);
        let token = issue_media_token(&key(), &claims);
        assert_eq!(verify_at(&token, NOW), Verdict::InvalidFormat);
        assert_eq!(verify_at(&STANDARD.encode(token), NOW), Verdict::InvalidFormat);
        assert_eq!(verify_at(&"A".repeat(MAX_TOKEN_BYTES + 4), NOW), Verdict::InvalidFormat);
    }

    #[test]
    fn each_verdict_has_the_name_adobe_uses() {
        let names: Vec<&str> = [
            Verdict::Valid(claims_at(NOW)),
            Verdict::InvalidFormat,
            Verdict::InvalidSignature,
            Verdict::Expired,
            Verdict::InvalidResource,
        ]
        .iter()
        .map(Verdict::name)
        .collect();
        assert_eq!(names, ["Valid", "InvalidFormat", "InvalidSignature", "Expired", "InvalidResource"]);
    }

    /// Independent check: a standard JOSE library accepts our token, given our JWK as JSON.
    #[test]
    #[allow(clippy::disallowed_methods)] // jsonwebtoken checks `exp` against the real clock, so the token must too.
    fn a_token_issued_here_verifies_with_the_jsonwebtoken_crate() -> Result<(), Box<dyn std::error::Error>> {
        let now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?;
        let key = SigningKey::generate();
        let claims = claims_at(now);
        let token = issue_media_token(&key, &claims);

        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(serde_json::to_value(key.public_jwk())?)?;
        let decoding_key = jsonwebtoken::DecodingKey::from_jwk(&jwk)?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.set_issuer(&[claims.iss.as_str()]);
        let decoded = jsonwebtoken::decode::<MediaTokenClaims>(&token, &decoding_key, &validation)?;
        assert_eq!(decoded.claims, claims);
        assert_eq!(decoded.header.kid.as_deref(), Some(key.kid()));
        assert_eq!(decoded.header.typ.as_deref(), Some("JWT"));

        let [header, _, signature] = segments(&token);
        let tampered = format!("{header}.{}.{signature}", b64(serde_json::to_vec(&claims_at(now + 1))?));
        assert!(jsonwebtoken::decode::<MediaTokenClaims>(&tampered, &decoding_key, &validation).is_err());
        Ok(())
    }

    /// Independent check the other way: a token signed by a standard JOSE library with our key verifies here.
    #[test]
    fn a_token_signed_by_the_jsonwebtoken_crate_with_our_key_verifies_here() -> Result<(), Box<dyn std::error::Error>> {
        // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed 16-byte prefix, then the 32-byte seed.
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&key().seed());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(key().kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims_at(NOW), &jsonwebtoken::EncodingKey::from_ed_der(&der))?;
        assert_eq!(verify_at(&token, NOW), Verdict::Valid(claims_at(NOW)));
        Ok(())
    }

    /// Characters that keep a mutated token close to a real one, so mutations reach past the Base64 decoding.
    fn token_char() -> impl Strategy<Value = char> {
        prop_oneof![
            4 => proptest::sample::select(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/".chars().collect::<Vec<_>>()
            ),
            1 => any::<char>(),
        ]
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(proptest::sample::Index, char),
        Insert(proptest::sample::Index, char),
        Delete(proptest::sample::Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<proptest::sample::Index>(), token_char()).prop_map(|(at, c)| Mutation::Replace(at, c)),
            (any::<proptest::sample::Index>(), token_char()).prop_map(|(at, c)| Mutation::Insert(at, c)),
            any::<proptest::sample::Index>().prop_map(Mutation::Delete),
        ]
    }

    fn apply(token: &str, mutations: &[Mutation]) -> String {
        let mut chars: Vec<char> = token.chars().collect();
        for mutation in mutations {
            match mutation {
                Mutation::Replace(at, c) if !chars.is_empty() => {
                    let index = at.index(chars.len());
                    chars[index] = *c;
                }
                Mutation::Insert(at, c) => {
                    let index = at.index(chars.len() + 1);
                    chars.insert(index, *c);
                }
                Mutation::Delete(at) if !chars.is_empty() => {
                    chars.remove(at.index(chars.len()));
                }
                Mutation::Replace(..) | Mutation::Delete(_) => {}
            }
        }
        chars.into_iter().collect()
    }

    proptest! {
        #[test]
        fn arbitrary_strings_are_never_valid_and_never_panic(input in any::<String>()) {
            prop_assert!(!matches!(verify_at(&input, NOW), Verdict::Valid(_)));
            prop_assert!(crate::verify_jws(&input, &jwks()).is_err());
        }

        #[test]
        fn token_shaped_strings_are_never_valid_and_never_panic(input in "[A-Za-z0-9_=+/-]{0,200}(\\.[A-Za-z0-9_=+/-]{0,200}){0,3}") {
            prop_assert!(!matches!(verify_at(&input, NOW), Verdict::Valid(_)));
            prop_assert!(crate::verify_jws(&input, &jwks()).is_err());
        }

        #[test]
        fn a_mutated_token_is_never_valid_unless_unchanged(mutations in proptest::collection::vec(mutation(), 1..4)) {
            let token = token();
            let mutated = apply(&token, &mutations);
            let verdict = verify_at(&mutated, NOW);
            if mutated == token {
                prop_assert_eq!(verdict, Verdict::Valid(claims_at(NOW)));
            } else {
                prop_assert!(!matches!(verdict, Verdict::Valid(_)), "{} was valid", mutated);
                prop_assert!(crate::verify_jws(&mutated, &jwks()).is_err(), "{} verified", mutated);
            }
        }

        #[test]
        fn a_correctly_signed_token_is_valid_exactly_between_iat_minus_skew_and_exp_plus_skew(
            iat in -4_000_000_000i64..4_000_000_000,
            lifetime_secs in 0i64..1_000,
            offset_secs in -200i64..1_200,
            skew_secs in 0i64..100,
        ) {
            let claims = MediaTokenClaims { exp: iat + lifetime_secs, ..claims_at(iat) };
            let token = issue_media_token(&key(), &claims);
            let now = iat + offset_secs;
            let verdict = verify_media_token(&token, &jwks(), &VerifyOptions { skew_secs, ..VerifyOptions::new(now) });
            let expected = if iat > now + skew_secs {
                Verdict::InvalidFormat
            } else if now >= claims.exp + skew_secs {
                Verdict::Expired
            } else {
                Verdict::Valid(claims.clone())
            };
            prop_assert_eq!(verdict, expected);
        }

        #[test]
        fn extreme_times_never_panic(iat in any::<i64>(), exp in any::<i64>(), now in any::<i64>(), skew_secs in any::<i64>()) {
            let claims = MediaTokenClaims { iat, exp, ..claims_at(0) };
            let token = issue_media_token(&key(), &claims);
            let verdict = verify_media_token(&token, &jwks(), &VerifyOptions { now, skew_secs, resource: None });
            if exp < iat {
                prop_assert_eq!(verdict, Verdict::InvalidFormat);
            }
        }
    }
}
