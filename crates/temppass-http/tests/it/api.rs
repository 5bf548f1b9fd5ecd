//! The happy path of every REST API V2 endpoint (SPEC.md §3), field by field.

use serde_json::json;

use crate::support::{
    BASIC, BASIC_TTL_MS, CODE_ALPHABET, MEDIA_TOKEN_TTL_MS, PROMO, PROMO_MAX_RESOURCES, PROMO_TTL_MS, REGULAR,
    SESSION_TTL_MS, SP, TestApp, assert_permitted, int, jws_claims, some,
};

#[tokio::test]
async fn the_configuration_lists_regular_and_temppass_mvpds() {
    let app = TestApp::new().await;

    let reply = app.get(&format!("/api/v2/{SP}/configuration")).send().await;

    let requestor = &reply.assert_ok_json()["requestor"];
    assert_eq!(requestor["id"], SP);
    assert_eq!(requestor["name"], "Reference channel");
    assert_eq!(requestor["domains"], json!([{ "name": "example.com", "mvpdInitiated": false }]));
    let mvpds = some(requestor["mvpds"].as_array(), "mvpds");
    let listed: Vec<(&str, bool)> = mvpds
        .iter()
        .map(|m| (some(m["id"].as_str(), "mvpd id"), some(m["isTempPass"].as_bool(), "isTempPass")))
        .collect();
    assert_eq!(listed, [(REGULAR, false), (BASIC, true), (PROMO, true)]);
    let regular = &mvpds[0];
    assert_eq!(regular["displayName"], "Cablevision Optimum");
    assert_eq!(regular["logoUrl"], "https://example.com/cablevision.png");
    assert_eq!(mvpds[1]["displayName"], "Free preview");
    for mvpd in mvpds {
        assert_eq!(mvpd["authPerAggregator"], false, "{mvpd}");
    }
}

#[tokio::test]
async fn a_session_for_a_temppass_mvpd_goes_straight_to_authorize() {
    let app = TestApp::new().await;

    let reply = app
        .post_form(
            &format!("/api/v2/{SP}/sessions"),
            &[("mvpd", BASIC), ("domainName", "example.com"), ("redirectUrl", "https://example.com/done")],
        )
        .device("device-1")
        .send()
        .await;

    let session = reply.assert_ok_json();
    assert_eq!(session["actionName"], "authorize");
    assert_eq!(session["actionType"], "direct");
    assert_eq!(session["reasonType"], "temporary");
    assert_eq!(session["url"], format!("/api/v2/{SP}/decisions/authorize/{BASIC}"));
    assert_eq!(session["mvpd"], BASIC);
    assert_eq!(session["serviceProvider"], SP);
    assert!(session["sessionId"].as_str().is_some_and(|id| !id.is_empty()), "{session}");
}

/// Adobe's `SessionResponse` requires `sessionId` and `serviceProvider` in every
/// answer, a `resume` too; the id stays the same until the session completes.
#[tokio::test]
async fn every_session_answer_names_its_session_and_service_provider() {
    let app = TestApp::new().await;

    let created = app.post_form(&format!("/api/v2/{SP}/sessions"), &[]).device("tv-1").send().await;
    let created = created.assert_ok_json();
    assert_eq!(created["actionName"], "resume");
    let session_id = some(created["sessionId"].as_str(), "sessionId of a new second-screen session").to_owned();
    assert!(!session_id.is_empty());
    assert_eq!(created["serviceProvider"], SP);
    let code = some(created["code"].as_str(), "code").to_owned();

    let partial =
        app.post_form(&format!("/api/v2/{SP}/sessions/{code}"), &[("domainName", "example.com")]).send().await;
    let partial = partial.assert_ok_json();
    assert_eq!(partial["actionName"], "resume", "the MVPD is still missing");
    assert_eq!(partial["sessionId"], session_id.as_str());
    assert_eq!(partial["serviceProvider"], SP);

    let completed = app.post_form(&format!("/api/v2/{SP}/sessions/{code}"), &[("mvpd", BASIC)]).send().await;
    let completed = completed.assert_ok_json();
    assert_eq!(completed["actionName"], "authorize");
    assert_eq!(completed["sessionId"], session_id.as_str());
    assert_eq!(completed["serviceProvider"], SP);
}

