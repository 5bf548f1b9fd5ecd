//! What a hostile client sends (docs/exposure.md): amplifying bodies, NUL
//! bytes, stalled and oversized bodies, bytes hyper itself refuses, idle and
//! half-sent connections, too many connections, and a shutdown they hold up.
//! The first tests drive `app(state)`; the ones about connections serve it
//! with `listener::serve` on a loopback port and talk raw bytes to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use temppass_http::listener::{ConnectionLimits, ServeReport, serve};
use tokio::sync::oneshot;
use tower::ServiceExt;

use crate::support::{BASIC, SP, TestApp, fingerprint, ok, settings};

// --- amplification (SPEC.md §4) ---

#[tokio::test]
async fn a_body_naming_more_than_fifty_resources_is_refused_whole_with_a_small_answer() {
    let app = TestApp::new().await;
    let many: Vec<&str> = vec!["a"; 16_379];

    let refused = app.authorize(BASIC, "device-1", &many).send().await;
    let fifty_one = app.preauthorize(BASIC, "device-1", &many[..51]).send().await;
    let fifty = app.authorize(BASIC, "device-1", &many[..50]).send().await;

    refused.assert_error(400, "invalid_parameter_resources", "none");
    assert!(refused.body["details"].as_str().is_some_and(|d| d.contains("50")), "{}", refused.text);
    assert!(refused.text.len() < 1024, "the refusal is {} bytes", refused.text.len());
    fifty_one.assert_error(400, "invalid_parameter_resources", "none");
    assert_eq!(fifty.decisions().len(), 50, "up to 50, every item is answered");
    assert!(fifty.decisions().iter().all(|item| item["error"]["code"] == "too_many_resources"));
}

#[tokio::test]
async fn the_resource_limit_per_body_is_configurable() {
    let mut settings = settings();
    settings.limits.body_resources = 3;
    let app = TestApp::with_settings(settings).await;

    let four = app.preauthorize(BASIC, "device-1", &["a", "b", "c", "d"]).send().await;
    let three = app.preauthorize(BASIC, "device-1", &["a", "b", "c"]).send().await;

    four.assert_error(400, "invalid_parameter_resources", "none");
    assert_eq!(three.decisions().len(), 3);
}

// --- bytes PostgreSQL refuses (and every store must treat alike) ---

#[tokio::test]
async fn nul_bytes_are_refused_with_the_error_of_the_field_they_arrived_in() {
    let app = TestApp::new().await;

    let resource = app.authorize(BASIC, "device-1", &["res\u{0}01"]).send().await;
    let device = app.authorize(BASIC, "", &["res01"]).header("ap-device-identifier", "fingerprint YQBi").send().await;
    let session = app
        .post_form(&format!("/api/v2/{SP}/sessions"), &[("domainName", "a\u{0}b"), ("redirectUrl", "https://x")])
        .device("device-1")
        .send()
        .await;
    let code = app.get(&format!("/api/v2/{SP}/sessions/ABCD%00FG")).device("device-1").send().await;
    let code_profile = app.get(&format!("/api/v2/{SP}/profiles/code/%00BCDEFGH")).device("device-1").send().await;
    let token = app
        .post_bytes(
            "/o/client/token",
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&client_id=%00&client_secret=x".to_vec(),
        )
        .without_bearer()
        .send()
        .await;
    let register = app
        .post_json("/o/client/register", &json!({ "software_statement": "x", "redirect_uri": "https://a\u{0}b/" }))
        .without_bearer()
        .send()
        .await;
    let reset =
        app.delete(&format!("/reset-tempass/v3/reset?requestor_id={SP}&mvpd_id={BASIC}&device_id=a%00b")).send().await;

    resource.assert_error(400, "invalid_parameter_resources", "none");
    device.assert_error(400, "invalid_header_device_identifier", "none");
    session.assert_error(400, "invalid_authentication_session", "none");
    code.assert_error(400, "invalid_parameter_code", "none");
    code_profile.assert_error(400, "invalid_parameter_code", "none");
    token.assert_oauth_error("invalid_client");
    register.assert_oauth_error("invalid_redirect_uri");
    reset.assert_error(400, "invalid_parameter_device_id", "none");
    let profile = app.profile(BASIC, "device-1").send().await;
    assert!(profile.body["profiles"][BASIC]["notBefore"].is_number(), "nothing was started: {}", profile.text);
}

// --- memory an anonymous client could fill ---

