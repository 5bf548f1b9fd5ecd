//! The PostgreSQL backend of temppass: any number of `temppass serve`
//! processes share one state, with the semantics of the embedded store.
//!
//! A bounded `deadpool-postgres` pool of `tokio-postgres` connections. Every
//! operation runs under one deadline (pool wait, statements and all), and the
//! server is told the same limit (`statement_timeout`,
//! `idle_in_transaction_session_timeout`), so neither side waits for ever.
//! Reads are one statement. Writes are one short `READ COMMITTED` transaction
//! whose statements are pipelined: they are all sent before the first answer
//! is read, so a transaction costs two network round trips (one for first
//! uses on keys never bound, which read nothing). Atomicity comes
//! from locks, taken in one global order (`locks.rs`); what each
//! authorization decides and writes is `temppass_store::plan`, decided in
//! Rust between the read and the write, never in SQL.
//!
//! # Where things are
//!
//! - `lookup.rs`: the one-statement lookup of a lookup's keys (`FIND`).
//! - `shared_reads.rs`: the few connections those lookups share, outside the
//!   pool, when nothing needs writing.
//! - `writer.rs`: the writer tasks (as many as lookup lanes), group commit.
//! - `batch.rs`: which jobs of a batch share a transaction, and what a failure does.
//! - `batch_tx.rs`: the locked and the first-use transaction.
//! - `batch_writes.rs`: what a batch's transaction writes for its plans.
//! - `locks.rs`: THE lock order, and the advisory lock numbers.
//! - `reset.rs`, `reclaim.rs`: resets, and reclaiming in bounded steps (each
//!   server walks with its own cursor; two servers reclaiming at once only
//!   repeat each other's work).
//! - `bound_keys.rs`: filling the filter of bound keys at connect.
//! - `connection.rs`: a pooled connection never handed back half-used; pipelines.
//! - `records.rs`: applications, clients, tokens, sessions, API keys, signing keys.
//! - `migrate.rs`: migrations at start-up, one transaction under an advisory
//!   lock; a database newer than the binary stops start-up.
//! - `testing.rs` (feature `testing`): a database per test, a proxy that cuts
//!   PostgreSQL off.
//!
//! # How each operation stays atomic
//!
//! Each write transaction locks in the order of `locks.rs`, which also says
//! why two first authorizations of one key make one trial, on any number of
//! servers. Then:
//!
//! - **promotional cap**: the trial's row is locked and read again, then
//!   `len(used) < max_resources` is checked and the resource appended in the
//!   same transaction.
//! - **lookup and merge**: both trials are locked (in id order), the older
//!   survives with the union, every binding of the other moves to it, the
//!   other is deleted and the missing key bound: one transaction.
//! - **resets** (`reset.rs`), **reclaiming** (`reclaim.rs`) and
//!   **`ensure_signing_key`** (`records.rs`, one advisory lock: servers that
//!   start together make one key) are one short transaction each.
//!
//! **Reads.** `find_trial` and the fast path of `authorize` are one statement
//! on a shared connection: when every key is bound to one trial and the plan
//! writes nothing, that is the answer — linearizable for the same reason as
//! the SQLite store's reader path (it sees a committed state, and an
//! authorization that changes nothing may be ordered there). An authorization
//! on an active trial is therefore one statement, plus the bearer's grant when
//! it is not in the server's grant cache.
//!
//! **Writes.** An authorization that must write queues to the writer tasks
//! (past [`PostgresOptions::max_queued_writes`] it fails at once with
//! `StoreError::Busy`), which run it in a batch (`writer.rs`, `batch.rs`).
//! A trial's id is drawn with `nextval` before its row is written
//! (`batch_writes.rs`), which the server's role may do because it owns the
//! tables it migrated.
//!
//! # Deadlines and outages
//!
//! `storage.timeout` ([`PostgresOptions::operation_timeout`]) bounds a whole
//! store operation: waiting for a pooled connection or a lookup lane,
//! connecting, every statement (`within_deadline`). A connection cut off
//! mid-exchange is closed (`connection.rs`), a lookup lane that failed
//! connects anew (`shared_reads.rs`), and TCP keepalive notices a dead peer
//! within about half a minute. While PostgreSQL is unreachable every operation
//! fails fast with [`StoreError::Unavailable`] (answered
//! `internal_server_error`, action `retry`); when it returns, the pool drops
//! the dead connections as they come out and opens new ones: nothing to
//! restart. At start-up, though, [`PostgresStore::connect`] fails, and `serve`
//! stops with a message naming the server: the schema must be migrated before
//! anything is served, and a supervisor restarts the process.
//!
//! # Why tokio-postgres and deadpool-postgres, not sqlx
//!
//! tokio-postgres is the PostgreSQL driver under most others: async, with
//! SQLSTATE codes as values (`to_store_error` maps them to `StoreError`, so no
//! driver error leaves this crate), and **pipelining**: a transaction's
//! statements go out without awaiting each one, which sqlx's API does not allow
//! inside a transaction. Statements are prepared once per connection and
//! reused. deadpool-postgres is a small bounded pool
//! ([`PostgresOptions::pool_size`]; the lookup lanes come on top) with
//! explicit wait, create and recycle timeouts and a per-connection statement
//! cache; its "fast" recycling only checks whether the connection closed, so a
//! checkout costs no round trip. sqlx's compile-time checked queries would need
//! a database (or checked-in query data) at build time.
//!
//! Not done: TLS to PostgreSQL (`sslmode=require` is refused at start-up: use a
//! private network or a local socket). A transaction-mode pooler (PgBouncer) in
//! front keeps neither session settings nor prepared statements: connect
//! directly, or use session pooling.

