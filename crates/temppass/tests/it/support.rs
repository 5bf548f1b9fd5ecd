//! Starting the real binary and talking to it over HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_temppass");

/// A configuration in a temporary directory, with its SQLite file beside it
/// (or a PostgreSQL database, see [`Sandbox::with_storage`]).
pub(crate) struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The servers of this sandbox have a management listener (on a port the system chooses).
    pub management: bool,
}

impl Sandbox {
    /// A sandbox whose basic TempPass rule lasts `ttl`, with a SQLite file.
    pub(crate) fn new(ttl: &str) -> Self {
        Self::with_storage(ttl, None)
    }

    /// A sandbox whose basic TempPass rule lasts `ttl`, storing at
    /// `storage_url` (a SQLite file in the sandbox when `None`). Besides the
    /// basic rules, REF30 has a promotional `flexibleTempPass` rule with 2 slots.
    pub(crate) fn with_storage(ttl: &str, storage_url: Option<&str>) -> Self {
        Self::with_server_keys(ttl, storage_url, "")
    }

    /// As [`Sandbox::with_storage`], with more `[server]` keys (TOML lines).
    pub(crate) fn with_server_keys(ttl: &str, storage_url: Option<&str>, server_keys: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Every server of a test listens for management on a port of its own.
        let management = !server_keys.contains("management_listen");
        let management_key = if management { "management_listen = \"127.0.0.1:0\"" } else { "" };
        let storage_url = storage_url
            .map_or_else(|| format!("sqlite://{}", dir.path().join("data/temppass.db").display()), str::to_owned);
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://temppass.test"
{management_key}
{server_keys}

[storage]
url = "{storage_url}"

[[service_providers]]
id = "REF30"
name = "Reference"
domains = ["example.com"]
mvpds = [{{ id = "Cablevision", display_name = "Cablevision" }}]

[[service_providers.temppass]]
mvpd = "TempPass"
kind = "basic"
ttl = "{ttl}"

[[service_providers.temppass]]
mvpd = "flexibleTempPass"
kind = "promotional"
ttl = "{ttl}"
max_resources = 2
identity_key = "email"

[[service_providers]]
id = "OTHER"

[[service_providers.temppass]]
mvpd = "TempPass"
kind = "basic"
ttl = "{ttl}"
"#
        );
        std::fs::write(dir.path().join("temppass.toml"), config).expect("the configuration file is written");
        Self { dir, management }
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("temppass.toml")
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command.args(args).env_remove("RUST_LOG");
        if args.first() != Some(&"token") {
            command.arg("--config").arg(self.config());
        }
        command.output().unwrap_or_else(|e| panic!("run temppass {args:?}: {e}"))
    }

    /// Creates an application and returns its software statement.
    pub(crate) fn create_app(&self, name: &str, service_providers: &[&str]) -> String {
        self.create_app_with_scopes(name, service_providers, &["api:client:v2"])
    }

    /// Creates an application with these scopes and returns its software statement.
    pub(crate) fn create_app_with_scopes(&self, name: &str, service_providers: &[&str], scopes: &[&str]) -> String {
        // The sandbox's first command makes its store, as an operator's first `--init` does.
        let mut args = vec!["app", "create", "--init", "--name", name, "--scope"];
        args.extend_from_slice(scopes);
        args.push("--service-provider");
        args.extend_from_slice(service_providers);
        let output = self.run(&args);
        assert!(output.status.success(), "app create failed: {}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout.lines().last().unwrap_or_default().trim().to_owned()
    }

    pub(crate) fn start(&self) -> Server {
        Server::announced(Server::spawn(&self.config()), self.management)
    }

    /// Starts `count` servers on this configuration at the same moment (all
    /// processes spawned before any is waited for), as a deployment does.
    pub(crate) fn start_together(&self, count: usize) -> Vec<Server> {
        let children: Vec<Child> = (0..count).map(|_| Server::spawn(&self.config())).collect();
        children.into_iter().map(|child| Server::announced(child, self.management)).collect()
    }
}

/// A running `temppass serve`; killed (SIGKILL) when dropped.
pub(crate) struct Server {
    pub child: Child,
    pub base: String,
    /// `http://…` of the management listener, when the sandbox has one.
    pub management: Option<String>,
}

impl Server {
    fn spawn(config: &Path) -> Child {
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("temppass serve starts")
    }

    /// Waits for the server to say where it listens (and, with `management`, where it is managed).
    fn announced(mut child: Child, management: bool) -> Self {
        let mut stdout = BufReader::new(child.stdout.take().expect("a piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the first line of stdout is read");
        let base = line
            .trim()
            .strip_prefix("temppass listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let management = management.then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("the second line of stdout is read");
            line.trim()
                .strip_prefix("temppass management on ")
                .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
                .to_owned()
        });
        Self { child, base, management }
    }

    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn device(id: &str) -> String {
    format!("fingerprint {}", STANDARD.encode(id))
}

pub(crate) async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.expect("a JSON response");
    (status, body)
}

/// Registers a client with the statement and returns an access token.
pub(crate) async fn access_token(base: &str, statement: &str) -> String {
    let client = reqwest::Client::new();
    let (status, registered) = json(
        client
            .post(format!("{base}/o/client/register"))
            .json(&serde_json::json!({ "software_statement": statement }))
            .send()
            .await
            .expect("registration answers"),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let form = [
        ("client_id", registered["client_id"].as_str().unwrap_or_default()),
        ("client_secret", registered["client_secret"].as_str().unwrap_or_default()),
        ("grant_type", "client_credentials"),
    ];
    let body = serde_urlencoded(&form);
    let (status, token) = json(
        client
            .post(format!("{base}/o/client/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("the token endpoint answers"),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    token["access_token"].as_str().unwrap_or_default().to_owned()
}

fn serde_urlencoded(pairs: &[(&str, &str)]) -> String {
    // Secrets are URL-safe base64 and ids are UUIDs, so no escaping is needed.
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

pub(crate) async fn authorize(base: &str, token: &str, sp: &str, device_id: &str, resource: &str) -> (u16, Value) {
    let url = authorize_url(base, sp, "TempPass");
    let request = authorize_request(&reqwest::Client::new(), &url, token, device_id, None, resource);
    json(request.send().await.expect("authorize answers")).await
}

pub(crate) fn authorize_url(base: &str, sp: &str, mvpd: &str) -> String {
    format!("{base}/api/v2/{sp}/decisions/authorize/{mvpd}")
}

/// An authorization of one resource, with the identity header (already
/// encoded) when given: built, not sent.
pub(crate) fn authorize_request(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    device_id: &str,
    identity: Option<&str>,
    resource: &str,
) -> reqwest::RequestBuilder {
    let request = client
        .post(url)
        .bearer_auth(token)
        .header("AP-Device-Identifier", device(device_id))
        .json(&serde_json::json!({ "resources": [resource] }));
    match identity {
        Some(identity) => request.header("AP-TempPass-Identity", identity),
        None => request,
    }
}

/// SPEC.md §6: a revoked application's token is refused within 5 s (a server may
/// reuse a looked-up grant for `tokens.access_token_cache`, 2 s by default).
pub(crate) async fn configuration_is_refused_within_five_seconds(base: &str, token: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let url = format!("{base}/api/v2/REF30/configuration");
        let (status, body) = json(
            reqwest::Client::new()
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}")),
        )
        .await;
        if status == 401 {
            assert_eq!(body["code"], "invalid_access_token_client_application", "{body}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "a revoked application's token still works on {base}: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
