//! The reset API (SPEC.md §7) and scheduled resets (§1), through HTTP.

use sha2::{Digest, Sha256};
use temppass_core::{DailyReset, ServiceProviderId, Timestamp};
use temppass_http::auth::{SCOPE_API, SCOPE_RESET, secret_hash};
use temppass_store::ApiKey;

use crate::support::*;

const V3: &str = "/reset-tempass/v3";
const V21: &str = "/reset-tempass/v2.1";

fn device_reset(prefix: &str, query: &str) -> String {
    format!("{prefix}/reset?{query}")
}

fn identity_reset(prefix: &str, query: &str) -> String {
    format!("{prefix}/reset/generic?{query}")
}

/// Starts a basic trial for `device` and lets it expire.
async fn expired_basic_trial(app: &TestApp, device: &str) {
    assert_permitted(app.authorize(BASIC, device, &["res"]).send().await.decision(), "res");
    app.advance_ms(BASIC_TTL_MS);
    assert_denied(
        app.authorize(BASIC, device, &["res"]).send().await.decision(),
        "res",
        403,
        "temporary_access_duration_limit_exceeded",
        "authentication",
    );
}

async fn is_denied_for_duration(app: &TestApp, sp: &str, device: &str) -> bool {
    let path = format!("/api/v2/{sp}/decisions/authorize/{BASIC}");
    let reply = app.post_json(&path, &serde_json::json!({ "resources": ["res"] })).device(device).send().await;
    reply.decision()["authorized"] == false
}

#[tokio::test]
async fn resetting_one_device_gives_it_a_fresh_trial_and_leaves_other_devices_expired() {
    let app = TestApp::new().await;
    expired_basic_trial(&app, "tv-1").await;
    expired_basic_trial(&app, "tv-2").await;
    for prefix in [V3, V21] {
        app.delete(&device_reset(prefix, &format!("requestor_id={SP}&mvpd_id={BASIC}&device_id=tv-1")))
            .send()
            .await
            .assert_status(204);
        let fresh = app.authorize(BASIC, "tv-1", &["res"]).send().await;
        assert_permitted(fresh.decision(), "res");
        assert_eq!(int(&fresh.decision()["notAfter"]), app.now_ms() + BASIC_TTL_MS, "a fresh clock");
        assert!(is_denied_for_duration(&app, SP, "tv-2").await, "the other device was reset too");
        app.advance_ms(BASIC_TTL_MS);
    }
}

#[tokio::test]
async fn absent_empty_and_all_device_ids_reset_every_device_of_the_mvpd() {
    let app = TestApp::new().await;
    expired_basic_trial(&app, "tv-1").await;
    expired_basic_trial(&app, "tv-2").await;
    for device_param in ["", "&device_id=", "&device_id=all"] {
        for device in ["tv-1", "tv-2"] {
            assert!(is_denied_for_duration(&app, SP, device).await, "{device} should have expired");
        }
        let path = device_reset(V3, &format!("requestor_id={SP}&mvpd_id={BASIC}{device_param}"));
        app.delete(&path).send().await.assert_status(204);
        for device in ["tv-1", "tv-2"] {
            assert_permitted(app.authorize(BASIC, device, &["res"]).send().await.decision(), "res");
        }
        app.advance_ms(BASIC_TTL_MS);
    }
}

#[tokio::test]
async fn a_device_reset_touches_no_other_mvpd_and_no_other_service_provider() {
    let app = TestApp::new().await;
    let other_token = app.token_for("other-app", &[OTHER_SP], &[SCOPE_API]).await;
    let other_path = format!("/api/v2/{OTHER_SP}/decisions/authorize/{BASIC}");
    let authorize_other =
        || app.post_json(&other_path, &serde_json::json!({ "resources": ["res"] })).device("tv").bearer(&other_token);
    let other_first = authorize_other().send().await;
    assert_permitted(other_first.decision(), "res");
    let promo = app.authorize(PROMO, "tv", &["title-1"]).identity("viewer@example.com").send().await;
    assert_permitted(promo.decision(), "title-1");
    expired_basic_trial(&app, "tv").await;

    app.delete(&device_reset(V3, &format!("requestor_id={SP}&mvpd_id={BASIC}&device_id=tv")))
        .send()
        .await
        .assert_status(204);

    let other_again = authorize_other().send().await;
    assert_eq!(other_again.decision()["notAfter"], other_first.decision()["notAfter"], "OTHER's trial changed");
    let profile = app.profile(PROMO, "tv").identity("viewer@example.com").send().await;
    assert_eq!(profile.profile(PROMO)["attributes"]["used_assets"]["value"], serde_json::json!(["title-1"]));
}

