//! The `TestApp` every test drives: validated settings, a SQLite store in a
//! temporary directory, a manual clock, and an application registered through
//! the real DCR endpoints. Requests go through `app(state)` with `oneshot`.

use std::fmt::Display;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use temppass_core::{DurationMs, MvpdId, Rule, RuleKind, ServiceProviderId, Timestamp};
use temppass_http::auth::{SCOPE_API, SCOPE_RESET};
use temppass_http::clock::{Clock, ManualClock};
use temppass_http::observe::Observer;
use temppass_http::settings::{Limits, RegularMvpd, ServiceProvider, Settings, TempPassMvpd};
use temppass_http::{AppState, app, issue_software_statement};
use temppass_observe::{EventSettings, EventSink, MeteredStore, Metrics};
use temppass_store::{Application, Store};
use temppass_store_sqlite::{SqliteOptions, SqliteStore};
use tower::ServiceExt;

pub(crate) const SP: &str = "REF30";
pub(crate) const OTHER_SP: &str = "OTHER";
/// The basic TempPass MVPD of both service providers.
pub(crate) const BASIC: &str = "TempPass";
/// The promotional TempPass MVPD of `REF30`.
pub(crate) const PROMO: &str = "flexibleTempPass";
/// The regular MVPD of `REF30`: listed, never authorized.
pub(crate) const REGULAR: &str = "Cablevision";
pub(crate) const PUBLIC_URL: &str = "http://temppass.test";

/// The manual clock starts here; the odd milliseconds show where seconds are floored.
pub(crate) const START_MS: i64 = 1_700_000_000_123;
pub(crate) const BASIC_TTL_MS: i64 = 10 * 60 * 1000;
pub(crate) const PROMO_TTL_MS: i64 = 24 * 60 * 60 * 1000;
pub(crate) const PROMO_MAX_RESOURCES: i64 = 3;
pub(crate) const MEDIA_TOKEN_TTL_MS: i64 = 7 * 60 * 1000;
pub(crate) const ACCESS_TOKEN_TTL_MS: i64 = 6 * 60 * 60 * 1000;
pub(crate) const SESSION_TTL_MS: i64 = 30 * 60 * 1000;

/// The characters of a second-screen code (SPEC.md §3).
pub(crate) const CODE_ALPHABET: &str = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// `Ok`'s value, or a panic naming what failed (the workspace denies `unwrap`).
#[track_caller]
pub(crate) fn ok<T, E: Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error}"),
    }
}

/// `Some`'s value, or a panic naming what was missing.
#[track_caller]
pub(crate) fn some<T>(option: Option<T>, what: &str) -> T {
    match option {
        Some(value) => value,
        None => panic!("{what} is missing"),
    }
}

fn duration(text: &str) -> DurationMs {
    ok(DurationMs::parse(text), "duration")
}

fn mvpd_id(id: &str) -> MvpdId {
    ok(MvpdId::parse(id), "mvpd id")
}

fn basic_temppass(ttl: &str) -> TempPassMvpd {
    TempPassMvpd {
        id: mvpd_id(BASIC),
        display_name: "Free preview".into(),
        logo_url: None,
        rule: Rule { kind: RuleKind::Basic, ttl: duration(ttl), reset: None },
    }
}

/// REF30 (a regular MVPD, a basic and a promotional TempPass) and OTHER (its own basic TempPass).
pub(crate) fn settings() -> Settings {
    Settings {
        public_url: PUBLIC_URL.into(),
        media_token_ttl: duration("7m"),
        access_token_ttl: duration("6h"),
        limits: Limits::default(),
        service_providers: vec![
            ServiceProvider {
                id: ok(ServiceProviderId::parse(SP), "service provider id"),
                name: "Reference channel".into(),
                domains: vec!["example.com".into()],
                regular_mvpds: vec![RegularMvpd {
                    id: mvpd_id(REGULAR),
                    display_name: "Cablevision Optimum".into(),
                    logo_url: Some("https://example.com/cablevision.png".into()),
                }],
                temppass_mvpds: vec![
                    basic_temppass("10m"),
                    TempPassMvpd {
                        id: mvpd_id(PROMO),
                        display_name: "Three free titles".into(),
                        logo_url: None,
                        rule: Rule {
                            kind: RuleKind::Promotional {
                                max_resources: PROMO_MAX_RESOURCES as u32,
                                identity_key: "email".into(),
                            },
                            ttl: duration("24h"),
                            reset: None,
                        },
                    },
                ],
            },
            ServiceProvider {
                id: ok(ServiceProviderId::parse(OTHER_SP), "service provider id"),
                name: "Other channel".into(),
                domains: vec!["other.example.com".into()],
                regular_mvpds: Vec::new(),
                temppass_mvpds: vec![basic_temppass("4h")],
            },
        ],
        allow_loopback_origins: true,
        access_grant_cache_ttl: None,
        demo: None,
    }
}

