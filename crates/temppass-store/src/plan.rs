//! The one authorization plan: from what a lookup's keys found to what a
//! store must write (SPEC.md §2).
//!
//! Every backend reads the bindings of a lookup's keys into [`Found`], calls
//! [`plan`] inside its atomic section, and executes the [`Plan`] it returns:
//! the merge, the decision, the trial to start or keep, the keys to (re)bind
//! and the stale trials to delete. No backend holds rule or merge logic of
//! its own, so the SQLite and the PostgreSQL store cannot disagree on a
//! decision, and these rules are tested here without a database.

use temppass_core::{DenyReason, ResourceId, Timestamp, Trial, TrialId, TrialUpdate, Verdict, decide, merge};

use crate::{Authorization, AuthorizeOutcome, StoreError};

/// Which key of a lookup a binding belongs to. Its code is `bindings.key_kind`
/// in both stores and the kind in the filter of bound keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    Device = 0,
    Identity = 1,
}

impl KeyKind {
    /// Every kind of key. A reset of all devices or of all identities of an
    /// MVPD supersedes the generations of all of them (SPEC.md §2): it ends
    /// every trial of the MVPD, whichever keys found it.
    pub const ALL: [KeyKind; 2] = [KeyKind::Device, KeyKind::Identity];

    /// The code stored in `bindings.key_kind`.
    pub const fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Device),
            1 => Some(Self::Identity),
            _ => None,
        }
    }
}

/// One key's binding as stored, whatever its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The trial the binding points to.
    pub trial_id: TrialId,
    /// That trial, when the binding counts: of the current generation, and
    /// the trial started at or after the lookup's `valid_since`. `None` for a
    /// binding a reset or a scheduled reset left behind.
    pub current: Option<Trial>,
}

/// The bindings a lookup's device and identity have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub device: Option<Bound>,
    pub identity: Option<Bound>,
}

impl Found {
    pub fn bound(&self, kind: KeyKind) -> Option<&Bound> {
        match kind {
            KeyKind::Device => self.device.as_ref(),
            KeyKind::Identity => self.identity.as_ref(),
        }
    }

    pub fn set(&mut self, kind: KeyKind, bound: Bound) {
        match kind {
            KeyKind::Device => self.device = Some(bound),
            KeyKind::Identity => self.identity = Some(bound),
        }
    }

    /// The trial a key finds: its binding's, when that counts.
    pub fn current(&self, kind: KeyKind) -> Option<&Trial> {
        self.bound(kind).and_then(|bound| bound.current.as_ref())
    }

    /// The ids of the trials the bindings point to, counting or not.
    pub fn referenced(&self) -> impl Iterator<Item = TrialId> + '_ {
        [&self.device, &self.identity].into_iter().flatten().map(|bound| bound.trial_id)
    }

    /// The trial these keys stand for: the merge of both when they find two
    /// (SPEC.md §2); what `find_trial` answers.
    pub fn trial(&self) -> Option<Trial> {
        match (self.current(KeyKind::Device), self.current(KeyKind::Identity)) {
            (Some(a), Some(b)) if a.id != b.id => Some(merge(a.clone(), b.clone()).0),
            (a, b) => a.or(b).cloned(),
        }
    }
}

/// A trial that an authorization starts; the store gives it its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrial {
    pub started_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_resources: Vec<ResourceId>,
}

impl NewTrial {
    pub fn with_id(self, id: TrialId) -> Trial {
        Trial { id, started_at: self.started_at, expires_at: self.expires_at, used_resources: self.used_resources }
    }
}

/// The trial an authorization leaves its keys bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedTrial {
    /// An existing trial, as it stands after the authorization.
    Keep(Trial),
    /// No trial counted: start this one, bound to every key of the lookup.
    Start(NewTrial),
}

/// Two trials found by one lookup become one (SPEC.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// Keeps the union of both used resources (written with [`Plan::resources_changed`]).
    pub survivor: TrialId,
    /// Every binding of it moves to the survivor; then it is deleted.
    pub absorbed: TrialId,
}

