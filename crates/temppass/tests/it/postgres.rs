//! Several servers, one truth: two real `temppass serve` processes on one
//! PostgreSQL database (SPEC.md §9, issue 6). Each test has a database of its
//! own; they run when `TEMPPASS_TEST_POSTGRES_URL` is set and pass, saying they
//! were skipped, when it is not.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;
use temppass_store_postgres::testing::{TcpProxy, TestDatabase, with_address};

use crate::support::{
    Sandbox, Server, access_token, authorize, authorize_request, authorize_url,
    configuration_is_refused_within_five_seconds, device, json,
};

const BOTH_SCOPES: [&str; 2] = ["api:client:v2", "temporary:passes:owner"];

/// Two servers on one fresh database, and an access token that works on both.
/// Fields drop in order: the servers stop before their database goes.
struct Cluster {
    a: Server,
    b: Server,
    token: String,
    sandbox: Sandbox,
    _database: TestDatabase,
}

impl Cluster {
    /// `None` when PostgreSQL tests are skipped. Both servers start at the same
    /// moment on an empty database, so they migrate it and make the signing key together.
    async fn start(ttl: &str) -> Option<Self> {
        let database = TestDatabase::create().await?;
        let sandbox = Sandbox::with_storage(ttl, Some(database.url()));
        let mut servers = sandbox.start_together(2);
        let (b, a) = (servers.pop()?, servers.pop()?);
        let statement = sandbox.create_app_with_scopes("cluster", &["REF30"], &BOTH_SCOPES);
        // Registered on one server, used on both: clients and tokens live in the shared store.
        let token = access_token(&b.base, &statement).await;
        Some(Self { a, b, token, sandbox, _database: database })
    }

    fn servers(&self) -> [&Server; 2] {
        [&self.a, &self.b]
    }
}

fn decision(body: &Value) -> &Value {
    &body["decisions"][0]
}

/// The `sid` claim of a media token: an opaque id of its trial.
fn trial_sid(decision: &Value) -> String {
    let token = decision["token"]["serializedToken"].as_str().unwrap_or_else(|| panic!("no token in {decision}"));
    let payload = token.split('.').nth(1).unwrap_or_else(|| panic!("not a compact JWS: {token}"));
    let claims = URL_SAFE_NO_PAD.decode(payload).expect("a base64url payload");
    let claims: Value = serde_json::from_slice(&claims).expect("a JSON payload");
    claims["sid"].as_str().unwrap_or_else(|| panic!("no sid in {claims}")).to_owned()
}

fn identity(email: &str) -> String {
    STANDARD.encode(serde_json::json!({ "email": email }).to_string())
}

