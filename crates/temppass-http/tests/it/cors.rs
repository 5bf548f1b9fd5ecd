//! Browser access (SPEC.md §11): CORS for the service providers' domains and loopback only.

use axum::http::Method;

use crate::support::*;

fn preflight(app: &TestApp, path: &str, origin: &str) -> Call {
    app.call(Method::OPTIONS, path)
        .without_bearer()
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,ap-device-identifier,ap-temppass-identity",
        )
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

fn allow_origin(reply: &Reply) -> Option<&str> {
    header(reply, "access-control-allow-origin")
}

/// The names of the response's `access-control-*` headers.
fn cors_headers(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_preflight_from_a_configured_domain_allows_the_headers_of_the_api() {
    let app = TestApp::new().await;
    for origin in ["https://example.com", "https://www.example.com", "http://127.0.0.1:5173", "http://localhost:8080"] {
        for path in [
            format!("/api/v2/{SP}/decisions/authorize/{BASIC}"),
            "/o/client/register".to_owned(),
            "/o/client/token".to_owned(),
            "/.well-known/jwks.json".to_owned(),
        ] {
            let reply = preflight(&app, &path, origin).send().await;
            assert!(reply.status.is_success(), "{origin} {path}: {}", reply.status);
            assert_eq!(allow_origin(&reply), Some(origin), "{origin} {path}");
            let allowed = reply.headers.get("access-control-allow-headers").and_then(|v| v.to_str().ok()).unwrap_or("");
            for header in ["authorization", "content-type", "ap-device-identifier", "ap-temppass-identity"] {
                assert!(allowed.contains(header), "{header} not allowed: {allowed}");
            }
            assert_eq!(header(&reply, "access-control-allow-methods"), Some("GET,POST"), "{origin} {path}");
            assert_eq!(header(&reply, "access-control-max-age"), Some("600"), "{origin} {path}");
            assert!(header(&reply, "vary").is_some_and(|v| v.contains("origin")), "{origin} {path}");
        }
    }
}

#[tokio::test]
async fn an_api_response_to_a_configured_origin_carries_its_cors_header() {
    let app = TestApp::new().await;
    let reply =
        app.get(&format!("/api/v2/{SP}/configuration")).header("origin", "https://other.example.com").send().await;
    reply.assert_ok_json();
    assert_eq!(allow_origin(&reply), Some("https://other.example.com"));
    assert_eq!(header(&reply, "access-control-expose-headers"), Some("www-authenticate"));
    assert!(header(&reply, "vary").is_some_and(|v| v.contains("origin")), "{:?}", reply.headers);
}

#[tokio::test]
async fn a_401_to_a_configured_origin_is_readable_with_its_www_authenticate() {
    let app = TestApp::new().await;
    let reply = app
        .get(&format!("/api/v2/{SP}/configuration"))
        .without_bearer()
        .header("origin", "https://example.com")
        .send()
        .await;
    reply.assert_status(401);
    assert_eq!(allow_origin(&reply), Some("https://example.com"));
    assert_eq!(header(&reply, "access-control-expose-headers"), Some("www-authenticate"));
}

#[tokio::test]
async fn any_other_origin_gets_no_cors_headers() {
    let app = TestApp::new().await;
    for origin in ["https://evil.test", "https://example.com.evil.test", "https://notexample.com", "null"] {
        let reply = preflight(&app, &format!("/api/v2/{SP}/configuration"), origin).send().await;
        assert_eq!(cors_headers(&reply), Vec::<String>::new(), "{origin}");
        let reply = app.get(&format!("/api/v2/{SP}/configuration")).header("origin", origin).send().await;
        reply.assert_ok_json();
        assert_eq!(cors_headers(&reply), Vec::<String>::new(), "{origin}");
        assert!(header(&reply, "vary").is_some_and(|v| v.contains("origin")), "a cache must not mix origins");
    }
}

#[tokio::test]
async fn loopback_origins_are_refused_when_the_server_does_not_listen_on_loopback() {
    let mut settings = settings();
    settings.allow_loopback_origins = false;
    let app = TestApp::with_settings(settings).await;
    let reply = preflight(&app, "/o/client/register", "http://127.0.0.1:5173").send().await;
    assert_eq!(allow_origin(&reply), None);
}

#[tokio::test]
async fn the_reset_api_is_not_open_to_browsers() {
    let app = TestApp::new().await;
    let reply = app
        .delete(&format!("/reset-tempass/v3/reset?requestor_id={SP}&mvpd_id={BASIC}"))
        .header("origin", "https://example.com")
        .send()
        .await;
    reply.assert_status(204);
    assert_eq!(allow_origin(&reply), None);
}