mod batch;
mod batch_tx;
mod batch_writes;
mod bound_keys;
mod connection;
mod figures;
mod locks;
mod lookup;
mod migrate;
mod reclaim;
mod records;
mod reset;
mod shared_reads;
mod writer;

#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use temppass_core::{DeviceId, IdentityHash, RuleScope, Timestamp, Trial};
use temppass_store::{
    AccessGrant, AccessToken, ApiKey, Application, Authorization, AuthorizeOutcome, BoundKeys, Client, DailyFigures,
    FigureDelta, FiguresQuery, KeyKind, ReclaimReport, Session, Store, StoreError, StoreLoad, StoredSigningKey,
    TrialLookup, plan,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use connection::Conn;
use shared_reads::SharedReads;

/// How the PostgreSQL store connects.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Pooled connections per server, for transactions and the reads off
    /// the hot path. Each server also opens up to a quarter as many (one to
    /// eight) for the trial lookups that share connections (see
    /// `shared_reads.rs`). PostgreSQL's `max_connections` (100 by default)
    /// must cover both, times the number of servers, plus the admin commands.
    pub pool_size: usize,
    /// Opening one connection (TCP and the start-up handshake).
    pub connect_timeout: Duration,
    /// One whole store operation: waiting for a pooled connection, and every
    /// statement of it. PostgreSQL is given the same limit as
    /// `statement_timeout` and `idle_in_transaction_session_timeout`, so a
    /// transaction abandoned by a dead server releases its locks.
    pub operation_timeout: Duration,
    /// Authorizations waiting for a writer task at most; past it one fails at once with `StoreError::Busy`.
    pub max_queued_writes: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(2),
            max_queued_writes: temppass_store::DEFAULT_MAX_QUEUED_WRITES,
        }
    }
}

/// The shared store: one PostgreSQL database, any number of servers.
pub struct PostgresStore {
    pool: Pool,
    /// Authorizations that write, waiting for a writer task (`write_in_batches`).
    writes: mpsc::UnboundedSender<writer::WriteRequest>,
    /// Writes sent and not yet taken by a writer task: at most `max_queued_writes`.
    queued: Arc<AtomicUsize>,
    batches: Arc<writer::BatchCounts>,
    max_queued_writes: usize,
    /// The trial lookups that need no transaction.
    shared: SharedReads,
    operation_timeout: Duration,
    reclaim_cursor: Mutex<reclaim::ReclaimCursor>,
    /// Keys bound through this server or found in the database when it
    /// connected (a hint: see `BoundKeys`). A key another server bound since
    /// reads as never bound here: its authorization then takes the write
    /// path as a first use, whose insert fails on the key's binding, so its
    /// transaction runs again the usual way (see `batch::FirstUseBackoff`),
    /// finds the trial and changes nothing; and the key is put in.
    bound: Arc<BoundKeys>,
    /// `host:port/dbname` for messages: never the password.
    target: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("target", &self.target).finish_non_exhaustive()
    }
}

