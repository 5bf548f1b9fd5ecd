//! Admin commands: applications and signing keys, straight against the store.

use std::path::Path;

use anyhow::{Context, bail};
use temppass_core::ServiceProviderId;
use temppass_http::auth::{SCOPES, secret_hash};
use temppass_http::clock::{Clock, SystemClock};
use temppass_store::{ApiKey, Application, StoredSigningKey};
use temppass_token::SigningKey;

use crate::serve::open_store;
use temppass::config;

/// Splits values given as `--scope a b` or `--scope "a b"` or `--scope a,b`.
fn values(raw: &[String]) -> Vec<String> {
    raw.iter().flat_map(|v| v.split([',', ' '])).filter(|v| !v.is_empty()).map(str::to_owned).collect()
}

pub async fn create_app(
    config_path: Option<&Path>,
    name: &str,
    service_providers: &[String],
    scopes: &[String],
) -> anyhow::Result<()> {
    let config = config::load(config_path, std::env::vars())?;
    if name.trim().is_empty() || name.len() > 200 {
        bail!("--name: give a name of 1 to 200 characters");
    }
    let mut bound = Vec::new();
    for raw in values(service_providers) {
        let id = ServiceProviderId::parse(&raw).with_context(|| format!("--service-provider {raw:?}"))?;
        if !config.settings.service_providers.iter().any(|sp| sp.id == id) {
            bail!("--service-provider: {id} is not configured; configured: {}", configured(&config));
        }
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
    let store = open_store(&config).await?;
    let now = SystemClock.now();
    let keys = temppass_http::load_or_create_keys(store.as_ref(), now).await.context("cannot load the signing keys")?;
    let application = Application {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        service_providers: bound,
        scopes: granted,
        created_at: now,
        revoked_at: None,
    };
    store.create_application(&application).await.with_context(|| format!("cannot create application {name:?}"))?;
    let statement =
        temppass_http::issue_software_statement(&keys.signing, &config.settings.public_url, &application, now);
    println!("application {name:?} created (id {})", application.id);
    println!("software statement:");
    println!("{statement}");
    Ok(())
}

fn configured(config: &config::Config) -> String {
    config.settings.service_providers.iter().map(|sp| sp.id.to_string()).collect::<Vec<_>>().join(", ")
}

pub async fn revoke_app(config_path: Option<&Path>, name: &str) -> anyhow::Result<()> {
    let config = config::load(config_path, std::env::vars())?;
    let store = open_store(&config).await?;
    if !store.revoke_application(name, SystemClock.now()).await.context("cannot revoke the application")? {
        bail!("no active application is named {name:?}");
    }
    println!("application {name:?} revoked");
    Ok(())
}

pub async fn rotate_key(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = config::load(config_path, std::env::vars())?;
    let store = open_store(&config).await?;
    let key = SigningKey::generate();
    let stored = StoredSigningKey { kid: key.kid().to_owned(), seed: key.seed(), created_at: SystemClock.now() };
    store.add_signing_key(&stored).await.context("cannot store the new signing key")?;
    println!("signing key {} added; servers sign with it within 60 s", key.kid());
    Ok(())
}

pub async fn create_api_key(config_path: Option<&Path>, service_provider: &str) -> anyhow::Result<()> {
    let config = config::load(config_path, std::env::vars())?;
    let id = ServiceProviderId::parse(service_provider)
        .with_context(|| format!("--service-provider {service_provider:?}"))?;
    if !config.settings.service_providers.iter().any(|sp| sp.id == id) {
        bail!("--service-provider: {id} is not configured; configured: {}", configured(&config));
    }
    let store = open_store(&config).await?;
    let key = temppass_http::random_secret();
    let record = ApiKey {
        key_hash: secret_hash(&key),
        service_provider: id.clone(),
        created_at: SystemClock.now(),
        revoked_at: None,
    };
    store.create_api_key(&record).await.context("cannot store the API key")?;
    println!("legacy reset API key for {id} (shown once; only its hash is stored):");
    println!("{key}");
    Ok(())
}

pub async fn revoke_api_key(config_path: Option<&Path>, key: &str) -> anyhow::Result<()> {
    let config = config::load(config_path, std::env::vars())?;
    let store = open_store(&config).await?;
    if !store.revoke_api_key(&secret_hash(key.trim()), SystemClock.now()).await.context("cannot revoke the API key")? {
        bail!("no active API key matches");
    }
    println!("API key revoked");
    Ok(())
}
