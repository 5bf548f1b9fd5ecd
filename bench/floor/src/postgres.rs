//! The PostgreSQL floor: one point read is one prepared statement on a
//! connection shared by every request that picks it (tokio-postgres pipelines
//! them, so no request waits for a connection of its own); the upserts waiting
//! are taken together and written by one multi-row statement in autocommit, so
//! a batch costs one round trip and one commit (`synchronous_commit` as the
//! server has it). Its own table, `floor_trials`, beside whatever else the
//! database holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, mpsc};
use tokio_postgres::{Client, NoTls, Statement};

use crate::{BATCH, Upsert, now_ms};

/// Connections for reads, and for writes: as many as temppass's pool has by default.
const READ_CONNECTIONS: usize = 16;
/// Writers taking batches from the queue side by side, so one batch's commit
/// does not hold back the next.
const WRITERS: usize = 4;

const READ: &str = "SELECT expires_at_ms FROM floor_trials WHERE key = $1";
const WRITE: &str = "INSERT INTO floor_trials (key, started_at_ms, expires_at_ms)
     SELECT key, $2, $3 FROM unnest($1::text[]) AS key
     ON CONFLICT (key) DO NOTHING";

pub(crate) struct Postgres {
    readers: Vec<(Client, Statement)>,
    next_reader: AtomicUsize,
    writes: mpsc::UnboundedSender<Upsert>,
}

impl Postgres {
    /// Creates `floor_trials` in the database at `url` with `rows` active
    /// trials, and starts the writers. Must run inside the tokio runtime.
    pub(crate) async fn open(url: &str, rows: u64) -> Result<Self, String> {
        let setup = connect(url).await?;
        setup
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS floor_trials (
                     key TEXT PRIMARY KEY, started_at_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL
                 )",
            )
            .await
            .map_err(|e| format!("cannot create floor_trials: {e}"))?;
        let rows = i64::try_from(rows).map_err(|_| "--rows is too large".to_owned())?;
        setup
            .execute(
                "INSERT INTO floor_trials (key, started_at_ms, expires_at_ms)
                 SELECT 'device-' || n, $1, $2 FROM generate_series(0, $3::bigint - 1) AS n
                 ON CONFLICT (key) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
                &[&now_ms(), &(now_ms() + 86_400_000), &rows],
            )
            .await
            .map_err(|e| format!("cannot seed: {e}"))?;
        setup.batch_execute("ANALYZE floor_trials").await.map_err(|e| format!("cannot analyze: {e}"))?;
        let mut readers = Vec::with_capacity(READ_CONNECTIONS);
        for _ in 0..READ_CONNECTIONS {
            let client = connect(url).await?;
            let statement = client.prepare(READ).await.map_err(|e| e.to_string())?;
            readers.push((client, statement));
        }
        let (writes, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..WRITERS {
            let client = connect(url).await?;
            let statement = client.prepare(WRITE).await.map_err(|e| e.to_string())?;
            tokio::spawn(write_in_batches(client, statement, Arc::clone(&queue)));
        }
        Ok(Self { readers, next_reader: AtomicUsize::new(0), writes })
    }

    /// The expiry of `device`'s trial: one point read, on the next connection in turn.
    pub(crate) async fn read(&self, device: &str) -> Result<Option<i64>, String> {
        let (client, statement) = &self.readers[self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len()];
        let row = client.query_opt(statement, &[&device]).await.map_err(|e| e.to_string())?;
        row.map(|row| row.try_get(0)).transpose().map_err(|e| e.to_string())
    }

    /// Queues the upsert of `device`'s trial and answers its expiry once committed.
    pub(crate) async fn write(&self, device: String) -> Result<i64, String> {
        let (reply, written) = tokio::sync::oneshot::channel();
        self.writes.send((device, reply)).map_err(|_| "the writers stopped".to_owned())?;
        written.await.map_err(|_| "the writers stopped".to_owned())?
    }
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| format!("cannot connect: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("floor: PostgreSQL connection: {error}");
        }
    });
    Ok(client)
}

/// Takes every upsert waiting (up to [`BATCH`]) and writes them in one statement, then answers them.
async fn write_in_batches(client: Client, statement: Statement, queue: Arc<Mutex<mpsc::UnboundedReceiver<Upsert>>>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut batch, BATCH).await == 0 {
                return;
            }
        }
        let expires_at_ms = now_ms() + 600_000;
        let keys: Vec<&str> = batch.iter().map(|(device, _)| device.as_str()).collect();
        let written = client.execute(&statement, &[&keys, &now_ms(), &expires_at_ms]).await;
        drop(keys);
        let answer = written.map(|_| expires_at_ms).map_err(|e| e.to_string());
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(answer.clone());
        }
    }
}