/// Turns a driver error into a store error; the one place that reads SQLSTATE codes.
pub(crate) fn to_store_error(error: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let Some(code) = error.code() else {
        // No SQLSTATE: the connection broke or never opened (I/O, timeout,
        // closed) — or a row or parameter did not convert, which is a bug to
        // report, not an outage to retry. tokio-postgres exposes no error kind,
        // so its messages for the conversion cases tell them apart.
        let detail = with_causes(&error);
        let conversion =
            ["deserializing", "serializing", "unexpected number of rows"].iter().any(|m| detail.contains(m));
        return if conversion { StoreError::Internal(detail) } else { StoreError::Unavailable(detail) };
    };
    let message = error.as_db_error().map_or_else(|| error.to_string(), |db| format!("{}: {}", db.code().code(), db));
    if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::EXCLUSION_VIOLATION {
        return StoreError::Conflict(message);
    }
    let unavailable = [
        SqlState::QUERY_CANCELED, // statement_timeout
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::READ_ONLY_SQL_TRANSACTION, // a standby after a fail-over
    ];
    // Class 08: connection exceptions.
    if unavailable.contains(code) || code.code().starts_with("08") {
        StoreError::Unavailable(message)
    } else {
        StoreError::Internal(message)
    }
}

/// An error and its causes, as "error: cause: cause" (the driver keeps the
/// useful part, such as "Connection refused", in the causes).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

/// `host:port/dbname` of a configuration, for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(config.get_user().unwrap_or("")))
}

/// TCP keepalive: a dead peer is noticed within about half a minute, not the
/// default two hours: probes after [`KEEPALIVE_IDLE`] idle, every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`] unanswered close it; data
/// unacknowledged for [`TCP_USER_TIMEOUT`] closes it too.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The driver's configuration for `url`: our timeouts where the URL sets
/// none, and the server told the operation timeout as `statement_timeout` and
/// `idle_in_transaction_session_timeout`, so a transaction abandoned by a
/// dead server releases its locks.
fn client_config(url: &str, options: &PostgresOptions) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(StoreError::Internal(
            "sslmode=require: this temppass connects to PostgreSQL without TLS; use a local socket, \
             a private network or a TLS tunnel"
                .into(),
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("temppass");
    }
    config.keepalives_idle(KEEPALIVE_IDLE);
    config.keepalives_interval(KEEPALIVE_INTERVAL);
    config.keepalives_retries(KEEPALIVE_RETRIES);
    config.tcp_user_timeout(TCP_USER_TIMEOUT);
    let limit_ms = options.operation_timeout.as_millis().max(1);
    let server_limits = format!("-c statement_timeout={limit_ms} -c idle_in_transaction_session_timeout={limit_ms}");
    let server_options = match config.get_options() {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {server_limits}"),
        _ => server_limits,
    };
    config.options(server_options);
    Ok(config)
}