/// The support desk's case (SPEC.md §2): a viewer whose free titles ran out
/// is reset by e-mail, and on the same device, with the same e-mail, starts
/// afresh; the device binding does not bring the old trial back.
#[tokio::test]
async fn a_viewer_reset_by_identity_starts_afresh_on_the_same_device() {
    let app = TestApp::new().await;
    for title in ["title-1", "title-2", "title-3"] {
        let reply = app.authorize(PROMO, "tv", &[title]).identity("viewer@example.com").send().await;
        assert_permitted(reply.decision(), title);
    }
    let spent = app.authorize(PROMO, "tv", &["title-4"]).identity("viewer@example.com").send().await;
    assert_denied(spent.decision(), "title-4", 403, "temporary_access_resources_limit_exceeded", "authentication");
    app.advance_ms(1_000);
    let hash = hex::encode(Sha256::digest(b"viewer@example.com"));
    app.delete(&identity_reset(V3, &format!("requestor_id={SP}&mvpd_id={PROMO}&key={hash}")))
        .send()
        .await
        .assert_status(204);

    let again = app.authorize(PROMO, "tv", &["title-4"]).identity("viewer@example.com").send().await;
    assert_permitted(again.decision(), "title-4");
    let profile = app.profile(PROMO, "tv").identity("viewer@example.com").send().await;
    let profile = profile.profile(PROMO);
    assert_eq!(int(&profile["notBefore"]), app.now_ms(), "the trial did not start afresh");
    assert_eq!(profile["attributes"]["used_assets"]["value"], serde_json::json!(["title-4"]));
}

/// A device reset ends the whole trial it finds: the identity bound to it starts afresh too.
#[tokio::test]
async fn a_device_reset_ends_the_promotional_trial_for_its_identity_too() {
    let app = TestApp::new().await;
    let first = app.authorize(PROMO, "phone", &["title-1"]).identity("viewer@example.com").send().await;
    assert_permitted(first.decision(), "title-1");
    app.advance_ms(1_000);
    app.delete(&device_reset(V3, &format!("requestor_id={SP}&mvpd_id={PROMO}&device_id=phone")))
        .send()
        .await
        .assert_status(204);

    let other_device = app.profile(PROMO, "tablet").identity("viewer@example.com").send().await;
    let profile = other_device.profile(PROMO);
    assert_eq!(int(&profile["notBefore"]), app.now_ms(), "the identity kept the trial of the reset device");
    assert_eq!(profile["attributes"]["used_assets"]["value"], serde_json::json!([]));
    assert_eq!(int(&profile["attributes"]["remaining_resources"]["value"]), PROMO_MAX_RESOURCES);
}

#[tokio::test]
async fn a_raw_email_its_sha256_and_the_upper_case_hex_reset_the_same_identity() {
    let app = TestApp::new().await;
    let hash = hex::encode(Sha256::digest(b"viewer@example.com"));
    for key in ["Viewer@Example.com".to_owned(), hash.clone(), hash.to_ascii_uppercase()] {
        // A second device carries only the identity, so only an identity reset can make it fresh.
        let first = app.authorize(PROMO, "phone", &["title-1"]).identity("viewer@example.com").send().await;
        assert_permitted(first.decision(), "title-1");
        app.advance_ms(1_000);
        let path = identity_reset(V3, &format!("requestor_id={SP}&mvpd_id={PROMO}&key={key}"));
        app.delete(&path).send().await.assert_status(204);
        let tablet = app.profile(PROMO, "tablet").identity("viewer@example.com").send().await;
        assert_eq!(int(&tablet.profile(PROMO)["notBefore"]), app.now_ms(), "key {key} did not reset the identity");
        app.delete(&device_reset(V3, &format!("requestor_id={SP}&mvpd_id={PROMO}&device_id=phone")))
            .send()
            .await
            .assert_status(204);
    }
}

#[tokio::test]
async fn resetting_one_identity_leaves_another_identity_alone() {
    let app = TestApp::new().await;
    let a = app.authorize(PROMO, "phone-a", &["title-1"]).identity("a@example.com").send().await;
    app.authorize(PROMO, "phone-b", &["title-1"]).identity("b@example.com").send().await.decision();
    app.advance_ms(1_000);
    app.delete(&identity_reset(V21, &format!("requestor_id={SP}&mvpd_id={PROMO}&key=b@example.com")))
        .send()
        .await
        .assert_status(204);
    let still = app.profile(PROMO, "tablet").identity("a@example.com").send().await;
    assert_eq!(still.profile(PROMO)["notAfter"], a.decision()["notAfter"]);
}

