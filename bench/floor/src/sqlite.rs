//! The SQLite floor: WAL, a reader connection per worker thread with a cached
//! prepared statement, and one writer thread that commits every upsert
//! waiting in one transaction (`synchronous=NORMAL`), the cheapest way
//! SQLite's single writer can take them.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{BATCH, Upsert, now_ms};

thread_local! {
    /// This worker thread's reader: the database it reads and its connection, opened on first use.
    static READER: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

pub(crate) struct Sqlite {
    path: PathBuf,
    writes: mpsc::Sender<Upsert>,
}

impl Sqlite {
    /// Creates `dir/floor.db` with `rows` active trials and starts the writer thread.
    pub(crate) fn open(dir: &Path, rows: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("floor.db");
        let writer = connect(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        seed(&writer, rows).map_err(|e| format!("cannot seed: {e}"))?;
        let (writes, queue) = mpsc::channel();
        std::thread::spawn(move || write_in_batches(&writer, &queue));
        Ok(Self { path, writes })
    }

    /// The expiry of `device`'s trial: one point read on this thread's connection.
    pub(crate) fn read(&self, device: &str) -> Result<Option<i64>, String> {
        READER
            .with(|cell| -> rusqlite::Result<Option<i64>> {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(connect(&self.path)?);
                }
                let Some(connection) = slot.as_ref() else { return Err(rusqlite::Error::InvalidQuery) };
                connection
                    .prepare_cached("SELECT expires_at_ms FROM trials WHERE key = ?1")?
                    .query_row([device], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| e.to_string())
    }

    /// Queues the upsert of `device`'s trial and answers its expiry once committed.
    pub(crate) async fn write(&self, device: String) -> Result<i64, String> {
        let (reply, written) = tokio::sync::oneshot::channel();
        self.writes.send((device, reply)).map_err(|_| "the writer stopped".to_owned())?;
        written.await.map_err(|_| "the writer stopped".to_owned())?
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
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

/// Takes every upsert waiting (up to [`BATCH`]), commits them in one transaction, then answers them.
fn write_in_batches(connection: &Connection, queue: &mpsc::Receiver<Upsert>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(BATCH - 1));
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
        let answer = written.map(|()| expires_at_ms).map_err(|e| e.to_string());
        for (_, reply) in batch {
            let _ = reply.send(answer.clone());
        }
    }
}