impl PostgresStore {
    /// Connects to the database of `url` (`postgres://user:password@host:port/dbname?…`)
    /// and brings its schema up to date. Fails with [`StoreError::Unavailable`]
    /// when PostgreSQL cannot be reached within the timeouts.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let config = client_config(url, &options)?;
        let target = describe(&config);
        let lanes = (options.pool_size / 4).clamp(1, 8);
        let shared = SharedReads::new(config.clone(), target.clone(), lanes);
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.operation_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.operation_timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        let mut conn = connection::get(&pool, &target).await?;
        migrate::run(&mut conn).await?;
        // A size hint only: a count that fails or times out must not stop the server.
        let bindings = bound_keys::estimate_bindings(&mut conn).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot count the bindings; the filter of bound keys is planned for few");
            0
        });
        drop(conn);
        // Room to grow by half before a restart plans a larger filter.
        let bound = Arc::new(BoundKeys::with_capacity(bindings + bindings / 2 + 1_000_000));
        tokio::spawn(bound_keys::load_in_background(pool.clone(), target.clone(), Arc::downgrade(&bound)));
        let (writes, queued, batches) = writer::spawn(lanes, &pool, &target, options.operation_timeout);
        Ok(Self {
            pool,
            writes,
            queued,
            batches,
            max_queued_writes: options.max_queued_writes,
            shared,
            operation_timeout: options.operation_timeout,
            reclaim_cursor: Mutex::default(),
            bound,
            target,
        })
    }

    /// The filter of keys bound through this server, which lets a first authorization skip its read.
    pub fn bound_keys(&self) -> &BoundKeys {
        &self.bound
    }

    /// A pooled connection.
    async fn conn(&self) -> Result<Conn, StoreError> {
        connection::get(&self.pool, &self.target).await
    }

    /// Runs one operation under the operation deadline. When the deadline
    /// passes, the operation's future is dropped, and with it its connection
    /// (see [`Conn`]), so no half-finished exchange is handed to the next caller.
    async fn within_deadline<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.operation_timeout, operation).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL at {} did not answer within {:?}",
                self.target, self.operation_timeout
            ))),
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn find_trial(&self, lookup: TrialLookup<'_>) -> Result<Option<Trial>, StoreError> {
        self.within_deadline(async { Ok(self.shared.find(lookup).await?.trial()) }).await
    }

    async fn authorize(&self, request: Authorization<'_>) -> Result<AuthorizeOutcome, StoreError> {
        let lookup = request.lookup;
        self.within_deadline(async {
            // Most authorizations continue a trial that needs no write: one
            // statement answers those — unless a key was never bound (as far
            // as this server knows), when the read could only find nothing.
            // Linearizable: the statement reads one committed state, and an
            // authorization that changes nothing may be ordered at that point.
            if self.bound.may_all_be_bound(lookup) {
                let plan = plan(&self.shared.find(lookup).await?, request)?;
                if plan.writes_nothing() {
                    return plan.outcome(None);
                }
            }
            let keys_never_bound = !self.bound.may_any_be_bound(lookup);
            // Before the write that may bind them, so that the filter never misses a key bound here.
            self.bound.insert_lookup(lookup);
            if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queued_writes {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                let queued = self.max_queued_writes;
                return Err(StoreError::Busy(format!("{queued} writes are already queued for the PostgreSQL writers")));
            }
            let (reply, answer) = oneshot::channel();
            let job = batch::WriteJob::new(request).keys_never_bound(keys_never_bound);
            self.writes
                .send((job, reply))
                .map_err(|_| StoreError::Internal("the PostgreSQL writers have stopped".into()))?;
            answer.await.map_err(|_| StoreError::Internal("a PostgreSQL writer stopped before answering".into()))?
        })
        .await
    }

    async fn reset_devices(&self, scope: &RuleScope, device: Option<&DeviceId>) -> Result<(), StoreError> {
        self.within_deadline(async {
            let mut conn = self.conn().await?;
            reset::reset(&mut conn, scope, KeyKind::Device, device.map(DeviceId::as_str)).await
        })
        .await
    }

    async fn reset_identities(&self, scope: &RuleScope, identity: Option<&IdentityHash>) -> Result<(), StoreError> {
        self.within_deadline(async {
            let mut conn = self.conn().await?;
            reset::reset(&mut conn, scope, KeyKind::Identity, identity.map(IdentityHash::as_str)).await
        })
        .await
    }

    async fn create_application(&self, application: &Application) -> Result<(), StoreError> {
        application.check_storable()?;
        self.within_deadline(async { records::insert_application(&mut self.conn().await?, application).await }).await
    }

    async fn find_application(&self, id: &str) -> Result<Option<Application>, StoreError> {
        if temppass_store::holds_nul(id) {
            return Ok(None);
        }
        self.within_deadline(async { records::find_application(&mut self.conn().await?, id).await }).await
    }

    async fn find_active_application(&self, name: &str) -> Result<Option<Application>, StoreError> {
        if temppass_store::holds_nul(name) {
            return Ok(None);
        }
        self.within_deadline(async { records::find_active_application(&mut self.conn().await?, name).await }).await
    }

    async fn revoke_application(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        if temppass_store::holds_nul(name) {
            return Ok(false);
        }
        self.within_deadline(async { records::revoke_application(&mut self.conn().await?, name, now).await }).await
    }

    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        client.check_storable()?;
        self.within_deadline(async { records::insert_client(&mut self.conn().await?, client).await }).await
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        if temppass_store::holds_nul(client_id) {
            return Ok(None);
        }
        self.within_deadline(async { records::find_client(&mut self.conn().await?, client_id).await }).await
    }

    async fn create_access_token(&self, token: &AccessToken) -> Result<(), StoreError> {
        self.within_deadline(async { records::insert_access_token(&mut self.conn().await?, token).await }).await
    }

    async fn find_access_grant(&self, token_hash: &str) -> Result<Option<AccessGrant>, StoreError> {
        if temppass_store::holds_nul(token_hash) {
            return Ok(None);
        }
        self.within_deadline(async { records::find_access_grant(&mut self.conn().await?, token_hash).await }).await
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        session.check_storable()?;
        self.within_deadline(async { records::insert_session(&mut self.conn().await?, session).await }).await
    }

    async fn find_session(&self, code: &str) -> Result<Option<Session>, StoreError> {
        if temppass_store::holds_nul(code) {
            return Ok(None);
        }
        self.within_deadline(async { records::find_session(&mut self.conn().await?, code).await }).await
    }

    async fn update_session(&self, session: &Session) -> Result<(), StoreError> {
        session.check_storable()?;
        self.within_deadline(async { records::update_session(&mut self.conn().await?, session).await }).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.within_deadline(async { records::insert_api_key(&mut self.conn().await?, key).await }).await
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        if temppass_store::holds_nul(key_hash) {
            return Ok(None);
        }
        self.within_deadline(async { records::find_api_key(&mut self.conn().await?, key_hash).await }).await
    }

    async fn revoke_api_key(&self, key_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        if temppass_store::holds_nul(key_hash) {
            return Ok(false);
        }
        self.within_deadline(async { records::revoke_api_key(&mut self.conn().await?, key_hash, now).await }).await
    }

    async fn reclaim(&self, now: Timestamp, budget: usize) -> Result<ReclaimReport, StoreError> {
        let cursor = self.reclaim_cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let (report, walked) = self
            .within_deadline(async {
                let mut conn = self.conn().await?;
                reclaim::reclaim(&mut conn, cursor, now, budget.max(1)).await
            })
            .await?;
        // Only a committed step moves the cursor; should it fail, the range is walked again.
        *self.reclaim_cursor.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = walked;
        Ok(report)
    }

    async fn ensure_signing_key(&self, candidate: &StoredSigningKey) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.within_deadline(async { records::ensure_signing_key(&mut self.conn().await?, candidate).await }).await
    }

    async fn add_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        self.within_deadline(async { records::insert_signing_key(&mut self.conn().await?, key).await }).await
    }

    async fn add_figures(&self, deltas: &[FigureDelta]) -> Result<(), StoreError> {
        self.within_deadline(async { figures::add(&mut self.conn().await?, deltas).await }).await
    }

    async fn figures(&self, query: &FiguresQuery) -> Result<Vec<DailyFigures>, StoreError> {
        self.within_deadline(async { figures::read(&mut self.conn().await?, query).await }).await
    }

    fn load(&self) -> StoreLoad {
        let status = self.pool.status();
        StoreLoad {
            queued_writes: self.queued.load(Ordering::Relaxed) as u64,
            batches: self.batches.batches.load(Ordering::Relaxed),
            batched_writes: self.batches.writes.load(Ordering::Relaxed),
            pool_connections: status.size as u64,
            pool_in_use: status.size.saturating_sub(status.available) as u64,
        }
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.within_deadline(async { records::signing_keys(&mut self.conn().await?).await }).await
    }
}