#[tokio::test]
async fn a_second_screen_session_gives_a_short_code_that_completes_with_a_temppass_mvpd() {
    let app = TestApp::new().await;
    let created_at = app.now_ms();

    let reply = app.post_form(&format!("/api/v2/{SP}/sessions"), &[]).device("tv-1").send().await;
    let resume = reply.assert_ok_json();
    assert_eq!(resume["actionName"], "resume");
    assert_eq!(resume["actionType"], "direct");
    assert_eq!(resume["reasonType"], "none");
    let code = some(resume["code"].as_str(), "code").to_owned();
    assert_eq!(code.len(), 8, "{code}");
    assert!(code.chars().all(|c| CODE_ALPHABET.contains(c)), "{code} uses only the code alphabet");
    assert_eq!(resume["url"], format!("/api/v2/{SP}/sessions/{code}"));
    assert_eq!(resume["missingParameters"], json!(["mvpd", "domainName", "redirectUrl"]));
    assert_eq!(int(&resume["notBefore"]), created_at);
    assert_eq!(int(&resume["notAfter"]), created_at + SESSION_TTL_MS);

    // The second screen reads the session, with no device of its own.
    let status = app.get(&format!("/api/v2/{SP}/sessions/{code}")).send().await;
    let status = status.assert_ok_json();
    assert_eq!(status["existingParameters"], json!({}));
    assert_eq!(status["missingParameters"], json!(["mvpd", "domainName", "redirectUrl"]));
    assert_eq!(int(&status["notAfter"]), created_at + SESSION_TTL_MS);

    let before = app.get(&format!("/api/v2/{SP}/profiles/code/{code}")).send().await;
    assert_eq!(before.assert_ok_json(), &json!({ "profiles": {} }), "no MVPD chosen yet");

    app.advance_ms(60_000);
    let completed = app.post_form(&format!("/api/v2/{SP}/sessions/{code}"), &[("mvpd", BASIC)]).send().await;
    let completed = completed.assert_ok_json();
    assert_eq!(completed["actionName"], "authorize");
    assert_eq!(completed["actionType"], "direct");
    assert_eq!(completed["reasonType"], "temporary");
    assert_eq!(completed["url"], format!("/api/v2/{SP}/decisions/authorize/{BASIC}"));
    assert_eq!(completed["mvpd"], BASIC);

    let status = app.get(&format!("/api/v2/{SP}/sessions/{}", code.to_lowercase())).send().await;
    let status = status.assert_ok_json();
    assert_eq!(status["existingParameters"], json!({ "mvpd": BASIC }), "the code is case-insensitive");
    assert_eq!(status["missingParameters"], json!(["domainName", "redirectUrl"]));

    // The code remembers the TV's device: its profile is the TV's prospective one.
    let now = app.now_ms();
    let after = app.get(&format!("/api/v2/{SP}/profiles/code/{code}")).send().await;
    let profile = after.profile(BASIC);
    assert_eq!(int(&profile["notBefore"]), now);
    assert_eq!(int(&profile["notAfter"]), now + BASIC_TTL_MS);

    // Once the TV has authorized, the code's profile is the TV's trial.
    let permit = app.authorize(BASIC, "tv-1", &["channel-1"]).send().await;
    let not_after = int(&permit.decision()["notAfter"]);
    app.advance_ms(1_000);
    let after = app.get(&format!("/api/v2/{SP}/profiles/code/{code}")).send().await;
    let profile = after.profile(BASIC);
    assert_eq!(int(&profile["notBefore"]), now);
    assert_eq!(int(&profile["notAfter"]), not_after);
}

