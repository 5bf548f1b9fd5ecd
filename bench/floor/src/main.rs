//! The floor of an authorize: what no implementation of SPEC.md can avoid, on
//! the same HTTP stack as temppass (tokio multi-thread runtime, axum, hyper).
//!
//! - `GET /health`: the cheapest JSON answer, as in temppass.
//! - `POST /read`: parse the device header and the JSON body, one point read
//!   of a trial row, one Ed25519 signature of a media-token-sized claim set,
//!   and a JSON answer of an authorize's size.
//! - `POST /write`: the same with one upsert instead of the read: the floor of
//!   a first-use authorize. Upserts are taken together in batches, the
//!   cheapest way a store can commit them.
//!
//! The store is SQLite (`--data DIR`, [`sqlite`]) unless `--postgres URL`
//! names a PostgreSQL database ([`postgres`]): the floor of the machine, and
//! the floor of a PostgreSQL store on it.
//!
//! `bench/load` runs this beside `temppass serve` and prints each temppass
//! figure as a ratio of its floor. The code is the cheapest honest version of
//! each step, not a model of temppass: no pool lock, no trait objects, no
//! savepoints, no bearer check, no rules.
//!
//! Usage: `floor --listen 127.0.0.1:PORT (--data DIR | --postgres URL) [--rows N]`

mod postgres;
mod sqlite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// An upsert for a writer: the device, and where to send its trial's expiry once committed.
type Upsert = (String, tokio::sync::oneshot::Sender<Result<i64, String>>);

/// Upserts taken together at most: one transaction or one statement.
const BATCH: usize = 64;

enum Store {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

#[derive(Clone)]
struct Floor {
    key: Arc<SigningKey>,
    store: Arc<Store>,
}

#[derive(Deserialize)]
struct Body {
    resources: Vec<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sp: &'a str,
    mvpd: &'a str,
    resource: &'a str,
    sid: String,
    iat: i64,
    exp: i64,
    jti: String,
}

#[derive(Serialize)]
struct Answer {
    resource: String,
    #[serde(rename = "notAfter")]
    not_after: i64,
    token: String,
}

type Failure = (StatusCode, &'static str);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("floor: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8081));
    let mut data = PathBuf::from("floor-data");
    let mut postgres_url = None;
    let mut rows: u64 = 1_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--data" => data = PathBuf::from(value()?),
            "--postgres" => postgres_url = Some(value()?),
            "--rows" => rows = value()?.parse().map_err(|e| format!("--rows: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let store = match postgres_url {
            Some(url) => Store::Postgres(postgres::Postgres::open(&url, rows).await?),
            None => Store::Sqlite(sqlite::Sqlite::open(&data, rows)?),
        };
        let floor = Floor { key: Arc::new(SigningKey::from_bytes(&[7; 32])), store: Arc::new(store) };
        let app = Router::new()
            .route("/health", get(health))
            .route("/read", post(read))
            .route("/write", post(write))
            .with_state(floor);
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen: {e}"))?;
        println!("floor listening on http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        axum::serve(listener, app).await.map_err(|e| e.to_string())
    })
}

#[allow(clippy::disallowed_methods)] // the floor reads the clock itself; it has no rules to keep pure
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn health() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The device id and the first resource: what every authorize must parse.
fn request(headers: &HeaderMap, body: &[u8]) -> Result<(String, String), Failure> {
    let bad = (StatusCode::BAD_REQUEST, "bad request");
    let value = headers.get("ap-device-identifier").and_then(|v| v.to_str().ok()).ok_or(bad)?;
    let (_, encoded) = value.split_once(' ').ok_or(bad)?;
    let device = String::from_utf8(STANDARD.decode(encoded.trim()).map_err(|_| bad)?).map_err(|_| bad)?;
    let body: Body = serde_json::from_slice(body).map_err(|_| bad)?;
    let resource = body.resources.into_iter().next().ok_or(bad)?;
    Ok((device, resource))
}

fn answer(key: &SigningKey, resource: String, expires_at_ms: i64) -> Response {
    let now = now_ms() / 1000;
    let not_after = (expires_at_ms / 1000).min(now + 300);
    let claims = Claims {
        iss: "http://127.0.0.1",
        sp: "REF30",
        mvpd: "TempPass",
        resource: &resource,
        sid: format!("{:032x}", expires_at_ms),
        iat: now,
        exp: not_after,
        jti: format!("{:032x}", now_ms()),
    };
    let Ok(payload) = serde_json::to_vec(&claims) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"0123456789abcdef"}"#),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = key.sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    json(StatusCode::OK, &Answer { resource, not_after, token })
}

async fn read(axum::extract::State(floor): axum::extract::State<Floor>, headers: HeaderMap, body: Bytes) -> Response {
    let (device, resource) = match request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(failure) => return failure.into_response(),
    };
    let found = match &*floor.store {
        Store::Sqlite(store) => store.read(&device),
        Store::Postgres(store) => store.read(&device).await,
    };
    match found {
        Ok(Some(expires_at_ms)) => answer(&floor.key, resource, expires_at_ms),
        Ok(None) => (StatusCode::FORBIDDEN, "no trial").into_response(),
        Err(error) => failed(&error),
    }
}

async fn write(axum::extract::State(floor): axum::extract::State<Floor>, headers: HeaderMap, body: Bytes) -> Response {
    let (device, resource) = match request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(failure) => return failure.into_response(),
    };
    let written = match &*floor.store {
        Store::Sqlite(store) => store.write(device).await,
        Store::Postgres(store) => store.write(device).await,
    };
    match written {
        Ok(expires_at_ms) => answer(&floor.key, resource, expires_at_ms),
        Err(error) => failed(&error),
    }
}

/// A 500 whose reason is printed: a floor that fails is not measuring anything.
fn failed(error: &str) -> Response {
    eprintln!("floor: {error}");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}
