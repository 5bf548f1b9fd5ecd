//! The embedded SQLite backend of temppass (the default store).
//!
//! One writer connection owned by a thread of its own (`writer.rs`), because
//! a write can wait on the disk: writes queue to it and are committed in
//! batches, each write in a savepoint of its own, nobody answered before the
//! commit. A small pool of reader connections is used inline on the async
//! workers because a WAL point read costs microseconds and a thread hop would
//! cost more than the read. WAL mode lets readers run while the writer
//! commits. Two helper threads (`background.rs`) load the filter of bound keys
//! at open and checkpoint the WAL off the writer's path.
//!
//! # How each operation stays atomic
//!
//! Writes run one after the other on the writer (`writer.rs`), so SQLite
//! itself serialises them. Inside a write the code reads the bindings, calls
//! `temppass_store::plan` and writes the plan (`trials.rs`):
//!
//! - **first authorization**: finds nothing, inserts the trial, binds the
//!   device. A hundred concurrent first authorizations for one device queue on
//!   the writer; the first creates the trial, the others find it: one trial,
//!   one `notAfter`.
//! - **promotional cap**: `len(used) < max_resources` is checked and the
//!   resource appended in the same write, so the cap is never exceeded and no
//!   permit is returned for a resource that was not recorded.
//! - **lookup and merge**: both keys' trials are read, the older survives with
//!   the union of resources, every binding of the other moves to it and the
//!   missing key is bound, in one write: two concurrent requests can never
//!   leave the device on one trial and the identity on another.
//!
//! **Reads without writes.** Most authorizations change nothing (an active
//! trial, every key bound, the resource already used or a basic rule): they
//! are answered from a reader and never reach the writer. If the plan would
//! write anything, the request goes to the writer, which reads again inside
//! its transaction. This is linearizable: the read sees a committed state, and
//! an authorization that changes nothing may be ordered at that point. A key
//! the filter of bound keys ([`BoundKeys`]) has certainly never seen skips
//! that read, which could only find nothing; the key is put in before the
//! write that may bind it is queued.
//!
//! Deadlines: every operation is bounded by `storage.timeout`, given here as
//! [`SqliteOptions::busy_timeout`] (see `writer.rs` for the writer's part).
//! Durability (`synchronous = NORMAL`) is in docs/ARCHITECTURE.md, "Durability".
//!
//! # Why rusqlite, not sqlx
//!
//! rusqlite is synchronous and thin: a prepared-statement cache, no runtime,
//! no connection-pool machinery between the handler and SQLite's point read.
//! The read path stays on the async worker, the write path goes to the writer
//! thread on purpose, and `BEGIN IMMEDIATE` and the savepoints are explicit.
//! sqlx's SQLite driver runs every statement on a background worker thread
//! and hands results back through a channel: the thread hop this design
//! avoids on the hot path. `rusqlite::Error` never leaves this crate; it
//! becomes a `StoreError` here.

mod background;
mod figures;
mod migrate;
mod records;
mod trials;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use temppass_core::{DeviceId, IdentityHash, RuleScope, Timestamp, Trial};
use temppass_store::{
    AccessGrant, AccessToken, ApiKey, Application, Authorization, AuthorizeOutcome, BoundKeys, Client, DailyFigures,
    FigureDelta, FiguresQuery, KeyKind, OwnedAuthorization, ReclaimReport, Session, Store, StoreError, StoreLoad,
    StoredSigningKey, TrialLookup, plan,
};

/// The writer checkpoints the WAL itself only past this many pages (16 MiB):
/// the checkpoint thread does it every 50 ms, off the writer's path, but a
/// WAL that is written all the time only restarts from its beginning after a
/// checkpoint that nothing committed behind, which the writer's own is.
const WRITER_CHECKPOINT_PAGES: i64 = 4000;

/// How the SQLite store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a connection waits for a lock before the operation fails as unavailable.
    pub busy_timeout: Duration,
    /// Reader connections; more than the number of async workers buys nothing.
    pub readers: usize,
    /// Writes waiting for the writer thread at most; past it a write fails at once with `StoreError::Busy`.
    pub max_queued_writes: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(2),
            readers: 8,
            max_queued_writes: temppass_store::DEFAULT_MAX_QUEUED_WRITES,
        }
    }
}

