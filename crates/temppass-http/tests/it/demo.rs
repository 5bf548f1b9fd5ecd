//! The demo pages (SPEC.md §11): embedded, served only when enabled, with a working software statement.

use temppass_http::DemoSettings;
use temppass_http::auth::SCOPE_API;

use crate::support::*;

async fn demo_app() -> TestApp {
    // The demo application is what `temppass serve` registers at start-up; here the test registers it.
    let plain = TestApp::new().await;
    let (_, statement) = plain.create_application("demo", &[SP], &[SCOPE_API]).await;
    let mut settings = settings();
    settings.demo = Some(DemoSettings {
        service_provider: ok(temppass_core::ServiceProviderId::parse(SP), "sp"),
        software_statement: statement,
    });
    TestApp::with_store_of(plain, settings).await
}

#[tokio::test]
async fn the_demo_serves_its_pages_the_sdk_and_a_statement_that_registers() {
    let app = demo_app().await;
    for (path, content_type) in [
        ("/demo/", "text/html; charset=utf-8"),
        ("/demo/auto-login.html", "text/html; charset=utf-8"),
        ("/demo/picker.html", "text/html; charset=utf-8"),
        ("/demo/multi-temppass.html", "text/html; charset=utf-8"),
        ("/demo/promotional.html", "text/html; charset=utf-8"),
        ("/demo/temppass.js", "text/javascript; charset=utf-8"),
        ("/demo/common.js", "text/javascript; charset=utf-8"),
        ("/demo/demo.css", "text/css; charset=utf-8"),
    ] {
        let reply = app.get(path).without_bearer().send().await;
        reply.assert_status(200);
        assert_eq!(reply.headers.get("content-type").and_then(|v| v.to_str().ok()), Some(content_type), "{path}");
        assert!(!reply.text.is_empty(), "{path} is empty");
    }
    let config = app.get("/demo/demo-config.json").without_bearer().send().await;
    let body = config.assert_ok_json();
    assert_eq!(body["serviceProvider"], SP);
    let statement = some(body["softwareStatement"].as_str(), "softwareStatement");
    app.register_client(statement).await;
    app.get("/demo/../Cargo.toml").without_bearer().send().await.assert_status(404);
    app.get("/demo/secrets.txt").without_bearer().send().await.assert_error(404, "not_found", "none");
}

#[tokio::test]
async fn without_the_demo_nothing_is_served_under_demo() {
    let app = TestApp::new().await;
    for path in ["/demo/", "/demo/temppass.js", "/demo/demo-config.json"] {
        app.get(path).without_bearer().send().await.assert_status(404);
    }
}
