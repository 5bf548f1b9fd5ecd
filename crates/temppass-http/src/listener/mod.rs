//! Connections from the open internet: the accept loop, the cap on open
//! connections, hyper's HTTP/1 settings, a watchdog per connection, and the
//! graceful shutdown with a deadline ([exposure.md](../../../../docs/exposure.md)).
//!
//! Glue around hyper's own `http1::Builder` (header-read timeout, header
//! limits) and hyper-util's `TokioIo`/`TokioTimer`, not a second HTTP stack:
//! `axum::serve` has no connection cap, no header-read timeout and no
//! shutdown deadline, and these are what a hostile client aims at.
//!
//! What bounds each way a client can hold a connection:
//! - sends nothing, or an unfinished request head → hyper's header-read
//!   timeout (counted from the connection's start or its previous answer);
//! - sends a body slowly → `edge.rs` answers 408 at `server.body_timeout`;
//! - sends nothing and reads nothing between requests, or stops reading an
//!   answer → the watchdog: no byte in either direction for
//!   `keep_alive_timeout` closes the connection gracefully, and one still open
//!   `close_after` later (a request in flight ends by `limits.request_timeout`)
//!   is dropped;
//! - opens many → `max_connections`; past it a new connection gets a canned
//!   503 and is closed at once, so the kernel's backlog never fills.

mod io;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::io::GuardedIo;

/// The limits of [`serve`]; every one is a configuration key (docs/configuration.md).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; past it a new one is answered 503 and closed.
    pub max_connections: usize,
    /// A request head must be complete this long after the connection opened
    /// or answered its previous request.
    pub header_read_timeout: Duration,
    /// No byte read or written for this long closes the connection gracefully.
    pub keep_alive_timeout: Duration,
    /// A connection still open this long after it was asked to close is dropped.
    pub close_after: Duration,
    /// At most this many request headers (hyper answers 431 above).
    pub max_headers: usize,
    /// The request line and headers together at most this many bytes (431 above).
    pub max_head_bytes: usize,
    /// After a shutdown signal, requests in flight may finish for this long.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            close_after: Duration::from_secs(10),
            max_headers: 100,
            max_head_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What [`serve`] saw by the time it returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Connections refused with a 503 because `max_connections` were open.
    pub refused_at_cap: u64,
    /// Connections still open when the shutdown grace period ended, then dropped.
    pub dropped_at_shutdown: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, lets every connection finish for `limits.shutdown_grace` and
/// drops the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> ServeReport {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // hyper's smallest read buffer is 8 KiB; the head limit cannot go below it.
        .max_buf_size(limits.max_head_bytes.max(8192));
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut report = ServeReport::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of descriptors, or a connection reset before it was
                        // accepted: wait a moment rather than spin, then go on.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    report.refused_at_cap += 1;
                    io::refuse_busy(&stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let connection = Connection { builder: Arc::clone(&builder), limits, stopping: stopping.clone(), _permit: permit };
                connections.spawn(connection.serve(stream, router.clone()));
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    tracing::info!(open = connections.len(), grace = ?limits.shutdown_grace, "no longer accepting; letting open connections finish");
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        report.dropped_at_shutdown = connections.len();
        tracing::warn!(dropped = connections.len(), "closing the connections still open after the grace period");
        connections.shutdown().await;
    }
    report
}

/// When a connection last moved a byte, for the watchdog.
#[derive(Debug)]
pub(crate) struct Progress {
    opened_at: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self { opened_at: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub(crate) fn touch(&self) {
        let elapsed = u64::try_from(self.opened_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened_at + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

struct Connection {
    builder: Arc<http1::Builder>,
    limits: ConnectionLimits,
    stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream, router: Router) {
        let progress = Arc::new(Progress::new());
        let io = TokioIo::new(GuardedIo::new(stream, Arc::clone(&progress)));
        let conn = self.builder.serve_connection(io, TowerToHyperService::new(router));
        let mut conn = std::pin::pin!(conn);
        // Set once the connection was asked to close: past it, it is dropped.
        let mut drop_at: Option<Instant> = None;
        loop {
            let wake = drop_at.unwrap_or_else(|| progress.last() + self.limits.keep_alive_timeout);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    match drop_at {
                        Some(deadline) if now >= deadline => {
                            tracing::debug!("dropping a connection that did not close when asked");
                            return;
                        }
                        Some(_) => {}
                        None if now >= progress.last() + self.limits.keep_alive_timeout => {
                            conn.as_mut().graceful_shutdown();
                            drop_at = Some(now + self.limits.close_after);
                        }
                        None => {}
                    }
                }
                changed = self.stopping.changed(), if drop_at.is_none() => {
                    // A closed channel means the server is gone: close as on a signal.
                    let _ = changed;
                    conn.as_mut().graceful_shutdown();
                    // The server drops what is left when its grace period ends.
                    drop_at = Some(Instant::now() + self.limits.shutdown_grace + self.limits.close_after);
                }
            }
        }
    }
}