#[tokio::test]
async fn a_token_request_repeating_a_scope_thousands_of_times_gets_each_scope_once() {
    let app = TestApp::new().await;
    let scopes = vec!["api:client:v2"; 4_600].join(" ");
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
        app.client.client_id,
        app.client.client_secret,
        scopes.replace(' ', "+")
    );

    let reply = app
        .post_bytes("/o/client/token", "application/x-www-form-urlencoded", body.into_bytes())
        .without_bearer()
        .send()
        .await;

    reply.assert_status(201);
    assert_eq!(reply.body["scope"], "api:client:v2", "{}", &reply.text[..reply.text.len().min(300)]);
}

// --- bodies: too large, too slow ---

/// A body that sends `first` and then nothing, for ever.
fn stalled_body(first: &'static [u8]) -> Body {
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(first))])
        .chain(futures_util::stream::pending());
    Body::from_stream(chunks)
}

async fn send_raw(
    app: &TestApp,
    path: &str,
    content_length: &str,
    content_type: &str,
    body: Body,
) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("authorization", format!("Bearer {}", app.token))
        .header("ap-device-identifier", fingerprint("device-1"))
        .header("content-type", content_type)
        .header("content-length", content_length)
        .body(body);
    let request = ok(request, "request");
    let answer = tokio::time::timeout(Duration::from_secs(20), app.router.clone().oneshot(request));
    let response = ok(ok(answer.await, "an answer within 20 s"), "the router");
    let status = response.status();
    let bytes = ok(response.into_body().collect().await, "body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
    let app = TestApp::new().await;
    let path = format!("/api/v2/{SP}/decisions/authorize/{BASIC}");

    let (status, body) = send_raw(&app, &path, "99999999999", "application/json", stalled_body(b"{")).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_request_timeout_not_internal_error() {
    let mut settings = settings();
    settings.limits.body_timeout = Duration::from_millis(200);
    let app = TestApp::with_settings(settings).await;
    let form = "application/x-www-form-urlencoded";

    let decision = send_raw(
        &app,
        &format!("/api/v2/{SP}/decisions/authorize/{BASIC}"),
        "100",
        "application/json",
        stalled_body(b"{"),
    )
    .await;
    let session = send_raw(&app, &format!("/api/v2/{SP}/sessions"), "100", form, stalled_body(b"mvpd=")).await;
    let token = send_raw(&app, "/o/client/token", "100", form, stalled_body(b"grant_type=")).await;

    for (what, (status, body)) in [("decision", decision), ("session", session), ("token", token)] {
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{what}: {body}");
        assert_eq!(body["code"], "request_timeout", "{what}: {body}");
    }
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_gets_a_json_error_body() {
    let app = TestApp::new().await;

    let reply = app.get("/api/v2/%FF/configuration").header("origin", "http://localhost:5173").send().await;

    reply.assert_error(400, "bad_request", "none");
    assert!(
        reply.headers.contains_key("access-control-allow-origin"),
        "the CORS headers were lost: {:?}",
        reply.headers
    );
}

// --- connections, over a real socket ---

/// `app`'s router served by `listener::serve` on a loopback port, until `stop` is sent.
struct Served {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<ServeReport>,
}

async fn served(app: &TestApp, limits: ConnectionLimits) -> Served {
    let listener = ok(tokio::net::TcpListener::bind("127.0.0.1:0").await, "bind");
    let address = ok(listener.local_addr(), "address");
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, app.router.clone(), limits, async move {
        let _ = stopped.await;
    }));
    Served { address, stop: Some(stop), done }
}

impl Served {
    async fn shut_down(mut self) -> ServeReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        ok(ok(tokio::time::timeout(Duration::from_secs(30), self.done).await, "serve returns"), "serve task")
    }
}

