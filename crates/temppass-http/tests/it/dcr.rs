//! Dynamic client registration and access tokens (SPEC.md §6).

use serde_json::json;
use temppass_http::auth::{SCOPE_API, SCOPE_RESET, secret_hash};
use temppass_http::issue_software_statement;
use temppass_token::SigningKey;

use crate::support::{ACCESS_TOKEN_TTL_MS, PUBLIC_URL, RegisteredClient, SP, TestApp, int, ok, some};

const REGISTER: &str = "/o/client/register";
const TOKEN: &str = "/o/client/token";

#[tokio::test]
async fn registering_with_a_json_statement_returns_a_client() {
    let app = TestApp::new().await;
    let (_, statement) = app.create_application("json-app", &[SP], &[SCOPE_API, SCOPE_RESET]).await;

    let reply = app
        .post_json(REGISTER, &json!({ "software_statement": statement, "grant_types": ["client_credentials"] }))
        .without_bearer()
        .send()
        .await;

    reply.assert_status(201);
    reply.assert_json_content_type();
    let client = &reply.body;
    assert!(!reply.string("client_id").is_empty());
    assert!(reply.string("client_secret").len() >= 32, "a 256-bit secret: {client}");
    assert_eq!(client["redirect_uris"], json!([]), "no redirect_uri: none");
    assert_eq!(client["grant_types"], json!(["client_credentials"]));
    assert_eq!(client["scopes"], json!([SCOPE_API, SCOPE_RESET]));
    assert_eq!(int(&client["client_id_issued_at"]), app.now_ms() / 1000, "seconds");
}

#[tokio::test]
async fn registering_with_a_form_body_returns_a_client() {
    let app = TestApp::new().await;
    let (_, statement) = app.create_application("form-app", &[SP], &[SCOPE_API]).await;

    let reply = app
        .post_form(
            REGISTER,
            &[
                ("software_statement", statement.as_str()),
                ("redirect_uri", "https://example.com/callback"),
                ("token_endpoint_auth_method", "client_secret_post"),
            ],
        )
        .without_bearer()
        .send()
        .await;

    reply.assert_status(201);
    assert_eq!(reply.body["redirect_uris"], json!(["https://example.com/callback"]));
    assert_eq!(reply.body["scopes"], json!([SCOPE_API]));
}

#[tokio::test]
async fn an_invalid_redirect_uri_is_refused() {
    let app = TestApp::new().await;
    let (_, statement) = app.create_application("app", &[SP], &[SCOPE_API]).await;
    for redirect_uri in ["not a uri", "/relative/path", "://no-scheme"] {
        let reply = app
            .post_json(REGISTER, &json!({ "software_statement": statement, "redirect_uri": redirect_uri }))
            .without_bearer()
            .send()
            .await;
        reply.assert_oauth_error("invalid_redirect_uri");
    }
}

#[tokio::test]
async fn a_garbage_software_statement_is_refused() {
    let app = TestApp::new().await;
    for statement in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let reply = app.post_json(REGISTER, &json!({ "software_statement": statement })).without_bearer().send().await;
        reply.assert_oauth_error("invalid_software_statement");
    }
}

#[tokio::test]
async fn a_statement_signed_by_another_key_is_refused() {
    let app = TestApp::new().await;
    let (application, _) = app.create_application("app", &[SP], &[SCOPE_API]).await;
    let forged = issue_software_statement(&SigningKey::generate(), PUBLIC_URL, &application, app.clock_now());

    let reply = app.post_json(REGISTER, &json!({ "software_statement": forged })).without_bearer().send().await;

    reply.assert_oauth_error("invalid_software_statement");
}

#[tokio::test]
async fn a_statement_of_a_revoked_application_is_unapproved() {
    let app = TestApp::new().await;
    let (_, statement) = app.create_application("revoked-app", &[SP], &[SCOPE_API]).await;
    assert!(ok(app.store().revoke_application("revoked-app", app.clock_now()).await, "revoke"));

    let reply = app.post_json(REGISTER, &json!({ "software_statement": statement })).without_bearer().send().await;

    reply.assert_oauth_error("unapproved_software_statement");
}

#[tokio::test]
async fn a_registration_without_a_statement_is_an_invalid_request() {
    let app = TestApp::new().await;

    let empty_json = app.post_json(REGISTER, &json!({ "redirect_uri": "https://example.com" })).without_bearer();
    let empty_statement = app.post_json(REGISTER, &json!({ "software_statement": "" })).without_bearer();
    let empty_form = app.post_form(REGISTER, &[]).without_bearer();
    let broken_json = app.post_bytes(REGISTER, "application/json", b"{not json".to_vec()).without_bearer();

    for call in [empty_json, empty_statement, empty_form, broken_json] {
        call.send().await.assert_oauth_error("invalid_request");
    }
}

async fn client(app: &TestApp, name: &str, scopes: &[&str]) -> RegisteredClient {
    let (_, statement) = app.create_application(name, &[SP], scopes).await;
    app.register_client(&statement).await
}

#[tokio::test]
async fn a_token_is_issued_for_a_form_body() {
    let app = TestApp::new().await;
    let client = client(&app, "app", &[SCOPE_API, SCOPE_RESET]).await;

    let reply = app
        .post_form(
            TOKEN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client.client_id),
                ("client_secret", &client.client_secret),
            ],
        )
        .without_bearer()
        .send()
        .await;

    reply.assert_status(201);
    reply.assert_json_content_type();
    let token = &reply.body;
    assert!(!reply.string("id").is_empty());
    assert!(reply.string("access_token").len() >= 32);
    assert_eq!(int(&token["created_at"]), app.now_ms(), "milliseconds");
    assert_eq!(int(&token["expires_in"]), ACCESS_TOKEN_TTL_MS / 1000, "seconds");
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["scope"], format!("{SCOPE_API} {SCOPE_RESET}"));
    let works = app.get(&format!("/api/v2/{SP}/configuration")).bearer(reply.string("access_token")).send().await;
    works.assert_status(200);
}