/// A client registered through `/o/client/register`.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredClient {
    pub client_id: String,
    pub client_secret: String,
}

pub(crate) struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    /// The client of an application bound to `REF30` with both scopes, registered through DCR.
    pub client: RegisteredClient,
    /// An access token of `client`, the bearer of every call unless a test says otherwise.
    pub token: String,
    // Dropped last: the SQLite file lives in it.
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub(crate) async fn new() -> Self {
        Self::with_settings(settings()).await
    }

    pub(crate) async fn with_settings(settings: Settings) -> Self {
        Self::build(settings, |store| store).await
    }

    /// A second app on the store (and clock) of `other`, with other settings.
    pub(crate) async fn with_store_of(other: TestApp, settings: Settings) -> Self {
        let TestApp { state, clock, client, token, _dir, .. } = other;
        let store = state.store().clone();
        let state = ok(AppState::new(settings, store, clock.clone()).await, "application state");
        let router = app(state.clone());
        Self { router, state, clock, client, token, _dir }
    }

    /// `wrap` may put a test double around the SQLite store.
    pub(crate) async fn build(settings: Settings, wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> Self {
        Self::build_observed(settings, wrap, |_| Observer::default()).await
    }

    /// An app whose server has metrics (as with a management listener) and
    /// the tracking events of `events`, as `serve` builds it.
    pub(crate) async fn observed(settings: Settings, events: &EventSettings) -> Self {
        let metrics = Arc::new(Metrics::new(None));
        let sink = ok(EventSink::start(events, Some(Arc::clone(&metrics))), "the event sink");
        let metered = Arc::clone(&metrics);
        Self::build_observed(
            settings,
            move |store| Arc::new(MeteredStore::new(store, metered)) as Arc<dyn Store>,
            move |_| Observer::new(Some(metrics), sink),
        )
        .await
    }

    async fn build_observed(
        settings: Settings,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
        observer: impl FnOnce(&Arc<dyn Store>) -> Observer,
    ) -> Self {
        let dir = ok(tempfile::tempdir(), "temporary directory");
        let sqlite = ok(SqliteStore::open(dir.path().join("temppass.db"), generous()), "open SQLite");
        let store = wrap(Arc::new(sqlite));
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START_MS)));
        let observer = observer(&store);
        let state = ok(AppState::observed(settings, store, clock.clone(), observer).await, "application state");
        let router = app(state.clone());
        let client = RegisteredClient { client_id: String::new(), client_secret: String::new() };
        let mut test_app = Self { router, state, clock, client, token: String::new(), _dir: dir };
        let (_, statement) = test_app.create_application("reference-app", &[SP], &[SCOPE_API, SCOPE_RESET]).await;
        test_app.client = test_app.register_client(&statement).await;
        test_app.renew_token().await;
        test_app
    }

    /// A new access token for `client`, as an app does when the clock has passed the old one's expiry.
    pub(crate) async fn renew_token(&mut self) {
        self.token = self.access_token(&self.client, None).await;
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        self.state.store()
    }

    pub(crate) fn clock_now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now().as_millis()
    }

    pub(crate) fn advance_ms(&self, ms: i64) {
        self.clock.advance_ms(ms);
    }

    /// What `temppass app create` does: an application in the store and its software statement.
    pub(crate) async fn create_application(
        &self,
        name: &str,
        service_providers: &[&str],
        scopes: &[&str],
    ) -> (Application, String) {
        let application = Application {
            id: format!("app-{name}"),
            name: name.to_owned(),
            service_providers: service_providers
                .iter()
                .map(|sp| ok(ServiceProviderId::parse(sp), "service provider id"))
                .collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            created_at: self.clock.now(),
            revoked_at: None,
        };
        ok(self.store().create_application(&application).await, "create the application");
        let statement =
            issue_software_statement(&self.state.keys().signing, PUBLIC_URL, &application, self.clock.now());
        (application, statement)
    }

    /// Registers a client with the statement through the HTTP endpoint.
    pub(crate) async fn register_client(&self, statement: &str) -> RegisteredClient {
        let reply = self
            .post_json("/o/client/register", &json!({ "software_statement": statement }))
            .without_bearer()
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "register: {}", reply.text);
        RegisteredClient {
            client_id: reply.string("client_id").to_owned(),
            client_secret: reply.string("client_secret").to_owned(),
        }
    }

    /// An access token through the HTTP endpoint; `scope` restricts it.
    pub(crate) async fn access_token(&self, client: &RegisteredClient, scope: Option<&str>) -> String {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.as_str()),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let reply = self.post_form("/o/client/token", &form).without_bearer().send().await;
        assert_eq!(reply.status, StatusCode::CREATED, "token: {}", reply.text);
        reply.string("access_token").to_owned()
    }

    /// A bearer token for an application bound to `service_providers` with `scopes`.
    pub(crate) async fn token_for(&self, name: &str, service_providers: &[&str], scopes: &[&str]) -> String {
        let (_, statement) = self.create_application(name, service_providers, scopes).await;
        let client = self.register_client(&statement).await;
        self.access_token(&client, None).await
    }

    /// A request of any method with the app's bearer token.
    pub(crate) fn call(&self, method: Method, path: &str) -> Call {
        let mut headers = HeaderMap::new();
        let bearer = ok(HeaderValue::from_str(&format!("Bearer {}", self.token)), "bearer header");
        headers.insert(header::AUTHORIZATION, bearer);
        Call { router: self.router.clone(), method, uri: path.to_owned(), headers, body: Vec::new() }
    }

    /// A DELETE with the app's bearer token (the reset API).
    pub(crate) fn delete(&self, path: &str) -> Call {
        self.call(Method::DELETE, path)
    }

    /// A GET with the app's bearer token.
    pub(crate) fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    /// A POST of JSON with the app's bearer token.
    pub(crate) fn post_json(&self, path: &str, body: &Value) -> Call {
        self.post_bytes(path, "application/json", body.to_string().into_bytes())
    }

    /// A POST of a form-urlencoded body with the app's bearer token.
    pub(crate) fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Call {
        let body = ok(serde_urlencoded::to_string(fields), "form body");
        self.post_bytes(path, "application/x-www-form-urlencoded", body.into_bytes())
    }

    pub(crate) fn post_bytes(&self, path: &str, content_type: &str, body: Vec<u8>) -> Call {
        let mut call = self.call(Method::POST, path).header(header::CONTENT_TYPE.as_str(), content_type);
        call.body = body;
        call
    }

    /// `POST /api/v2/REF30/decisions/authorize/{mvpd}` for one device.
    pub(crate) fn authorize(&self, mvpd: &str, device: &str, resources: &[&str]) -> Call {
        self.post_json(&format!("/api/v2/{SP}/decisions/authorize/{mvpd}"), &json!({ "resources": resources }))
            .device(device)
    }

    /// `POST /api/v2/REF30/decisions/preauthorize/{mvpd}` for one device.
    pub(crate) fn preauthorize(&self, mvpd: &str, device: &str, resources: &[&str]) -> Call {
        self.post_json(&format!("/api/v2/{SP}/decisions/preauthorize/{mvpd}"), &json!({ "resources": resources }))
            .device(device)
    }

    /// `GET {path}` on the management listener's router.
    pub(crate) async fn management(&self, path: &str) -> Reply {
        let call = Call {
            router: temppass_http::management::router(self.state.clone()),
            method: Method::GET,
            uri: path.to_owned(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        };
        call.send().await
    }

    /// `GET /api/v2/REF30/profiles/{mvpd}` for one device.
    pub(crate) fn profile(&self, mvpd: &str, device: &str) -> Call {
        self.get(&format!("/api/v2/{SP}/profiles/{mvpd}")).device(device)
    }
}

