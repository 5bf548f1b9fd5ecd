//! What an operator of the real binary sees: the management listener, the
//! access log, the tracking events and `temppass stats` — and that none of
//! them carries a device id or an identity.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::support::{BIN, Sandbox, access_token, authorize_request, authorize_url, device};

const DEVICE: &str = "device-SECRET-4711";
const EMAIL: &str = "Secret.Viewer@example.com";

fn hex_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `temppass serve` of `sandbox` with the log at info on a file; returns the
/// child, its base URL and its management URL.
fn serve(sandbox: &Sandbox, log: &std::path::Path) -> (std::process::Child, String, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(sandbox.config())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).expect("the log file")))
        .spawn()
        .expect("temppass serve starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("a piped stdout"));
    let mut lines = [String::new(), String::new()];
    for line in &mut lines {
        stdout.read_line(line).expect("a line of stdout");
    }
    let base = lines[0].trim().strip_prefix("temppass listening on ").expect("the listening line").to_owned();
    let management = lines[1].trim().strip_prefix("temppass management on ").expect("the management line").to_owned();
    (child, base, management)
}

fn stop(mut child: std::process::Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let exit = child.wait().expect("the server's exit status");
    assert!(exit.success(), "temppass serve exited with {exit:?}");
}

#[tokio::test]
async fn no_scrape_log_line_or_event_carries_a_device_id_or_an_identity() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let events = dir.path().join("events.jsonl");
    let log = dir.path().join("serve.log");
    let keys = format!("\n[events]\nfile = \"{}\"\n\n[log]\nformat = \"json\"\n", events.display());
    let sandbox = Sandbox::with_server_keys("10m", None, &keys);
    let statement = sandbox.create_app("observe", &["REF30"]);
    let (child, base, management) = serve(&sandbox, &log);
    let token = access_token(&base, &statement).await;
    let client = reqwest::Client::new();
    let identity = STANDARD.encode(serde_json::json!({ "email": EMAIL }).to_string());
    for (mvpd, identity, resource) in
        [("TempPass", None, "res01"), ("flexibleTempPass", Some(identity.as_str()), "title-1")]
    {
        let request =
            authorize_request(&client, &authorize_url(&base, "REF30", mvpd), &token, DEVICE, identity, resource);
        let reply = request.send().await.expect("authorize answers");
        assert_eq!(reply.status(), 200);
    }
    let bad =
        client.get(format!("{base}/api/v2/REF30/profiles/TempPass")).header("AP-Device-Identifier", device(DEVICE));
    assert_eq!(bad.send().await.expect("profile answers").status(), 401, "a profile without a bearer token");
    let scrape =
        reqwest::get(format!("{management}/metrics")).await.expect("the scrape").text().await.unwrap_or_default();
    assert!(
        scrape.contains("temppass_trials_started_total{service_provider=\"REF30\",mvpd=\"TempPass\"} 1"),
        "{scrape}"
    );
    let ready = reqwest::get(format!("{management}/health/ready")).await.expect("ready answers");
    assert_eq!(ready.status(), 200);
    stop(child);

    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let events = std::fs::read_to_string(&events).unwrap_or_default();
    for (name, text) in [("the scrape", &scrape), ("the log", &log), ("the event file", &events)] {
        for secret in [
            DEVICE.to_owned(),
            device(DEVICE),
            STANDARD.encode(DEVICE),
            EMAIL.to_owned(),
            EMAIL.to_lowercase(),
            identity.clone(),
            hex_sha256(&EMAIL.to_lowercase()),
        ] {
            assert!(!text.contains(&secret), "{name} carries {secret:?}:\n{text}");
        }
    }
    assert!(!log.contains('\u{1b}'), "colour codes reached a log that is not a terminal");
    let access: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .filter(|line| line["target"] == "temppass::access")
        .collect();
    let tracking_id = hex_sha256(DEVICE);
    let decisions: Vec<&serde_json::Value> =
        access.iter().filter(|line| line["route"] == "/api/v2/{sp}/decisions/authorize/{mvpd}").collect();
    assert_eq!(decisions.len(), 2, "one access line per request: {log}");
    assert!(decisions.iter().all(|line| line["tracking_id"] == tracking_id.as_str() && line["status"] == 200), "{log}");
    assert!(
        access.iter().any(|line| line["status"] == 401 && line["code"] == "invalid_access_token_client_application"),
        "{log}"
    );
    assert_eq!(log.matches("temppass started").count(), 1, "the start-up line is printed once: {log}");
    assert!(
        events.lines().filter(|line| line.contains("\"type\":\"decision\"")).all(|line| line.contains(&tracking_id))
    );
    let first: serde_json::Value =
        serde_json::from_str(events.lines().next().unwrap_or_default()).expect("a JSON event");
    assert_eq!(
        (first["type"].as_str(), first["action"].as_str()),
        (Some("admin_change"), Some("app_create")),
        "{events}"
    );

    // The last second's figures were flushed at shutdown; `temppass stats` reads them.
    let output = sandbox.run(&["stats", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stats --json is JSON");
    let started: Vec<(String, u64)> = figures["figures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| (row["mvpd"].as_str().unwrap_or_default().to_owned(), row["trials_started"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(started, [("TempPass".to_owned(), 1), ("flexibleTempPass".to_owned(), 1)], "{figures}");
    let table = sandbox.run(&["stats", "--service-provider", "REF30"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.starts_with("day ") && table.lines().count() == 3, "{table}");
    let refused = sandbox.run(&["stats", "--since", "last week"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--since"));
}

#[test]
fn a_management_listener_that_cannot_bind_stops_start_up_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port();
    let sandbox = Sandbox::with_server_keys("10m", None, &format!("management_listen = \"127.0.0.1:{port}\""));
    let output = Command::new(BIN).args(["serve", "--config"]).arg(sandbox.config()).output().expect("serve runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve started on a taken management port");
    assert!(stderr.contains("server.management_listen") && stderr.contains(&port.to_string()), "{stderr}");
}

#[test]
fn an_event_file_that_cannot_be_opened_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("no-such-dir").join("events.jsonl");
    let sandbox = Sandbox::with_server_keys("10m", None, &format!("\n[events]\nfile = \"{}\"\n", missing.display()));
    let output = Command::new(BIN).args(["serve", "--config"]).arg(sandbox.config()).output().expect("serve runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve started with an event file it cannot open");
    assert!(stderr.contains("events.file") && stderr.contains("no-such-dir"), "{stderr}");
}
