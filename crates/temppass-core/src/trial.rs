//! Trials and the decisions made on them (SPEC.md §2).
//!
//! Every function here takes the *current* trial: the one a lookup found with
//! `valid_since = rule.valid_since(now)` (the scheduled reset), or `None`.
//! Stores call [`decide`] through `temppass_store::plan` inside their atomic
//! section; nothing here knows how trials are stored.

use crate::{DurationMs, ResourceId, Rule, RuleKind, Timestamp};

/// A backend's id for a trial; opaque to everyone else. Never reused, even
/// after the trial is reset or merged away: media tokens carry a `sid` derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrialId(pub i64);

/// One viewer's temporary access under one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub id: TrialId,
    pub started_at: Timestamp,
    pub expires_at: Timestamp,
    /// Distinct resources, in the order they were first permitted (promotional rules only).
    pub used_resources: Vec<ResourceId>,
}

/// Why a decision is a deny. These are answers, not failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// `temporary_access_duration_limit_exceeded`
    DurationLimitExceeded,
    /// `temporary_access_resources_limit_exceeded`
    ResourcesLimitExceeded,
}

/// What the backend must write for a permit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialUpdate {
    /// The trial already covers this resource.
    Unchanged,
    /// No current trial: start one with these fields (the backend assigns the id).
    Start { started_at: Timestamp, expires_at: Timestamp, used_resources: Vec<ResourceId> },
    /// A promotional trial uses a new slot for this resource.
    AddResource(ResourceId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Permit(TrialUpdate),
    Deny(DenyReason),
}

/// The state a profile reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileState<'a> {
    /// No current trial: what a trial started now would be.
    Prospective {
        not_before: Timestamp,
        not_after: Timestamp,
    },
    Active(&'a Trial),
    Denied(DenyReason),
}

/// Decides one authorization for one resource on the current trial (SPEC.md §2).
pub fn decide(rule: &Rule, trial: Option<&Trial>, resource: &ResourceId, now: Timestamp) -> Verdict {
    let Some(trial) = trial else {
        let used_resources = match rule.kind {
            RuleKind::Basic => Vec::new(),
            RuleKind::Promotional { .. } => vec![resource.clone()],
        };
        return Verdict::Permit(TrialUpdate::Start {
            started_at: now,
            expires_at: now.saturating_add(rule.ttl),
            used_resources,
        });
    };
    if now >= trial.expires_at {
        return Verdict::Deny(DenyReason::DurationLimitExceeded);
    }
    match rule.kind {
        RuleKind::Basic => Verdict::Permit(TrialUpdate::Unchanged),
        RuleKind::Promotional { max_resources, .. } => {
            if trial.used_resources.contains(resource) {
                Verdict::Permit(TrialUpdate::Unchanged)
            } else if trial.used_resources.len() < max_resources as usize {
                Verdict::Permit(TrialUpdate::AddResource(resource.clone()))
            } else {
                Verdict::Deny(DenyReason::ResourcesLimitExceeded)
            }
        }
    }
}

/// "Would these resources be permitted now?" without changing anything.
pub fn preauthorize(
    rule: &Rule,
    trial: Option<&Trial>,
    resources: &[ResourceId],
    now: Timestamp,
) -> Vec<Result<(), DenyReason>> {
    resources
        .iter()
        .map(|resource| match decide(rule, trial, resource, now) {
            Verdict::Permit(_) => Ok(()),
            Verdict::Deny(reason) => Err(reason),
        })
        .collect()
}

/// What `profiles/{mvpd}` reports for the current trial now.
pub fn profile_state<'a>(rule: &Rule, trial: Option<&'a Trial>, now: Timestamp) -> ProfileState<'a> {
    let Some(trial) = trial else {
        return ProfileState::Prospective { not_before: now, not_after: now.saturating_add(rule.ttl) };
    };
    if now >= trial.expires_at {
        return ProfileState::Denied(DenyReason::DurationLimitExceeded);
    }
    match rule.max_resources() {
        Some(max) if trial.used_resources.len() >= max as usize => {
            ProfileState::Denied(DenyReason::ResourcesLimitExceeded)
        }
        _ => ProfileState::Active(trial),
    }
}

/// Remaining slots of a promotional trial that uses `used` resources (never
/// negative: a merge may exceed the cap).
pub fn remaining_resources(max_resources: u32, used: usize) -> u32 {
    (max_resources as usize).saturating_sub(used) as u32
}

/// Merges two trials found by a device and an identity: the one that started
/// first survives (ties go to the lower id) and keeps the union of both used
/// resources; the cap is not re-applied. Returns `(survivor, absorbed)`.
pub fn merge(a: Trial, b: Trial) -> (Trial, Trial) {
    let (mut survivor, absorbed) = if (a.started_at, a.id) <= (b.started_at, b.id) { (a, b) } else { (b, a) };
    for resource in &absorbed.used_resources {
        if !survivor.used_resources.contains(resource) {
            survivor.used_resources.push(resource.clone());
        }
    }
    (survivor, absorbed)
}