/// The embedded store: one SQLite file in WAL mode.
pub struct SqliteStore {
    writer: writer::Writer,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    reclaim_cursor: Arc<Mutex<trials::ReclaimCursor>>,
    /// Every key ever bound (a hint: see `BoundKeys`): a first authorization skips the read that would find nothing.
    bound: Arc<BoundKeys>,
    /// Loading the bound keys, and checkpointing; both stop when the store is dropped.
    _helpers: [background::Background; 2],
    /// A write that waited this long for the writer gives up instead of running late.
    write_deadline: Duration,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn to_store_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        // A full disk or a failing device may well be over by the next try: the client should retry.
        Some(
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull | ErrorCode::SystemIoFailure,
        ) => StoreError::Unavailable(error.to_string()),
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(error.to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection cannot leave a transaction open
    // (rusqlite rolls back on drop), so a poisoned connection is still sound.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its parent directory, and migrates it.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Internal(format!("cannot create {}: {e}", parent.display())))?;
        }
        let mut writer = Connection::open(&path).map_err(to_store_error)?;
        configure(&writer, &options).map_err(to_store_error)?;
        writer.pragma_update(None, "journal_mode", "WAL").map_err(to_store_error)?;
        writer.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES).map_err(to_store_error)?;
        migrate::run(&mut writer)?;
        let bindings = trials::count_bindings(&writer).map_err(to_store_error)?;
        // Room to grow by half before a restart plans a larger filter.
        let bound = Arc::new(BoundKeys::with_capacity(bindings + bindings / 2 + 1_000_000));
        let readers = (0..options.readers.max(1))
            .map(|_| open_connection(&path, &options, OpenFlags::SQLITE_OPEN_READ_ONLY).map(Mutex::new))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let helpers = [
            background::Background::load_bound_keys(&path, &options, Arc::clone(&bound))?,
            background::Background::checkpoint(&path, &options)?,
        ];
        Ok(Self {
            writer: writer::Writer::start(writer, options.max_queued_writes)?,
            readers,
            next_reader: AtomicUsize::new(0),
            reclaim_cursor: Arc::default(),
            bound,
            _helpers: helpers,
            write_deadline: options.busy_timeout,
            path,
        })
    }

    /// The filter of keys ever bound, which lets a first authorization skip its read.
    pub fn bound_keys(&self) -> &BoundKeys {
        &self.bound
    }

    /// Runs a read inline on the calling thread with a reader connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let count = self.readers.len();
        for offset in 0..count {
            if let Ok(conn) = self.readers[(start + offset) % count].try_lock() {
                return f(&conn).map_err(to_store_error);
            }
        }
        let conn = lock(&self.readers[start % count]);
        f(&conn).map_err(to_store_error)
    }

    /// Runs `f` on the writer thread inside a `BEGIN IMMEDIATE` transaction
    /// (shared with the writes queued beside it) and answers once it is committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(std::time::Instant::now() + self.write_deadline, f).await
    }
}

/// A connection besides the writer: `access` is read-only or read-write, never create.
fn open_connection(path: &Path, options: &SqliteOptions, access: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(to_store_error)?;
    configure(&conn, options).map_err(to_store_error)?;
    Ok(conn)
}

