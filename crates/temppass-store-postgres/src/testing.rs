//! Test helpers (feature `testing`): a throwaway database per test, and a TCP
//! proxy that can cut PostgreSQL off and bring it back.
//!
//! PostgreSQL tests run when `TEMPPASS_TEST_POSTGRES_URL` names a server whose
//! user may create databases (CI sets it); without it they pass without
//! running, and say so once per test binary.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::NoTls;

/// The environment variable that turns PostgreSQL tests on.
pub const URL_VARIABLE: &str = "TEMPPASS_TEST_POSTGRES_URL";

/// The base URL of the test server, or `None` (after saying once that the
/// PostgreSQL tests are skipped) when the variable is unset.
pub fn base_url() -> Option<String> {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            announce_skip();
            None
        }
    }
}

/// Says, once per test binary, that the PostgreSQL tests are skipped. Written
/// to stderr directly: the test harness captures `eprintln!` of passing tests.
fn announce_skip() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: {URL_VARIABLE} is not set: the PostgreSQL tests are SKIPPED (they pass without running). \
             Set it, e.g. to postgres://postgres@127.0.0.1:5432/postgres, to run them."
        );
    });
}

/// `url` with its database name replaced by `dbname`.
pub fn with_database(url: &str, dbname: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (url, None),
    };
    let authority_start = main.find("://").map_or(0, |i| i + 3);
    let authority_end = main[authority_start..].find('/').map_or(main.len(), |i| authority_start + i);
    let mut out = format!("{}/{dbname}", &main[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` with its host and port replaced by `address`.
pub fn with_address(url: &str, address: SocketAddr) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    format!("{}{}{address}{}", &url[..authority_start], &authority[..host_start], &rest[authority_end..])
}

/// A new, empty database on the test server, dropped (connections and all) with this value.
pub struct TestDatabase {
    name: String,
    base_url: String,
    url: String,
}

impl TestDatabase {
    /// Creates the database, or answers `None` when PostgreSQL tests are skipped.
    pub async fn create() -> Option<Self> {
        let base_url = base_url()?;
        let name = format!("temppass_test_{}", uuid::Uuid::new_v4().simple());
        admin(&base_url, &format!("CREATE DATABASE {name}")).await;
        let url = with_database(&base_url, &name);
        Some(Self { name, base_url, url })
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host and port of the test server, for a proxy in front of it.
    pub async fn server_address(&self) -> SocketAddr {
        let config: tokio_postgres::Config =
            self.base_url.parse().unwrap_or_else(|e| panic!("{URL_VARIABLE} is not a PostgreSQL URL: {e}"));
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap_or_else(|e| panic!("cannot resolve {host}:{port}: {e}"))
            .next()
            .unwrap_or_else(|| panic!("{host}:{port} resolves to no address"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread of its own with a runtime of its own does the work.
        let (base_url, statement) =
            (self.base_url.clone(), format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("a runtime to drop the test database: {e}"));
            runtime.block_on(admin(&base_url, &statement));
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("cannot drop test database {}", self.name);
        }
    }
}

/// Runs one statement on the base database of the test server.
async fn admin(base_url: &str, statement: &str) {
    let (client, connection) = tokio_postgres::connect(base_url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {URL_VARIABLE}: {e}"));
    let task = tokio::spawn(connection);
    client.batch_execute(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    drop(client);
    let _ = task.await;
}

/// A TCP proxy on loopback in front of PostgreSQL. [`TcpProxy::cut`] closes
/// every connection and refuses new ones (they are accepted and closed at
/// once, as a server that is going down does); [`TcpProxy::restore`] lets
/// them through again. [`TcpProxy::stall`] silences the connections open
/// now without closing them, as a partition or a fail-over does, while new
/// ones pass. Stops with the value.
pub struct TcpProxy {
    address: SocketAddr,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    stalls: watch::Sender<u64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("cannot bind the proxy: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("proxy address: {e}"));
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let (stalls, _) = watch::channel(0u64);
        let accept_task = tokio::spawn(accept(listener, upstream, Arc::clone(&open), cuts.clone(), stalls.clone()));
        Self { address, open, cuts, stalls, accept_task }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every proxied connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|cuts| *cuts += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding on every connection open now, keeping it open and silent until a cut or the drop.
    pub fn stall(&self) {
        self.stalls.send_modify(|stalls| *stalls += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cuts.send_modify(|cuts| *cuts += 1);
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    stalls: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if !open.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut cut = cuts.subscribe();
        cut.mark_unchanged();
        let mut stall = stalls.subscribe();
        stall.mark_unchanged();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            if !open.load(Ordering::SeqCst) {
                return;
            }
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.changed() => {}
                _ = stall.changed() => {
                    // Silent but open, until a cut or the proxy's end.
                    let _ = cut.changed().await;
                }
            }
            // Dropping both sockets closes them: the pool sees its connections end.
        });
    }
}
