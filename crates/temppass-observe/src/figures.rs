//! Daily figures waiting for their flush: one server's counts per rule and
//! day since the last flush, kept in memory so that no request writes for a
//! figure. `serve` calls [`Figures::take`] and `Store::add_figures` every
//! second and at shutdown; a failed flush puts the counts back.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use temppass_core::{Day, RuleScope, TrialId};
use temppass_store::{FigureCounts, FigureDelta};

/// Ended trials remembered per rule and day before the flush; past it a
/// trial's end is still counted when it is denied again.
const MAX_ENDED_PER_FLUSH: usize = 100_000;

#[derive(Debug, Default)]
struct Pending {
    counts: FigureCounts,
    ended_trials: HashSet<TrialId>,
}

/// What one server counted since its last flush.
#[derive(Debug, Default)]
pub struct Figures {
    pending: Mutex<HashMap<(RuleScope, Day), Pending>>,
}

impl Figures {
    fn pending(&self) -> MutexGuard<'_, HashMap<(RuleScope, Day), Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, scope: &RuleScope, day: Day, update: impl FnOnce(&mut Pending)) {
        let mut pending = self.pending();
        match pending.get_mut(&(scope.clone(), day)) {
            Some(entry) => update(entry),
            None => update(pending.entry((scope.clone(), day)).or_default()),
        }
    }

    /// Adds `counts` to the rule's day (not `trials_ended`: see [`Figures::trial_ended`]).
    pub fn add(&self, scope: &RuleScope, day: Day, counts: FigureCounts) {
        self.count(scope, day, |pending| pending.counts.add(&FigureCounts { trials_ended: 0, ..counts }));
    }

    /// A trial was denied for duration: the store counts its end once, on the day first reported.
    pub fn trial_ended(&self, scope: &RuleScope, day: Day, trial: TrialId) {
        self.count(scope, day, |pending| {
            if pending.ended_trials.len() < MAX_ENDED_PER_FLUSH {
                pending.ended_trials.insert(trial);
            }
        });
    }

    /// Everything counted since the last take, emptied.
    pub fn take(&self) -> Vec<FigureDelta> {
        let mut deltas: Vec<FigureDelta> = self
            .pending()
            .drain()
            .map(|((scope, day), pending)| {
                let mut ended_trials: Vec<TrialId> = pending.ended_trials.into_iter().collect();
                ended_trials.sort_unstable();
                FigureDelta { scope, day, counts: pending.counts, ended_trials }
            })
            .collect();
        deltas.sort_by(|a, b| {
            (a.scope.service_provider.as_str(), a.scope.mvpd.as_str(), a.day).cmp(&(
                b.scope.service_provider.as_str(),
                b.scope.mvpd.as_str(),
                b.day,
            ))
        });
        deltas
    }

    /// Puts back what a failed flush took, so the next flush carries it.
    pub fn restore(&self, deltas: Vec<FigureDelta>) {
        for delta in deltas {
            let counts = delta.counts;
            self.add(&delta.scope, delta.day, counts);
            for trial in delta.ended_trials {
                self.trial_ended(&delta.scope, delta.day, trial);
            }
        }
    }
}
