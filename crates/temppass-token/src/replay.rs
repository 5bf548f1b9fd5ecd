//! An optional replay guard: media tokens are single-use (SPEC.md §8).
//!
//! Remembers each accepted token's `jti` until its `exp` (plus skew), in
//! bounded memory. A guard that is full refuses new tokens rather than
//! forgetting old ones: forgetting would let a replay through.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::MediaTokenClaims;

/// Why a token was refused by the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("this media token was already used")]
    Replayed,
    #[error("the replay guard is full of unexpired tokens")]
    Full,
}

/// Seen `jti`s until they expire; at most `capacity` at a time.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    skew_secs: i64,
    seen: HashMap<String, i64>,
    by_expiry: BinaryHeap<Reverse<(i64, String)>>,
}

impl ReplayGuard {
    pub fn new(capacity: usize, skew_secs: i64) -> Self {
        Self { capacity, skew_secs: skew_secs.max(0), seen: HashMap::new(), by_expiry: BinaryHeap::new() }
    }

    /// Accepts a verified token once: records its `jti` until `exp + skew`.
    /// Call it after [`crate::verify_media_token`] answered `Valid`.
    pub fn check_and_record(&mut self, claims: &MediaTokenClaims, now: i64) -> Result<(), ReplayError> {
        self.forget_expired(now);
        if self.seen.contains_key(&claims.jti) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        let until = claims.exp.saturating_add(self.skew_secs);
        self.seen.insert(claims.jti.clone(), until);
        self.by_expiry.push(Reverse((until, claims.jti.clone())));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn forget_expired(&mut self, now: i64) {
        while let Some(Reverse((until, _))) = self.by_expiry.peek() {
            if *until > now {
                break;
            }
            if let Some(Reverse((_, jti))) = self.by_expiry.pop() {
                self.seen.remove(&jti);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str, exp: i64) -> MediaTokenClaims {
        MediaTokenClaims {
            iss: "i".into(),
            sp: "s".into(),
            mvpd: "m".into(),
            resource: "r".into(),
            sid: "t".into(),
            iat: exp - 420,
            exp,
            jti: jti.into(),
        }
    }

    #[test]
    fn a_token_is_accepted_once() {
        let mut guard = ReplayGuard::new(10, 30);
        assert_eq!(guard.check_and_record(&claims("a", 1000), 600), Ok(()));
        assert_eq!(guard.check_and_record(&claims("a", 1000), 601), Err(ReplayError::Replayed));
        assert_eq!(guard.check_and_record(&claims("b", 1000), 601), Ok(()));
    }

    #[test]
    fn a_jti_is_forgotten_only_after_its_expiry_plus_skew() {
        let mut guard = ReplayGuard::new(10, 30);
        assert_eq!(guard.check_and_record(&claims("a", 1000), 600), Ok(()));
        assert_eq!(guard.check_and_record(&claims("a", 1000), 1029), Err(ReplayError::Replayed));
        assert_eq!(guard.check_and_record(&claims("x", 2000), 1030), Ok(()));
        assert_eq!(guard.len(), 1, "the expired jti is gone");
    }

    #[test]
    fn a_full_guard_refuses_rather_than_forgets() {
        let mut guard = ReplayGuard::new(2, 0);
        assert_eq!(guard.check_and_record(&claims("a", 1000), 0), Ok(()));
        assert_eq!(guard.check_and_record(&claims("b", 1000), 0), Ok(()));
        assert_eq!(guard.check_and_record(&claims("c", 1000), 0), Err(ReplayError::Full));
        assert_eq!(guard.check_and_record(&claims("a", 1000), 0), Err(ReplayError::Replayed));
        assert_eq!(guard.check_and_record(&claims("c", 1000), 1000), Ok(()), "room again once a and b expired");
    }
}
