//! Daily figures per rule: what an operator asks of the passes ("how many
//! free previews started today, and how many ran out?"), kept by the store so
//! that every server of a shared store adds to the same rows.
//!
//! The HTTP layer counts in memory and flushes with [`crate::Store::add_figures`]
//! off the request path: no authorization writes for a figure.

use temppass_core::{Day, MvpdId, RuleScope, ServiceProviderId, TrialId};

/// The counts of one rule on one day (in the rule's time zone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FigureCounts {
    /// Trials started: first uses.
    pub trials_started: u64,
    /// Trials whose time ran out, counted once on their first deny for duration.
    pub trials_ended: u64,
    /// Promotional trials that used their last free resource.
    pub trials_exhausted: u64,
    /// Resources a promotional trial used for the first time.
    pub resources_used: u64,
    /// Resets of one key or of all (each reset API call that succeeded).
    pub resets: u64,
}

impl FigureCounts {
    pub fn add(&mut self, other: &FigureCounts) {
        self.trials_started += other.trials_started;
        self.trials_ended += other.trials_ended;
        self.trials_exhausted += other.trials_exhausted;
        self.resources_used += other.resources_used;
        self.resets += other.resets;
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// What one server counted for one rule and day since its last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureDelta {
    pub scope: RuleScope,
    pub day: Day,
    /// Added as they are, except `trials_ended`, which the store counts from `ended_trials`.
    pub counts: FigureCounts,
    /// Trials denied for duration: the store adds to `trials_ended` only those
    /// whose end it has not counted before, whichever server saw it.
    pub ended_trials: Vec<TrialId>,
}

/// One row of figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyFigures {
    pub service_provider: ServiceProviderId,
    pub mvpd: MvpdId,
    pub day: Day,
    pub counts: FigureCounts,
}

/// Which figures to read: from a day on, of one service provider; all when empty.
#[derive(Debug, Clone, Default)]
pub struct FiguresQuery {
    pub since: Option<Day>,
    pub service_provider: Option<ServiceProviderId>,
}

/// What a backend's queues and pool hold right now, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreLoad {
    /// Writes waiting for the writer (bounded by `max_queued_writes`).
    pub queued_writes: u64,
    /// Write batches committed or attempted since start-up, and the writes in them:
    /// their ratio is the mean batch size.
    pub batches: u64,
    pub batched_writes: u64,
    /// PostgreSQL: connections the pool holds, and those of them in use; 0 for SQLite.
    pub pool_connections: u64,
    pub pool_in_use: u64,
}