/// What one authorization decides and writes, in the order a store writes it:
/// the merge, the kept trial's resources or the new trial, the bindings, the
/// stale trials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub decision: Result<(), DenyReason>,
    pub trial: PlannedTrial,
    pub merge: Option<Merge>,
    /// The kept trial's used resources changed (a merge or a new slot): write them.
    pub resources_changed: bool,
    /// The authorized resource takes a slot it did not have (a promotional
    /// trial's first resource or a new one): a figure, not a write of its own.
    pub uses_new_resource: bool,
    /// The keys to bind to the trial with their current generation (an
    /// upsert): those that do not already find it. For [`PlannedTrial::Start`], every key.
    pub bind: Vec<KeyKind>,
    /// Trials the keys of `bind` pointed to before (left behind by a reset or
    /// a scheduled reset): each is deleted once no binding points to it —
    /// lazy, O(1) reclaiming on the path that made it garbage.
    pub delete_if_unbound: Vec<TrialId>,
}

/// Plans the authorization `request`, whose lookup's keys have the bindings
/// `found` (a lookup with an identity binds that key too).
pub fn plan(found: &Found, request: Authorization<'_>) -> Result<Plan, StoreError> {
    let Authorization { lookup, rule, resource, now } = request;
    let with_identity = lookup.identity.is_some();
    let (mut trial, merged) = match (found.current(KeyKind::Device), found.current(KeyKind::Identity)) {
        (Some(a), Some(b)) if a.id != b.id => {
            let (survivor, absorbed) = merge(a.clone(), b.clone());
            let merged = Merge { survivor: survivor.id, absorbed: absorbed.id };
            (Some(survivor), Some(merged))
        }
        (a, b) => (a.or(b).cloned(), None),
    };
    let mut resources_changed = merged.is_some();
    let mut uses_new_resource = false;
    let (decision, planned) = match (decide(rule, trial.as_ref(), resource, now), trial.take()) {
        (Verdict::Permit(TrialUpdate::Start { started_at, expires_at, used_resources }), _) => {
            uses_new_resource = !used_resources.is_empty();
            (Ok(()), PlannedTrial::Start(NewTrial { started_at, expires_at, used_resources }))
        }
        (Verdict::Permit(TrialUpdate::AddResource(resource)), Some(mut kept)) => {
            kept.used_resources.push(resource);
            resources_changed = true;
            uses_new_resource = true;
            (Ok(()), PlannedTrial::Keep(kept))
        }
        (Verdict::Permit(_), Some(kept)) => (Ok(()), PlannedTrial::Keep(kept)),
        (Verdict::Deny(reason), Some(kept)) => (Err(reason), PlannedTrial::Keep(kept)),
        // `decide` starts a trial whenever none counts: anything else is a bug,
        // answered as a failure, never as a permit with nothing recorded.
        (Verdict::Permit(_) | Verdict::Deny(_), None) => {
            return Err(StoreError::Internal("a decision without a trial that does not start one".into()));
        }
    };
    let kept_id = match &planned {
        PlannedTrial::Keep(kept) => Some(kept.id),
        PlannedTrial::Start(_) => None,
    };
    let keys = [KeyKind::Device].into_iter().chain(with_identity.then_some(KeyKind::Identity));
    let bind: Vec<KeyKind> =
        keys.filter(|&kind| kept_id.is_none() || found.current(kind).map(|t| t.id) != kept_id).collect();
    let mut delete_if_unbound: Vec<TrialId> = bind
        .iter()
        .filter_map(|&kind| found.bound(kind).map(|bound| bound.trial_id))
        .filter(|&old| Some(old) != kept_id && merged.is_none_or(|merge| merge.absorbed != old))
        .collect();
    delete_if_unbound.sort_unstable();
    delete_if_unbound.dedup();
    Ok(Plan { decision, trial: planned, merge: merged, resources_changed, uses_new_resource, bind, delete_if_unbound })
}

impl Plan {
    /// True when the authorization changes nothing (every key already finds
    /// the trial, no slot is used): a store may then answer it from one
    /// committed read, ordered at that read.
    pub fn writes_nothing(&self) -> bool {
        matches!(self.trial, PlannedTrial::Keep(_))
            && self.merge.is_none()
            && !self.resources_changed
            && self.bind.is_empty()
    }

