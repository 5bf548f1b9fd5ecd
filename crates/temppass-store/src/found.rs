//! What a lookup's keys found, and the decisions that follow from it alone.
//!
//! Pure logic that every backend needs the same way: backends fill
//! [`FoundTrials`] from their storage and execute what it says.

use temppass_core::{AuthorizeVerdict, ResourceId, Rule, Timestamp, Trial, TrialUpdate, authorize, merge};

use crate::AuthorizeOutcome;

/// The trials a lookup's device and identity find, each already filtered by `valid_since`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundTrials {
    pub by_device: Option<Trial>,
    pub by_identity: Option<Trial>,
}

impl FoundTrials {
    /// The trial these keys stand for: the merge of both when they differ (SPEC.md §2).
    pub fn merged(self) -> Option<Trial> {
        match (self.by_device, self.by_identity) {
            (Some(a), Some(b)) if a.id != b.id => Some(merge(a, b).0),
            (a, b) => a.or(b),
        }
    }

    /// True when every key of the lookup is already bound to one and the same trial.
    pub fn fully_bound(&self, wants_identity: bool) -> bool {
        match (&self.by_device, &self.by_identity) {
            (Some(device), Some(identity)) => device.id == identity.id,
            (Some(_), None) => !wants_identity,
            _ => false,
        }
    }

    /// The answer of an authorization that changes nothing — every key bound
    /// to one trial, and no new slot needed — or `None` when it needs a write.
    /// A backend may give this answer from one committed read: an
    /// authorization that changes nothing may be ordered at that point.
    pub fn answer_without_write(
        self,
        wants_identity: bool,
        rule: &Rule,
        resource: &ResourceId,
        now: Timestamp,
    ) -> Option<AuthorizeOutcome> {
        if !self.fully_bound(wants_identity) {
            return None;
        }
        let trial = self.merged();
        match authorize(rule, trial.as_ref(), resource, now) {
            AuthorizeVerdict::Permit(TrialUpdate::Unchanged) => Some(AuthorizeOutcome { decision: Ok(()), trial }),
            AuthorizeVerdict::Deny(reason) => Some(AuthorizeOutcome { decision: Err(reason), trial }),
            AuthorizeVerdict::Permit(_) => None,
        }
    }
}