fn configure(conn: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    // NORMAL in WAL mode loses nothing when the process dies (kill -9): a
    // committed transaction is in the WAL file before COMMIT returns. Only a
    // power loss can drop the last transactions; see docs/ARCHITECTURE.md.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn find_trial(&self, lookup: TrialLookup<'_>) -> Result<Option<Trial>, StoreError> {
        self.read(|conn| trials::find(conn, lookup).map(|found| found.trial()))
    }

    async fn authorize(&self, request: Authorization<'_>) -> Result<AuthorizeOutcome, StoreError> {
        let lookup = request.lookup;
        // Most authorizations continue a trial that needs no write: answer
        // those from a reader — unless a key was never bound, as on a first
        // authorization, when the read could only find nothing.
        if self.bound.may_all_be_bound(lookup) {
            let plan = plan(&self.read(|conn| trials::find(conn, lookup))?, request)?;
            if plan.writes_nothing() {
                return plan.outcome(None);
            }
        }
        // Before the write that may bind them, so that the filter never misses a bound key.
        self.bound.insert_lookup(lookup);
        let request = OwnedAuthorization::new(request);
        self.write(move |tx| trials::authorize(tx, request.borrow())).await
    }

    async fn reset_devices(&self, scope: &RuleScope, device: Option<&DeviceId>) -> Result<(), StoreError> {
        let scope = scope.clone();
        let key = device.map(|d| d.as_str().to_owned());
        self.write(move |tx| trials::reset(tx, &scope, KeyKind::Device, key.as_deref())).await
    }

    async fn reset_identities(&self, scope: &RuleScope, identity: Option<&IdentityHash>) -> Result<(), StoreError> {
        let scope = scope.clone();
        let key = identity.map(|i| i.as_str().to_owned());
        self.write(move |tx| trials::reset(tx, &scope, KeyKind::Identity, key.as_deref())).await
    }

    async fn create_application(&self, application: &Application) -> Result<(), StoreError> {
        application.check_storable()?;
        let application = application.clone();
        self.write(move |tx| records::insert_application(tx, &application)).await
    }

    async fn find_application(&self, id: &str) -> Result<Option<Application>, StoreError> {
        self.read(|conn| records::find_application(conn, id))
    }

    async fn find_active_application(&self, name: &str) -> Result<Option<Application>, StoreError> {
        self.read(|conn| records::find_active_application(conn, name))
    }

    async fn revoke_application(&self, name: &str, now: Timestamp) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |tx| records::revoke_application(tx, &name, now)).await
    }

    async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
        client.check_storable()?;
        let client = client.clone();
        self.write(move |tx| records::insert_client(tx, &client)).await
    }

    async fn find_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.read(|conn| records::find_client(conn, client_id))
    }

    async fn create_access_token(&self, token: &AccessToken) -> Result<(), StoreError> {
        let token = token.clone();
        self.write(move |tx| records::insert_access_token(tx, &token)).await
    }

    async fn find_access_grant(&self, token_hash: &str) -> Result<Option<AccessGrant>, StoreError> {
        self.read(|conn| records::find_access_grant(conn, token_hash))
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        session.check_storable()?;
        let session = session.clone();
        self.write(move |tx| records::insert_session(tx, &session)).await
    }

    async fn find_session(&self, code: &str) -> Result<Option<Session>, StoreError> {
        self.read(|conn| records::find_session(conn, code))
    }

    async fn update_session(&self, session: &Session) -> Result<(), StoreError> {
        session.check_storable()?;
        let session = session.clone();
        self.write(move |tx| records::update_session(tx, &session)).await
    }

    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(move |tx| records::insert_api_key(tx, &key)).await
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.read(|conn| records::find_api_key(conn, key_hash))
    }

    async fn revoke_api_key(&self, key_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        let key_hash = key_hash.to_owned();
        self.write(move |tx| records::revoke_api_key(tx, &key_hash, now)).await
    }

    async fn reclaim(&self, now: Timestamp, budget: usize) -> Result<ReclaimReport, StoreError> {
        let cursor = Arc::clone(&self.reclaim_cursor);
        let budget = budget.max(1);
        self.write(move |tx| {
            let mut cursor = lock(&cursor);
            let mut walked = cursor.clone();
            let (bindings, trials, pass_complete) =
                trials::reclaim_bindings(tx, &mut walked, budget).map_err(to_store_error)?;
            let (sessions, access_tokens, clients) =
                records::reclaim_expired(tx, now, budget).map_err(to_store_error)?;
            // Should the commit fail, the range is simply walked again in the next pass.
            *cursor = walked;
            Ok(ReclaimReport { bindings, trials, sessions, access_tokens, clients, pass_complete })
        })
        .await
    }

    async fn add_figures(&self, deltas: &[FigureDelta]) -> Result<(), StoreError> {
        let deltas = deltas.to_vec();
        self.write(move |tx| figures::add(tx, &deltas)).await
    }

    async fn figures(&self, query: &FiguresQuery) -> Result<Vec<DailyFigures>, StoreError> {
        self.read(|conn| figures::read(conn, query))
    }

    fn load(&self) -> StoreLoad {
        let (queued_writes, batches, batched_writes) = self.writer.counts();
        StoreLoad { queued_writes, batches, batched_writes, pool_connections: 0, pool_in_use: 0 }
    }

    async fn ensure_signing_key(&self, candidate: &StoredSigningKey) -> Result<Vec<StoredSigningKey>, StoreError> {
        let candidate = candidate.clone();
        self.write(move |tx| {
            if records::signing_keys(tx).map_err(to_store_error)?.is_empty() {
                records::insert_signing_key(tx, &candidate)?;
            }
            records::signing_keys(tx).map_err(to_store_error)
        })
        .await
    }

    async fn add_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(move |tx| records::insert_signing_key(tx, &key)).await
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        self.read(records::signing_keys)
    }
}
