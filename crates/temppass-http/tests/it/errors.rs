//! Every request-level and item-level error of SPEC.md §5 that the REST API
//! produces, and the order in which the checks run.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use temppass_core::{DeviceId, IdentityHash, RuleScope, Timestamp, Trial};
use temppass_http::auth::{SCOPE_API, SCOPE_RESET};
use temppass_store::Authorization;
use temppass_store::{
    AccessGrant, AccessToken, ApiKey, Application, AuthorizeOutcome, Client, DailyFigures, FigureDelta, FiguresQuery,
    ReclaimReport, Session, Store, StoreError, StoreLoad, StoredSigningKey, TrialLookup,
};

use crate::support::{
    ACCESS_TOKEN_TTL_MS, BASIC, OTHER_SP, PROMO, REGULAR, SESSION_TTL_MS, SP, TestApp, assert_denied, fingerprint, ok,
    settings,
};

// --- the bearer token ---

#[tokio::test]
async fn a_missing_bearer_token_is_refused() {
    let app = TestApp::new().await;

    let reply = app.get(&format!("/api/v2/{SP}/configuration")).without_bearer().send().await;

    reply.assert_error(401, "invalid_access_token_client_application", "application-registration");
}

#[tokio::test]
async fn a_malformed_bearer_token_is_refused() {
    let app = TestApp::new().await;
    let too_long = format!("Bearer {}", "a".repeat(600));
    let basic = format!("Basic {}", app.token);
    for value in ["Bearer", "Bearer ", "token-without-scheme", basic.as_str(), too_long.as_str()] {
        let reply = app.get(&format!("/api/v2/{SP}/configuration")).header("authorization", value).send().await;
        reply.assert_error(401, "invalid_access_token_client_application", "application-registration");
    }
}

#[tokio::test]
async fn an_unknown_bearer_token_is_refused() {
    let app = TestApp::new().await;

    let reply = app.get(&format!("/api/v2/{SP}/configuration")).bearer("an-unknown-token").send().await;

    reply.assert_error(401, "invalid_access_token_client_application", "application-registration");
}

#[tokio::test]
async fn an_access_token_is_refused_from_its_expiry_on() {
    let app = TestApp::new().await;
    app.advance_ms(ACCESS_TOKEN_TTL_MS - 1);
    app.get(&format!("/api/v2/{SP}/configuration")).send().await.assert_status(200);

    app.advance_ms(1);
    let reply = app.get(&format!("/api/v2/{SP}/configuration")).send().await;

    reply.assert_error(401, "invalid_access_token_client_application", "application-registration");
}

#[tokio::test]
async fn a_token_of_a_revoked_application_is_refused() {
    let app = TestApp::new().await;
    let token = app.token_for("soon-revoked", &[SP], &[SCOPE_API]).await;
    app.get(&format!("/api/v2/{SP}/configuration")).bearer(&token).send().await.assert_status(200);

    let revoked = ok(app.store().revoke_application("soon-revoked", app.clock_now()).await, "revoke");
    assert!(revoked);
    let reply = app.get(&format!("/api/v2/{SP}/configuration")).bearer(&token).send().await;

    reply.assert_error(401, "invalid_access_token_client_application", "application-registration");
    app.get(&format!("/api/v2/{SP}/configuration")).send().await.assert_status(200);
}

#[tokio::test]
async fn a_token_without_the_api_scope_is_refused_on_api_v2() {
    let app = TestApp::new().await;
    let (_, statement) = app.create_application("reset-only", &[SP], &[SCOPE_API, SCOPE_RESET]).await;
    let client = app.register_client(&statement).await;
    let token = app.access_token(&client, Some(SCOPE_RESET)).await;

    let reply = app.get(&format!("/api/v2/{SP}/configuration")).bearer(&token).send().await;

    reply.assert_error(401, "invalid_access_token_client_application", "application-registration");
}

// --- the service provider ---

#[tokio::test]
async fn an_unknown_service_provider_is_refused() {
    let app = TestApp::new().await;
    for sp in ["NOPE", "bad%20id", &"S".repeat(129)] {
        let reply = app.get(&format!("/api/v2/{sp}/configuration")).send().await;
        reply.assert_error(400, "invalid_parameter_service_provider", "none");
    }
}

