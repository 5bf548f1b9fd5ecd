//! Trials through HTTP (SPEC.md §2): the basic clock, the promotional cap and
//! identity, and what does not start a trial.

use serde_json::json;

use crate::support::{
    BASIC, BASIC_TTL_MS, OTHER_SP, PROMO, PROMO_MAX_RESOURCES, PROMO_TTL_MS, SP, TestApp, assert_denied,
    assert_permitted, int,
};

#[tokio::test]
async fn a_basic_trial_is_denied_from_its_expiry_on() {
    let mut app = TestApp::new().await;
    let first = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;
    assert_permitted(first.decision(), "channel-1");

    app.advance_ms(BASIC_TTL_MS - 1);
    let last = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;
    assert_permitted(last.decision(), "channel-1");

    app.advance_ms(1);
    let expired = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;
    let item = expired.decision();
    assert_denied(item, "channel-1", 403, "temporary_access_duration_limit_exceeded", "authentication");
    assert_eq!(item["serviceProvider"], SP);
    assert_eq!(item["mvpd"], BASIC);

    let profile = app.profile(BASIC, "device-1").send().await;
    profile.assert_error(403, "temporary_access_duration_limit_exceeded", "authentication");

    app.advance_ms(30 * 24 * 60 * 60 * 1000);
    app.renew_token().await;
    let much_later = app.authorize(BASIC, "device-1", &["channel-2"]).send().await;
    assert_denied(
        much_later.decision(),
        "channel-2",
        403,
        "temporary_access_duration_limit_exceeded",
        "authentication",
    );
}

#[tokio::test]
async fn nothing_but_authorize_starts_the_clock() {
    let app = TestApp::new().await;
    let device = "device-1";
    app.get(&format!("/api/v2/{SP}/configuration")).send().await.assert_status(200);
    app.post_form(&format!("/api/v2/{SP}/sessions"), &[("mvpd", BASIC)]).device(device).send().await.assert_status(200);
    app.post_form(&format!("/api/v2/{SP}/sessions"), &[]).device(device).send().await.assert_status(200);
    app.profile(BASIC, device).send().await.assert_status(200);
    app.get(&format!("/api/v2/{SP}/profiles")).device(device).send().await.assert_status(200);
    app.preauthorize(BASIC, device, &["channel-1"]).send().await.assert_status(200);
    app.get(&format!("/api/v2/{SP}/logout/{BASIC}")).device(device).send().await.assert_status(200);

    app.advance_ms(BASIC_TTL_MS * 3);
    let now = app.now_ms();
    let reply = app.authorize(BASIC, device, &["channel-1"]).send().await;

    let item = reply.decision();
    assert_permitted(item, "channel-1");
    assert_eq!(int(&item["notAfter"]), now + BASIC_TTL_MS, "the trial started at this authorization");
}

#[tokio::test]
async fn trials_are_kept_per_device() {
    let app = TestApp::new().await;
    app.authorize(BASIC, "device-1", &["channel-1"]).send().await.decision();
    app.advance_ms(BASIC_TTL_MS);

    let other_device = app.authorize(BASIC, "device-2", &["channel-1"]).send().await;

    assert_permitted(other_device.decision(), "channel-1");
    assert_eq!(int(&other_device.decision()["notAfter"]), app.now_ms() + BASIC_TTL_MS);
}

#[tokio::test]
async fn an_application_of_another_service_provider_has_trials_of_its_own() {
    let app = TestApp::new().await;
    let other_token = app.token_for("other-app", &[OTHER_SP], &[temppass_http::auth::SCOPE_API]).await;
    app.authorize(BASIC, "device-1", &["channel-1"]).send().await.decision();
    app.advance_ms(BASIC_TTL_MS);

    let reply = app
        .post_json(&format!("/api/v2/{OTHER_SP}/decisions/authorize/{BASIC}"), &json!({ "resources": ["channel-1"] }))
        .bearer(&other_token)
        .device("device-1")
        .send()
        .await;

    let item = reply.decision();
    assert_permitted(item, "channel-1");
    assert_eq!(item["serviceProvider"], OTHER_SP);
    assert_eq!(int(&item["notAfter"]), app.now_ms() + 4 * 60 * 60 * 1000, "OTHER's own rule: 4h");
}

// --- promotional ---

const EMAIL: &str = "viewer@example.com";

