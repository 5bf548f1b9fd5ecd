//! `temppass serve`: open the store, load the keys, serve until a signal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use temppass_http::AppState;
use temppass_http::clock::SystemClock;
use temppass_http::listener::ConnectionLimits;
use temppass_http::observe::Observer;
use temppass_observe::{EventSink, MeteredStore, Metrics};
use temppass_store::Store;
use temppass_store_postgres::{PostgresOptions, PostgresStore};
use temppass_store_sqlite::{SqliteOptions, SqliteStore};

use temppass::config::{self, Config, StorageUrl};

/// How often a server re-reads signing keys, so `temppass key rotate` reaches it.
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(15);

pub(crate) async fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let mut config = config::load(config_path, std::env::vars())?;
    // Logs go to stderr: stdout carries only the lines that say where the server listens.
    let _log = crate::logging::init(crate::logging::format(config.log_format)?);
    let store = open_store(&config, Create::IfMissing).await?;
    let metrics = config.management_listen.map(|_| Arc::new(Metrics::new(Some(Arc::clone(&store)))));
    let store: Arc<dyn Store> = match &metrics {
        Some(metrics) => Arc::new(MeteredStore::new(store, Arc::clone(metrics))),
        None => store,
    };
    let events = EventSink::start(&config.events, metrics.clone()).context("events.file")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("server.listen: cannot listen on {}", config.listen))?;
    let address = listener.local_addr().context("cannot read the listening address")?;
    let management =
        match config.management_listen {
            Some(at) => Some(tokio::net::TcpListener::bind(at).await.with_context(|| {
                format!("server.management_listen: cannot listen on {at} (set \"\" to turn it off)")
            })?),
            None => None,
        };
    if !config.public_url_is_set {
        // `http://<listen>`, with the port the system chose for `:0`.
        config.settings.public_url = format!("http://{address}");
    }
    let mut settings = config.settings.clone();
    if config.demo_enabled {
        settings.demo = Some(crate::demo::register(&config, store.as_ref()).await?);
    }
    let observer = Observer::new(metrics, events);
    let state = AppState::observed(settings, store, Arc::new(SystemClock), observer)
        .await
        .context("cannot load the signing keys")?;
    let reloader = state.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(KEY_RELOAD_INTERVAL);
        loop {
            interval.tick().await;
            if let Err(error) = reloader.reload_keys().await {
                tracing::warn!(%error, "cannot re-read signing keys; keeping the current ones");
            }
        }
    });
    tokio::spawn(reclaim_forever(state.clone()));
    tokio::spawn(crate::stats::flush_forever(state.clone()));
    let shutdown = shutdown_signal()?;
    let connections = fit_descriptors(config.connections);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let management_address = match management {
        Some(listener) => {
            let at = listener.local_addr().context("cannot read the management listener's address")?;
            let limits = ConnectionLimits { max_connections: MANAGEMENT_CONNECTIONS, ..connections };
            let router = temppass_http::management::router(state.clone());
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                temppass_http::listener::serve(listener, router, limits, stop).await
            });
            Some(at)
        }
        None => None,
    };
    tracing::info!(
        target: crate::logging::STARTUP,
        configuration = %config.origin,
        store = %crate::output::describe_store(&config.storage),
        events = %describe_events(&config),
        public_url = %state.settings().public_url,
        management = %management_address.map_or_else(|| "off".to_owned(), |at| format!("http://{at}")),
        demo = %if config.demo_enabled { format!("http://{address}/demo/") } else { "off".to_owned() },
        "temppass started"
    );
    // One write, so a reader that takes the first line and closes the pipe
    // (`| head -1`) cannot fail the second.
    let mut announced = format!("temppass listening on http://{address}");
    if let Some(at) = management_address {
        announced.push_str(&format!("\ntemppass management on http://{at}"));
    }
    crate::output::result(&announced)?;
    let report =
        temppass_http::listener::serve(listener, temppass_http::app(state.clone()), connections, shutdown).await;
    let _ = stopping.send(true);
    crate::stats::flush(&state).await;
    if !state.observer().events().flush(Duration::from_secs(5)) {
        tracing::warn!("tracking events still queued at shutdown were not all written");
    }
    tracing::info!(?report, "temppass stopped");
    Ok(())
}

/// Connections the management listener holds at most: scrapers and probes, not viewers.
const MANAGEMENT_CONNECTIONS: usize = 64;