#[tokio::test]
async fn a_token_for_one_service_provider_is_refused_on_another() {
    let app = TestApp::new().await;

    let configuration = app.get(&format!("/api/v2/{OTHER_SP}/configuration")).send().await;
    let authorize = app
        .post_json(&format!("/api/v2/{OTHER_SP}/decisions/authorize/{BASIC}"), &json!({ "resources": ["r"] }))
        .device("device-1")
        .send()
        .await;

    configuration.assert_error(401, "invalid_access_token_service_provider", "application-registration");
    authorize.assert_error(401, "invalid_access_token_service_provider", "application-registration");
}

// --- the MVPD ---

#[tokio::test]
async fn a_malformed_mvpd_is_refused() {
    let app = TestApp::new().await;
    let too_long = "m".repeat(129);
    for mvpd in ["Temp%20Pass", "Temp!Pass", "Temp%2FPass", too_long.as_str()] {
        let profile = app.profile(mvpd, "device-1").send().await;
        profile.assert_error(400, "invalid_parameter_mvpd", "none");
        let authorize = app.authorize(mvpd, "device-1", &["r"]).send().await;
        authorize.assert_error(400, "invalid_parameter_mvpd", "none");
        let logout = app.get(&format!("/api/v2/{SP}/logout/{mvpd}")).device("device-1").send().await;
        logout.assert_error(400, "invalid_parameter_mvpd", "none");
    }
    let session = app.post_form(&format!("/api/v2/{SP}/sessions"), &[("mvpd", "Temp Pass")]).device("d").send().await;
    session.assert_error(400, "invalid_parameter_mvpd", "none");
}

#[tokio::test]
async fn an_mvpd_of_exactly_128_bytes_is_well_formed() {
    let app = TestApp::new().await;

    let reply = app.profile(&"m".repeat(128), "device-1").send().await;

    reply.assert_error(400, "invalid_integration", "none");
}

#[tokio::test]
async fn an_mvpd_that_is_not_configured_is_an_invalid_integration() {
    let app = TestApp::new().await;

    app.profile("Comcast", "device-1").send().await.assert_error(400, "invalid_integration", "none");
    app.authorize("Comcast", "device-1", &["r"]).send().await.assert_error(400, "invalid_integration", "none");
    app.preauthorize("Comcast", "device-1", &["r"]).send().await.assert_error(400, "invalid_integration", "none");
    let session =
        app.post_form(&format!("/api/v2/{SP}/sessions"), &[("mvpd", "Comcast")]).device("device-1").send().await;
    session.assert_error(400, "invalid_integration", "none");
}

// --- headers ---

#[tokio::test]
async fn a_malformed_device_identifier_is_refused() {
    let app = TestApp::new().await;
    let too_long = fingerprint(&"d".repeat(257));
    let cases = [
        None,
        Some("bearer ZGV2aWNlLTE="),
        Some("ZGV2aWNlLTE="),
        Some("fingerprint !!!not-base64!!!"),
        Some("fingerprint "),
        Some(too_long.as_str()),
    ];
    for value in cases {
        let with = |call: crate::support::Call| match value {
            Some(value) => call.header("AP-Device-Identifier", value),
            None => call,
        };
        let profile = with(app.get(&format!("/api/v2/{SP}/profiles/{BASIC}"))).send().await;
        profile.assert_error(400, "invalid_header_device_identifier", "none");
        let authorize =
            with(app.post_json(&format!("/api/v2/{SP}/decisions/authorize/{BASIC}"), &json!({ "resources": ["r"] })))
                .send()
                .await;
        authorize.assert_error(400, "invalid_header_device_identifier", "none");
        let session = with(app.post_form(&format!("/api/v2/{SP}/sessions"), &[("mvpd", BASIC)])).send().await;
        session.assert_error(400, "invalid_header_device_identifier", "none");
        let logout = with(app.get(&format!("/api/v2/{SP}/logout/{BASIC}"))).send().await;
        logout.assert_error(400, "invalid_header_device_identifier", "none");
    }
}

#[tokio::test]
async fn a_device_id_of_exactly_256_bytes_is_accepted() {
    let app = TestApp::new().await;

    let reply = app.profile(BASIC, &"d".repeat(256)).send().await;

    reply.profile(BASIC);
}