#[tokio::test]
async fn reading_a_prospective_profile_creates_nothing() {
    let app = TestApp::new().await;
    let first_read = app.now_ms();

    let reply = app.profile(BASIC, "device-1").send().await;
    let profile = reply.profile(BASIC);
    assert_eq!(int(&profile["notBefore"]), first_read);
    assert_eq!(int(&profile["notAfter"]), first_read + BASIC_TTL_MS);
    assert_eq!(profile["issuer"], "temppass");
    assert_eq!(profile["type"], "temporary");
    let attributes = &profile["attributes"];
    assert_eq!(attributes["expiration_date"], json!({ "value": first_read + BASIC_TTL_MS, "state": "plain" }));
    assert!(attributes.get("remaining_resources").is_none(), "basic rules have no resource count: {profile}");
    assert!(attributes.get("used_assets").is_none(), "basic rules have no used assets: {profile}");
    let user_id = some(attributes["userID"]["value"].as_str(), "userID");
    assert!(user_id.starts_with("temppass_") && !user_id.contains("device-1"), "{user_id}");

    app.advance_ms(5 * 60_000);
    let second_read = app.now_ms();
    let reply = app.profile(BASIC, "device-1").send().await;
    let profile = reply.profile(BASIC);
    assert_eq!(int(&profile["notBefore"]), second_read, "the first read started no clock");
    assert_eq!(int(&profile["notAfter"]), second_read + BASIC_TTL_MS);
    assert_eq!(profile["attributes"]["userID"]["value"], user_id, "userID is stable");
}

#[tokio::test]
async fn a_prospective_promotional_profile_has_every_resource_left() {
    let app = TestApp::new().await;
    let now = app.now_ms();

    let reply = app.profile(PROMO, "device-1").identity("viewer@example.com").send().await;

    let profile = reply.profile(PROMO);
    assert_eq!(int(&profile["notBefore"]), now);
    assert_eq!(int(&profile["notAfter"]), now + PROMO_TTL_MS);
    let attributes = &profile["attributes"];
    assert_eq!(attributes["remaining_resources"], json!({ "value": PROMO_MAX_RESOURCES, "state": "plain" }));
    assert_eq!(attributes["used_assets"], json!({ "value": [], "state": "plain" }));
}

#[tokio::test]
async fn the_profile_after_the_first_authorization_ends_when_the_permit_does() {
    let app = TestApp::new().await;
    let started_at = app.now_ms();

    let permit = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;
    let permit_not_after = int(&permit.decision()["notAfter"]);
    app.advance_ms(2 * 60_000);
    let reply = app.profile(BASIC, "device-1").send().await;

    let profile = reply.profile(BASIC);
    assert_eq!(permit_not_after, started_at + BASIC_TTL_MS);
    assert_eq!(int(&profile["notBefore"]), started_at);
    assert_eq!(int(&profile["notAfter"]), permit_not_after);
    assert_eq!(int(&profile["attributes"]["expiration_date"]["value"]), permit_not_after);
}

#[tokio::test]
async fn all_profiles_and_a_regular_mvpd_profile_are_empty() {
    let app = TestApp::new().await;
    app.authorize(BASIC, "device-1", &["channel-1"]).send().await.decision();

    let all = app.get(&format!("/api/v2/{SP}/profiles")).device("device-1").send().await;
    assert_eq!(all.assert_ok_json(), &json!({ "profiles": {} }));

    let regular = app.profile(REGULAR, "device-1").send().await;
    assert_eq!(regular.assert_ok_json(), &json!({ "profiles": {} }));
}

