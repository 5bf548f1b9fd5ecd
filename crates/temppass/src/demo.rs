//! The demo application (SPEC.md §11): registered at start-up so `/demo/` works with no other step.

use anyhow::{Context, bail};
use temppass_http::DemoSettings;
use temppass_http::auth::SCOPE_API;
use temppass_http::clock::{Clock, SystemClock};
use temppass_store::{Application, Store};

use temppass::config::Config;

/// Finds or creates the demo application of the first service provider and signs its software statement.
pub(crate) async fn register(config: &Config, store: &dyn Store) -> anyhow::Result<DemoSettings> {
    let Some(sp) = config.settings.service_providers.first() else {
        bail!("demo.enabled: the demo needs at least one [[service_providers]]");
    };
    let now = SystemClock.now();
    let id = format!("temppass-demo-{}", sp.id);
    let application = match store.find_application(&id).await.context("cannot read the demo application")? {
        Some(application) if application.revoked_at.is_none() => application,
        Some(_) => bail!("demo.enabled: the demo application {id} was revoked; set [demo] enabled = false"),
        None => {
            let application = Application {
                id: id.clone(),
                name: id.clone(),
                service_providers: vec![sp.id.clone()],
                scopes: vec![SCOPE_API.to_owned()],
                created_at: now,
                revoked_at: None,
            };
            store.create_application(&application).await.context("cannot create the demo application")?;
            application
        }
    };
    let keys = temppass_http::load_or_create_keys(store, now).await.context("cannot load the signing keys")?;
    let software_statement =
        temppass_http::issue_software_statement(&keys.signing, &config.settings.public_url, &application, now);
    Ok(DemoSettings { service_provider: sp.id.clone(), software_statement })
}