#[tokio::test]
async fn headers_that_adobe_clients_send_are_accepted_and_ignored() {
    let app = TestApp::new().await;

    let reply = app
        .authorize(BASIC, "device-1", &["channel-1"])
        .header("X-Device-Info", "not even base64")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("AP-Visitor-Identifier", "visitor")
        .header("AP-Partner-Framework-Status", "e30=")
        .header("Adobe-Subject-Token", "subject")
        .header("User-Agent", "TestApp/1.0")
        .header("Content-Type", "application/json;charset=utf-8")
        .send()
        .await;

    crate::support::assert_permitted(reply.decision(), "channel-1");
}

// --- the body ---

#[tokio::test]
async fn malformed_resources_are_refused() {
    let app = TestApp::new().await;
    let path = format!("/api/v2/{SP}/decisions/authorize/{BASIC}");
    let bodies: [&[u8]; 6] = [
        b"",
        b"resources=channel-1",
        br#"{"resources":[]}"#,
        br#"{"resource":["channel-1"]}"#,
        br#"{"resources":"channel-1"}"#,
        br#"{"resources":[""]}"#,
    ];
    for body in bodies {
        let reply = app.post_bytes(&path, "application/json", body.to_vec()).device("device-1").send().await;
        reply.assert_error(400, "invalid_parameter_resources", "none");
    }
    let preauthorize = app
        .post_bytes(&format!("/api/v2/{SP}/decisions/preauthorize/{BASIC}"), "application/json", Vec::new())
        .device("device-1")
        .send()
        .await;
    preauthorize.assert_error(400, "invalid_parameter_resources", "none");
}

#[tokio::test]
async fn too_many_resources_deny_every_item() {
    let app = TestApp::new().await;

    let authorize = app.authorize(BASIC, "device-1", &["r1", "r2"]).send().await;
    let resources = ["r1", "r2", "r3", "r4", "r5", "r6"];
    let preauthorize = app.preauthorize(BASIC, "device-1", &resources).send().await;

    let items = authorize.decisions();
    assert_eq!(items.len(), 2);
    for (item, resource) in items.iter().zip(["r1", "r2"]) {
        assert_denied(item, resource, 403, "too_many_resources", "configuration");
    }
    let items = preauthorize.decisions();
    assert_eq!(items.len(), 6);
    for (item, resource) in items.iter().zip(resources) {
        assert_denied(item, resource, 403, "too_many_resources", "configuration");
    }
    let five = app.preauthorize(BASIC, "device-1", &resources[..5]).send().await;
    assert!(five.decisions().iter().all(|item| item["authorized"] == true), "{}", five.text);
    let profile = app.profile(BASIC, "device-1").send().await;
    assert_eq!(crate::support::int(&profile.profile(BASIC)["notBefore"]), app.clock_now().as_millis());
}