async fn authorize_promotional(base: &str, token: &str, device_id: &str, email: &str, resource: &str) -> Value {
    let url = authorize_url(base, "REF30", "flexibleTempPass");
    let identity = identity(email);
    let request = authorize_request(&reqwest::Client::new(), &url, token, device_id, Some(&identity), resource);
    let (status, body) = json(request.send().await.expect("authorize answers")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn get_status(url: &str, token: &str) -> (u16, Value) {
    json(reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}")))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_authorizations_through_two_servers_give_one_trial_and_one_not_after() {
    let Some(cluster) = Cluster::start("10m").await else { return };
    const REQUESTS: usize = 40;
    let requests = (0..REQUESTS).map(|k| {
        let base = cluster.servers()[k % 2].base.clone();
        let token = cluster.token.clone();
        tokio::spawn(async move { authorize(&base, &token, "REF30", "shared-device", "res01").await })
    });
    let mut not_afters = BTreeSet::new();
    let mut sids = BTreeSet::new();
    for request in requests.collect::<Vec<_>>() {
        let (status, body) = request.await.expect("a request task finishes");
        assert_eq!(status, 200, "{body}");
        assert_eq!(decision(&body)["authorized"], true, "a concurrent first authorization was denied: {body}");
        not_afters.insert(decision(&body)["notAfter"].as_i64().unwrap_or_default());
        sids.insert(trial_sid(decision(&body)));
    }
    assert_eq!(
        not_afters.len(),
        1,
        "{REQUESTS} first authorizations over two servers saw several notAfters: {not_afters:?}"
    );
    assert_eq!(sids.len(), 1, "{REQUESTS} first authorizations over two servers started several trials: {sids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotional_cap_holds_across_servers() {
    let Some(cluster) = Cluster::start("1h").await else { return };
    const REQUESTS: usize = 20;
    // One viewer on five devices asks for twenty titles through both servers at once.
    let requests = (0..REQUESTS).map(|k| {
        let base = cluster.servers()[k % 2].base.clone();
        let token = cluster.token.clone();
        tokio::spawn(async move {
            let resource = format!("title-{k}");
            let body =
                authorize_promotional(&base, &token, &format!("device-{}", k % 5), "fan@example.com", &resource).await;
            (resource, body)
        })
    });
    let mut permitted = BTreeSet::new();
    for request in requests.collect::<Vec<_>>() {
        let (resource, body) = request.await.expect("a request task finishes");
        if decision(&body)["authorized"] == true {
            permitted.insert(resource);
        } else {
            assert_eq!(decision(&body)["error"]["code"], "temporary_access_resources_limit_exceeded", "{body}");
        }
    }
    assert_eq!(permitted.len(), 2, "max_resources 2 over two servers permitted {permitted:?}");
    for server in cluster.servers() {
        let (status, profile) = json(
            reqwest::Client::new()
                .get(format!("{}/api/v2/REF30/profiles/flexibleTempPass", server.base))
                .bearer_auth(&cluster.token)
                .header("AP-Device-Identifier", device("device-0"))
                .header("AP-TempPass-Identity", identity("fan@example.com"))
                .send()
                .await
                .expect("the profile answers"),
        )
        .await;
        assert_eq!(status, 403, "the exhausted trial's profile on {}: {profile}", server.base);
        assert_eq!(profile["code"], "temporary_access_resources_limit_exceeded", "{profile}");
        for resource in &permitted {
            let again =
                authorize_promotional(&server.base, &cluster.token, "device-9", "fan@example.com", resource).await;
            assert_eq!(
                decision(&again)["authorized"],
                true,
                "a permitted title is refused on {}: {again}",
                server.base
            );
        }
    }
}

async fn reset(base: &str, token: &str, device_id: Option<&str>) {
    let mut url = format!("{base}/reset-tempass/v3/reset?requestor_id=REF30&mvpd_id=TempPass");
    if let Some(device_id) = device_id {
        url.push_str(&format!("&device_id={device_id}"));
    }
    let response = reqwest::Client::new().delete(&url).bearer_auth(token).send().await.expect("the reset answers");
    assert_eq!(response.status().as_u16(), 204, "{url}: {}", response.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_through_one_server_is_seen_by_the_other_on_its_next_request() {
    let Some(cluster) = Cluster::start("10m").await else { return };
    let (a, b, token) = (&cluster.a.base, &cluster.b.base, &cluster.token);
    let (_, first) = authorize(b, token, "REF30", "living-room", "res01").await;
    let first_sid = trial_sid(decision(&first));
    let (_, neighbour) = authorize(b, token, "REF30", "kitchen", "res01").await;
    let neighbour_sid = trial_sid(decision(&neighbour));

    reset(a, token, Some("living-room")).await;
    let (_, after) = authorize(b, token, "REF30", "living-room", "res01").await;
    assert_eq!(decision(&after)["authorized"], true, "{after}");
    let second_sid = trial_sid(decision(&after));
    assert_ne!(second_sid, first_sid, "server B continued the trial that server A reset");
    let (_, untouched) = authorize(b, token, "REF30", "kitchen", "res01").await;
    assert_eq!(trial_sid(decision(&untouched)), neighbour_sid, "a reset of one device reached another");

    // A reset of all devices, O(1), through B this time, seen by A.
    reset(b, token, None).await;
    for device_id in ["living-room", "kitchen"] {
        let (_, after_all) = authorize(a, token, "REF30", device_id, "res01").await;
        let sid = trial_sid(decision(&after_all));
        assert!(
            ![&first_sid, &second_sid, &neighbour_sid].contains(&&sid),
            "{device_id} kept a trial after a reset of all"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_application_is_refused_by_both_servers() {
    let Some(cluster) = Cluster::start("10m").await else { return };
    for server in cluster.servers() {
        let (status, body) = get_status(&format!("{}/api/v2/REF30/configuration", server.base), &cluster.token).await;
        assert_eq!(status, 200, "before the revocation, on {}: {body}", server.base);
    }
    let revoked = cluster.sandbox.run(&["app", "revoke", "cluster"]);
    assert!(revoked.status.success(), "app revoke failed: {}", String::from_utf8_lossy(&revoked.stderr));
    for server in cluster.servers() {
        configuration_is_refused_within_five_seconds(&server.base, &cluster.token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_token_from_one_server_verifies_against_the_other_servers_jwks() {
    let Some(cluster) = Cluster::start("10m").await else { return };
    let (_, body) = authorize(&cluster.a.base, &cluster.token, "REF30", "phone", "res01").await;
    let media_token = decision(&body)["token"]["serializedToken"].as_str().unwrap_or_default().to_owned();
    assert!(!media_token.is_empty(), "no media token: {body}");
    let jwks = |server: &Server| {
        let url = format!("{}/.well-known/jwks.json", server.base);
        async move { reqwest::get(&url).await.unwrap_or_else(|e| panic!("{url}: {e}")).text().await.unwrap_or_default() }
    };
    assert_eq!(jwks(&cluster.a).await, jwks(&cluster.b).await, "two servers on one store publish different keys");
    let b_jwks = format!("{}/.well-known/jwks.json", cluster.b.base);
    let verdict = cluster.sandbox.run(&["token", "verify", "--jwks", &b_jwks, "--resource", "res01", &media_token]);
    let stdout = String::from_utf8_lossy(&verdict.stdout);
    assert!(
        verdict.status.success() && stdout.contains("Valid"),
        "a token of server A does not verify against server B's JWKS: {stdout} {}",
        String::from_utf8_lossy(&verdict.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_unreachable_requests_fail_fast_with_retry_and_recover_by_themselves() {
    let Some(database) = TestDatabase::create().await else { return };
    // The server reaches PostgreSQL through a proxy that this test cuts and restores.
    let proxy = TcpProxy::start(database.server_address().await).await;
    let sandbox = Sandbox::with_storage("10m", Some(&with_address(database.url(), proxy.address())));
    // Starting the server and the admin command block this thread while the
    // proxy, a task of this runtime, carries their traffic: hand the worker over.
    let mut server = tokio::task::block_in_place(|| sandbox.start());
    let statement = tokio::task::block_in_place(|| sandbox.create_app("outage", &["REF30"]));
    let token = access_token(&server.base, &statement).await;
    let (_, before) = authorize(&server.base, &token, "REF30", "tv", "res01").await;
    assert_eq!(decision(&before)["authorized"], true, "{before}");

    proxy.cut();
    for _ in 0..3 {
        let (status, body) = authorize(&server.base, &token, "REF30", "tv", "res01").await;
        assert_eq!(status, 500, "authorize while PostgreSQL is unreachable: {body}");
        assert_eq!((body["code"].as_str(), body["action"].as_str()), (Some("internal_server_error"), Some("retry")));
        // A profile needs the store too (the bearer's grant may still be in the server's 2 s cache).
        let (status, body) = json(
            reqwest::Client::new()
                .get(format!("{}/api/v2/REF30/profiles/TempPass", server.base))
                .bearer_auth(&token)
                .header("AP-Device-Identifier", device("tv"))
                .send()
                .await
                .expect("the profile answers"),
        )
        .await;
        assert_eq!((status, body["action"].as_str()), (500, Some("retry")), "{body}");
    }
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "the server exited during the outage: {:?}",
        server.child.try_wait()
    );

    proxy.restore();
    let (status, after) = authorize(&server.base, &token, "REF30", "tv", "res01").await;
    assert_eq!(status, 200, "the server did not recover by itself: {after}");
    assert_eq!(decision(&after)["authorized"], true, "{after}");
    assert_eq!(decision(&after)["notAfter"], decision(&before)["notAfter"], "the trial changed across the outage");
    assert_eq!(trial_sid(decision(&after)), trial_sid(decision(&before)));
    drop(server);
    drop(proxy);
}

#[test]
fn a_server_started_while_postgres_is_unreachable_exits_with_a_message_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port");
    let url = format!("postgres://temppass:s3cret@127.0.0.1:{port}/temppass");
    let sandbox = Sandbox::with_storage("10m", Some(&url));
    let output = std::process::Command::new(crate::support::BIN)
        .args(["serve", "--config"])
        .arg(sandbox.config())
        .output()
        .expect("temppass runs");
    assert!(!output.status.success(), "temppass serve started without PostgreSQL");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the PostgreSQL store"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "the message names no server: {stderr}");
    assert!(!stderr.contains("s3cret"), "the password leaked into the message: {stderr}");
}