    /// The answer once the plan is written; `started` is the id the store
    /// gave the trial it started, if the plan started one.
    pub fn outcome(self, started: Option<TrialId>) -> Result<AuthorizeOutcome, StoreError> {
        let (trial, started) = match (self.trial, started) {
            (PlannedTrial::Keep(kept), _) => (kept, false),
            (PlannedTrial::Start(new), Some(id)) => (new.with_id(id), true),
            (PlannedTrial::Start(_), None) => {
                return Err(StoreError::Internal("a trial was started without an id".into()));
            }
        };
        Ok(AuthorizeOutcome { decision: self.decision, trial, started, uses_new_resource: self.uses_new_resource })
    }
}

/// What a reset of one key finds: the trial its binding points to, and
/// whether the binding counts (of the current generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetTarget {
    pub trial_id: TrialId,
    pub counts: bool,
}

/// What a reset of one device or one identity writes (SPEC.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPlan {
    /// The key has no binding: nothing to do.
    Nothing,
    /// The key finds this trial: it ends, with every binding of it, so every
    /// device and identity of the trial starts afresh. (Removing only the
    /// named binding was undone by the viewer's next request naming the
    /// other key, which re-attached the key to the old trial.)
    EndTrial(TrialId),
    /// The key's binding counts no more (an "all" reset superseded it): the
    /// key finds no trial, so none ends; the binding goes, and its trial once
    /// no binding points to it.
    DropStale(TrialId),
}

/// Plans the reset of one key whose binding is `target`.
pub fn plan_reset(target: Option<ResetTarget>) -> ResetPlan {
    match target {
        None => ResetPlan::Nothing,
        Some(ResetTarget { trial_id, counts: true }) => ResetPlan::EndTrial(trial_id),
        Some(ResetTarget { trial_id, counts: false }) => ResetPlan::DropStale(trial_id),
    }
}

#[cfg(test)]
mod tests {
    use temppass_core::{DeviceId, DurationMs, IdentityHash, MvpdId, Rule, RuleKind, RuleScope, ServiceProviderId};

    use super::*;
    use crate::TrialLookup;

    /// [`plan`] for a lookup of one device, and of one identity `with_identity`.
    fn planned(found: &Found, with_identity: bool, rule: &Rule, resource: &ResourceId, now: Timestamp) -> Plan {
        let scope = RuleScope {
            service_provider: ServiceProviderId::parse("REF30").expect("a valid service provider id"),
            mvpd: MvpdId::parse("flexibleTempPass").expect("a valid mvpd id"),
        };
        let device = DeviceId::parse("living-room").expect("a valid device id");
        let identity = IdentityHash::from_value("viewer@example.com").expect("a valid identity");
        let lookup = TrialLookup::new(&scope, &device, with_identity.then_some(&identity), rule, now);
        plan(found, Authorization::new(lookup, rule, resource, now)).expect("a plan")
    }

    const NOW: Timestamp = Timestamp::from_millis(1_000_000);

    fn res(id: &str) -> ResourceId {
        ResourceId::parse(id).expect("a valid resource id")
    }

    fn promotional(max_resources: u32) -> Rule {
        Rule {
            kind: RuleKind::Promotional { max_resources, identity_key: "email".into() },
            ttl: DurationMs::parse("4h").expect("a valid duration"),
            reset: None,
        }
    }

    fn basic() -> Rule {
        Rule { kind: RuleKind::Basic, ttl: DurationMs::parse("10m").expect("a valid duration"), reset: None }
    }

    fn trial(id: i64, started_ms: i64, used: &[&str]) -> Trial {
        Trial {
            id: TrialId(id),
            started_at: Timestamp::from_millis(started_ms),
            expires_at: Timestamp::from_millis(started_ms + 4 * 3_600_000),
            used_resources: used.iter().map(|r| res(r)).collect(),
        }
    }

    fn counting(trial: &Trial) -> Option<Bound> {
        Some(Bound { trial_id: trial.id, current: Some(trial.clone()) })
    }

    /// A binding a reset left behind: it points to a trial that no longer counts.
    fn stale(id: i64) -> Option<Bound> {
        Some(Bound { trial_id: TrialId(id), current: None })
    }