#[tokio::test]
async fn authorizing_a_regular_mvpd_is_denied_for_a_missing_authenticated_profile() {
    let app = TestApp::new().await;

    let reply = app.authorize(REGULAR, "device-1", &["channel-1"]).send().await;

    let item = reply.decision();
    assert_denied(item, "channel-1", 403, "authenticated_profile_missing", "authentication");
    assert_eq!(item["mvpd"], REGULAR);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_payload_too_large() {
    let app = TestApp::new().await;
    let big = "x".repeat(65 * 1024);

    let authorize = app.authorize(BASIC, "device-1", &[big.as_str()]).send().await;
    let session = app
        .post_form(&format!("/api/v2/{SP}/sessions"), &[("mvpd", BASIC), ("redirectUrl", big.as_str())])
        .device("device-1")
        .send()
        .await;
    let register = app.post_json("/o/client/register", &json!({ "software_statement": big })).send().await;

    authorize.assert_error(413, "payload_too_large", "none");
    session.assert_error(413, "payload_too_large", "none");
    register.assert_error(413, "payload_too_large", "none");
}

#[tokio::test]
async fn a_session_body_that_is_not_a_form_is_an_invalid_authentication_session() {
    let app = TestApp::new().await;

    let reply = app
        .post_bytes(
            &format!("/api/v2/{SP}/sessions"),
            "application/x-www-form-urlencoded",
            format!("mvpd={BASIC}&mvpd={PROMO}").into_bytes(),
        )
        .device("device-1")
        .send()
        .await;

    reply.assert_error(400, "invalid_authentication_session", "none");
}

// --- second-screen codes ---

#[tokio::test]
async fn an_unknown_session_code_is_refused() {
    let app = TestApp::new().await;
    for code in ["ZZZZZZZZ", "SHORT", "TOOLONGCODE"] {
        let status = app.get(&format!("/api/v2/{SP}/sessions/{code}")).send().await;
        status.assert_error(400, "invalid_parameter_code", "none");
        let resume = app.post_form(&format!("/api/v2/{SP}/sessions/{code}"), &[("mvpd", BASIC)]).send().await;
        resume.assert_error(400, "invalid_parameter_code", "none");
        let profile = app.get(&format!("/api/v2/{SP}/profiles/code/{code}")).send().await;
        profile.assert_error(400, "invalid_parameter_code", "none");
    }
}

#[tokio::test]
async fn a_session_code_is_refused_from_thirty_minutes_on() {
    let app = TestApp::new().await;
    let created = app.post_form(&format!("/api/v2/{SP}/sessions"), &[]).device("tv-1").send().await;
    let code = created.string("code").to_owned();

    app.advance_ms(SESSION_TTL_MS - 1);
    app.get(&format!("/api/v2/{SP}/sessions/{code}")).send().await.assert_status(200);
    app.advance_ms(1);

    let status = app.get(&format!("/api/v2/{SP}/sessions/{code}")).send().await;
    status.assert_error(400, "invalid_parameter_code", "none");
    let resume = app.post_form(&format!("/api/v2/{SP}/sessions/{code}"), &[("mvpd", BASIC)]).send().await;
    resume.assert_error(400, "invalid_parameter_code", "none");
    let profile = app.get(&format!("/api/v2/{SP}/profiles/code/{code}")).send().await;
    profile.assert_error(400, "invalid_parameter_code", "none");
}

// --- the order of checks (SPEC.md §5) ---

#[tokio::test]
async fn the_bearer_token_is_checked_before_the_service_provider() {
    let app = TestApp::new().await;

    let reply = app.get("/api/v2/NOPE/profiles/Bad!Mvpd").without_bearer().send().await;

    reply.assert_error(401, "invalid_access_token_client_application", "application-registration");
}

#[tokio::test]
async fn the_service_provider_is_checked_before_the_mvpd() {
    let app = TestApp::new().await;

    let reply =
        app.post_bytes("/api/v2/NOPE/decisions/authorize/Bad!Mvpd", "application/json", Vec::new()).send().await;

    reply.assert_error(400, "invalid_parameter_service_provider", "none");
}

#[tokio::test]
async fn the_mvpd_is_checked_before_the_device_identifier_and_that_before_the_body() {
    let app = TestApp::new().await;
    let path = format!("/api/v2/{SP}/decisions/authorize/Bad!Mvpd");

    let bad_mvpd = app.post_bytes(&path, "application/json", Vec::new()).send().await;
    let bad_device = app
        .post_bytes(&format!("/api/v2/{SP}/decisions/authorize/{BASIC}"), "application/json", Vec::new())
        .send()
        .await;

    bad_mvpd.assert_error(400, "invalid_parameter_mvpd", "none");
    bad_device.assert_error(400, "invalid_header_device_identifier", "none");
}

#[tokio::test]
async fn a_promotional_authorization_checks_the_resource_count_before_the_identity() {
    let app = TestApp::new().await;

    let reply = app.authorize(PROMO, "device-1", &["r1", "r2"]).send().await;

    for item in reply.decisions() {
        assert_eq!(item["error"]["code"], "too_many_resources", "{item}");
    }
}

// --- the store ---

/// Delegates to a real store, but never answers an authorization in time:
/// with `true`, it gives up after 50 ms as a backend does at its deadline
/// (`storage.timeout`); with `false`, it hangs.
struct StoreThatHangsOnAuthorize(Arc<dyn Store>, bool);

#[async_trait]
impl Store for StoreThatHangsOnAuthorize {
    async fn find_trial(&self, lookup: TrialLookup<'_>) -> Result<Option<Trial>, StoreError> {
        self.0.find_trial(lookup).await
    }

    async fn authorize(&self, request: Authorization<'_>) -> Result<AuthorizeOutcome, StoreError> {
        if self.1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(StoreError::Unavailable(
                "PostgreSQL at db.internal:5432/temppass did not answer within 50ms".into(),
            ));
        }
        // Far past the request deadline of the test; the server drops this future when it gives up.
        tokio::time::sleep(Duration::from_secs(600)).await;
        self.0.authorize(request).await
    }

    async fn reset_devices(&self, scope: &RuleScope, device: Option<&DeviceId>) -> Result<(), StoreError> {
        self.0.reset_devices(scope, device).await
    }

    async fn reset_identities(&self, scope: &RuleScope, identity: Option<&IdentityHash>) -> Result<(), StoreError> {
        self.0.reset_identities(scope, identity).await
    }

    async fn create_application(&self, application: &Application) -> Result<(), StoreError> {
        self.0.create_application(application).await
    }

    async fn find_application(&self, id: &str) -> Result<Option<Application>, StoreError> {
        self.0.find_application(id).await
    }

    async fn find_active_application(&self, name: &str) -> Result<Option<Application>, StoreError> {
        self.0.find_active_application(name).await
    }

    async fn revoke_application(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.0.revoke_application(name, now).await
    }

    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        self.0.create_client(client).await
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.0.find_client(client_id).await
    }

    async fn create_access_token(&self, token: &AccessToken) -> Result<(), StoreError> {
        self.0.create_access_token(token).await
    }

    async fn find_access_grant(&self, token_hash: &str) -> Result<Option<AccessGrant>, StoreError> {
        self.0.find_access_grant(token_hash).await
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        self.0.create_session(session).await
    }

    async fn find_session(&self, code: &str) -> Result<Option<Session>, StoreError> {
        self.0.find_session(code).await
    }

    async fn update_session(&self, session: &Session) -> Result<(), StoreError> {
        self.0.update_session(session).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.0.create_api_key(key).await
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.0.find_api_key(key_hash).await
    }

    async fn revoke_api_key(&self, key_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        self.0.revoke_api_key(key_hash, now).await
    }

    async fn reclaim(&self, now: Timestamp, budget: usize) -> Result<ReclaimReport, StoreError> {
        self.0.reclaim(now, budget).await
    }

    async fn ensure_signing_key(&self, candidate: &StoredSigningKey) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.0.ensure_signing_key(candidate).await
    }

    async fn add_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        self.0.add_signing_key(key).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.0.signing_keys().await
    }

    async fn add_figures(&self, deltas: &[FigureDelta]) -> Result<(), StoreError> {
        self.0.add_figures(deltas).await
    }

    async fn figures(&self, query: &FiguresQuery) -> Result<Vec<DailyFigures>, StoreError> {
        self.0.figures(query).await
    }

    fn load(&self) -> StoreLoad {
        self.0.load()
    }
}