#[tokio::test]
async fn a_reset_that_matches_nothing_answers_204_and_old_client_parameters_are_ignored() {
    let app = TestApp::new().await;
    let extra = "&appId=legacy&deviceUser=someone&environment=prod";
    for path in [
        device_reset(V3, &format!("requestor_id={SP}&mvpd_id={BASIC}&device_id=never-seen{extra}")),
        identity_reset(V3, &format!("requestor_id={SP}&mvpd_id={PROMO}&key=nobody@example.com{extra}")),
    ] {
        let reply = app.delete(&path).send().await;
        reply.assert_status(204);
        assert!(reply.text.is_empty(), "a 204 has no body");
    }
}

#[tokio::test]
async fn every_bad_parameter_answers_400_on_v3_and_v2_1() {
    let app = TestApp::new().await;
    let long_device = "d".repeat(257);
    let long_key = "k".repeat(1025);
    for prefix in [V3, V21] {
        let cases = [
            (device_reset(prefix, &format!("mvpd_id={BASIC}")), "invalid_parameter_service_provider"),
            (device_reset(prefix, &format!("requestor_id=NOPE&mvpd_id={BASIC}")), "invalid_parameter_service_provider"),
            (device_reset(prefix, &format!("requestor_id={SP}")), "invalid_parameter_mvpd"),
            (device_reset(prefix, &format!("requestor_id={SP}&mvpd_id=bad%20id")), "invalid_parameter_mvpd"),
            (device_reset(prefix, &format!("requestor_id={SP}&mvpd_id=Unknown")), "invalid_integration"),
            (device_reset(prefix, &format!("requestor_id={SP}&mvpd_id={REGULAR}")), "invalid_integration"),
            (
                device_reset(prefix, &format!("requestor_id={SP}&mvpd_id={BASIC}&device_id={long_device}")),
                "invalid_parameter_device_id",
            ),
            (identity_reset(prefix, &format!("mvpd_id={PROMO}")), "invalid_parameter_service_provider"),
            (identity_reset(prefix, &format!("requestor_id={SP}&mvpd_id=Unknown")), "invalid_integration"),
            (
                identity_reset(prefix, &format!("requestor_id={SP}&mvpd_id={PROMO}&key={long_key}")),
                "invalid_parameter_key",
            ),
        ];
        for (path, code) in cases {
            let reply = app.delete(&path).send().await;
            assert_eq!(reply.status.as_u16(), 400, "{path}: {}", reply.text);
            assert_enhanced_error(&reply.body, 400, code, "none");
        }
    }
}

#[tokio::test]
async fn missing_unknown_and_expired_tokens_answer_401() {
    let mut app = TestApp::new().await;
    for prefix in [V3, V21] {
        for path in [
            device_reset(prefix, &format!("requestor_id={SP}&mvpd_id={BASIC}")),
            identity_reset(prefix, &format!("requestor_id={SP}&mvpd_id={PROMO}")),
        ] {
            app.delete(&path).without_bearer().send().await.assert_error(
                401,
                "invalid_access_token_client_application",
                "application-registration",
            );
            app.delete(&path).bearer("not-a-token").send().await.assert_error(
                401,
                "invalid_access_token_client_application",
                "application-registration",
            );
        }
    }
    let expired = app.token.clone();
    app.advance_ms(ACCESS_TOKEN_TTL_MS);
    app.renew_token().await;
    let path = device_reset(V3, &format!("requestor_id={SP}&mvpd_id={BASIC}"));
    app.delete(&path).bearer(&expired).send().await.assert_error(
        401,
        "invalid_access_token_client_application",
        "application-registration",
    );
    app.delete(&path).send().await.assert_status(204);
}

#[tokio::test]
async fn a_token_without_the_owner_scope_for_another_provider_or_of_a_revoked_application_answers_403() {
    let app = TestApp::new().await;
    let api_only = app.access_token(&app.client, Some(SCOPE_API)).await;
    let other_provider = app.token_for("other-owner", &[OTHER_SP], &[SCOPE_RESET]).await;
    let revoked = app.token_for("revoked-owner", &[SP], &[SCOPE_RESET]).await;
    assert!(ok(app.store().revoke_application("revoked-owner", app.clock_now()).await, "revoke"));
    for prefix in [V3, V21] {
        for path in [
            device_reset(prefix, &format!("requestor_id={SP}&mvpd_id={BASIC}")),
            identity_reset(prefix, &format!("requestor_id={SP}&mvpd_id={PROMO}")),
        ] {
            for token in [&api_only, &other_provider, &revoked] {
                app.delete(&path).bearer(token).send().await.assert_error(
                    403,
                    "reset_not_permitted",
                    "application-registration",
                );
            }
        }
    }
}

