//! The admin commands, as an operator scripts them (SPEC.md §10).

use crate::support::{Sandbox, access_token, configuration_is_refused_within_five_seconds, json};

#[tokio::test]
async fn app_create_prints_a_statement_that_registers_and_revoke_stops_its_tokens() {
    let sandbox = Sandbox::new("10m");
    let statement = sandbox.create_app("partner", &["REF30"]);
    assert_eq!(statement.split('.').count(), 3, "the last line is not a JWS: {statement}");
    let server = sandbox.start();
    let token = access_token(&server.base, &statement).await;
    let configuration = reqwest::Client::new()
        .get(format!("{}/api/v2/REF30/configuration", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("configuration: {e}"));
    assert_eq!(configuration.status(), 200);

    let revoked = sandbox.run(&["app", "revoke", "partner"]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    configuration_is_refused_within_five_seconds(&server.base, &token).await;
    let (status, body) = json(
        reqwest::Client::new()
            .post(format!("{}/o/client/register", server.base))
            .json(&serde_json::json!({ "software_statement": statement }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("register: {e}")),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unapproved_software_statement")));
}

#[test]
fn app_create_accepts_several_service_providers_and_scopes_in_one_flag() {
    let sandbox = Sandbox::new("10m");
    let output = sandbox.run(&[
        "app",
        "create",
        "--name",
        "both",
        "--service-provider",
        "REF30",
        "OTHER",
        "--scope",
        "api:client:v2",
        "temporary:passes:owner",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn app_create_refuses_an_unknown_service_provider_or_scope() {
    let sandbox = Sandbox::new("10m");
    let output =
        sandbox.run(&["app", "create", "--name", "x", "--service-provider", "NOPE", "--scope", "api:client:v2"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("NOPE"));
    let output = sandbox.run(&["app", "create", "--name", "x", "--service-provider", "REF30", "--scope", "admin"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("admin"));
}

#[test]
fn revoking_an_unknown_application_fails() {
    let sandbox = Sandbox::new("10m");
    let output = sandbox.run(&["app", "revoke", "ghost"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ghost"));
}

#[test]
fn an_invalid_configuration_stops_start_up_naming_the_field() {
    let sandbox = Sandbox::new("0s");
    let output = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--config"])
        .arg(sandbox.config())
        .output()
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("service_providers[0].temppass[0].ttl"), "{stderr}");
}

/// `temppass serve` with no arguments, in a fresh directory (the port is the only override).
fn serve_bundled_example(dir: &std::path::Path) -> crate::support::Server {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(crate::support::BIN)
        .arg("serve")
        .current_dir(dir)
        .env("TEMPPASS_SERVER__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap_or_else(|e| panic!("read: {e}"));
    let base = line.trim().strip_prefix("temppass listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
    crate::support::Server { child, base }
}

#[tokio::test]
async fn serve_without_arguments_runs_the_bundled_example_with_sqlite_under_temppass_data_and_the_demo() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for _restart in 0..2 {
        let server = serve_bundled_example(dir.path());
        assert!(dir.path().join("temppass-data/temppass.db").exists(), "no SQLite file under ./temppass-data/");
        let page = reqwest::get(format!("{}/demo/", server.base)).await.unwrap_or_else(|e| panic!("demo: {e}"));
        assert_eq!(page.status(), 200);
        let (status, config) = json(
            reqwest::get(format!("{}/demo/demo-config.json", server.base))
                .await
                .unwrap_or_else(|e| panic!("demo config: {e}")),
        )
        .await;
        assert_eq!(status, 200);
        let statement = config["softwareStatement"].as_str().unwrap_or_default();
        // The demo's statement registers, and its token works on the example service provider.
        let token = access_token(&server.base, statement).await;
        let reply = reqwest::Client::new()
            .get(format!("{}/api/v2/REF30/configuration", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("configuration: {e}"));
        assert_eq!(reply.status(), 200);
        server.kill();
    }
}