#[tokio::test]
async fn a_store_that_does_not_answer_in_time_gives_internal_server_error_with_retry() {
    let app = TestApp::build(settings(), |store| Arc::new(StoreThatHangsOnAuthorize(store, true))).await;

    let reply = app.authorize(BASIC, "device-1", &["channel-1"]).send().await;

    reply.assert_error(500, "internal_server_error", "retry");
    assert!(reply.body.get("details").is_none(), "a 5xx has no details: {}", reply.text);
    let text = reply.text.to_lowercase();
    for internal in ["did not answer", "store", "unavailable", "postgresql", "db.internal"] {
        assert!(!text.contains(internal), "the body leaks {internal:?}: {}", reply.text);
    }
    app.profile(BASIC, "device-1").send().await.profile(BASIC);
}

#[tokio::test]
async fn a_request_that_outlives_the_request_deadline_gives_internal_server_error_with_retry() {
    let mut settings = settings();
    // A store that never answers: only the request's deadline can.
    settings.limits.request_timeout = Duration::from_millis(50);
    let app = TestApp::build(settings, |store| Arc::new(StoreThatHangsOnAuthorize(store, false))).await;

    let call = app.authorize(BASIC, "device-1", &["channel-1"]).header("origin", "https://example.com");
    let answered = tokio::time::timeout(Duration::from_secs(30), call.send());
    let Ok(reply) = answered.await else { panic!("no answer: the request deadline did not answer for the store") };

    reply.assert_error(500, "internal_server_error", "retry");
    let allowed = reply.headers.get("access-control-allow-origin").and_then(|v| v.to_str().ok());
    assert_eq!(allowed, Some("https://example.com"), "a browser cannot read this answer");
    assert!(!reply.text.to_lowercase().contains("timed out"), "the body leaks the cause: {}", reply.text);
    app.profile(BASIC, "device-1").send().await.profile(BASIC);
}