async fn api_key(app: &TestApp, key: &str, sp: &str) {
    let record = ApiKey {
        key_hash: secret_hash(key),
        service_provider: ok(ServiceProviderId::parse(sp), "service provider"),
        created_at: app.clock_now(),
        revoked_at: None,
    };
    ok(app.store().create_api_key(&record).await, "create the API key");
}

#[tokio::test]
async fn the_legacy_reset_takes_an_api_key_with_the_statuses_of_seed_000() {
    let app = TestApp::new().await;
    api_key(&app, "key-of-ref30", SP).await;
    api_key(&app, "key-of-other", OTHER_SP).await;
    api_key(&app, "revoked-key", SP).await;
    assert!(ok(app.store().revoke_api_key(&secret_hash("revoked-key"), app.clock_now()).await, "revoke"));
    expired_basic_trial(&app, "tv").await;
    let path = format!("/reset-tempass/v2/reset?requestor_id={SP}&mvpd_id={BASIC}&device_id=tv");

    let missing = app.delete(&path).without_bearer().send().await;
    missing.assert_status(401);
    assert_enhanced_error(&missing.body, 401, "api_key_missing", "application-registration");
    assert_eq!(missing.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("ApiKey"));
    for key in ["unknown-key", "key-of-other", "revoked-key"] {
        app.delete(&path).without_bearer().header("ApiKey", key).send().await.assert_error(
            403,
            "reset_not_permitted",
            "application-registration",
        );
    }
    let bad = app
        .delete(&format!("/reset-tempass/v2/reset?mvpd_id={BASIC}"))
        .without_bearer()
        .header("ApiKey", "key-of-ref30")
        .send()
        .await;
    assert_enhanced_error(&bad.body, 400, "invalid_parameter_service_provider", "none");

    assert!(is_denied_for_duration(&app, SP, "tv").await);
    app.delete(&path).without_bearer().header("ApiKey", "key-of-ref30").send().await.assert_status(204);
    assert_permitted(app.authorize(BASIC, "tv", &["res"]).send().await.decision(), "res");
}

/// REF30's basic TempPass with a daily reset at midnight in New York.
async fn daily_app() -> TestApp {
    let mut settings = settings();
    settings.service_providers[0].temppass_mvpds[0].rule.reset =
        Some(ok(DailyReset::parse("00:00", "America/New_York"), "reset schedule"));
    TestApp::with_settings(settings).await
}

fn ms(text: &str) -> i64 {
    ok(text.parse::<jiff::Timestamp>(), "instant").as_millisecond()
}

#[tokio::test]
async fn just_after_midnight_in_new_york_a_profile_shows_a_fresh_trial_without_any_reset_call() {
    let mut app = daily_app().await;
    // 23:55 EST on 2026-01-14 is 04:55Z on the 15th; midnight EST is 05:00Z.
    app.clock.set(Timestamp::from_millis(ms("2026-01-15T04:55:00Z")));
    app.renew_token().await;
    let first = app.authorize(BASIC, "tv", &["res"]).send().await;
    assert_permitted(first.decision(), "res");
    app.clock.set(Timestamp::from_millis(ms("2026-01-15T04:59:59.999Z")));
    let before = app.profile(BASIC, "tv").send().await;
    assert_eq!(before.profile(BASIC)["notAfter"], first.decision()["notAfter"], "before midnight: the same trial");
    app.clock.set(Timestamp::from_millis(ms("2026-01-15T05:00:00.001Z")));
    let after = app.profile(BASIC, "tv").send().await;
    assert_eq!(int(&after.profile(BASIC)["notBefore"]), app.now_ms(), "after midnight the profile is prospective");
    let again = app.authorize(BASIC, "tv", &["res"]).send().await;
    assert_eq!(int(&again.decision()["notAfter"]), app.now_ms() + BASIC_TTL_MS, "a new ten minutes");
}

#[tokio::test]
async fn an_expired_daily_pass_comes_back_at_local_midnight_in_summer_time_too() {
    let mut app = daily_app().await;
    // 2026-07-04 20:00 EDT; midnight EDT is 04:00Z on the 5th.
    app.clock.set(Timestamp::from_millis(ms("2026-07-05T00:00:00Z")));
    app.renew_token().await;
    expired_basic_trial(&app, "tv").await;
    app.clock.set(Timestamp::from_millis(ms("2026-07-05T03:59:59Z")));
    assert!(is_denied_for_duration(&app, SP, "tv").await, "still the same day in New York");
    app.clock.set(Timestamp::from_millis(ms("2026-07-05T04:00:00Z")));
    assert_permitted(app.authorize(BASIC, "tv", &["res"]).send().await.decision(), "res");
}