/// The `exp` of a media token in whole seconds, as milliseconds: the media
/// token TTL from now, but never past the trial's end (SPEC.md §3, §8).
pub fn media_token_expiry(now: Timestamp, media_token_ttl: DurationMs, trial_expires_at: Timestamp) -> Timestamp {
    let end = now.saturating_add(media_token_ttl).min(trial_expires_at);
    Timestamp::from_millis(end.as_secs_floor() * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DailyReset;
    use proptest::prelude::*;

    fn ttl(text: &str) -> DurationMs {
        DurationMs::parse(text).expect("a valid duration")
    }

    fn res(id: &str) -> ResourceId {
        ResourceId::parse(id).expect("a valid resource id")
    }

    fn basic(ttl_text: &str) -> Rule {
        Rule { kind: RuleKind::Basic, ttl: ttl(ttl_text), reset: None }
    }

    fn promotional(max_resources: u32) -> Rule {
        Rule {
            kind: RuleKind::Promotional { max_resources, identity_key: "email".into() },
            ttl: ttl("24h"),
            reset: None,
        }
    }

    /// Applies a verdict the way a backend would.
    fn apply(trial: Option<Trial>, verdict: &Verdict) -> Option<Trial> {
        match verdict {
            Verdict::Deny(_) | Verdict::Permit(TrialUpdate::Unchanged) => trial,
            Verdict::Permit(TrialUpdate::Start { started_at, expires_at, used_resources }) => Some(Trial {
                id: TrialId(1),
                started_at: *started_at,
                expires_at: *expires_at,
                used_resources: used_resources.clone(),
            }),
            Verdict::Permit(TrialUpdate::AddResource(resource)) => trial.map(|mut t| {
                t.used_resources.push(resource.clone());
                t
            }),
        }
    }

    #[test]
    fn the_first_authorization_starts_the_clock_at_now() {
        let now = Timestamp::from_millis(1_000_000);
        let verdict = decide(&basic("10m"), None, &res("r1"), now);
        assert_eq!(
            verdict,
            Verdict::Permit(TrialUpdate::Start {
                started_at: now,
                expires_at: Timestamp::from_millis(1_000_000 + 600_000),
                used_resources: vec![],
            })
        );
    }

    #[test]
    fn a_basic_trial_is_denied_at_exactly_its_expiry_and_for_ever_after() {
        let rule = basic("10m");
        let trial = apply(None, &decide(&rule, None, &res("r"), Timestamp::from_millis(0)));
        let last_ms = Timestamp::from_millis(599_999);
        assert_eq!(decide(&rule, trial.as_ref(), &res("r"), last_ms), Verdict::Permit(TrialUpdate::Unchanged));
        for later in [600_000, 600_001, 86_400_000 * 365] {
            assert_eq!(
                decide(&rule, trial.as_ref(), &res("r"), Timestamp::from_millis(later)),
                Verdict::Deny(DenyReason::DurationLimitExceeded)
            );
        }
    }

    #[test]
    fn a_profile_before_any_authorization_is_prospective_and_moves_with_now() {
        let rule = basic("10m");
        for now in [0, 5_000, 1_700_000_000_000] {
            let now = Timestamp::from_millis(now);
            assert_eq!(
                profile_state(&rule, None, now),
                ProfileState::Prospective { not_before: now, not_after: now.saturating_add(ttl("10m")) }
            );
        }
    }

    #[test]
    fn preauthorization_with_no_trial_permits_everything_and_starts_nothing() {
        let rule = promotional(1);
        let answers = preauthorize(&rule, None, &[res("a"), res("b"), res("c")], Timestamp::from_millis(0));
        assert_eq!(answers, vec![Ok(()), Ok(()), Ok(())]);
    }

    #[test]
    fn a_promotional_trial_permits_used_resources_and_new_ones_only_while_a_slot_is_free() {
        let rule = promotional(2);
        let now = Timestamp::from_millis(0);
        let mut trial = apply(None, &decide(&rule, None, &res("a"), now));
        let verdict = decide(&rule, trial.as_ref(), &res("b"), now);
        assert_eq!(verdict, Verdict::Permit(TrialUpdate::AddResource(res("b"))));
        trial = apply(trial, &verdict);
        assert_eq!(decide(&rule, trial.as_ref(), &res("a"), now), Verdict::Permit(TrialUpdate::Unchanged));
        assert_eq!(decide(&rule, trial.as_ref(), &res("c"), now), Verdict::Deny(DenyReason::ResourcesLimitExceeded));
        assert_eq!(profile_state(&rule, trial.as_ref(), now), ProfileState::Denied(DenyReason::ResourcesLimitExceeded));
        assert_eq!(
            preauthorize(&rule, trial.as_ref(), &[res("a"), res("c")], now),
            vec![Ok(()), Err(DenyReason::ResourcesLimitExceeded)]
        );
    }

    #[test]
    fn a_trial_started_before_the_scheduled_reset_is_not_current_after_it() {
        let rule = Rule {
            kind: RuleKind::Basic,
            ttl: ttl("10m"),
            reset: Some(DailyReset::parse("00:00", "UTC").expect("a valid daily reset")),
        };
        let day_ms = 86_400_000;
        let yesterday_evening = Timestamp::from_millis(day_ms - 60_000);
        let trial = apply(None, &decide(&rule, None, &res("r"), yesterday_evening)).expect("a started trial");
        assert!(trial.started_at >= rule.valid_since(yesterday_evening), "current on the day it started");
        assert!(
            trial.started_at < rule.valid_since(Timestamp::from_millis(day_ms + 1)),
            "still current after midnight"
        );
    }

    #[test]
    fn the_older_trial_survives_a_merge_with_the_union_of_resources() {
        let older = Trial {
            id: TrialId(7),
            started_at: Timestamp::from_millis(10),
            expires_at: Timestamp::from_millis(100),
            used_resources: vec![res("a"), res("b")],
        };
        let newer = Trial {
            id: TrialId(3),
            started_at: Timestamp::from_millis(20),
            expires_at: Timestamp::from_millis(110),
            used_resources: vec![res("b"), res("c")],
        };
        let (survivor, absorbed) = merge(newer.clone(), older.clone());
        assert_eq!(survivor.id, TrialId(7));
        assert_eq!(survivor.expires_at, older.expires_at);
        assert_eq!(survivor.used_resources, vec![res("a"), res("b"), res("c")]);
        assert_eq!(absorbed.id, TrialId(3));
    }

    #[test]
    fn a_media_token_never_outlives_its_trial() {
        let now = Timestamp::from_millis(1_000_500);
        let seven_minutes = ttl("7m");
        assert_eq!(
            media_token_expiry(now, seven_minutes, Timestamp::from_millis(10_000_000)),
            Timestamp::from_millis(1_420_000)
        );
        assert_eq!(
            media_token_expiry(now, seven_minutes, Timestamp::from_millis(1_100_999)),
            Timestamp::from_millis(1_100_000)
        );
    }

    proptest! {
        #[test]
        fn a_basic_trial_is_permitted_exactly_while_now_is_before_its_expiry(
            start in 0i64..4_000_000_000_000,
            ttl_ms in 1i64..86_400_000 * 30,
            offset in 0i64..86_400_000 * 60,
        ) {
            let rule = Rule { kind: RuleKind::Basic, ttl: DurationMs::from_millis(ttl_ms).map_err(|e| TestCaseError::fail(e.to_string()))?, reset: None };
            let started = Timestamp::from_millis(start);
            let trial = apply(None, &decide(&rule, None, &res("r"), started));
            prop_assert_eq!(trial.as_ref().map(|t| t.expires_at.as_millis() - t.started_at.as_millis()), Some(ttl_ms));
            let later = Timestamp::from_millis(start + offset);
            let verdict = decide(&rule, trial.as_ref(), &res("r"), later);
            if offset < ttl_ms {
                prop_assert_eq!(verdict, Verdict::Permit(TrialUpdate::Unchanged));
            } else {
                prop_assert_eq!(verdict, Verdict::Deny(DenyReason::DurationLimitExceeded));
            }
        }

        #[test]
        fn a_promotional_trial_never_holds_more_than_max_distinct_resources(
            max in 1u32..6,
            requests in proptest::collection::vec(0u8..12, 1..60),
        ) {
            let rule = promotional(max);
            let now = Timestamp::from_millis(0);
            let mut trial = None;
            for r in requests {
                let resource = res(&format!("r{r}"));
                let verdict = decide(&rule, trial.as_ref(), &resource, now);
                let permitted = matches!(verdict, Verdict::Permit(_));
                trial = apply(trial, &verdict);
                let used = trial.as_ref().map(|t| t.used_resources.clone()).unwrap_or_default();
                prop_assert!(used.len() <= max as usize);
                prop_assert_eq!(permitted, used.contains(&resource));
            }
        }

        #[test]
        fn media_token_expiry_is_whole_seconds_and_within_both_limits(
            now in 0i64..4_000_000_000_000,
            media_ttl in 1i64..3_600_000,
            remaining in 0i64..86_400_000,
        ) {
            let now = Timestamp::from_millis(now);
            let ttl = DurationMs::from_millis(media_ttl).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expires = Timestamp::from_millis(now.as_millis() + remaining);
            let exp = media_token_expiry(now, ttl, expires);
            prop_assert_eq!(exp.as_millis() % 1000, 0);
            prop_assert!(exp <= expires);
            prop_assert!(exp <= now.saturating_add(ttl));
            prop_assert!(exp.as_millis() > now.saturating_add(ttl).min(expires).as_millis() - 1000);
        }
    }
}