#[tokio::test]
async fn an_empty_mvpd_segment_is_invalid_parameter_mvpd() {
    let app = TestApp::new().await;
    let body = serde_json::json!({ "resources": ["res"] });
    let replies = [
        app.get(&format!("/api/v2/{SP}/profiles/")).device("tv").send().await,
        app.post_json(&format!("/api/v2/{SP}/decisions/authorize/"), &body).device("tv").send().await,
        app.post_json(&format!("/api/v2/{SP}/decisions/preauthorize/"), &body).device("tv").send().await,
        app.get(&format!("/api/v2/{SP}/logout/")).device("tv").send().await,
    ];
    for reply in replies {
        reply.assert_error(400, "invalid_parameter_mvpd", "none");
    }
    // The bearer is still checked first.
    app.get(&format!("/api/v2/{SP}/profiles/")).without_bearer().send().await.assert_error(
        401,
        "invalid_access_token_client_application",
        "application-registration",
    );
}

#[tokio::test]
async fn an_unknown_path_answers_a_json_404() {
    let app = TestApp::new().await;
    app.get("/api/v2/REF30/no-such-thing").send().await.assert_error(404, "not_found", "none");
    app.get("/nothing/here").send().await.assert_error(404, "not_found", "none");
    app.get(&format!("/api/v2/{SP}/decisions/authorize/{BASIC}")).send().await.assert_error(
        405,
        "method_not_allowed",
        "none",
    );
}

#[tokio::test]
async fn with_a_grant_cache_a_revocation_takes_effect_once_the_cache_ttl_has_passed() {
    let mut settings = settings();
    settings.access_grant_cache_ttl = Some(ok(temppass_core::DurationMs::parse("2s"), "ttl"));
    let app = TestApp::with_settings(settings).await;
    let token = app.token_for("cached", &[SP], &[temppass_http::auth::SCOPE_API]).await;
    let configuration = format!("/api/v2/{SP}/configuration");
    app.get(&configuration).bearer(&token).send().await.assert_ok_json();
    assert!(ok(app.store().revoke_application("cached", app.clock_now()).await, "revoke"));
    app.advance_ms(2_000);
    app.get(&configuration).bearer(&token).send().await.assert_error(
        401,
        "invalid_access_token_client_application",
        "application-registration",
    );
}

#[tokio::test]
async fn a_cached_grant_still_expires_with_its_token() {
    let mut settings = settings();
    settings.access_grant_cache_ttl = Some(ok(temppass_core::DurationMs::parse("5s"), "ttl"));
    let app = TestApp::with_settings(settings).await;
    let configuration = format!("/api/v2/{SP}/configuration");
    app.advance_ms(ACCESS_TOKEN_TTL_MS - 1_000);
    app.get(&configuration).send().await.assert_ok_json();
    app.advance_ms(1_000);
    app.get(&configuration).send().await.assert_error(
        401,
        "invalid_access_token_client_application",
        "application-registration",
    );
}

#[tokio::test]
async fn a_malformed_device_info_header_is_counted_and_never_refused() {
    let app = TestApp::new().await;
    // Adobe's own sample value is not valid JSON; real apps send such values.
    let sample = "eyJwcmltYXJ5SGFyZHdhcmVUeXBlIjoiU2V0VG9wQm94IiwibW9kZWwiOiJUViJ";
    app.authorize(BASIC, "tv", &["res"]).header("x-device-info", sample).send().await.decision();
    app.profile(BASIC, "tv").header("x-device-info", "%%% not base64").send().await.assert_ok_json();
    assert_eq!(app.state.malformed_device_info(), 2);
    let good = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, r#"{"model":"TV"}"#);
    app.profile(BASIC, "tv").header("x-device-info", &good).send().await.assert_ok_json();
    assert_eq!(app.state.malformed_device_info(), 2, "a JSON object is not counted");
}
