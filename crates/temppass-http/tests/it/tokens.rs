//! Media tokens (SPEC.md §8) checked from the outside: an independent JOSE
//! implementation (`jsonwebtoken`) and temppass's own verifier, both against
//! the JWKS the router serves.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use temppass_http::auth::SCOPE_API;
use temppass_http::clock::{Clock, SystemClock};
use temppass_token::{Jwks, Verdict, VerifyOptions, verify_media_token};

use crate::support::{BASIC, MEDIA_TOKEN_TTL_MS, PUBLIC_URL, SP, TestApp, int, jws_claims, ok, some};

async fn served_jwks_json(app: &TestApp) -> String {
    let reply = app.get("/.well-known/jwks.json").without_bearer().send().await;
    reply.assert_ok_json();
    reply.text
}

#[tokio::test]
async fn a_media_token_verifies_with_an_independent_jose_library_against_the_served_jwks() {
    let app = TestApp::new().await;
    // jsonwebtoken checks `exp` against the real clock, so the server's clock is set to it.
    app.clock.set(SystemClock.now());
    let now_ms = app.now_ms();
    let token = app.token_for("media-app", &[SP], &[SCOPE_API]).await;
    let reply = app.authorize(BASIC, "device-1", &["channel-1"]).bearer(&token).send().await;
    let serialized = some(reply.decision()["token"]["serializedToken"].as_str(), "serializedToken").to_owned();
    let jwks: JwkSet =
        ok(serde_json::from_str(&served_jwks_json(&app).await), "the served JWKS as jsonwebtoken reads it");

    let header = ok(jsonwebtoken::decode_header(&serialized), "the JWS header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = some(header.kid, "kid");
    let jwk = some(jwks.find(&kid), "the token's key in the JWKS");
    let key = ok(DecodingKey::from_jwk(jwk), "a decoding key from the JWK");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[PUBLIC_URL]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    let claims = ok(jsonwebtoken::decode::<Value>(&serialized, &key, &validation), "jsonwebtoken verifies it").claims;

    assert_eq!(claims["iss"], PUBLIC_URL);
    assert_eq!(claims["sp"], SP);
    assert_eq!(claims["mvpd"], BASIC);
    assert_eq!(claims["resource"], "channel-1");
    let sid = some(claims["sid"].as_str(), "sid");
    assert!(!sid.is_empty() && !sid.contains("device-1"), "an opaque sid: {sid}");
    assert!(claims["jti"].as_str().is_some_and(|jti| !jti.is_empty()), "{claims}");
    assert_eq!(int(&claims["iat"]), now_ms / 1000);
    assert_eq!(int(&claims["exp"]), (now_ms + MEDIA_TOKEN_TTL_MS) / 1000);
    assert_eq!(int(&reply.decision()["token"]["notAfter"]), int(&claims["exp"]) * 1000);

    let ours = ok(Jwks::from_json(served_jwks_json(&app).await.as_bytes()), "the served JWKS as temppass reads it");
    let options = VerifyOptions { resource: Some("channel-1"), ..VerifyOptions::new(now_ms / 1000) };
    match verify_media_token(&serialized, &ours, &options) {
        Verdict::Valid(verified) => assert_eq!(ok(serde_json::to_value(&verified), "claims"), claims),
        other => panic!("temppass's verifier says {}", other.name()),
    }
}

#[tokio::test]
async fn a_tampered_media_token_fails_both_verifiers() {
    let app = TestApp::new().await;
    app.clock.set(SystemClock.now());
    let token = app.token_for("media-app", &[SP], &[SCOPE_API]).await;
    let reply = app.authorize(BASIC, "device-1", &["channel-1"]).bearer(&token).send().await;
    let serialized = some(reply.decision()["token"]["serializedToken"].as_str(), "serializedToken");
    let mut claims = jws_claims(serialized);
    claims["resource"] = json!("premium-channel");
    let parts: Vec<&str> = serialized.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    let jwks_json = served_jwks_json(&app).await;

    let jwks: JwkSet = ok(serde_json::from_str(&jwks_json), "JWKS");
    let key = ok(DecodingKey::from_jwk(&jwks.keys[0]), "decoding key");
    let independent = jsonwebtoken::decode::<Value>(&forged, &key, &Validation::new(Algorithm::EdDSA));
    assert!(independent.is_err(), "jsonwebtoken accepted a forged token");

    let ours = ok(Jwks::from_json(jwks_json.as_bytes()), "JWKS");
    let verdict = verify_media_token(&forged, &ours, &VerifyOptions::new(app.now_ms() / 1000));
    assert_eq!(verdict, Verdict::InvalidSignature);
}

#[tokio::test]
async fn temppass_verifies_a_media_token_for_its_resource_until_it_expires() {
    let app = TestApp::new().await;
    let now_secs = app.now_ms() / 1000;
    let reply = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;
    let serialized = some(reply.decision()["token"]["serializedToken"].as_str(), "serializedToken");
    let jwks = ok(Jwks::from_json(served_jwks_json(&app).await.as_bytes()), "JWKS");
    let exp = int(&jws_claims(serialized)["exp"]);
    let at = |now: i64, resource: Option<&'static str>| VerifyOptions { now, skew_secs: 0, resource };

    assert!(matches!(verify_media_token(serialized, &jwks, &at(now_secs, Some("channel-1"))), Verdict::Valid(_)));
    assert_eq!(verify_media_token(serialized, &jwks, &at(now_secs, Some("channel-2"))), Verdict::InvalidResource);
    assert!(matches!(verify_media_token(serialized, &jwks, &at(exp - 1, None)), Verdict::Valid(_)));
    assert_eq!(verify_media_token(serialized, &jwks, &at(exp, None)), Verdict::Expired);
}

#[tokio::test]
async fn every_media_token_has_its_own_jti_and_its_trials_sid() {
    let app = TestApp::new().await;
    let token_of = |reply: &crate::support::Reply| {
        jws_claims(some(reply.decision()["token"]["serializedToken"].as_str(), "serializedToken"))
    };

    let first = token_of(&app.authorize(BASIC, "device-1", &["channel-1"]).send().await);
    let second = token_of(&app.authorize(BASIC, "device-1", &["channel-1"]).send().await);
    let other_device = token_of(&app.authorize(BASIC, "device-2", &["channel-1"]).send().await);

    assert_ne!(first["jti"], second["jti"]);
    assert_eq!(first["sid"], second["sid"], "one trial, one sid");
    assert_ne!(first["sid"], other_device["sid"], "another trial, another sid");
}

fn served_key_set(json: &str) -> Jwks {
    ok(Jwks::from_json(json.as_bytes()), "the served JWKS")
}

#[tokio::test]
async fn after_a_rotation_new_tokens_use_the_new_key_and_old_ones_verify_until_the_old_key_retires() {
    let mut app = TestApp::new().await;
    let (_, old_statement) = app.create_application("before-rotation", &[SP], &[SCOPE_API]).await;
    let before = app.authorize(BASIC, "device-1", &["res"]).send().await;
    let old_token = some(before.decision()["token"]["serializedToken"].as_str(), "token").to_owned();
    let old_kid = some(temppass_token::token_kid(&old_token), "old kid");

    // `temppass key rotate`: a new key in the store, picked up by the server's periodic reload.
    let new_key = temppass_token::SigningKey::from_seed([42; 32]);
    let stored = temppass_store::StoredSigningKey {
        kid: new_key.kid().to_owned(),
        seed: new_key.seed(),
        created_at: app.clock_now(),
    };
    ok(app.store().add_signing_key(&stored).await, "add the new key");
    ok(app.state.reload_keys().await, "reload keys");

    // Published at once, but not yet used: other servers must publish it before anyone signs with it.
    let jwks = served_key_set(&served_jwks_json(&app).await);
    assert!(jwks.keys.iter().any(|k| k.kid == new_key.kid()), "the new key is not published at once");
    let soon = app.authorize(BASIC, "device-1", &["res"]).send().await;
    let soon_token = some(soon.decision()["token"]["serializedToken"].as_str(), "token").to_owned();
    assert_eq!(temppass_token::token_kid(&soon_token), Some(old_kid.clone()), "a brand-new key signed at once");

    app.advance_ms(temppass_http::KEY_SIGNING_DELAY_MS);
    ok(app.state.reload_keys().await, "reload keys");
    let after = app.authorize(BASIC, "device-1", &["res"]).send().await;
    let new_token = some(after.decision()["token"]["serializedToken"].as_str(), "token").to_owned();
    assert_eq!(temppass_token::token_kid(&new_token).as_deref(), Some(new_key.kid()), "new tokens use the new key");
    let jwks = served_key_set(&served_jwks_json(&app).await);
    let now_s = app.clock_now().as_secs_floor();
    for token in [&old_token, &new_token] {
        let verdict = verify_media_token(token, &jwks, &VerifyOptions::new(now_s));
        assert!(matches!(verdict, Verdict::Valid(_)), "{verdict:?}");
    }

    // Once no token of the old key can be valid any more, the old key leaves the JWKS.
    app.advance_ms(temppass_http::KEY_ADOPTION_MS + MEDIA_TOKEN_TTL_MS + 30_000);
    ok(app.state.reload_keys().await, "reload keys");
    let jwks = served_key_set(&served_jwks_json(&app).await);
    assert!(jwks.keys.iter().all(|k| k.kid != old_kid), "the retired key is still published");
    assert_eq!(
        verify_media_token(&old_token, &jwks, &VerifyOptions { skew_secs: 1 << 40, ..VerifyOptions::new(now_s) }),
        Verdict::InvalidSignature,
        "a token of a removed key must not verify"
    );
    // A software statement signed before the rotation still registers: statements do not expire.
    app.renew_token().await;
    app.register_client(&old_statement).await;
}
