//! The real binary against hostile clients on loopback (docs/exposure.md):
//! thousands of idle and half-sent sockets, clients that send the largest
//! decision bodies and never read, a shutdown held up by a half-sent request,
//! and NUL bytes on PostgreSQL. Memory is the server's own RSS, read from
//! `/proc`. Every loop is bounded in count and time.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use temppass_store_postgres::testing::TestDatabase;

use crate::support::{Sandbox, Server, access_token, authorize, device, json};

/// The server's resident memory in KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{}/status", server.child.id()))
}

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

async fn health_within_a_second(base: &str) -> u16 {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build();
    let client = client.expect("an HTTP client");
    let answer = client.get(format!("{base}/health")).send().await;
    answer.expect("/health answers within 1 s").status().as_u16()
}

/// As many sockets as this test process may open, up to `wanted`.
fn sockets_allowed(wanted: usize) -> usize {
    let descriptors = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    wanted.min(usize::try_from(descriptors.saturating_sub(200)).unwrap_or(wanted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_and_half_sent_sockets_leave_health_and_authorize_answering() {
    // Timeouts longer than the test, so every socket stays open while it is measured.
    let sandbox = Sandbox::with_server_keys("10m", None, "header_read_timeout = \"60s\"\nkeep_alive_timeout = \"60s\"");
    let server = sandbox.start();
    let token = access_token(&server.base, &sandbox.create_app("exposure", &["REF30"])).await;
    for n in 0..50 {
        assert_eq!(authorize(&server.base, &token, "REF30", &format!("warm-{n}"), "res01").await.0, 200);
    }
    let before = rss_kib(&server);
    let count = sockets_allowed(4_000);
    let target = address(&server);

    let opened = tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|n| {
                let mut socket = TcpStream::connect(&target).unwrap_or_else(|e| panic!("socket {n}: {e}"));
                if n % 2 == 1 {
                    let _ = socket.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
                }
                socket
            })
            .collect::<Vec<_>>()
    });
    let sockets = opened.await.expect("the sockets open");
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(health_within_a_second(&server.base).await, 200);
    let started = Instant::now();
    let (status, body) = authorize(&server.base, &token, "REF30", "viewer-under-attack", "res01").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decisions"][0]["authorized"], true, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "authorize took {:?}", started.elapsed());
    let open = rss_kib(&server);
    drop(sockets);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(&server);
    eprintln!("{count} idle and half-sent sockets: RSS {before} KiB before, {open} KiB open, {after} KiB after");
    assert!(open < before + 200 * 1024, "{count} idle sockets took {} KiB", open - before);
    assert!(
        after <= before + (open - before) / 2 + 8 * 1024,
        "RSS did not come back down: {before} → {open} → {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_the_largest_decision_bodies_and_never_read_keep_memory_flat() {
    let sandbox = Sandbox::new("10m");
    let server = sandbox.start();
    let token = access_token(&server.base, &sandbox.create_app("amplify", &["REF30"])).await;
    let before = rss_kib(&server);
    let target = address(&server);
    let resources = vec!["a"; 16_000];
    let body = serde_json::to_vec(&serde_json::json!({ "resources": resources })).unwrap_or_default();
    let request = [
        format!(
            "POST /api/v2/REF30/decisions/authorize/TempPass HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             AP-Device-Identifier: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            device("amplifier"),
            body.len()
        )
        .into_bytes(),
        body,
    ]
    .concat();
    let connections = sockets_allowed(250);

    let sent = tokio::task::spawn_blocking(move || {
        (0..connections)
            .map(|n| {
                let mut socket = TcpStream::connect(&target).unwrap_or_else(|e| panic!("socket {n}: {e}"));
                // Each asks again and again; none ever reads an answer.
                for _ in 0..4 {
                    let _ = socket.write_all(&request);
                }
                socket
            })
            .collect::<Vec<_>>()
    });
    let sockets = sent.await.expect("the requests are sent");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = rss_kib(&server);
    assert_eq!(health_within_a_second(&server.base).await, 200);
    drop(sockets);
    eprintln!("{connections} clients of 16,000-resource bodies: RSS {before} KiB before, {held} KiB while held");
    // Before the fix each held an 8 MB answer: 2 GB for 250.
    assert!(held < before + 64 * 1024, "RSS grew from {before} to {held} KiB");
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_open_exits_zero_within_the_grace_period() {
    let sandbox = Sandbox::with_server_keys("10m", None, "shutdown_grace = \"1s\"\nheader_read_timeout = \"60s\"");
    let mut server = sandbox.start();
    let mut holder = TcpStream::connect(address(&server)).expect("a connection to the server");
    holder.write_all(b"POST /o/client/token HTTP/1.1\r\nHost: x\r\n").expect("the start of a request is sent");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    let kill = std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
    assert!(kill.is_ok_and(|status| status.success()), "kill -TERM failed");
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("the server's status can be read") {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(5), "still running 5 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(2), "took {:?}, grace is 1 s", signalled.elapsed());
    drop(holder);
}

#[tokio::test]
async fn nul_bytes_on_postgresql_are_refused_with_the_error_of_their_field_not_an_internal_error() {
    let Some(database) = TestDatabase::create().await else { return };
    let sandbox = Sandbox::with_storage("10m", Some(database.url()));
    let server = sandbox.start();
    let base = server.base.clone();
    let token = access_token(&base, &sandbox.create_app("nul", &["REF30"])).await;
    let client = reqwest::Client::new();
    let form = "application/x-www-form-urlencoded";

    let token_answer = client
        .post(format!("{base}/o/client/token"))
        .header("content-type", form)
        .body("grant_type=client_credentials&client_id=%00&client_secret=x")
        .send();
    let session = client
        .post(format!("{base}/api/v2/REF30/sessions"))
        .bearer_auth(&token)
        .header("AP-Device-Identifier", device("tv"))
        .header("content-type", form)
        .body("domainName=a%00b&redirectUrl=https%3A%2F%2Fx%00")
        .send();
    let code = client
        .get(format!("{base}/api/v2/REF30/sessions/ABC%00EFG"))
        .bearer_auth(&token)
        .header("AP-Device-Identifier", device("tv"))
        .send();
    let resource = client
        .post(format!("{base}/api/v2/REF30/decisions/authorize/TempPass"))
        .bearer_auth(&token)
        .header("AP-Device-Identifier", device("tv"))
        .json(&serde_json::json!({ "resources": ["res\u{0}01"] }))
        .send();
    let send = |what: &'static str| move |e: reqwest::Error| panic!("{what}: {e}");
    let (token_status, token_body) = json(token_answer.await.unwrap_or_else(send("token"))).await;
    let (session_status, session_body) = json(session.await.unwrap_or_else(send("session"))).await;
    let (code_status, code_body) = json(code.await.unwrap_or_else(send("code"))).await;
    let (resource_status, resource_body) = json(resource.await.unwrap_or_else(send("resource"))).await;

    assert_eq!((token_status, token_body["error"].as_str()), (400, Some("invalid_client")), "{token_body}");
    assert_eq!((session_status, session_body["code"].as_str()), (400, Some("invalid_authentication_session")));
    assert_eq!((code_status, code_body["code"].as_str()), (400, Some("invalid_parameter_code")), "{code_body}");
    assert_eq!((resource_status, resource_body["code"].as_str()), (400, Some("invalid_parameter_resources")));
    drop(server);
}
