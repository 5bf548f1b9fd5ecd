//! What the server is configured to do, as validated domain values.
//!
//! The binary reads TOML and environment variables and builds these; tests
//! build them directly. Nothing here parses text.

use std::collections::HashMap;
use std::time::Duration;

use temppass_core::{DurationMs, MvpdId, Rule, RuleScope, ServiceProviderId};

/// A regular MVPD: listed in the configuration for the app's picker, never authorized.
#[derive(Debug, Clone)]
pub struct RegularMvpd {
    pub id: MvpdId,
    pub display_name: String,
    pub logo_url: Option<String>,
}

/// A TempPass MVPD and its rule.
#[derive(Debug, Clone)]
pub struct TempPassMvpd {
    pub id: MvpdId,
    pub display_name: String,
    pub logo_url: Option<String>,
    pub rule: Rule,
}

#[derive(Debug, Clone)]
pub struct ServiceProvider {
    pub id: ServiceProviderId,
    pub name: String,
    pub domains: Vec<String>,
    pub regular_mvpds: Vec<RegularMvpd>,
    pub temppass_mvpds: Vec<TempPassMvpd>,
}

/// What an MVPD id names for one service provider.
#[derive(Debug, Clone, Copy)]
pub enum MvpdRef<'a> {
    Regular(&'a RegularMvpd),
    TempPass(&'a TempPassMvpd),
}

impl ServiceProvider {
    pub fn mvpd(&self, id: &MvpdId) -> Option<MvpdRef<'_>> {
        if let Some(temppass) = self.temppass_mvpds.iter().find(|m| &m.id == id) {
            return Some(MvpdRef::TempPass(temppass));
        }
        self.regular_mvpds.iter().find(|m| &m.id == id).map(MvpdRef::Regular)
    }

    pub fn scope(&self, mvpd: &MvpdId) -> RuleScope {
        RuleScope { service_provider: self.id.clone(), mvpd: mvpd.clone() }
    }
}

/// Limits and timeouts (SPEC.md §9); every one has a default.
#[derive(Debug, Clone)]
pub struct Limits {
    pub body_bytes: usize,
    /// A request body must have arrived this long after the request started (408 after).
    pub body_timeout: Duration,
    pub request_timeout: Duration,
    /// A decision body naming more resources is refused whole, while it is parsed (SPEC.md §4).
    pub body_resources: usize,
    pub authorize_resources: usize,
    pub preauthorize_resources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            body_resources: 50,
            authorize_resources: 1,
            preauthorize_resources: 5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The media token's `iss` and the software statement's issuer.
    pub public_url: String,
    pub media_token_ttl: DurationMs,
    pub access_token_ttl: DurationMs,
    pub limits: Limits,
    pub service_providers: Vec<ServiceProvider>,
    /// Browsers on `http://127.0.0.1:*` and `http://localhost:*` may call the
    /// API (SPEC.md §11); the binary sets it when it listens on loopback.
    pub allow_loopback_origins: bool,
    /// How long a looked-up access grant may be reused (`None`: look it up on
    /// every request). At most 5 s: a revocation must reach every server by then.
    pub access_grant_cache_ttl: Option<DurationMs>,
    /// `Some` serves the demo pages at `/demo/` (SPEC.md §11).
    pub demo: Option<crate::DemoSettings>,
}

impl Settings {
    pub(crate) fn index(&self) -> HashMap<ServiceProviderId, usize> {
        self.service_providers.iter().enumerate().map(|(i, sp)| (sp.id.clone(), i)).collect()
    }
}