#[tokio::test]
async fn a_permit_carries_a_media_token_that_ends_no_later_than_the_trial() {
    let app = TestApp::new().await;
    let now = app.now_ms();

    let reply = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;

    let item = reply.decision();
    assert_permitted(item, "channel-1");
    assert_eq!(item["serviceProvider"], SP);
    assert_eq!(item["mvpd"], BASIC);
    assert_eq!(item["source"], "temppass");
    assert_eq!(int(&item["notBefore"]), now);
    assert_eq!(int(&item["notAfter"]), now + BASIC_TTL_MS);
    let token = &item["token"];
    assert_eq!(int(&token["notBefore"]), now);
    let claims = jws_claims(some(token["serializedToken"].as_str(), "serializedToken"));
    assert_eq!(int(&token["notAfter"]), int(&claims["exp"]) * 1000, "token.notAfter is the JWS exp in ms");
    assert_eq!(int(&claims["exp"]), (now + MEDIA_TOKEN_TTL_MS) / 1000);
    assert_eq!(int(&claims["iat"]), now / 1000);
    assert!(int(&token["notAfter"]) <= int(&item["notAfter"]));
}

#[tokio::test]
async fn a_media_token_near_the_end_of_the_trial_expires_with_it() {
    let app = TestApp::new().await;
    let first = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;
    let expires_at = int(&first.decision()["notAfter"]);

    app.advance_ms(BASIC_TTL_MS - 60_000);
    let reply = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;

    let item = reply.decision();
    assert_permitted(item, "channel-1");
    assert_eq!(int(&item["notAfter"]), expires_at);
    let token_not_after = int(&item["token"]["notAfter"]);
    assert_eq!(token_not_after, expires_at / 1000 * 1000, "exp is the trial's end, floored to the second");
    assert!(token_not_after <= expires_at);
}

#[tokio::test]
async fn preauthorization_permits_without_a_token_and_starts_no_trial() {
    let app = TestApp::new().await;

    let reply = app.preauthorize(BASIC, "device-1", &["channel-1", "channel-2"]).send().await;

    let decisions = reply.decisions();
    assert_eq!(decisions.len(), 2);
    for (item, resource) in decisions.iter().zip(["channel-1", "channel-2"]) {
        assert_eq!(item["resource"], resource);
        assert_eq!(item["authorized"], true, "{item}");
        assert_eq!(item["serviceProvider"], SP);
        assert_eq!(item["mvpd"], BASIC);
        assert_eq!(item["source"], "temppass");
        assert!(item.get("token").is_none(), "preauthorization issues no token: {item}");
        assert!(item.get("error").is_none(), "{item}");
    }

    app.advance_ms(3 * 60_000);
    let now = app.now_ms();
    let profile = app.profile(BASIC, "device-1").send().await;
    let profile = profile.profile(BASIC);
    assert_eq!(int(&profile["notBefore"]), now, "the profile is still prospective");
    assert_eq!(int(&profile["notAfter"]), now + BASIC_TTL_MS);
}

#[tokio::test]
async fn logout_answers_complete_and_does_not_reset_the_trial() {
    let app = TestApp::new().await;
    let first = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;
    let expires_at = int(&first.decision()["notAfter"]);

    let reply = app
        .get(&format!("/api/v2/{SP}/logout/{BASIC}?redirectUrl=https%3A%2F%2Fexample.com"))
        .device("device-1")
        .send()
        .await;

    assert_eq!(
        reply.assert_ok_json(),
        &json!({ "logouts": { BASIC: { "actionName": "complete", "actionType": "none", "mvpd": BASIC } } })
    );
    app.advance_ms(60_000);
    let again = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;
    assert_eq!(int(&again.decision()["notAfter"]), expires_at, "the trial goes on after logout");
}

#[tokio::test]
async fn the_jwks_publishes_the_signing_key() {
    let app = TestApp::new().await;

    let reply = app.get("/.well-known/jwks.json").without_bearer().send().await;

    let keys = some(reply.assert_ok_json()["keys"].as_array(), "keys");
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], app.state.keys().signing.kid());
    assert_eq!(some(key["x"].as_str(), "x").len(), 43, "32 bytes in base64url without padding");
    assert!(key.get("d").is_none(), "no private part: {key}");
}