fn describe_events(config: &Config) -> String {
    let mut sinks: Vec<String> = config.events.file.iter().map(|file| file.display().to_string()).collect();
    if config.events.log {
        sinks.push("log (temppass::events)".to_owned());
    }
    if sinks.is_empty() { "off".to_owned() } else { sinks.join(", ") }
}

/// Descriptors kept for the store, the log and the listener, beyond one per connection.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft limit on open descriptors to the hard one (systemd's
/// default soft limit, 1,024, is a few hundred idle sockets), says what it
/// got, and lowers `max_connections` to fit in it: a server out of
/// descriptors can accept nothing, not even `/health`.
fn fit_descriptors(mut limits: ConnectionLimits) -> ConnectionLimits {
    let descriptors = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(descriptors) => descriptors,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the limit on open descriptors");
            return limits;
        }
    };
    let fits = usize::try_from(descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX);
    if limits.max_connections > fits {
        tracing::warn!(
            descriptors,
            configured = limits.max_connections,
            lowered_to = fits,
            "server.max_connections does not fit in the descriptors this process may open; raise `ulimit -n` (LimitNOFILE=) to keep it"
        );
        limits.max_connections = fits;
    }
    tracing::info!(descriptors, max_connections = limits.max_connections, "open descriptors allowed");
    limits
}

/// Rows one reclaiming step may touch: a few milliseconds of the writer at most.
const RECLAIM_BUDGET: usize = 500;

/// Reclaims superseded bindings, orphaned trials and expired sessions and
/// tokens in small steps, off the request path: quickly while there is work,
/// every few seconds when there is none.
async fn reclaim_forever(state: AppState) {
    loop {
        let pause = match state.store().reclaim(state.now(), RECLAIM_BUDGET).await {
            Ok(report) if report.removed() > 0 => {
                tracing::debug!(?report, "reclaimed storage");
                Duration::from_millis(20)
            }
            Ok(report) if !report.pass_complete => Duration::from_millis(20),
            Ok(_) => Duration::from_secs(5),
            Err(error) => {
                tracing::warn!(%error, "reclaiming storage failed; will retry");
                Duration::from_secs(5)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Whether opening a store may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// `serve`, and admin commands given `--init`.
    IfMissing,
    /// Admin commands: a SQLite file that does not exist is an error, so a
    /// command run from the wrong directory says so instead of making a new,
    /// empty store whose statements no running server accepts. (A PostgreSQL
    /// database is named explicitly; its schema is migrated either way.)
    OnlyExisting,
}

/// Opens the configured store (shared by `serve` and the admin commands).
///
/// PostgreSQL must be reachable at start-up: the schema is migrated before
/// anything else, and a server that cannot do that exits with a message naming
/// the server instead of waiting (a supervisor restarts it). Once running, a
/// server rides out outages by itself: requests fail fast with
/// `internal_server_error`/`retry` until PostgreSQL answers again.
pub(crate) async fn open_store(config: &Config, create: Create) -> anyhow::Result<Arc<dyn Store>> {
    let timeout = config.storage_timeout;
    match &config.storage {
        StorageUrl::Sqlite(path) => {
            if create == Create::OnlyExisting && !path.exists() {
                anyhow::bail!(
                    "there is no store at {} (from {}): start `temppass serve` with this configuration first, \
                     run the command where the server's store is (or give the server's --config), \
                     or pass --init to create the store here",
                    path.display(),
                    config.origin
                );
            }
            let options = SqliteOptions {
                busy_timeout: timeout,
                max_queued_writes: config.storage_max_queued_writes,
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open(path, options)
                .with_context(|| format!("cannot open the SQLite store {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StorageUrl::Postgres(url) => {
            let options = PostgresOptions {
                pool_size: config.storage_pool_size,
                connect_timeout: timeout,
                operation_timeout: timeout,
                max_queued_writes: config.storage_max_queued_writes,
            };
            let store = PostgresStore::connect(url.expose(), options).await.with_context(|| {
                format!(
                    "cannot open the PostgreSQL store {} (is PostgreSQL running and reachable? \
                     temppass does not wait for it at start-up)",
                    url.redacted()
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when it is first polled, so a signal that arrives as soon as the
/// server says it is listening is already handled gracefully.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: finishing the requests in flight");
    })
}