    fn kept(plan: &Plan) -> &Trial {
        match &plan.trial {
            PlannedTrial::Keep(trial) => trial,
            PlannedTrial::Start(new) => panic!("a trial was started: {new:?}"),
        }
    }

    #[test]
    fn new_identity_and_new_device_start_one_trial_bound_to_both() {
        let plan = planned(&Found::default(), true, &promotional(3), &res("a"), NOW);
        let started = NewTrial {
            started_at: NOW,
            expires_at: NOW.saturating_add(promotional(3).ttl),
            used_resources: vec![res("a")],
        };
        assert_eq!(plan.trial, PlannedTrial::Start(started));
        assert_eq!(plan.decision, Ok(()));
        assert_eq!(plan.bind, vec![KeyKind::Device, KeyKind::Identity]);
        assert_eq!((plan.merge, plan.resources_changed, plan.delete_if_unbound.len()), (None, false, 0));
        assert!(!plan.writes_nothing());
    }

    #[test]
    fn a_known_identity_on_a_new_device_continues_the_identitys_trial_and_binds_the_device() {
        let found = Found { device: None, identity: counting(&trial(7, 0, &["a"])) };
        let plan = planned(&found, true, &promotional(3), &res("a"), NOW);
        assert_eq!(kept(&plan).id, TrialId(7));
        assert_eq!((plan.bind.as_slice(), plan.resources_changed), ([KeyKind::Device].as_slice(), false));
    }

    #[test]
    fn a_new_identity_on_a_known_device_continues_the_devices_trial_and_binds_the_identity() {
        let found = Found { device: counting(&trial(7, 0, &["a"])), identity: None };
        let plan = planned(&found, true, &promotional(3), &res("b"), NOW);
        assert_eq!(kept(&plan).used_resources, vec![res("a"), res("b")]);
        assert_eq!((plan.bind.as_slice(), plan.resources_changed), ([KeyKind::Identity].as_slice(), true));
    }

    #[test]
    fn both_keys_on_one_trial_and_a_used_resource_write_nothing() {
        let same = trial(7, 0, &["a"]);
        let found = Found { device: counting(&same), identity: counting(&same) };
        let plan = planned(&found, true, &promotional(3), &res("a"), NOW);
        assert_eq!(plan.decision, Ok(()));
        assert!(plan.writes_nothing());
        assert_eq!(plan.outcome(None).expect("an outcome").trial, same);
    }

    #[test]
    fn two_trials_merge_into_the_older_with_the_union_and_the_cap_is_not_reapplied() {
        let older = trial(9, 10, &["a", "b"]);
        let newer = trial(3, 20, &["b", "c"]);
        let found = Found { device: counting(&newer), identity: counting(&older) };
        let plan = planned(&found, true, &promotional(2), &res("a"), NOW);
        assert_eq!(plan.merge, Some(Merge { survivor: TrialId(9), absorbed: TrialId(3) }));
        assert_eq!(kept(&plan).used_resources, vec![res("a"), res("b"), res("c")], "the union, over the cap of 2");
        assert_eq!(plan.decision, Ok(()), "a used resource is permitted again");
        assert!(plan.resources_changed);
        assert_eq!(plan.bind, vec![KeyKind::Device], "the device pointed to the absorbed trial");
        assert!(plan.delete_if_unbound.is_empty(), "the absorbed trial is deleted by the merge");
    }

    #[test]
    fn a_merged_trial_over_its_cap_denies_a_new_resource() {
        let found = Found { device: counting(&trial(3, 20, &["b", "c"])), identity: counting(&trial(9, 10, &["a"])) };
        let plan = planned(&found, true, &promotional(3), &res("d"), NOW);
        assert_eq!(plan.decision, Err(DenyReason::ResourcesLimitExceeded));
        assert!(plan.merge.is_some() && plan.resources_changed, "the merge is written even on a deny");
    }

    #[test]
    fn a_new_resource_is_permitted_only_while_a_slot_is_free() {
        let found = Found { device: counting(&trial(7, 0, &["a", "b"])), identity: None };
        let free = planned(&found, false, &promotional(3), &res("c"), NOW);
        assert_eq!((free.decision, free.resources_changed), (Ok(()), true));
        let full = planned(&found, false, &promotional(2), &res("c"), NOW);
        assert_eq!(full.decision, Err(DenyReason::ResourcesLimitExceeded));
        assert!(full.writes_nothing(), "a deny on a bound trial changes nothing");
    }

