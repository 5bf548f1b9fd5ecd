//! Admin commands: applications, signing keys and legacy API keys, straight
//! against the store. Each says on stderr which configuration and store it
//! uses, refuses to create a SQLite store unless given `--init`, and prints
//! its result alone on stdout (`output.rs`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use temppass_core::ServiceProviderId;
use temppass_http::auth::{SCOPES, secret_hash};
use temppass_http::clock::{Clock, SystemClock};
use temppass_store::{ApiKey, Application, Store, StoreError, StoredSigningKey};
use temppass_token::SigningKey;

use temppass_observe::{Event, EventSettings, EventSink, EventType, rfc3339};

use crate::output::{announce, note, result};
use crate::serve::{Create, open_store};
use temppass::config::{self, Config};

/// Where an admin command works: `--config` and `--init`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub config: Option<&'a Path>,
    pub init: bool,
}

pub(crate) async fn open(target: Target<'_>) -> anyhow::Result<(Config, Arc<dyn Store>)> {
    let config = config::load(target.config, std::env::vars())?;
    let store = open_loaded(&config, target.init).await?;
    Ok((config, store))
}

/// Opens the store of a configuration already loaded, saying which it is.
async fn open_loaded(config: &Config, init: bool) -> anyhow::Result<Arc<dyn Store>> {
    announce(config);
    open_store(config, if init { Create::IfMissing } else { Create::OnlyExisting }).await
}

/// Appends one `admin_change` tracking event to the configured event file
/// (docs/operating.md); a failure is a warning, never the command's.
fn record_change(config: &Config, action: &'static str, subject: &str, service_provider: Option<&ServiceProviderId>) {
    if config.events.file.is_none() {
        return;
    }
    let settings = EventSettings { log: false, ..config.events.clone() };
    match EventSink::start(&settings, None) {
        Ok(sink) => {
            sink.emit(Event {
                action: Some(action),
                subject: Some(subject.to_owned()),
                service_provider: service_provider.map(ToString::to_string),
                ..Event::new(EventType::AdminChange, rfc3339(SystemClock.now()), "ok")
            });
            if !sink.flush(std::time::Duration::from_secs(5)) {
                note("warning: the admin change was not written to the event file in time");
            }
        }
        Err(error) => note(&format!("warning: cannot record the admin change in the event file: {error}")),
    }
}

