//! The configuration file (SPEC.md §10): TOML, then `TEMPPASS_<SECTION>__<KEY>`
//! environment overrides, then validation that names the offending field.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use temppass_core::{DailyReset, DurationMs, MvpdId, Rule, RuleKind, ServiceProviderId};
use temppass_http::listener::ConnectionLimits;
use temppass_http::settings::{Limits, RegularMvpd, ServiceProvider, Settings, TempPassMvpd};

/// The configuration built into the binary, so `temppass serve` works from any directory.
pub const EXAMPLE: &str = include_str!("../example.toml");

mod observe;

pub use observe::{LogFormat, parse_log_format};
use temppass_observe::EventSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: Server,
    #[serde(default)]
    storage: Storage,
    #[serde(default)]
    demo: Demo,
    #[serde(default)]
    tokens: Tokens,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    events: observe::EventsSection,
    #[serde(default)]
    log: observe::LogSection,
    #[serde(default)]
    service_providers: Vec<ServiceProviderSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Server {
    #[serde(default = "default_listen")]
    listen: String,
    public_url: Option<String>,
    /// `/metrics` and the health checks; `""` for none.
    #[serde(default = "observe::default_management_listen")]
    management_listen: String,
    /// The limits on connections (docs/exposure.md); `None` keeps the default.
    max_connections: Option<i64>,
    header_read_timeout: Option<String>,
    keep_alive_timeout: Option<String>,
    body_timeout: Option<String>,
    shutdown_grace: Option<String>,
    max_headers: Option<i64>,
    max_head_bytes: Option<i64>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            management_listen: observe::default_management_listen(),
            max_connections: None,
            header_read_timeout: None,
            keep_alive_timeout: None,
            body_timeout: None,
            shutdown_grace: None,
            max_headers: None,
            max_head_bytes: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Storage {
    #[serde(default = "default_storage_url")]
    url: String,
    #[serde(default = "default_store_timeout")]
    timeout: String,
    /// PostgreSQL only: connections per server.
    #[serde(default = "default_pool_size")]
    pool_size: i64,
    /// Writes waiting for the backend's writer at most; past it a write is refused at once.
    #[serde(default = "default_max_queued_writes")]
    max_queued_writes: i64,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            url: default_storage_url(),
            timeout: default_store_timeout(),
            pool_size: default_pool_size(),
            max_queued_writes: default_max_queued_writes(),
        }
    }
}

fn default_max_queued_writes() -> i64 {
    temppass_store::DEFAULT_MAX_QUEUED_WRITES as i64
}

fn default_pool_size() -> i64 {
    16
}

fn default_storage_url() -> String {
    "sqlite://temppass-data/temppass.db".into()
}

fn default_store_timeout() -> String {
    "2s".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Demo {
    #[serde(default)]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tokens {
    #[serde(default = "default_media_token_ttl")]
    media_token_ttl: String,
    #[serde(default = "default_access_token_ttl")]
    access_token_ttl: String,
    /// How long a server reuses a looked-up access token: a duration up to
    /// "5s", or "off". Default: "2s".
    access_token_cache: Option<String>,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            media_token_ttl: default_media_token_ttl(),
            access_token_ttl: default_access_token_ttl(),
            access_token_cache: None,
        }
    }
}

/// SPEC.md §6: a revocation reaches every server within 5 s.
const MAX_ACCESS_TOKEN_CACHE_MS: i64 = 5_000;
const DEFAULT_ACCESS_TOKEN_CACHE_MS: i64 = 2_000;

fn access_token_cache(text: Option<&str>) -> anyhow::Result<Option<DurationMs>> {
    let field = "tokens.access_token_cache";
    match text {
        Some("off") => Ok(None),
        Some(text) => {
            let ttl = duration(field, text)?;
            if ttl.as_millis() > MAX_ACCESS_TOKEN_CACHE_MS {
                bail!("{field}: {text:?} is longer than 5s, the most a revocation may take to reach every server");
            }
            Ok(Some(ttl))
        }
        // A PostgreSQL lookup is a network round trip; a SQLite one was measured at
        // a tenth of an authorization's CPU (docs/PERFORMANCE.md): worth 2 s of a revocation.
        None => Ok(DurationMs::from_millis(DEFAULT_ACCESS_TOKEN_CACHE_MS).ok()),
    }
}

