//! A rule: the TempPass configuration of one TempPass MVPD (SPEC.md §1).

use crate::{DailyReset, Day, DurationMs, MvpdId, ServiceProviderId, Timestamp};

/// Which trials a rule governs: one `(service provider, mvpd)` pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleScope {
    pub service_provider: ServiceProviderId,
    pub mvpd: MvpdId,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    Basic,
    Promotional {
        /// At least 1; enforced where the configuration is read.
        max_resources: u32,
        identity_key: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub kind: RuleKind,
    pub ttl: DurationMs,
    pub reset: Option<DailyReset>,
}

impl Rule {
    /// Trials that started before this instant count as absent (the scheduled reset).
    pub fn valid_since(&self, now: Timestamp) -> Timestamp {
        match &self.reset {
            Some(reset) => reset.most_recent_instant(now),
            None => Timestamp::from_millis(i64::MIN),
        }
    }

    /// The day `now` falls on for this rule's figures: in the time zone of its
    /// daily reset, or in UTC when it has none.
    pub fn day_of(&self, now: Timestamp) -> Day {
        match &self.reset {
            Some(reset) => reset.day_of(now),
            None => Day::of(now, &jiff::tz::TimeZone::UTC),
        }
    }

    pub fn max_resources(&self) -> Option<u32> {
        match self.kind {
            RuleKind::Basic => None,
            RuleKind::Promotional { max_resources, .. } => Some(max_resources),
        }
    }

    pub fn identity_key(&self) -> Option<&str> {
        match &self.kind {
            RuleKind::Basic => None,
            RuleKind::Promotional { identity_key, .. } => Some(identity_key),
        }
    }
}