#[tokio::test]
async fn a_promotional_trial_permits_three_distinct_resources_and_no_fourth() {
    let app = TestApp::new().await;
    let started_at = app.now_ms();
    for resource in ["title-1", "title-2"] {
        let reply = app.authorize(PROMO, "device-1", &[resource]).identity(EMAIL).send().await;
        let item = reply.decision();
        assert_permitted(item, resource);
        assert_eq!(item["mvpd"], PROMO);
        assert_eq!(int(&item["notAfter"]), started_at + PROMO_TTL_MS);
    }

    let profile = app.profile(PROMO, "device-1").identity(EMAIL).send().await;
    let profile = profile.profile(PROMO);
    assert_eq!(int(&profile["notBefore"]), started_at);
    assert_eq!(int(&profile["notAfter"]), started_at + PROMO_TTL_MS);
    assert_eq!(
        profile["attributes"]["remaining_resources"],
        json!({ "value": PROMO_MAX_RESOURCES - 2, "state": "plain" })
    );
    assert_eq!(profile["attributes"]["used_assets"], json!({ "value": ["title-1", "title-2"], "state": "plain" }));

    let again = app.authorize(PROMO, "device-1", &["title-1"]).identity(EMAIL).send().await;
    assert_permitted(again.decision(), "title-1");
    let third = app.authorize(PROMO, "device-1", &["title-3"]).identity(EMAIL).send().await;
    assert_permitted(third.decision(), "title-3");

    let fourth = app.authorize(PROMO, "device-1", &["title-4"]).identity(EMAIL).send().await;
    assert_denied(fourth.decision(), "title-4", 403, "temporary_access_resources_limit_exceeded", "authentication");

    let exhausted = app.profile(PROMO, "device-1").identity(EMAIL).send().await;
    exhausted.assert_error(403, "temporary_access_resources_limit_exceeded", "authentication");

    let used = app.authorize(PROMO, "device-1", &["title-2"]).identity(EMAIL).send().await;
    assert_permitted(used.decision(), "title-2");
}

#[tokio::test]
async fn an_exhausted_promotional_trial_still_ends_with_its_ttl() {
    let mut app = TestApp::new().await;
    for resource in ["title-1", "title-2", "title-3"] {
        assert_permitted(
            app.authorize(PROMO, "device-1", &[resource]).identity(EMAIL).send().await.decision(),
            resource,
        );
    }

    app.advance_ms(PROMO_TTL_MS);
    app.renew_token().await;
    let reply = app.authorize(PROMO, "device-1", &["title-1"]).identity(EMAIL).send().await;

    assert_denied(reply.decision(), "title-1", 403, "temporary_access_duration_limit_exceeded", "authentication");
}

#[tokio::test]
async fn a_promotional_authorization_without_identity_is_denied_in_the_item() {
    let app = TestApp::new().await;

    let reply = app.authorize(PROMO, "device-1", &["title-1"]).send().await;

    assert_denied(reply.decision(), "title-1", 400, "invalid_header_identity_for_temporary_access", "none");
    let profile = app.profile(PROMO, "device-1").identity(EMAIL).send().await;
    assert_eq!(profile.profile(PROMO)["attributes"]["used_assets"]["value"], json!([]), "no trial was started");
}

#[tokio::test]
async fn a_malformed_identity_is_denied_in_the_item() {
    let app = TestApp::new().await;
    for value in ["%%%", "bm90IGpzb24=", "eyJuYW1lIjoieCJ9", "eyJlbWFpbCI6IiJ9"] {
        let reply = app.authorize(PROMO, "device-1", &["title-1"]).header("AP-TempPass-Identity", value).send().await;
        assert_denied(reply.decision(), "title-1", 400, "invalid_header_identity_for_temporary_access", "none");
    }
}

#[tokio::test]
async fn a_promotional_profile_without_identity_is_a_request_error() {
    let app = TestApp::new().await;

    let reply = app.profile(PROMO, "device-1").send().await;

    reply.assert_error(400, "invalid_header_identity_for_temporary_access", "none");
}