fn default_media_token_ttl() -> String {
    "7m".into()
}

fn default_access_token_ttl() -> String {
    "6h".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    #[serde(default = "default_body_bytes")]
    body_bytes: usize,
    #[serde(default = "default_request_timeout")]
    request_timeout: String,
    #[serde(default = "default_body_resources")]
    body_resources: i64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            body_bytes: default_body_bytes(),
            request_timeout: default_request_timeout(),
            body_resources: default_body_resources(),
        }
    }
}

fn default_body_resources() -> i64 {
    Limits::default().body_resources as i64
}

fn default_body_bytes() -> usize {
    64 * 1024
}

fn default_request_timeout() -> String {
    "10s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceProviderSection {
    id: String,
    name: Option<String>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    mvpds: Vec<RegularMvpdSection>,
    #[serde(default)]
    temppass: Vec<TempPassSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegularMvpdSection {
    id: String,
    display_name: Option<String>,
    logo_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TempPassSection {
    mvpd: String,
    display_name: Option<String>,
    logo_url: Option<String>,
    kind: String,
    ttl: String,
    max_resources: Option<i64>,
    identity_key: Option<String>,
    reset: Option<ResetSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetSection {
    daily_at: String,
    timezone: String,
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

/// A `postgres://` URL, which may hold a password: `Debug` shows it without.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its password, for messages and logs.
    pub fn redacted(&self) -> String {
        let url = self.redacted_user_info();
        // `?password=…` (which the driver accepts too) is hidden as well.
        match url.split_once('?') {
            Some((base, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{base}?{}", query.join("&"))
            }
            None => url,
        }
    }

    fn redacted_user_info(&self) -> String {
        let Some(scheme_end) = self.0.find("://").map(|i| i + 3) else { return self.0.clone() };
        let rest = &self.0[scheme_end..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        match authority.rfind('@').map(|at| &authority[..at]) {
            Some(user_info) if user_info.contains(':') => {
                let user = &user_info[..user_info.find(':').unwrap_or(user_info.len())];
                format!("{}{user}:***{}", &self.0[..scheme_end], &rest[user_info.len()..])
            }
            _ => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PostgresUrl").field(&self.redacted()).finish()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from: a file's path, or "the bundled example configuration".
    pub origin: String,
    /// `server.public_url` was set; else it is `http://<listen>` (the bound address, for port 0).
    pub public_url_is_set: bool,
    pub listen: SocketAddr,
    pub storage: StorageUrl,
    /// `storage.timeout`: each store operation's deadline, which the store enforces itself.
    pub storage_timeout: std::time::Duration,
    /// PostgreSQL only: the connection pool's size, per server.
    pub storage_pool_size: usize,
    /// Writes queued for the backend's writer at most (both backends).
    pub storage_max_queued_writes: usize,
    pub demo_enabled: bool,
    pub settings: Settings,
    pub connections: ConnectionLimits,
    /// `server.management_listen`: `/metrics`, `/health/*`, `/stats`; `None` when off.
    pub management_listen: Option<SocketAddr>,
    pub events: EventSettings,
    pub log_format: LogFormat,
}

/// Reads `path` (or the bundled example), applies the environment, validates.
/// A relative `sqlite://` path is resolved once, here: next to the
/// configuration file when one is given, else in the working directory (the
/// bundled example's `temppass-data/`), so `serve` and the admin commands
/// find the same store however they are started.
pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Config> {
    let (text, origin) = match path {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (EXAMPLE.to_owned(), "the bundled example configuration".to_owned()),
    };
    let mut config = parse(&text, env).with_context(|| format!("invalid configuration ({origin})"))?;
    let base = match path.and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let resolve = |file: &Path| std::path::absolute(base.join(file)).unwrap_or_else(|_| base.join(file));
    if let StorageUrl::Sqlite(file) = &config.storage
        && file.is_relative()
    {
        config.storage = StorageUrl::Sqlite(resolve(file));
    }
    if let Some(file) = config.events.file.as_mut().filter(|file| file.is_relative()) {
        *file = resolve(file);
    }
    config.origin = origin;
    Ok(config)
}

/// Parses TOML text with environment overrides and validates it. An error
/// names the field (`service_providers[0].temppass[1].ttl: …`) and, when an
/// environment variable set it, the variable.
pub fn parse(text: &str, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Config> {
    let mut value: toml::Table = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
    let from_env = apply_environment(&mut value, env)?;
    let blame = |error: anyhow::Error| {
        let message = format!("{error:#}");
        match from_env.iter().find(|(field, _)| message.starts_with(field.as_str())) {
            Some((_, variable)) => anyhow!("{variable} (environment): {message}"),
            None => error,
        }
    };
    let file: File = serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim_end_matches('.').to_owned();
        blame(if path == "." { anyhow!("{message}") } else { anyhow!("{path}: {message}") })
    })?;
    validate(file).map_err(blame)
}

/// `TEMPPASS_SERVER__LISTEN=…` sets `[server] listen`. Variables without a
/// `__` (such as `TEMPPASS_TEST_POSTGRES_URL`) are not configuration. Returns
/// each field set, as `section.key`, with the variable that set it.
fn apply_environment(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut set = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("TEMPPASS_") else { continue };
        let Some((section, key)) = rest.split_once("__") else { continue };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let entry = table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            bail!("{name}: [{section}] is not a section that an environment variable can set");
        };
        section_table.insert(key.clone(), environment_value(&raw));
        set.push((format!("{section}.{key}"), name));
    }
    Ok(set)
}

/// Booleans and integers keep their type; everything else is a string.
fn environment_value(raw: &str) -> toml::Value {
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => raw.parse::<i64>().map(toml::Value::Integer).unwrap_or_else(|_| toml::Value::String(raw.to_owned())),
    }
}

fn duration(field: &str, text: &str) -> anyhow::Result<DurationMs> {
    DurationMs::parse(text).map_err(|e| anyhow!("{field}: {e}"))
}

fn std_duration(field: &str, text: &str) -> anyhow::Result<Duration> {
    duration(field, text).map(|d| Duration::from_millis(d.as_millis() as u64))
}

fn validate(file: File) -> anyhow::Result<Config> {
    let listen: SocketAddr =
        file.server.listen.parse().map_err(|_| {
            anyhow!("server.listen: {:?} is not an address such as \"127.0.0.1:8080\"", file.server.listen)
        })?;
    let public_url = file.server.public_url.clone().unwrap_or_else(|| format!("http://{listen}"));
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        bail!("server.public_url: {public_url:?} must start with http:// or https://");
    }
    let storage = storage_url(&file.storage.url)?;
    let store_timeout = std_duration("storage.timeout", &file.storage.timeout)?;
    let storage_pool_size = in_range("storage.pool_size", file.storage.pool_size, 1..=1000)?;
    let media_token_ttl = duration("tokens.media_token_ttl", &file.tokens.media_token_ttl)?;
    let access_token_ttl = duration("tokens.access_token_ttl", &file.tokens.access_token_ttl)?;
    let access_grant_cache_ttl = access_token_cache(file.tokens.access_token_cache.as_deref())?;
    let request_timeout = std_duration("limits.request_timeout", &file.limits.request_timeout)?;
    if !(1024..=16 * 1024 * 1024).contains(&file.limits.body_bytes) {
        bail!("limits.body_bytes: {} is outside 1024..=16777216", file.limits.body_bytes);
    }
    let body_resources = in_range("limits.body_resources", file.limits.body_resources, 1..=1000)?;
    let storage_max_queued_writes =
        in_range("storage.max_queued_writes", file.storage.max_queued_writes, 1..=1_000_000)?;
    let connections = connection_limits(&file.server, request_timeout)?;
    let body_timeout =
        optional_duration("server.body_timeout", file.server.body_timeout.as_deref(), Limits::default().body_timeout)?;
    if body_timeout > request_timeout {
        bail!(
            "server.body_timeout: {body_timeout:?} is longer than limits.request_timeout ({request_timeout:?}), which would end the request first"
        );
    }
    let service_providers = service_providers(file.service_providers)?;
    let management_listen = observe::management_listen(&file.server.management_listen)?;
    let events = observe::events(&file.events)?;
    let log_format = observe::log_format(&file.log)?;
    Ok(Config {
        management_listen,
        events,
        log_format,
        origin: String::new(),
        public_url_is_set: file.server.public_url.is_some(),
        listen,
        storage,
        storage_timeout: store_timeout,
        storage_pool_size,
        storage_max_queued_writes,
        demo_enabled: file.demo.enabled,
        connections,
        settings: Settings {
            public_url,
            media_token_ttl,
            access_token_ttl,
            limits: Limits {
                body_bytes: file.limits.body_bytes,
                body_timeout,
                request_timeout,
                body_resources,
                ..Limits::default()
            },
            service_providers,
            allow_loopback_origins: listen.ip().is_loopback(),
            access_grant_cache_ttl,
            demo: None,
        },
    })
}

/// The `[[service_providers]]` sections: at least one, each id once.
fn service_providers(sections: Vec<ServiceProviderSection>) -> anyhow::Result<Vec<ServiceProvider>> {
    let mut seen = HashSet::new();
    let service_providers = sections
        .into_iter()
        .enumerate()
        .map(|(index, section)| {
            let sp = service_provider(index, section)?;
            if !seen.insert(sp.id.clone()) {
                bail!("service_providers[{index}].id: {} is configured twice", sp.id);
            }
            Ok(sp)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if service_providers.is_empty() {
        bail!(
            "service_providers: none is configured; add a [[service_providers]] section with at least one \
             [[service_providers.temppass]] rule (docs/configuration.md)"
        );
    }
    Ok(service_providers)
}

fn in_range(field: &str, value: i64, range: std::ops::RangeInclusive<usize>) -> anyhow::Result<usize> {
    usize::try_from(value)
        .ok()
        .filter(|value| range.contains(value))
        .ok_or_else(|| anyhow!("{field}: {value} is outside {}..={}", range.start(), range.end()))
}

fn optional_duration(field: &str, text: Option<&str>, default: Duration) -> anyhow::Result<Duration> {
    text.map_or(Ok(default), |text| std_duration(field, text))
}

/// The `[server]` limits on connections (docs/exposure.md).
fn connection_limits(server: &Server, request_timeout: Duration) -> anyhow::Result<ConnectionLimits> {
    let default = ConnectionLimits::default();
    let header_read_timeout = optional_duration(
        "server.header_read_timeout",
        server.header_read_timeout.as_deref(),
        default.header_read_timeout,
    )?;
    let keep_alive_timeout = optional_duration(
        "server.keep_alive_timeout",
        server.keep_alive_timeout.as_deref(),
        default.keep_alive_timeout,
    )?;
    let shutdown_grace =
        optional_duration("server.shutdown_grace", server.shutdown_grace.as_deref(), default.shutdown_grace)?;
    let count = |field: &str, value: Option<i64>, default: usize, range| {
        value.map_or(Ok(default), |v| in_range(field, v, range))
    };
    Ok(ConnectionLimits {
        max_connections: count(
            "server.max_connections",
            server.max_connections,
            default.max_connections,
            1..=1_000_000,
        )?,
        header_read_timeout,
        keep_alive_timeout,
        // A request in flight ends by then, so a connection still open is not reading its answer.
        close_after: request_timeout,
        max_headers: count("server.max_headers", server.max_headers, default.max_headers, 8..=1000)?,
        max_head_bytes: count(
            "server.max_head_bytes",
            server.max_head_bytes,
            default.max_head_bytes,
            8192..=1024 * 1024,
        )?,
        shutdown_grace,
    })
}

/// A browser origin's host, as `domains` lists it: a host name with at least
/// one dot, or `localhost` — never a URL, a port or a bare top-level domain,
/// which would let every site of that domain call the API (CORS matches
/// subdomains too).
fn domain(field: &str, raw: &str) -> anyhow::Result<String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if raw.contains("://") || domain.contains(['/', ':', '?', '#', '@']) {
        bail!("{field}: {raw:?} must be a host name such as \"example.com\", without a scheme, port or path");
    }
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if !labels_ok || domain.len() > 253 {
        bail!("{field}: {raw:?} is not a host name (letters, digits and '-' in dot-separated labels)");
    }
    if domain != "localhost" && !domain.contains('.') {
        bail!("{field}: {raw:?} is a top-level domain; name the site, e.g. \"example.{domain}\"");
    }
    Ok(domain)
}

fn storage_url(url: &str) -> anyhow::Result<StorageUrl> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            bail!("storage.url: {url:?} names no file; use e.g. \"sqlite://temppass-data/temppass.db\"");
        }
        return Ok(StorageUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StorageUrl::Postgres(PostgresUrl(url.to_owned())));
    }
    bail!("storage.url: {url:?} is neither sqlite://PATH nor postgres://…")
}

