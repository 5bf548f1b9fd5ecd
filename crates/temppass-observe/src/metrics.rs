//! The Prometheus metrics of one server: one `prometheus-client` registry
//! (no global: every `AppState`, every test, has its own), its handles, and
//! a typed method per thing that happened.
//!
//! Labels are bounded by construction: service providers and MVPDs come from
//! the configuration (a handler records them only once it found them there),
//! the rest are `&'static str` of a closed set. A device id, identity, token
//! or resource id has no way in.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use temppass_core::RuleScope;
use temppass_store::Store;

use crate::process::{ProcessCollector, StoreCollector};

/// Which decision endpoint answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    Authorize,
    Preauthorize,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Preauthorize => "preauthorize",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    service_provider: String,
    mvpd: String,
    kind: &'static str,
    outcome: &'static str,
    /// The §5 code of a deny; empty for a permit.
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    service_provider: String,
    mvpd: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResetLabels {
    api: &'static str,
    scope: &'static str,
    key_kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreErrorLabels {
    operation: &'static str,
    error: &'static str,
}

/// The `status_class` label of an HTTP status: `2xx`…`5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Every metric of one server; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    trials_started: Family<RuleLabels, Counter>,
    resources_used: Family<RuleLabels, Counter>,
    resets: Family<ResetLabels, Counter>,
    registrations: Counter,
    access_tokens: Counter,
    auth_failures: Family<CodeLabels, Counter>,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    store_operations: Family<OperationLabels, Histogram, fn() -> Histogram>,
    store_errors: Family<StoreErrorLabels, Counter>,
    events_dropped: Counter,
    event_sink_errors: Counter,
    figures_flush_errors: Counter,
    malformed_device_info: Counter,
    build_info: Family<Vec<(&'static str, &'static str)>, Gauge>,
}

/// Seconds, from 0.5 ms to about 16 s: an authorize takes a millisecond or
/// two, a store operation may wait up to `storage.timeout`, a request up to
/// `limits.request_timeout`.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// The metrics of a server whose store is `store` (its queues and pool
    /// are read on each scrape).
    pub fn new(store: Option<Arc<dyn Store>>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let metrics = Self::registered(registry.sub_registry_with_prefix("temppass"));
        if let Some(store) = store {
            registry.sub_registry_with_prefix("temppass").register_collector(Box::new(StoreCollector(store)));
        }
        Self { registry, ..metrics }
    }

    fn registered(registry: &mut Registry) -> Self {
        let metrics = Self {
            registry: Registry::default(),
            decisions: Family::default(),
            trials_started: Family::default(),
            resources_used: Family::default(),
            resets: Family::default(),
            registrations: Counter::default(),
            access_tokens: Counter::default(),
            auth_failures: Family::default(),
            requests: Family::new_with_constructor(duration_histogram),
            store_operations: Family::new_with_constructor(duration_histogram),
            store_errors: Family::default(),
            events_dropped: Counter::default(),
            event_sink_errors: Counter::default(),
            figures_flush_errors: Counter::default(),
            malformed_device_info: Counter::default(),
            build_info: Family::default(),
        };
        registry.register(
            "decisions",
            "Decisions on TempPass MVPDs, one per resource, by service provider, MVPD, kind, outcome and deny code",
            metrics.decisions.clone(),
        );
        registry.register("trials_started", "Trials started (first uses)", metrics.trials_started.clone());
        registry.register(
            "resources_used",
            "Resources a promotional trial used for the first time",
            metrics.resources_used.clone(),
        );
        registry.register("resets", "Successful reset API calls by API, scope and key kind", metrics.resets.clone());
        registry.register("registrations", "Clients registered (DCR)", metrics.registrations.clone());
        registry.register("access_tokens_issued", "Access tokens issued (DCR)", metrics.access_tokens.clone());
        registry.register(
            "auth_failures",
            "Refused credentials (bearer tokens, client secrets, software statements, API keys) by §5 code",
            metrics.auth_failures.clone(),
        );
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP requests by route template and status class (OpenTelemetry http.server.request.duration)",
            Unit::Seconds,
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "store_operation_duration",
            "Duration of store operations by operation",
            Unit::Seconds,
            metrics.store_operations.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store operations by operation and error",
            metrics.store_errors.clone(),
        );
        registry.register(
            "events_dropped",
            "Tracking events dropped because the event queue was full",
            metrics.events_dropped.clone(),
        );
        registry.register("event_sink_errors", "Failed writes of tracking events", metrics.event_sink_errors.clone());
        registry.register(
            "figures_flush_errors",
            "Flushes of daily figures the store refused (retried with the next flush)",
            metrics.figures_flush_errors.clone(),
        );
        registry.register(
            "malformed_device_info",
            "X-Device-Info values that were not base64 JSON objects (ignored)",
            metrics.malformed_device_info.clone(),
        );
        registry.register("build_info", "The version of temppass serving (always 1)", metrics.build_info.clone());
        metrics.build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))]).set(1);
        metrics
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn decision(&self, scope: &RuleScope, kind: DecisionKind, deny_code: Option<&'static str>) {
        let labels = DecisionLabels {
            service_provider: scope.service_provider.as_str().to_owned(),
            mvpd: scope.mvpd.as_str().to_owned(),
            kind: kind.as_str(),
            outcome: if deny_code.is_some() { "deny" } else { "permit" },
            code: deny_code.unwrap_or(""),
        };
        self.decisions.get_or_create(&labels).inc();
    }

    pub fn trial_started(&self, scope: &RuleScope) {
        self.trials_started.get_or_create(&rule_labels(scope)).inc();
    }

    pub fn resource_used(&self, scope: &RuleScope) {
        self.resources_used.get_or_create(&rule_labels(scope)).inc();
    }

    pub fn reset(&self, api: &'static str, scope: &'static str, key_kind: &'static str) {
        self.resets.get_or_create(&ResetLabels { api, scope, key_kind }).inc();
    }

    pub fn registration(&self) {
        self.registrations.inc();
    }

    pub fn access_token_issued(&self) {
        self.access_tokens.inc();
    }

    pub fn auth_failure(&self, code: &'static str) {
        self.auth_failures.get_or_create(&CodeLabels { code }).inc();
    }

    pub fn request(&self, route: &str, status: u16, duration: Duration) {
        let labels = RequestLabels { route: route.to_owned(), status_class: status_class(status) };
        self.requests.get_or_create(&labels).observe(duration.as_secs_f64());
    }

    pub fn store_operation(&self, operation: &'static str, duration: Duration, error: Option<&'static str>) {
        self.store_operations.get_or_create(&OperationLabels { operation }).observe(duration.as_secs_f64());
        if let Some(error) = error {
            self.store_errors.get_or_create(&StoreErrorLabels { operation, error }).inc();
        }
    }

    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    pub fn event_sink_error(&self) {
        self.event_sink_errors.inc();
    }

    pub fn figures_flush_error(&self) {
        self.figures_flush_errors.inc();
    }

    pub fn malformed_device_info(&self) {
        self.malformed_device_info.inc();
    }
}

fn rule_labels(scope: &RuleScope) -> RuleLabels {
    RuleLabels { service_provider: scope.service_provider.as_str().to_owned(), mvpd: scope.mvpd.as_str().to_owned() }
}