    #[test]
    fn an_expired_trial_denies_and_still_binds_a_new_key_to_it() {
        let ended = trial(7, 0, &[]);
        let after = Timestamp::from_millis(4 * 3_600_000);
        let plan =
            planned(&Found { device: counting(&ended), identity: None }, true, &promotional(3), &res("a"), after);
        assert_eq!(plan.decision, Err(DenyReason::DurationLimitExceeded));
        assert_eq!(plan.bind, vec![KeyKind::Identity], "the identity now finds the ended trial too");
    }

    #[test]
    fn a_key_left_behind_by_a_reset_starts_afresh_and_its_old_trial_goes_once_unbound() {
        let plan = planned(&Found { device: stale(4), identity: None }, false, &basic(), &res("a"), NOW);
        assert!(matches!(plan.trial, PlannedTrial::Start(_)));
        assert_eq!(plan.bind, vec![KeyKind::Device]);
        assert_eq!(plan.delete_if_unbound, vec![TrialId(4)]);
        let started = plan.outcome(Some(TrialId(11))).expect("an outcome").trial;
        assert_eq!((started.id, started.started_at, started.used_resources.len()), (TrialId(11), NOW, 0));
    }

    #[test]
    fn a_stale_device_binding_joins_the_identitys_trial_and_its_old_trial_goes() {
        let found = Found { device: stale(4), identity: counting(&trial(7, 0, &["a"])) };
        let plan = planned(&found, true, &promotional(3), &res("a"), NOW);
        assert_eq!((kept(&plan).id, plan.bind.as_slice()), (TrialId(7), [KeyKind::Device].as_slice()));
        assert_eq!(plan.delete_if_unbound, vec![TrialId(4)]);
    }

    #[test]
    fn a_lookup_without_identity_never_binds_one() {
        let found = Found { device: counting(&trial(7, 0, &[])), identity: None };
        assert!(planned(&found, false, &basic(), &res("a"), NOW).writes_nothing());
        assert!(planned(&Found::default(), false, &basic(), &res("a"), NOW).bind == vec![KeyKind::Device]);
    }

    #[test]
    fn the_trial_found_is_the_merge_a_plan_would_make() {
        let (older, newer) = (trial(9, 10, &["a"]), trial(3, 20, &["b"]));
        let found = Found { device: counting(&newer), identity: counting(&older) };
        assert_eq!(found.trial().map(|t| (t.id, t.used_resources.len())), Some((TrialId(9), 2)));
        assert_eq!(Found { device: stale(4), identity: None }.trial(), None, "a stale binding finds nothing");
    }

    #[test]
    fn a_started_plan_without_an_id_is_an_error_not_a_panic() {
        let plan = planned(&Found::default(), false, &basic(), &res("a"), NOW);
        assert!(matches!(plan.outcome(None), Err(StoreError::Internal(_))));
    }

    #[test]
    fn resetting_a_key_ends_the_whole_trial_it_finds() {
        let target = ResetTarget { trial_id: TrialId(7), counts: true };
        assert_eq!(plan_reset(Some(target)), ResetPlan::EndTrial(TrialId(7)));
    }

    #[test]
    fn resetting_a_key_left_behind_by_a_reset_all_only_drops_its_binding() {
        let target = ResetTarget { trial_id: TrialId(7), counts: false };
        assert_eq!(plan_reset(Some(target)), ResetPlan::DropStale(TrialId(7)));
        assert_eq!(plan_reset(None), ResetPlan::Nothing);
    }

    #[test]
    fn a_reset_of_all_keys_of_either_kind_supersedes_both_kinds() {
        assert_eq!(KeyKind::ALL, [KeyKind::Device, KeyKind::Identity]);
    }

    #[test]
    fn key_kind_codes_round_trip() {
        for kind in [KeyKind::Device, KeyKind::Identity] {
            assert_eq!(KeyKind::from_code(i64::from(kind.code())), Some(kind));
        }
        assert_eq!(KeyKind::from_code(2), None);
    }
}
