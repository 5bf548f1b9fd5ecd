//! The handlers' one way to say what happened: [`Observer`] moves the
//! metrics, queues the tracking event and counts the daily figures, so a
//! handler makes one call per decision, reset, registration or token and
//! knows nothing of Prometheus, events or figures.

use std::sync::Arc;

use temppass_core::{DeviceId, Rule, RuleKind, RuleScope, Timestamp};
use temppass_observe::{DecisionKind, Event, EventSink, EventType, Figures, Metrics, rfc3339, tracking_id};
use temppass_store::{AuthorizeOutcome, FigureCounts, Store, StoreError};

/// Metrics (when the management listener is on), events (when `[events]`
/// names a sink) and figures (always: the store keeps them).
pub struct Observer {
    metrics: Option<Arc<Metrics>>,
    events: EventSink,
    figures: Arc<Figures>,
}

impl Default for Observer {
    fn default() -> Self {
        Self::new(None, EventSink::disabled())
    }
}

/// One decision on one resource, as a handler saw it.
pub(crate) struct Decided<'a> {
    pub(crate) scope: &'a RuleScope,
    pub(crate) kind: DecisionKind,
    /// The TempPass rule; `None` for an MVPD that is not a TempPass MVPD.
    pub(crate) rule: Option<&'a Rule>,
    pub(crate) device: &'a DeviceId,
    pub(crate) identity_present: bool,
    pub(crate) resource: &'a str,
    /// The §5 code of a deny.
    pub(crate) deny_code: Option<&'static str>,
    /// What the store answered, for an authorization it decided.
    pub(crate) outcome: Option<&'a AuthorizeOutcome>,
    /// The trial's `sid`, when there is a trial.
    pub(crate) trial_ref: Option<String>,
    pub(crate) now: Timestamp,
}

impl Observer {
    pub fn new(metrics: Option<Arc<Metrics>>, events: EventSink) -> Self {
        Self { metrics, events, figures: Arc::new(Figures::default()) }
    }

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    pub fn events(&self) -> &EventSink {
        &self.events
    }

    /// The counts `serve` flushes to the store.
    pub fn figures(&self) -> &Arc<Figures> {
        &self.figures
    }

    pub(crate) fn decision(&self, decided: Decided<'_>) {
        if let Some(metrics) = &self.metrics {
            metrics.decision(decided.scope, decided.kind, decided.deny_code);
        }
        let rule = decided.rule;
        if let (Some(outcome), Some(rule)) = (decided.outcome, rule) {
            self.count_outcome(decided.scope, rule, outcome, decided.now);
        }
        if self.events.enabled() {
            self.events.emit(Event {
                service_provider: Some(decided.scope.service_provider.as_str().to_owned()),
                mvpd: Some(decided.scope.mvpd.as_str().to_owned()),
                rule: rule.map(rule_kind),
                action: Some(decided.kind.as_str()),
                resource: Some(decided.resource.to_owned()),
                code: decided.deny_code,
                tracking_id: Some(tracking_id(decided.device.as_str())),
                trial: decided.trial_ref,
                identity_present: rule.and_then(|r| r.identity_key()).map(|_| decided.identity_present),
                trial_started: decided.outcome.is_some_and(|o| o.started),
                ..Event::new(
                    EventType::Decision,
                    rfc3339(decided.now),
                    if decided.deny_code.is_some() { "deny" } else { "permit" },
                )
            });
        }
    }

    fn count_outcome(&self, scope: &RuleScope, rule: &Rule, outcome: &AuthorizeOutcome, now: Timestamp) {
        let day = rule.day_of(now);
        if outcome.decision == Err(temppass_core::DenyReason::DurationLimitExceeded) {
            self.figures.trial_ended(scope, day, outcome.trial.id);
            return;
        }
        if !outcome.started && !outcome.uses_new_resource {
            return;
        }
        let exhausted = outcome.uses_new_resource
            && rule.max_resources().is_some_and(|max| outcome.trial.used_resources.len() >= max as usize);
        let counts = FigureCounts {
            trials_started: u64::from(outcome.started),
            resources_used: u64::from(outcome.uses_new_resource),
            trials_exhausted: u64::from(exhausted),
            ..FigureCounts::default()
        };
        self.figures.add(scope, day, counts);
        if let Some(metrics) = &self.metrics {
            if outcome.started {
                metrics.trial_started(scope);
            }
            if outcome.uses_new_resource {
                metrics.resource_used(scope);
            }
        }
    }

    /// A reset API call that succeeded: `api` is `v3`, `v2.1` or `v2`.
    pub(crate) fn reset(
        &self,
        scope: &RuleScope,
        rule: &Rule,
        api: &'static str,
        one: bool,
        key_kind: &'static str,
        now: Timestamp,
    ) {
        let scope_label = if one { "one" } else { "all" };
        if let Some(metrics) = &self.metrics {
            metrics.reset(api, scope_label, key_kind);
        }
        self.figures.add(scope, rule.day_of(now), FigureCounts { resets: 1, ..FigureCounts::default() });
        self.events.emit(Event {
            service_provider: Some(scope.service_provider.as_str().to_owned()),
            mvpd: Some(scope.mvpd.as_str().to_owned()),
            rule: Some(rule_kind(rule)),
            action: Some(api),
            scope: Some(scope_label),
            key_kind: Some(key_kind),
            ..Event::new(EventType::Reset, rfc3339(now), "ok")
        });
    }

    /// A client registered with a software statement of `application`.
    pub(crate) fn registration(&self, application: &str, now: Timestamp) {
        if let Some(metrics) = &self.metrics {
            metrics.registration();
        }
        self.events.emit(Event {
            subject: Some(application.to_owned()),
            ..Event::new(EventType::Registration, rfc3339(now), "ok")
        });
    }

    /// An access token issued to a client of `application`.
    pub(crate) fn access_token(&self, application: &str, now: Timestamp) {
        if let Some(metrics) = &self.metrics {
            metrics.access_token_issued();
        }
        self.events.emit(Event {
            subject: Some(application.to_owned()),
            ..Event::new(EventType::AccessToken, rfc3339(now), "ok")
        });
    }

    /// Adds what this server counted to the store (`serve` does every
    /// second and at shutdown); on failure keeps it for the next flush.
    pub async fn flush_figures(&self, store: &dyn Store) -> Result<(), StoreError> {
        let deltas = self.figures.take();
        if deltas.is_empty() {
            return Ok(());
        }
        match store.add_figures(&deltas).await {
            Ok(()) => Ok(()),
            Err(error) => {
                if let Some(metrics) = &self.metrics {
                    metrics.figures_flush_error();
                }
                self.figures.restore(deltas);
                Err(error)
            }
        }
    }

    pub(crate) fn malformed_device_info(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.malformed_device_info();
        }
    }
}

fn rule_kind(rule: &Rule) -> &'static str {
    match rule.kind {
        RuleKind::Basic => "basic",
        RuleKind::Promotional { .. } => "promotional",
    }
}