fn service_provider(index: usize, section: ServiceProviderSection) -> anyhow::Result<ServiceProvider> {
    let at = format!("service_providers[{index}]");
    let id = ServiceProviderId::parse(&section.id).map_err(|e| anyhow!("{at}.id: {:?} {e}", section.id))?;
    let mut mvpd_ids = HashSet::new();
    let regular_mvpds = section
        .mvpds
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mvpd = MvpdId::parse(&m.id).map_err(|e| anyhow!("{at}.mvpds[{i}].id: {:?} {e}", m.id))?;
            if !mvpd_ids.insert(mvpd.clone()) {
                bail!("{at}.mvpds[{i}].id: {mvpd} is listed twice");
            }
            Ok(RegularMvpd {
                display_name: m.display_name.unwrap_or_else(|| mvpd.to_string()),
                id: mvpd,
                logo_url: m.logo_url,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let temppass_mvpds = section
        .temppass
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("{at}.temppass[{i}]");
            let mvpd = MvpdId::parse(&t.mvpd).map_err(|e| anyhow!("{field}.mvpd: {:?} {e}", t.mvpd))?;
            if !mvpd_ids.insert(mvpd.clone()) {
                bail!("{field}.mvpd: {mvpd} has a second rule (or is also a regular MVPD) for service provider {id}");
            }
            let rule = rule(&field, &t)?;
            Ok(TempPassMvpd {
                display_name: t.display_name.unwrap_or_else(|| mvpd.to_string()),
                id: mvpd,
                logo_url: t.logo_url,
                rule,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let domains = section
        .domains
        .iter()
        .enumerate()
        .map(|(i, raw)| domain(&format!("{at}.domains[{i}]"), raw))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ServiceProvider {
        name: section.name.unwrap_or_else(|| id.to_string()),
        id,
        domains,
        regular_mvpds,
        temppass_mvpds,
    })
}

fn rule(field: &str, section: &TempPassSection) -> anyhow::Result<Rule> {
    let ttl = duration(&format!("{field}.ttl"), &section.ttl)?;
    let kind = match section.kind.as_str() {
        "basic" => {
            if section.max_resources.is_some() || section.identity_key.is_some() {
                bail!("{field}: max_resources and identity_key belong to promotional rules, not basic ones");
            }
            RuleKind::Basic
        }
        "promotional" => {
            let max_resources = section
                .max_resources
                .ok_or_else(|| anyhow!("{field}.max_resources: a promotional rule needs max_resources (≥ 1)"))?;
            let max_resources = u32::try_from(max_resources)
                .ok()
                .filter(|m| (1..=10_000).contains(m))
                .ok_or_else(|| anyhow!("{field}.max_resources: {max_resources} is outside 1..=10000"))?;
            let identity_key = section.identity_key.clone().filter(|k| !k.trim().is_empty()).ok_or_else(|| {
                anyhow!("{field}.identity_key: a promotional rule needs identity_key, e.g. \"email\"")
            })?;
            RuleKind::Promotional { max_resources, identity_key }
        }
        other => bail!("{field}.kind: unknown kind {other:?}; expected \"basic\" or \"promotional\""),
    };
    let reset = section
        .reset
        .as_ref()
        .map(|r| DailyReset::parse(&r.daily_at, &r.timezone).map_err(|e| anyhow!("{field}.reset: {e}")))
        .transpose()?;
    Ok(Rule { kind, ttl, reset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        match parse(text, []) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => format!("{e:#}"),
        }
    }

    const ONE_RULE: &str = r#"
[[service_providers]]
id = "REF30"
[[service_providers.temppass]]
mvpd = "TempPass"
kind = "basic"
ttl = "10m"
"#;

    #[test]
    fn the_bundled_example_is_valid() {
        let config = parse(EXAMPLE, []).expect("the bundled example is valid");
        assert_eq!(config.storage, StorageUrl::Sqlite(PathBuf::from("temppass-data/temppass.db")));
        assert_eq!(config.settings.service_providers.len(), 1);
    }

    #[test]
    fn environment_variables_override_the_file() {
        let env = [
            ("TEMPPASS_SERVER__LISTEN".to_owned(), "0.0.0.0:9000".to_owned()),
            ("TEMPPASS_STORAGE__URL".to_owned(), "sqlite:///tmp/x.db".to_owned()),
            ("TEMPPASS_TEST_POSTGRES_URL".to_owned(), "postgres://ignored".to_owned()),
            ("TEMPPASS_DEMO__ENABLED".to_owned(), "false".to_owned()),
        ];
        let config = parse(EXAMPLE, env).expect("the example with these overrides is valid");
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.storage, StorageUrl::Sqlite(PathBuf::from("/tmp/x.db")));
        assert!(!config.demo_enabled);
    }

    #[test]
    fn an_unknown_environment_key_is_refused_by_name() {
        let env = [("TEMPPASS_SERVER__LISTNE".to_owned(), "x".to_owned())];
        let error = format!("{:#}", parse(EXAMPLE, env).err().map(|e| e.to_string()).unwrap_or_default());
        assert!(error.contains("listne"), "{error}");
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        assert!(error_of("[server]\nlisten_on = \"x\"").contains("listen_on"));
        assert!(error_of(&ONE_RULE.replace("ttl = \"10m\"", "ttl = \"10m\"\nttll = 3")).contains("ttll"));
    }

    #[test]
    fn an_unknown_kind_is_refused_naming_the_field() {
        let error = error_of(&ONE_RULE.replace("basic", "premium"));
        assert!(error.contains("service_providers[0].temppass[0].kind") && error.contains("premium"), "{error}");
    }

    #[test]
    fn zero_negative_and_malformed_ttls_are_refused_naming_the_field() {
        for ttl in ["0s", "-10m", "ten minutes", "10"] {
            let error = error_of(&ONE_RULE.replace("\"10m\"", &format!("{ttl:?}")));
            assert!(error.contains("service_providers[0].temppass[0].ttl"), "{ttl}: {error}");
        }
    }

    #[test]
    fn two_rules_for_one_mvpd_are_refused() {
        let twice = format!(
            "{ONE_RULE}\n[[service_providers.temppass]]\nmvpd = \"TempPass\"\nkind = \"basic\"\nttl = \"4h\"\n"
        );
        let error = error_of(&twice);
        assert!(error.contains("service_providers[0].temppass[1].mvpd") && error.contains("second rule"), "{error}");
    }

    #[test]
    fn a_promotional_rule_without_max_resources_is_refused() {
        let error = error_of(&ONE_RULE.replace("kind = \"basic\"", "kind = \"promotional\"\nidentity_key = \"email\""));
        assert!(error.contains("service_providers[0].temppass[0].max_resources"), "{error}");
    }

    #[test]
    fn a_bad_reset_schedule_is_refused_naming_the_field() {
        let bad_zone = ONE_RULE
            .replace("ttl = \"10m\"", "ttl = \"10m\"\nreset = { daily_at = \"00:00\", timezone = \"Nowhere/City\" }");
        assert!(error_of(&bad_zone).contains("service_providers[0].temppass[0].reset"));
        let bad_time =
            ONE_RULE.replace("ttl = \"10m\"", "ttl = \"10m\"\nreset = { daily_at = \"25:00\", timezone = \"UTC\" }");
        assert!(error_of(&bad_time).contains("25:00"));
    }

    #[test]
    fn the_access_token_cache_is_two_seconds_by_default_can_be_off_and_is_at_most_five() {
        let ttl = |text: &str| {
            parse(&format!("{text}\n{ONE_RULE}"), [])
                .map(|c| c.settings.access_grant_cache_ttl.map(DurationMs::as_millis))
        };
        assert_eq!(ttl("").ok(), Some(Some(2_000)));
        assert_eq!(ttl("[tokens]\naccess_token_cache = \"off\"").ok(), Some(None));
        assert_eq!(ttl("[storage]\nurl = \"postgres://db/x\"").ok(), Some(Some(2_000)));
        assert_eq!(ttl("[tokens]\naccess_token_cache = \"500ms\"").ok(), Some(Some(500)));
        assert_eq!(
            ttl("[storage]\nurl = \"postgres://db/x\"\n[tokens]\naccess_token_cache = \"off\"").ok(),
            Some(None)
        );
        assert!(error_of("[tokens]\naccess_token_cache = \"6s\"").contains("tokens.access_token_cache"));
    }

    #[test]
    fn a_bad_duration_elsewhere_is_refused_naming_the_field() {
        assert!(error_of("[tokens]\nmedia_token_ttl = \"7 minutes\"").contains("tokens.media_token_ttl"));
        assert!(error_of("[storage]\nurl = \"mysql://x\"").contains("storage.url"));
    }

    #[test]
    fn a_postgres_url_selects_postgres_and_its_password_stays_out_of_debug_output() {
        let env = [
            ("TEMPPASS_STORAGE__URL".to_owned(), "postgres://temppass:s3cret@db.internal:5432/temppass".to_owned()),
            ("TEMPPASS_STORAGE__POOL_SIZE".to_owned(), "32".to_owned()),
        ];
        let config = parse(EXAMPLE, env).expect("the example with these overrides is valid");
        let StorageUrl::Postgres(url) = &config.storage else { panic!("not PostgreSQL: {:?}", config.storage) };
        assert_eq!(url.expose(), "postgres://temppass:s3cret@db.internal:5432/temppass");
        assert_eq!(url.redacted(), "postgres://temppass:***@db.internal:5432/temppass");
        assert!(!format!("{config:?}").contains("s3cret"), "the password is in the Debug output");
        let in_query = PostgresUrl("postgres://db.internal/temppass?user=t&password=s3cret&sslmode=disable".into());
        assert_eq!(in_query.redacted(), "postgres://db.internal/temppass?user=t&password=***&sslmode=disable");
        assert_eq!(config.storage_pool_size, 32);
        assert_eq!(parse(EXAMPLE, []).map(|c| c.storage_pool_size).ok(), Some(16), "the default pool size");
    }

    #[test]
    fn a_pool_size_out_of_range_is_refused_naming_the_field() {
        for size in ["0", "-1", "1001"] {
            assert!(error_of(&format!("[storage]\npool_size = {size}")).contains("storage.pool_size"), "{size}");
        }
    }

    fn with_domains(domains: &str) -> String {
        format!("[[service_providers]]\nid = \"REF30\"\ndomains = {domains}\n")
    }

    #[test]
    fn a_domain_must_be_a_host_name_with_a_dot_or_localhost() {
        for good in [r#"["example.com"]"#, r#"["Shop.Example.org."]"#, r#"["localhost"]"#] {
            assert!(parse(&with_domains(good), []).is_ok(), "{good}");
        }
        let config = parse(&with_domains(r#"["Shop.Example.org."]"#), [])
            .expect("a domain with capitals and a trailing dot is valid");
        assert_eq!(config.settings.service_providers[0].domains, ["shop.example.org"]);
        for bad in [
            r#"["com"]"#,
            r#"["https://shop.example.org/"]"#,
            r#"["shop.example.org:8443"]"#,
            r#"["shop.example.org/path"]"#,
            r#"["*.example.org"]"#,
            r#"["exa mple.org"]"#,
            r#"[""]"#,
        ] {
            let error = error_of(&with_domains(bad));
            assert!(error.contains("service_providers[0].domains[0]"), "{bad}: {error}");
        }
    }

    #[test]
    fn connection_limits_have_defaults_and_are_validated_by_name() {
        let config = parse(ONE_RULE, []).expect("one rule and the default limits are valid");
        assert_eq!(config.connections.max_connections, 10_000);
        assert_eq!(config.connections.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.connections.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(config.connections.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.settings.limits.body_timeout, Duration::from_secs(5));
        assert_eq!(config.settings.limits.body_resources, 50);
        assert_eq!(config.storage_max_queued_writes, 4096);
        let set = parse(
            &format!("[server]\nmax_connections = 20\nshutdown_grace = \"2s\"\nbody_timeout = \"1s\"\n{ONE_RULE}"),
            [("TEMPPASS_SERVER__KEEP_ALIVE_TIMEOUT".to_owned(), "30s".to_owned())],
        )
        .expect("the connection limits set are valid");
        assert_eq!(set.connections.max_connections, 20);
        assert_eq!(set.connections.keep_alive_timeout, Duration::from_secs(30));
        assert_eq!(set.connections.shutdown_grace, Duration::from_secs(2));
        assert_eq!(set.settings.limits.body_timeout, Duration::from_secs(1));
        for (text, field) in [
            ("[server]\nmax_connections = 0", "server.max_connections"),
            ("[server]\nheader_read_timeout = \"0s\"", "server.header_read_timeout"),
            ("[server]\nkeep_alive_timeout = \"soon\"", "server.keep_alive_timeout"),
            ("[server]\nbody_timeout = \"11s\"", "server.body_timeout"),
            ("[server]\nmax_head_bytes = 100", "server.max_head_bytes"),
            ("[limits]\nbody_resources = 0", "limits.body_resources"),
            ("[storage]\nmax_queued_writes = -1", "storage.max_queued_writes"),
        ] {
            assert!(error_of(text).contains(field), "{text}: {}", error_of(text));
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_field() {
        let wrong_type = error_of(&ONE_RULE.replace("ttl = \"10m\"", "ttl = 120"));
        assert!(wrong_type.starts_with("service_providers[0].temppass[0].ttl: invalid type: integer"), "{wrong_type}");
        let negative = error_of(&format!("[limits]\nbody_bytes = -5\n{ONE_RULE}"));
        assert!(negative.starts_with("limits.body_bytes: "), "{negative}");
        let no_timezone =
            error_of(&ONE_RULE.replace("ttl = \"10m\"", "ttl = \"10m\"\nreset = { daily_at = \"00:00\" }"));
        assert!(
            no_timezone.starts_with("service_providers[0].temppass[0].reset: missing field `timezone`"),
            "{no_timezone}"
        );
        let typo = error_of(&ONE_RULE.replace("ttl = \"10m\"", "tll = \"10m\""));
        assert!(
            typo.starts_with("service_providers[0].temppass[0].tll: unknown field `tll`, expected one of"),
            "{typo}"
        );
    }

    #[test]
    fn a_bad_value_from_the_environment_names_the_variable() {
        let env = [("TEMPPASS_TOKENS__MEDIA_TOKEN_TTL".to_owned(), "abc".to_owned())];
        let error = match parse(ONE_RULE, env) {
            Ok(_) => panic!("abc was accepted as a duration"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.starts_with("TEMPPASS_TOKENS__MEDIA_TOKEN_TTL (environment): tokens.media_token_ttl"), "{error}");
        let env = [("TEMPPASS_LIMITS__BODY_BYTES".to_owned(), "-5".to_owned())];
        let error = parse(ONE_RULE, env).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.starts_with("TEMPPASS_LIMITS__BODY_BYTES (environment): limits.body_bytes"), "{error}");
    }

    #[test]
    fn a_configuration_without_a_service_provider_is_refused() {
        assert!(error_of("[server]\nlisten = \"127.0.0.1:9000\"").starts_with("service_providers: none is configured"));
    }

    #[test]
    fn the_issuer_follows_the_listen_address_unless_it_is_set() {
        let env = [("TEMPPASS_SERVER__LISTEN".to_owned(), "127.0.0.1:8099".to_owned())];
        let config = parse(EXAMPLE, env).expect("the example with these overrides is valid");
        assert_eq!(config.settings.public_url, "http://127.0.0.1:8099");
        let set = parse(&format!("[server]\npublic_url = \"https://tv.example.com\"\n{ONE_RULE}"), []);
        assert_eq!(set.map(|c| c.settings.public_url).ok().as_deref(), Some("https://tv.example.com"));
    }

    #[test]
    fn a_relative_sqlite_path_is_resolved_next_to_the_configuration_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("temppass.toml");
        std::fs::write(&file, format!("[storage]\nurl = \"sqlite://data/t.db\"\n{ONE_RULE}"))
            .expect("the configuration file is written");
        let config = load(Some(&file), []).expect("the configuration file loads");
        assert_eq!(config.storage, StorageUrl::Sqlite(dir.path().join("data/t.db")));
        assert_eq!(config.origin, file.display().to_string());
        let bundled = load(None, []).expect("the bundled example loads");
        let cwd = std::env::current_dir().expect("a current directory");
        assert_eq!(bundled.storage, StorageUrl::Sqlite(cwd.join("temppass-data/temppass.db")));
    }
}