#[tokio::test]
async fn a_token_is_issued_for_fields_in_the_query() {
    let app = TestApp::new().await;
    let client = client(&app, "app", &[SCOPE_API]).await;
    let query = ok(
        serde_urlencoded::to_string([
            ("grant_type", "client_credentials"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.as_str()),
        ]),
        "query",
    );

    let reply = app.post_bytes(&format!("{TOKEN}?{query}"), "application/x-www-form-urlencoded", Vec::new());
    let reply = reply.without_bearer().send().await;

    reply.assert_status(201);
    assert_eq!(reply.body["scope"], SCOPE_API);
    let works = app.get(&format!("/api/v2/{SP}/configuration")).bearer(reply.string("access_token")).send().await;
    works.assert_status(200);
}

#[tokio::test]
async fn a_wrong_secret_or_an_unknown_client_is_an_invalid_client() {
    let app = TestApp::new().await;
    let client = client(&app, "app", &[SCOPE_API]).await;

    for (client_id, secret) in [(client.client_id.as_str(), "wrong-secret"), ("unknown-client", "whatever")] {
        let reply = app
            .post_form(
                TOKEN,
                &[("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret)],
            )
            .without_bearer()
            .send()
            .await;
        reply.assert_oauth_error("invalid_client");
    }
}

#[tokio::test]
async fn a_grant_type_other_than_client_credentials_is_unsupported() {
    let app = TestApp::new().await;
    let client = client(&app, "app", &[SCOPE_API]).await;

    let reply = app
        .post_form(
            TOKEN,
            &[("grant_type", "password"), ("client_id", &client.client_id), ("client_secret", &client.client_secret)],
        )
        .without_bearer()
        .send()
        .await;

    reply.assert_oauth_error("unsupported_grant_type");
}

#[tokio::test]
async fn a_token_request_without_grant_type_or_secret_is_an_invalid_request() {
    let app = TestApp::new().await;
    let client = client(&app, "app", &[SCOPE_API]).await;

    let without_grant_type = app
        .post_form(TOKEN, &[("client_id", &client.client_id), ("client_secret", &client.client_secret)])
        .without_bearer()
        .send()
        .await;
    let without_secret = app
        .post_form(TOKEN, &[("grant_type", "client_credentials"), ("client_id", &client.client_id)])
        .without_bearer()
        .send()
        .await;

    without_grant_type.assert_oauth_error("invalid_request");
    without_secret.assert_oauth_error("invalid_request");
}

#[tokio::test]
async fn a_scope_the_application_lacks_is_an_invalid_scope() {
    let app = TestApp::new().await;
    let client = client(&app, "app", &[SCOPE_API]).await;

    for scope in [SCOPE_RESET, "made:up", "api:client:v2 made:up"] {
        let reply = app
            .post_form(
                TOKEN,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client.client_id),
                    ("client_secret", &client.client_secret),
                    ("scope", scope),
                ],
            )
            .without_bearer()
            .send()
            .await;
        reply.assert_oauth_error("invalid_scope");
    }
}

#[tokio::test]
async fn a_token_asked_for_one_scope_carries_only_that_scope() {
    let app = TestApp::new().await;
    let client = client(&app, "app", &[SCOPE_API, SCOPE_RESET]).await;
    let token = app.access_token(&client, Some(SCOPE_API)).await;

    let grant = ok(app.store().find_access_grant(&secret_hash(&token)).await, "find the grant");

    let grant = some(grant, "the token's grant");
    assert_eq!(grant.token.scopes, [SCOPE_API]);
}

#[tokio::test]
async fn a_revoked_application_gets_no_token() {
    let app = TestApp::new().await;
    let client = client(&app, "revoked-app", &[SCOPE_API]).await;
    assert!(ok(app.store().revoke_application("revoked-app", app.clock_now()).await, "revoke"));

    let reply = app
        .post_form(
            TOKEN,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client.client_id),
                ("client_secret", &client.client_secret),
            ],
        )
        .without_bearer()
        .send()
        .await;

    reply.assert_oauth_error("unauthorized_client");
}

#[tokio::test]
async fn client_secrets_and_access_tokens_are_stored_only_as_hashes() {
    let app = TestApp::new().await;
    let client = client(&app, "app", &[SCOPE_API]).await;
    let token = app.access_token(&client, None).await;

    let stored_client = some(ok(app.store().find_client(&client.client_id).await, "find the client"), "the client");
    assert_ne!(stored_client.secret_hash, client.client_secret);
    assert!(!stored_client.secret_hash.contains(&client.client_secret));
    assert_eq!(stored_client.secret_hash, secret_hash(&client.client_secret));

    let by_raw_token = ok(app.store().find_access_grant(&token).await, "find by the raw token");
    assert!(by_raw_token.is_none(), "the raw token is not a key of the store");
    let grant = some(ok(app.store().find_access_grant(&secret_hash(&token)).await, "find by hash"), "the grant");
    assert_ne!(grant.token.token_hash, token);
    assert_eq!(grant.token.client_id, client.client_id);
}