/// Sends `request` on a new connection and reads until the server closes it (at most `wait`).
fn exchange(address: SocketAddr, request: &[u8], wait: Duration) -> (Vec<u8>, Duration) {
    let mut stream = ok(TcpStream::connect(address), "connect");
    ok(stream.set_read_timeout(Some(wait)), "read timeout");
    let started = Instant::now();
    ok(stream.write_all(request), "send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (answer, started.elapsed())
}

fn status_and_json(answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer head in {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_refuses_by_itself_get_the_json_error_body_of_their_status() {
    let app = TestApp::new().await;
    let server = served(&app, ConnectionLimits::default()).await;
    let address = server.address;
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: a\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a bad Content-Length",
            b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "a DEL byte in a header",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "a 70 KB URI",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            431,
            "request_header_fields_too_large",
        ),
        (
            "200 headers",
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
            "request_header_fields_too_large",
        ),
    ];

    let answers = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .map(|(what, request, status, code)| {
                (what, exchange(address, &request, Duration::from_secs(10)).0, status, code)
            })
            .collect::<Vec<_>>()
    });

    for (what, answer, status, code) in ok(answers.await, "clients") {
        let (got_status, body) = status_and_json(&answer);
        assert_eq!((got_status, body["code"].as_str()), (status, Some(code)), "{what}: {body}");
        assert_eq!(body["status"], status, "{what}");
    }
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_by_their_timeouts() {
    let app = TestApp::new().await;
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(600),
        keep_alive_timeout: Duration::from_millis(300),
        ..ConnectionLimits::default()
    };
    let server = served(&app, limits).await;
    let address = server.address;

    let closed = tokio::task::spawn_blocking(move || {
        let wait = Duration::from_secs(10);
        [
            ("idle from the start", exchange(address, b"", wait)),
            ("half a request head", exchange(address, b"GET /health HTTP/1.1\r\nHost: x\r\n", wait)),
            ("idle after an answer", exchange(address, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", wait)),
        ]
    });

    for (what, (answer, took)) in ok(closed.await, "clients") {
        assert!(took < Duration::from_secs(5), "{what}: still open after {took:?}");
        if what == "idle after an answer" {
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{what}: {}", String::from_utf8_lossy(&answer));
        }
    }
    server.shut_down().await;
}

/// More pipelined requests than the answers both socket buffers can hold.
const REQUESTS: usize = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_is_dropped() {
    let app = TestApp::new().await;
    let limits = ConnectionLimits {
        keep_alive_timeout: Duration::from_millis(300),
        close_after: Duration::from_millis(300),
        ..ConnectionLimits::default()
    };
    let server = served(&app, limits).await;
    let address = server.address;

    let dropped = tokio::task::spawn_blocking(move || {
        // Pipelined requests whose answers (about 2 MB) fill both socket buffers.
        let mut stream = ok(TcpStream::connect(address), "connect");
        let request = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(REQUESTS);
        ok(stream.set_write_timeout(Some(Duration::from_secs(5))), "write timeout");
        let _ = stream.write_all(&request);
        std::thread::sleep(Duration::from_secs(2));
        // Now read: what was buffered, then the end the server made.
        ok(stream.set_read_timeout(Some(Duration::from_secs(5))), "read timeout");
        let mut answers = Vec::new();
        let outcome = stream.read_to_end(&mut answers);
        let answered = String::from_utf8_lossy(&answers).matches("HTTP/1.1 200").count();
        (outcome.map_err(|e| e.kind()), answered)
    });

    let (outcome, answered) = ok(dropped.await, "client");
    assert!(
        !matches!(outcome, Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the connection was still open: {outcome:?}"
    );
    assert!(answered < REQUESTS, "all {answered} answers were written: the client was never dropped");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_new_connection_gets_a_json_503_and_the_server_recovers() {
    let app = TestApp::new().await;
    let limits = ConnectionLimits { max_connections: 8, ..ConnectionLimits::default() };
    let server = served(&app, limits).await;
    let address = server.address;

    let answers = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..8).map(|_| ok(TcpStream::connect(address), "connect")).collect();
        std::thread::sleep(Duration::from_millis(300));
        let refused = exchange(address, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5)).0;
        drop(held);
        std::thread::sleep(Duration::from_millis(300));
        let served =
            exchange(address, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(5))
                .0;
        (refused, served)
    });

    let (refused, served_after) = ok(answers.await, "clients");
    let (status, body) = status_and_json(&refused);
    assert_eq!(
        (status, body["code"].as_str(), body["action"].as_str()),
        (503, Some("service_unavailable"), Some("retry"))
    );
    assert!(served_after.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&served_after));
    let report = server.shut_down().await;
    assert_eq!(report.refused_at_cap, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_grace_period_then_drops_a_half_sent_request() {
    let app = TestApp::new().await;
    let limits = ConnectionLimits {
        shutdown_grace: Duration::from_millis(500),
        header_read_timeout: Duration::from_secs(60),
        keep_alive_timeout: Duration::from_secs(60),
        ..ConnectionLimits::default()
    };
    let server = served(&app, limits).await;
    let mut holder = ok(TcpStream::connect(server.address), "connect");
    ok(holder.write_all(b"POST /o/client/token HTTP/1.1\r\nHost: x\r\n"), "half a head");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let report = server.shut_down().await;

    assert!(started.elapsed() < Duration::from_millis(1500), "shutdown took {:?}", started.elapsed());
    assert_eq!(report.dropped_at_shutdown, 1);
}
