//! A cache of a server's key set that refetches when a token names a key it has not seen.
//!
//! The fetching itself is a parameter (`fetch`), so the policy is testable
//! without a network and usable from sync or async code alike; `client.rs`
//! (feature `client`) plugs in an HTTPS fetcher.

use crate::{Jwks, Verdict, VerifyOptions, token_kid, verify_media_token};

/// How long a key set is trusted before it is fetched again, and how often an
/// unknown `kid` may trigger a refetch (so a flood of forged kids cannot turn
/// into a flood of requests to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub max_age_secs: i64,
    pub min_refetch_interval_secs: i64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self { max_age_secs: 3600, min_refetch_interval_secs: 60 }
    }
}

/// The last key set fetched, when it was fetched, and when a fetch was last tried.
#[derive(Debug, Clone, Default)]
pub struct JwksCache {
    policy: CachePolicy,
    jwks: Option<Jwks>,
    fetched_at: i64,
    attempted_at: i64,
}

impl JwksCache {
    pub fn new(policy: CachePolicy) -> Self {
        Self { policy, jwks: None, fetched_at: i64::MIN, attempted_at: i64::MIN }
    }

    /// The key set to verify `token` with at `now` (epoch seconds): fetched
    /// when there is none; refetched when it is older than `max_age_secs` or
    /// the token's `kid` is not in it — but at most once per
    /// `min_refetch_interval_secs`, successful or not, so neither forged kids
    /// nor a failing server turn into a flood of requests. A failed refetch
    /// keeps the previous set; a failed first fetch is reported.
    pub fn key_set<E>(&mut self, token: &str, now: i64, fetch: impl FnOnce() -> Result<Jwks, E>) -> Result<&Jwks, E> {
        let refetch_due = now.saturating_sub(self.attempted_at) >= self.policy.min_refetch_interval_secs;
        let wanted = match &self.jwks {
            None => true,
            Some(jwks) => {
                let stale = now.saturating_sub(self.fetched_at) >= self.policy.max_age_secs;
                let unknown_kid = token_kid(token).is_some_and(|kid| !jwks.keys.iter().any(|key| key.kid == kid));
                refetch_due && (stale || unknown_kid)
            }
        };
        if wanted {
            self.attempted_at = now;
            match fetch() {
                Ok(jwks) => {
                    self.jwks = Some(jwks);
                    self.fetched_at = now;
                }
                Err(error) if self.jwks.is_none() => return Err(error),
                Err(_) => {}
            }
        }
        // Always `Some` here: a first fetch that failed returned above.
        Ok(self.jwks.get_or_insert_with(Jwks::default))
    }

    /// Verifies a media token with the cached (or freshly fetched) key set.
    pub fn verify<E>(
        &mut self,
        token: &str,
        options: &VerifyOptions<'_>,
        fetch: impl FnOnce() -> Result<Jwks, E>,
    ) -> Result<Verdict, E> {
        let jwks = self.key_set(token, options.now, fetch)?;
        Ok(verify_media_token(token, jwks, options))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::{MediaTokenClaims, SigningKey, issue_media_token};

    const NOW: i64 = 1_700_000_000;

    fn token_by(key: &SigningKey) -> String {
        issue_media_token(
            key,
            &MediaTokenClaims {
                iss: "https://temppass.test".into(),
                sp: "REF30".into(),
                mvpd: "TempPass".into(),
                resource: "res".into(),
                sid: "s".into(),
                iat: NOW,
                exp: NOW + 420,
                jti: "j".into(),
            },
        )
    }

    fn set(keys: &[&SigningKey]) -> Jwks {
        Jwks { keys: keys.iter().map(|k| k.public_jwk()).collect() }
    }

    #[test]
    fn the_first_verification_fetches_and_later_ones_use_the_cache() {
        let key = SigningKey::from_seed([1; 32]);
        let fetches = Cell::new(0);
        let fetch = || -> Result<Jwks, ()> {
            fetches.set(fetches.get() + 1);
            Ok(set(&[&key]))
        };
        let mut cache = JwksCache::new(CachePolicy::default());
        for offset in 0..10 {
            let verdict = cache.verify(&token_by(&key), &VerifyOptions::new(NOW + offset), fetch);
            assert!(matches!(verdict, Ok(Verdict::Valid(_))), "{verdict:?}");
        }
        assert_eq!(fetches.get(), 1);
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let old = SigningKey::from_seed([1; 32]);
        let new = SigningKey::from_seed([2; 32]);
        let fetches = Cell::new(0);
        let served = Cell::new(false);
        let fetch = || -> Result<Jwks, ()> {
            fetches.set(fetches.get() + 1);
            Ok(if served.get() { set(&[&new, &old]) } else { set(&[&old]) })
        };
        let mut cache = JwksCache::new(CachePolicy { max_age_secs: 3600, min_refetch_interval_secs: 60 });
        assert!(matches!(cache.verify(&token_by(&old), &VerifyOptions::new(NOW), fetch), Ok(Verdict::Valid(_))));
        // The server rotated, but within the interval a new kid does not refetch.
        served.set(true);
        let early = cache.verify(&token_by(&new), &VerifyOptions::new(NOW + 10), fetch);
        assert_eq!(early, Ok(Verdict::InvalidSignature));
        assert_eq!(fetches.get(), 1);
        let later = cache.verify(&token_by(&new), &VerifyOptions::new(NOW + 60), fetch);
        assert!(matches!(later, Ok(Verdict::Valid(_))), "{later:?}");
        assert_eq!(fetches.get(), 2);
        // A forged kid after that costs at most one fetch per interval.
        let forged = SigningKey::from_seed([3; 32]);
        for offset in 61..100 {
            let verdict = cache.verify(&token_by(&forged), &VerifyOptions::new(NOW + offset), fetch);
            assert_eq!(verdict, Ok(Verdict::InvalidSignature));
        }
        assert_eq!(fetches.get(), 2);
    }

    #[test]
    fn a_failed_refetch_keeps_the_keys_it_had_and_a_first_failure_is_reported() {
        let key = SigningKey::from_seed([1; 32]);
        let mut cache = JwksCache::new(CachePolicy { max_age_secs: 100, min_refetch_interval_secs: 10 });
        assert_eq!(cache.verify(&token_by(&key), &VerifyOptions::new(NOW), || Err::<Jwks, _>("down")), Err("down"));
        assert!(matches!(
            cache.verify(&token_by(&key), &VerifyOptions::new(NOW), || Ok::<_, &str>(set(&[&key]))),
            Ok(Verdict::Valid(_))
        ));
        let stale = cache.verify(&token_by(&key), &VerifyOptions::new(NOW + 200), || Err::<Jwks, _>("down"));
        assert!(matches!(stale, Ok(Verdict::Valid(_))), "{stale:?}");
        // Within the interval after that failure, nothing is fetched, even for an unknown kid.
        let other = SigningKey::from_seed([9; 32]);
        let fetched = Cell::new(false);
        let quiet = cache.verify(&token_by(&other), &VerifyOptions::new(NOW + 205), || {
            fetched.set(true);
            Err::<Jwks, _>("down")
        });
        assert_eq!(quiet, Ok(Verdict::InvalidSignature));
        assert!(!fetched.get(), "a failing server was asked again within the interval");
    }
}
