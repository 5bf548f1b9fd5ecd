//! The floor of an authorize: what no implementation of SPEC.md can avoid, on
//! the same HTTP stack as temppass (tokio multi-thread runtime, axum, hyper).
//!
//! - `GET /health`: the cheapest JSON answer, as in temppass.
//! - `POST /read`: parse the device header and the JSON body, one SQLite point
//!   read of a trial row (WAL, a reader connection per worker thread, a cached
//!   prepared statement), one Ed25519 signature of a media-token-sized claim
//!   set, and a JSON answer of an authorize's size.
//! - `POST /write`: the same with one upsert instead of the read: the floor of
//!   a first-use authorize. Upserts queue to one writer thread that commits
//!   every upsert waiting in one transaction (`synchronous=NORMAL`), the
//!   cheapest way SQLite's single writer can take them.
//!
//! `bench/load` runs this beside `temppass serve` and prints each temppass
//! figure as a ratio of its floor. The code is the cheapest honest version of
//! each step, not a model of temppass: no pool lock, no trait objects, no
//! savepoints, no bearer check, no rules.
//!
//! Usage: `floor --listen 127.0.0.1:PORT --data DIR [--rows N]`

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer, SigningKey};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// The database file, set once at start; reader connections open it lazily per thread.
static DATABASE: OnceLock<PathBuf> = OnceLock::new();

thread_local! {
    static READER: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

/// An upsert for the writer thread: the device, and where to send its trial's expiry.
type Upsert = (String, tokio::sync::oneshot::Sender<rusqlite::Result<i64>>);

#[derive(Clone)]
struct Floor {
    key: Arc<SigningKey>,
    writes: mpsc::Sender<Upsert>,
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
    let mut rows: u64 = 1_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--data" => data = PathBuf::from(value()?),
            "--rows" => rows = value()?.parse().map_err(|e| format!("--rows: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    let path = data.join("floor.db");
    let writer = open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    seed(&writer, rows).map_err(|e| format!("cannot seed: {e}"))?;
    let _ = DATABASE.set(path);
    let (writes, queue) = mpsc::channel();
    std::thread::spawn(move || write_in_batches(&writer, &queue));
    let floor = Floor { key: Arc::new(SigningKey::from_bytes(&[7; 32])), writes };
    let app = Router::new()
        .route("/health", get(health))
        .route("/read", post(read))
        .route("/write", post(write))
        .with_state(floor);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen: {e}"))?;
        println!("floor listening on http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        axum::serve(listener, app).await.map_err(|e| e.to_string())
    })
}

fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "wal")?;
    connection.pragma_update(None, "synchronous", "normal")?;
    connection.busy_timeout(std::time::Duration::from_secs(2))?;
    Ok(connection)
}

/// Rows `device-0` … `device-{rows-1}`, each an active trial: the keys `/read` finds.
fn seed(connection: &Connection, rows: u64) -> rusqlite::Result<()> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS trials (
             key TEXT PRIMARY KEY, started_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL
         ) WITHOUT ROWID;
         BEGIN;",
    )?;
    let expires = now_ms() + 86_400_000;
    let mut insert = connection.prepare(
        "INSERT INTO trials (key, started_at_ms, expires_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
    )?;
    for n in 0..rows {
        insert.execute(params![format!("device-{n}"), now_ms(), expires])?;
    }
    drop(insert);
    connection.execute_batch("COMMIT;")
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
    let found = READER.with(|cell| -> rusqlite::Result<Option<i64>> {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let path = DATABASE.get().ok_or(rusqlite::Error::InvalidQuery)?;
            *slot = Some(open(path)?);
        }
        let Some(connection) = slot.as_ref() else { return Err(rusqlite::Error::InvalidQuery) };
        connection
            .prepare_cached("SELECT expires_at_ms FROM trials WHERE key = ?1")?
            .query_row([&device], |row| row.get(0))
            .optional()
    });
    match found {
        Ok(Some(expires_at_ms)) => answer(&floor.key, resource, expires_at_ms),
        Ok(None) => (StatusCode::FORBIDDEN, "no trial").into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn write(axum::extract::State(floor): axum::extract::State<Floor>, headers: HeaderMap, body: Bytes) -> Response {
    let (device, resource) = match request(&headers, &body) {
        Ok(parsed) => parsed,
        Err(failure) => return failure.into_response(),
    };
    let (reply, written) = tokio::sync::oneshot::channel();
    if floor.writes.send((device, reply)).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match written.await {
        Ok(Ok(expires_at_ms)) => answer(&floor.key, resource, expires_at_ms),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Takes every upsert waiting (up to 64), commits them in one transaction, then answers them.
fn write_in_batches(connection: &Connection, queue: &mpsc::Receiver<Upsert>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(63));
        let expires_at_ms = now_ms() + 600_000;
        let written = (|| -> rusqlite::Result<()> {
            connection.execute_batch("BEGIN IMMEDIATE")?;
            let mut upsert = connection.prepare_cached(
                "INSERT INTO trials (key, started_at_ms, expires_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET expires_at_ms = expires_at_ms",
            )?;
            for (device, _) in &batch {
                upsert.execute(params![device, now_ms(), expires_at_ms])?;
            }
            connection.execute_batch("COMMIT")
        })();
        if written.is_err() && !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK");
        }
        for (_, reply) in batch {
            let _ = reply.send(match &written {
                Ok(()) => Ok(expires_at_ms),
                Err(_) => Err(rusqlite::Error::InvalidQuery),
            });
        }
    }
}
