//! The rules of TempPass (SPEC.md §2) as pure functions.
//!
//! No I/O, no clock, no async runtime, no serde: every function takes the
//! current time as a [`Timestamp`] parameter, so tests pin it and step it.
//! Storage backends call these functions inside their atomic section; the
//! HTTP layer calls them to build profiles and preauthorization answers.

mod day;
mod identity;
mod ids;
mod reset;
mod rule;
mod time;
mod trial;

pub use day::{Day, DayError};
pub use identity::{IdentityError, IdentityHash};
pub use ids::{DeviceId, IdError, MvpdId, ResourceId, ServiceProviderId};
pub use reset::{DailyReset, ResetError};
pub use rule::{Rule, RuleKind, RuleScope};
pub use time::{DurationError, DurationMs, Timestamp};
pub use trial::{
    DenyReason, ProfileState, Trial, TrialId, TrialUpdate, Verdict, decide, media_token_expiry, merge, preauthorize,
    profile_state, remaining_resources,
};