/// Base64 of a device id, as `AP-Device-Identifier: fingerprint …` carries it.
pub(crate) fn fingerprint(device: &str) -> String {
    format!("fingerprint {}", STANDARD.encode(device))
}

/// Base64 of `{"email": …}`, as `AP-TempPass-Identity` carries it.
pub(crate) fn identity_header(email: &str) -> String {
    STANDARD.encode(json!({ "email": email }).to_string())
}

/// One request under construction; owns a clone of the router so it can be spawned.
pub(crate) struct Call {
    router: Router,
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Call {
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        let name = ok(HeaderName::from_bytes(name.as_bytes()), "header name");
        let value = ok(HeaderValue::from_str(value), "header value");
        self.headers.insert(name, value);
        self
    }

    pub(crate) fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub(crate) fn without_bearer(mut self) -> Self {
        self.headers.remove(header::AUTHORIZATION);
        self
    }

    pub(crate) fn device(self, device: &str) -> Self {
        self.header("ap-device-identifier", &fingerprint(device))
    }

    pub(crate) fn identity(self, email: &str) -> Self {
        self.header("ap-temppass-identity", &identity_header(email))
    }

    pub(crate) async fn send(self) -> Reply {
        let mut request = Request::builder().method(self.method).uri(&self.uri);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = ok(request.body(Body::from(self.body)), "request");
        let response = ok(self.router.oneshot(request).await, "the router");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = ok(response.into_body().collect().await, "response body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Reply { status, headers, text, body }
    }
}

/// A response: status, headers, the body as text and as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    #[track_caller]
    pub(crate) fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        self
    }

    /// A 200 with Adobe's JSON content type.
    #[track_caller]
    pub(crate) fn assert_ok_json(&self) -> &Value {
        self.assert_status(200);
        self.assert_json_content_type();
        &self.body
    }

    #[track_caller]
    pub(crate) fn assert_json_content_type(&self) {
        let content_type = self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("application/json;charset=utf-8"));
    }

    /// A request-level enhanced error: the whole body, with that HTTP status.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, code: &str, action: &str) {
        self.assert_status(status);
        self.assert_json_content_type();
        assert_enhanced_error(&self.body, status, code, action);
        let www_authenticate = self.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
        if status == 401 {
            assert_eq!(www_authenticate, Some("Bearer"), "a 401 carries WWW-Authenticate: Bearer");
        } else {
            assert_eq!(www_authenticate, None);
        }
    }

    /// A DCR error: 400 `{"error": code}`.
    #[track_caller]
    pub(crate) fn assert_oauth_error(&self, code: &str) {
        self.assert_status(400);
        assert_eq!(self.body["error"], code, "body: {}", self.text);
    }

    #[track_caller]
    pub(crate) fn string(&self, field: &str) -> &str {
        some(self.body[field].as_str(), &format!("string field {field:?} in {}", self.text))
    }

    /// The decision items of a 200 decision response.
    #[track_caller]
    pub(crate) fn decisions(&self) -> &Vec<Value> {
        self.assert_ok_json();
        some(self.body["decisions"].as_array(), &format!("decisions in {}", self.text))
    }

    /// The only decision item of a 200 decision response.
    #[track_caller]
    pub(crate) fn decision(&self) -> &Value {
        let decisions = self.decisions();
        assert_eq!(decisions.len(), 1, "expected one decision: {}", self.text);
        &decisions[0]
    }

    /// The profile of `mvpd` in a 200 profile response, which holds nothing else.
    #[track_caller]
    pub(crate) fn profile(&self, mvpd: &str) -> &Value {
        let profiles = some(self.assert_ok_json()["profiles"].as_object(), &format!("profiles in {}", self.text));
        assert_eq!(profiles.len(), 1, "expected one profile: {}", self.text);
        some(profiles.get(mvpd), &format!("the profile of {mvpd}"))
    }
}