#[tokio::test]
async fn a_raw_email_and_its_sha256_find_the_same_trial() {
    let app = TestApp::new().await;
    // SHA-256 of "user@domain.com", the example of SPEC.md §4; apps may send it upper-case.
    let hashed = "F7EE5EC7312165148B69FCCA1D29075B14B8AEF0B5048A332B18B88D09069FB7";
    let first = app.authorize(PROMO, "phone", &["title-1"]).identity("  User@Domain.com ").send().await;
    let expires_at = int(&first.decision()["notAfter"]);
    app.advance_ms(60_000);

    let reply = app.profile(PROMO, "tablet").identity(hashed).send().await;

    let profile = reply.profile(PROMO);
    assert_eq!(int(&profile["notAfter"]), expires_at, "the tablet found the phone's trial");
    assert_eq!(profile["attributes"]["used_assets"]["value"], json!(["title-1"]));
    let second = app.authorize(PROMO, "tablet", &["title-2"]).identity(hashed).send().await;
    assert_eq!(int(&second.decision()["notAfter"]), expires_at);
}

#[tokio::test]
async fn a_promotional_device_keeps_its_trial_under_a_new_identity() {
    let app = TestApp::new().await;
    let first = app.authorize(PROMO, "device-1", &["title-1"]).identity(EMAIL).send().await;
    let expires_at = int(&first.decision()["notAfter"]);

    let reply = app.authorize(PROMO, "device-1", &["title-2"]).identity("someone.else@example.com").send().await;

    assert_eq!(int(&reply.decision()["notAfter"]), expires_at);
    let profile = app.profile(PROMO, "device-2").identity("someone.else@example.com").send().await;
    assert_eq!(profile.profile(PROMO)["attributes"]["used_assets"]["value"], json!(["title-1", "title-2"]));
}

#[tokio::test]
async fn promotional_preauthorization_permits_used_resources_and_new_ones_while_a_slot_is_free() {
    let app = TestApp::new().await;
    let new_viewer = app.preauthorize(PROMO, "device-1", &["title-1", "title-2", "title-3", "title-4"]).send().await;
    assert!(new_viewer.decisions().iter().all(|item| item["authorized"] == true), "{}", new_viewer.text);
    for resource in ["title-1", "title-2", "title-3"] {
        app.authorize(PROMO, "device-1", &[resource]).identity(EMAIL).send().await.decision();
    }

    let reply = app.preauthorize(PROMO, "device-1", &["title-1", "title-4"]).identity(EMAIL).send().await;

    let decisions = reply.decisions();
    assert_eq!(decisions[0]["authorized"], true, "{}", reply.text);
    assert!(decisions[0].get("token").is_none());
    assert_denied(&decisions[1], "title-4", 403, "temporary_access_resources_limit_exceeded", "authentication");
}

#[tokio::test]
async fn promotional_preauthorization_uses_no_slot() {
    let app = TestApp::new().await;
    app.authorize(PROMO, "device-1", &["title-1"]).identity(EMAIL).send().await.decision();

    let reply = app.preauthorize(PROMO, "device-1", &["title-2", "title-3", "title-4"]).identity(EMAIL).send().await;

    assert!(reply.decisions().iter().all(|item| item["authorized"] == true), "{}", reply.text);
    let profile = app.profile(PROMO, "device-1").identity(EMAIL).send().await;
    assert_eq!(profile.profile(PROMO)["attributes"]["remaining_resources"]["value"], PROMO_MAX_RESOURCES - 1);
}

#[tokio::test]
async fn a_promotional_trial_reports_one_user_id_on_every_device_that_shares_it() {
    let app = TestApp::new().await;
    app.authorize(PROMO, "phone", &["title-1"]).identity("viewer@example.com").send().await.decision();
    let phone = app.profile(PROMO, "phone").identity("viewer@example.com").send().await;
    let tablet = app.profile(PROMO, "tablet").identity("viewer@example.com").send().await;
    let user_id = &phone.profile(PROMO)["attributes"]["userID"]["value"];
    assert_eq!(user_id, &tablet.profile(PROMO)["attributes"]["userID"]["value"]);
    let user_id = crate::support::some(user_id.as_str(), "userID");
    assert!(user_id.starts_with("temppass_") && !user_id.contains("viewer"), "an opaque userID: {user_id}");
    let basic_a = app.profile(BASIC, "phone").send().await;
    let basic_b = app.profile(BASIC, "tablet").send().await;
    assert_ne!(
        basic_a.profile(BASIC)["attributes"]["userID"],
        basic_b.profile(BASIC)["attributes"]["userID"],
        "basic trials are per device"
    );
}
