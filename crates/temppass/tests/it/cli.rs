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
        .expect("the configuration endpoint answers");
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
            .expect("registration answers"),
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
        "--init",
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
    sandbox.create_app("someone", &["REF30"]);
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
        .expect("temppass runs");
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
        .env("TEMPPASS_SERVER__MANAGEMENT_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("temppass serve starts");
    let stdout = child.stdout.take().expect("a piped stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("the first line of stdout is read");
    let base = line.trim().strip_prefix("temppass listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
    crate::support::Server { child, base, management: None }
}

#[tokio::test]
async fn serve_without_arguments_runs_the_bundled_example_with_sqlite_under_temppass_data_and_the_demo() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for _restart in 0..2 {
        let server = serve_bundled_example(dir.path());
        assert!(dir.path().join("temppass-data/temppass.db").exists(), "no SQLite file under ./temppass-data/");
        let page = reqwest::get(format!("{}/demo/", server.base)).await.expect("the demo page answers");
        assert_eq!(page.status(), 200);
        let (status, config) = json(
            reqwest::get(format!("{}/demo/demo-config.json", server.base)).await.expect("the demo config answers"),
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
            .expect("the configuration endpoint answers");
        assert_eq!(reply.status(), 200);
        server.kill();
    }
}

// --- the first hour (issue 19) ---

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::support::BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("run temppass {args:?}: {e}"))
}

const CREATE: [&str; 8] =
    ["app", "create", "--name", "my-app", "--service-provider", "REF30", "--scope", "api:client:v2"];

#[test]
fn an_admin_command_in_a_directory_without_a_store_refuses_to_create_one_unless_told_to() {
    let dir = tempfile::tempdir().expect("a temporary directory");

    let refused = run_in(dir.path(), &CREATE);
    let store = dir.path().join("temppass-data/temppass.db");
    assert!(!refused.status.success(), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("there is no store at"), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("--init"), "{}", text(&refused.stderr));
    assert!(!store.exists() && !dir.path().join("temppass-data").exists(), "a store was created");
    assert!(refused.stdout.is_empty());

    let mut init: Vec<&str> = CREATE.to_vec();
    init.push("--init");
    let created = run_in(dir.path(), &init);
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert!(store.exists());
}

#[test]
fn every_command_says_which_configuration_and_store_it_uses_on_stderr() {
    let sandbox = Sandbox::new("10m");
    sandbox.create_app("first", &["REF30"]);
    let output = sandbox.run(&["key", "rotate"]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("configuration: {}", sandbox.config().display())), "{stderr}");
    let store = sandbox.dir.path().join("data/temppass.db");
    assert!(stderr.contains(&format!("store: SQLite {}", store.display())), "{stderr}");
}

#[test]
fn a_relative_store_in_a_configuration_file_is_found_next_to_it_from_any_directory() {
    let home = tempfile::tempdir().expect("a temporary directory");
    let elsewhere = tempfile::tempdir().expect("a temporary directory");
    let config = home.path().join("temppass.toml");
    let text_of_config = "[storage]\nurl = \"sqlite://data/t.db\"\n[[service_providers]]\nid = \"REF30\"\n\
                          [[service_providers.temppass]]\nmvpd = \"TempPass\"\nkind = \"basic\"\nttl = \"10m\"\n";
    std::fs::write(&config, text_of_config).expect("the configuration file is written");
    let config = config.to_string_lossy().into_owned();
    let mut args: Vec<&str> = CREATE.to_vec();
    args.extend(["--config", &config, "--init"]);

    let created = run_in(elsewhere.path(), &args);

    assert!(created.status.success(), "{}", text(&created.stderr));
    assert!(home.path().join("data/t.db").exists(), "the store is not next to the configuration");
    assert!(!elsewhere.path().join("data").exists(), "a store was made in the working directory");
    let again = run_in(home.path(), &["key", "rotate", "--config", "temppass.toml"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
}

#[tokio::test]
async fn app_create_is_safe_to_repeat_and_prints_the_statement_alone_on_stdout() {
    let sandbox = Sandbox::new("10m");
    let first = sandbox.create_app("partner", &["REF30"]);
    let again =
        sandbox.run(&["app", "create", "--name", "partner", "--service-provider", "REF30", "--scope", "api:client:v2"]);
    let other_scopes = sandbox.run(&[
        "app",
        "create",
        "--name",
        "partner",
        "--service-provider",
        "REF30",
        "--scope",
        "temporary:passes:owner",
    ]);
    let statement_command = sandbox.run(&["app", "statement", "--name", "partner"]);

    assert!(again.status.success(), "{}", text(&again.stderr));
    let stdout = text(&again.stdout);
    assert_eq!(stdout.lines().count(), 1, "stdout holds more than the statement: {stdout:?}");
    assert!(text(&again.stderr).contains("exists"), "{}", text(&again.stderr));
    assert!(!other_scopes.status.success());
    assert!(text(&other_scopes.stderr).contains("revoke it first"), "{}", text(&other_scopes.stderr));
    assert!(statement_command.status.success(), "{}", text(&statement_command.stderr));
    let server = sandbox.start();
    for statement in [first, stdout.trim().to_owned(), text(&statement_command.stdout).trim().to_owned()] {
        access_token(&server.base, &statement).await;
    }
}

#[test]
fn a_command_whose_stdout_is_closed_ends_quietly_without_a_panic() {
    let sandbox = Sandbox::new("10m");
    sandbox.create_app("first", &["REF30"]);
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);

    let output = std::process::Command::new(crate::support::BIN)
        .args([
            "app",
            "create",
            "--name",
            "piped",
            "--service-provider",
            "REF30",
            "--scope",
            "api:client:v2",
            "--config",
        ])
        .arg(sandbox.config())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("temppass runs");

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let statement = sandbox.run(&["app", "statement", "--name", "piped"]);
    assert!(statement.status.success(), "the application was not kept: {}", text(&statement.stderr));
}

#[tokio::test]
async fn without_public_url_the_issuer_follows_the_listen_address_and_start_up_says_it() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = std::process::Command::new(crate::support::BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("TEMPPASS_SERVER__LISTEN", "127.0.0.1:0")
        .env("TEMPPASS_SERVER__MANAGEMENT_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("temppass serve starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("a piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the first line of stdout is read");
    let base = line.trim().strip_prefix("temppass listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
    let server = crate::support::Server { child, base, management: None };

    let statement = reqwest::get(format!("{}/demo/demo-config.json", server.base)).await;
    let config: serde_json::Value = statement.expect("the demo config answers").json().await.unwrap_or_default();
    let token = config["softwareStatement"].as_str().unwrap_or_default();
    let payload = token.split('.').nth(1).unwrap_or_default();
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap_or_default();
    assert_eq!(claims["iss"].as_str(), Some(server.base.as_str()), "{claims}");
    let mut server = server;
    let _ = server.child.kill();
    let mut stderr = String::new();
    if let Some(mut pipe) = server.child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(stderr.contains(&format!("public_url={}", server.base)), "{stderr}");
    assert!(stderr.contains("configuration=the bundled example configuration"), "{stderr}");
    assert!(stderr.contains("store=SQLite "), "{stderr}");
    assert_eq!(stderr.matches("listening").count(), 0, "stderr repeats the listening line: {stderr}");
}