/// The shape of SPEC.md §5: status, code, message, action, helpUrl, trace.
#[track_caller]
pub(crate) fn assert_enhanced_error(error: &Value, status: u16, code: &str, action: &str) {
    assert_eq!(error["status"], status, "error: {error}");
    assert_eq!(error["code"], code, "error: {error}");
    assert_eq!(error["action"], action, "error: {error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {error}");
    assert!(error["helpUrl"].as_str().is_some_and(|u| u.starts_with("https://")), "a helpUrl: {error}");
    let trace = some(error["trace"].as_str(), "trace");
    assert_eq!(trace.len(), 36, "the trace is a UUID: {trace}");
}

/// A deny item: `authorized` false, the enhanced error inside, no token.
#[track_caller]
pub(crate) fn assert_denied(item: &Value, resource: &str, status: u16, code: &str, action: &str) {
    assert_eq!(item["resource"], resource, "item: {item}");
    assert_eq!(item["authorized"], false, "item: {item}");
    assert_eq!(item["source"], "temppass", "item: {item}");
    assert!(item.get("token").is_none(), "a deny carries no token: {item}");
    assert_enhanced_error(&item["error"], status, code, action);
}

/// A permit item for `resource`: `authorized` true, no error, a token.
#[track_caller]
pub(crate) fn assert_permitted(item: &Value, resource: &str) {
    assert_eq!(item["resource"], resource, "item: {item}");
    assert_eq!(item["authorized"], true, "item: {item}");
    assert!(item.get("error").is_none(), "a permit carries no error: {item}");
    assert!(item["token"]["serializedToken"].is_string(), "a permit carries a media token: {item}");
}

/// A JSON integer.
#[track_caller]
pub(crate) fn int(value: &Value) -> i64 {
    some(value.as_i64(), &format!("an integer (got {value})"))
}

/// The claims of a compact JWS, read without checking the signature.
#[track_caller]
pub(crate) fn jws_claims(token: &str) -> Value {
    let payload = some(token.split('.').nth(1), "the JWS payload");
    let bytes = ok(URL_SAFE_NO_PAD.decode(payload), "base64url payload");
    ok(serde_json::from_slice(&bytes), "JSON claims")
}

/// The test store's options: these tests count decisions and check answers;
/// they do not time the store (its deadline has tests of its own), so its
/// operations may take as long as a loaded machine needs.
fn generous() -> SqliteOptions {
    SqliteOptions { busy_timeout: std::time::Duration::from_secs(60), ..SqliteOptions::default() }
}