/// Splits values given as `--scope a b` or `--scope "a b"` or `--scope a,b`.
fn values(raw: &[String]) -> Vec<String> {
    raw.iter().flat_map(|v| v.split([',', ' '])).filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

fn service_provider(config: &Config, raw: &str) -> anyhow::Result<ServiceProviderId> {
    let id = ServiceProviderId::parse(raw).with_context(|| format!("--service-provider {raw:?}"))?;
    if !config.settings.service_providers.iter().any(|sp| sp.id == id) {
        bail!("--service-provider: {id} is not configured; configured: {}", configured(config));
    }
    Ok(id)
}

fn configured(config: &Config) -> String {
    config.settings.service_providers.iter().map(|sp| sp.id.to_string()).collect::<Vec<_>>().join(", ")
}

/// Creates the application, or — when one of that name exists with the same
/// service providers and scopes — leaves it as it is, so running the command
/// again is safe. Either way prints a software statement for it.
pub(crate) async fn create_app(
    target: Target<'_>,
    name: &str,
    service_providers: &[String],
    scopes: &[String],
) -> anyhow::Result<()> {
    if name.trim().is_empty() || name.len() > 200 {
        bail!("--name: give a name of 1 to 200 characters");
    }
    let config = config::load(target.config, std::env::vars())?;
    let mut bound = Vec::new();
    for raw in values(service_providers) {
        let id = service_provider(&config, &raw)?;
        if !bound.contains(&id) {
            bound.push(id);
        }
    }
    let mut granted = Vec::new();
    for scope in values(scopes) {
        if !SCOPES.contains(&scope.as_str()) {
            bail!("--scope: unknown scope {scope:?}; known: {}", SCOPES.join(", "));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    let store = open_loaded(&config, target.init).await?;
    let now = SystemClock.now();
    let wanted = Application {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        service_providers: bound,
        scopes: granted,
        created_at: now,
        revoked_at: None,
    };
    let application = match existing_app(store.as_ref(), name).await? {
        Some(existing) => same_grants(existing, &wanted)?,
        None => match store.create_application(&wanted).await {
            Ok(()) => {
                note(&format!("application {name:?} created (id {})", wanted.id));
                record_change(&config, "app_create", name, None);
                wanted
            }
            // Created by another command meanwhile: as if it had been there.
            Err(StoreError::Conflict(_)) => match existing_app(store.as_ref(), name).await? {
                Some(existing) => same_grants(existing, &wanted)?,
                None => bail!("cannot create application {name:?}: its name is taken"),
            },
            Err(error) => return Err(error).with_context(|| format!("cannot create application {name:?}")),
        },
    };
    print_statement(&config, store.as_ref(), &application).await
}

async fn existing_app(store: &dyn Store, name: &str) -> anyhow::Result<Option<Application>> {
    store.find_active_application(name).await.with_context(|| format!("cannot look up application {name:?}"))
}

fn same_grants(existing: Application, wanted: &Application) -> anyhow::Result<Application> {
    let sorted = |values: &[String]| {
        let mut values = values.to_vec();
        values.sort();
        values
    };
    let ids = |app: &Application| sorted(&app.service_providers.iter().map(|id| id.to_string()).collect::<Vec<_>>());
    if ids(&existing) != ids(wanted) || sorted(&existing.scopes) != sorted(&wanted.scopes) {
        bail!(
            "an application named {:?} exists for service providers {} with scopes {}; revoke it first \
             (temppass app revoke {:?}) or choose another --name",
            existing.name,
            ids(&existing).join(", "),
            existing.scopes.join(", "),
            existing.name
        );
    }
    note(&format!("application {:?} exists (id {}); a software statement for it:", existing.name, existing.id));
    Ok(existing)
}

async fn print_statement(config: &Config, store: &dyn Store, application: &Application) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let keys = temppass_http::load_or_create_keys(store, now).await.context("cannot load the signing keys")?;
    let statement =
        temppass_http::issue_software_statement(&keys.signing, &config.settings.public_url, application, now);
    note(&format!("issuer (server.public_url): {}", config.settings.public_url));
    result(&statement)
}

/// Prints a new software statement for an application that exists.
pub(crate) async fn app_statement(target: Target<'_>, name: &str) -> anyhow::Result<()> {
    let (config, store) = open(target).await?;
    let Some(application) = existing_app(store.as_ref(), name).await? else {
        bail!("no active application is named {name:?} (temppass app create makes one)");
    };
    print_statement(&config, store.as_ref(), &application).await
}

pub(crate) async fn revoke_app(target: Target<'_>, name: &str) -> anyhow::Result<()> {
    let (config, store) = open(target).await?;
    if !store.revoke_application(name, SystemClock.now()).await.context("cannot revoke the application")? {
        bail!("no active application is named {name:?}");
    }
    let cache = match config.settings.access_grant_cache_ttl {
        Some(ttl) => format!("within {} ms (tokens.access_token_cache)", ttl.as_millis()),
        None => "from their next request".to_owned(),
    };
    note(&format!("application {name:?} revoked; its access tokens are refused {cache}"));
    record_change(&config, "app_revoke", name, None);
    Ok(())
}

pub(crate) async fn rotate_key(target: Target<'_>) -> anyhow::Result<()> {
    let (config, store) = open(target).await?;
    let key = SigningKey::generate();
    let stored = StoredSigningKey { kid: key.kid().to_owned(), seed: key.seed(), created_at: SystemClock.now() };
    store.add_signing_key(&stored).await.context("cannot store the new signing key")?;
    note(&format!("signing key {} added; servers sign with it within 60 s", key.kid()));
    record_change(&config, "key_rotate", key.kid(), None);
    result(key.kid())
}

pub(crate) async fn create_api_key(target: Target<'_>, service_provider_id: &str) -> anyhow::Result<()> {
    let (config, store) = open(target).await?;
    let id = service_provider(&config, service_provider_id)?;
    let key = temppass_http::random_secret();
    let record = ApiKey {
        key_hash: secret_hash(&key),
        service_provider: id.clone(),
        created_at: SystemClock.now(),
        revoked_at: None,
    };
    store.create_api_key(&record).await.context("cannot store the API key")?;
    note(&format!("legacy reset API key for {id} (shown once; only its hash is stored):"));
    record_change(&config, "apikey_create", id.as_str(), Some(&id));
    result(&key)
}

pub(crate) async fn revoke_api_key(target: Target<'_>, key: &str) -> anyhow::Result<()> {
    let (config, store) = open(target).await?;
    let key_hash = secret_hash(key.trim());
    if !store.revoke_api_key(&key_hash, SystemClock.now()).await.context("cannot revoke the API key")? {
        bail!("no active API key matches");
    }
    note("API key revoked");
    // The subject is a prefix of the key's hash: enough to tell keys apart, nothing to use.
    record_change(&config, "apikey_revoke", &key_hash[..12.min(key_hash.len())], None);
    Ok(())
}
