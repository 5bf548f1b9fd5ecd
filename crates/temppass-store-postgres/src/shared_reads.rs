//! Connections shared by the reads of the hot path: the one-statement trial
//! lookup of an authorization that changes nothing, and of a preauthorization
//! or a profile.
//!
//! Such a read needs no connection of its own: tokio-postgres sends the
//! statements of every caller of a client down one socket in turn and hands
//! each its answer; a caller that gives up (its deadline passed) leaves the
//! connection usable, since the driver reads and drops the answer nobody
//! waits for (PostgreSQL still runs the statement). So these reads skip the
//! pool, its checkout and its return: a few lanes, each one connection made
//! when first needed. Transactions stay on pooled connections.
//!
//! Limits: a lane carries at most [`IN_FLIGHT`] lookups at once; the others
//! wait for a turn under their deadline, as they would for a pooled
//! connection. A lookup that does not succeed — an error, or its deadline
//! passed while it waited for the answer — retires the lane's connection, so
//! a socket that stopped answering without closing (a fail-over, a
//! partition) serves no one else; the next lookup on the lane connects anew.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use temppass_store::{Found, StoreError, TrialLookup};
use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls, Statement};

use crate::{lookup, to_store_error};

/// Lookups one lane carries at once.
const IN_FLIGHT: usize = 32;

pub(crate) struct SharedReads {
    config: tokio_postgres::Config,
    /// `host:port/dbname` for messages.
    target: String,
    lanes: Box<[Lane]>,
    next_lane: AtomicUsize,
}

struct Lane {
    /// The open connection, if any.
    reader: Mutex<Option<Arc<Reader>>>,
    /// Held while connecting, so that a lane's callers make one connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    /// A turn to send a lookup on this lane.
    turns: Semaphore,
}

impl Default for Lane {
    fn default() -> Self {
        Self { reader: Mutex::default(), connecting: tokio::sync::Mutex::default(), turns: Semaphore::new(IN_FLIGHT) }
    }
}

struct Reader {
    client: Client,
    find: Statement,
}

impl SharedReads {
    /// `lanes` connections at most, none made yet.
    pub(crate) fn new(config: tokio_postgres::Config, target: String, lanes: usize) -> Self {
        let lanes = (0..lanes.max(1)).map(|_| Lane::default()).collect();
        Self { config, target, lanes, next_lane: AtomicUsize::new(0) }
    }

    /// The trials bound to the keys of `lookup`, as one committed state.
    pub(crate) async fn find(&self, lookup: TrialLookup<'_>) -> Result<Found, StoreError> {
        let lane = &self.lanes[self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len()];
        let _turn = lane.turns.acquire().await.map_err(|_| StoreError::Internal("a lookup lane was closed".into()))?;
        let reader = self.reader(lane).await?;
        // Dropped without being disarmed — an error, or the caller's deadline — it retires the connection.
        let mut retire = Retire { lane, reader: Some(&reader) };
        let found = lookup::find(&reader.client, &reader.find, lookup).await;
        if found.is_ok() {
            retire.reader = None;
        }
        found
    }

    /// The lane's open connection, or a new one.
    async fn reader(&self, lane: &Lane) -> Result<Arc<Reader>, StoreError> {
        if let Some(reader) = lane.open() {
            return Ok(reader);
        }
        let _connecting = lane.connecting.lock().await;
        if let Some(reader) = lane.open() {
            return Ok(reader);
        }
        let reader = Arc::new(self.connect().await?);
        *lane.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&reader));
        Ok(reader)
    }

    async fn connect(&self) -> Result<Reader, StoreError> {
        let cannot_connect = |error| match to_store_error(error) {
            StoreError::Unavailable(message) => {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {}: {message}", self.target))
            }
            other => other,
        };
        let (client, connection) = self.config.connect(NoTls).await.map_err(cannot_connect)?;
        // Runs until the client is dropped or PostgreSQL closes the socket; a
        // closed client is noticed by `Lane::open` and replaced.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a shared PostgreSQL read connection closed");
            }
        });
        let find = client.prepare(lookup::FIND).await.map_err(to_store_error)?;
        Ok(Reader { client, find })
    }
}

impl Lane {
    fn open(&self) -> Option<Arc<Reader>> {
        let reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        reader.as_ref().filter(|reader| !reader.client.is_closed()).cloned()
    }
}

/// Takes `reader` out of its lane when dropped, unless it was connected anew meanwhile.
struct Retire<'a> {
    lane: &'a Lane,
    reader: Option<&'a Arc<Reader>>,
}

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        let Some(failed) = self.reader else { return };
        let mut current = self.lane.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|reader| Arc::ptr_eq(reader, failed)) {
            // Lookups still in flight on it keep their clone until they end.
            *current = None;
        }
    }
}
