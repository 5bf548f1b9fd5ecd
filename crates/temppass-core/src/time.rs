//! Time as plain numbers: server epoch milliseconds and positive durations.
//!
//! Nothing here reads a clock; callers pass `now`.

use std::fmt;

/// Milliseconds since the Unix epoch on the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded down (the JWS `exp`/`iat` unit).
    pub const fn as_secs_floor(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn saturating_add(self, duration: DurationMs) -> Self {
        Self(self.0.saturating_add(duration.as_millis()))
    }
}

/// Why duration text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "{0:?} is not a duration: use a positive number and a unit, e.g. \"500ms\", \"2s\", \"10m\", \"4h\", \"1d\""
    )]
    Malformed(String),
    #[error("{0:?} must be greater than zero")]
    NotPositive(String),
    #[error("{0:?} is longer than the limit of {1} days")]
    TooLong(String, i64),
}

/// A strictly positive duration in milliseconds, at most [`DurationMs::MAX_DAYS`] days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationMs(i64);

impl DurationMs {
    /// Ten years: longer than any pass anyone will sell, short enough that no sum overflows.
    pub const MAX_DAYS: i64 = 3660;
    const MAX_MS: i64 = Self::MAX_DAYS * 86_400_000;

    pub fn from_millis(ms: i64) -> Result<Self, DurationError> {
        if ms <= 0 {
            return Err(DurationError::NotPositive(format!("{ms}ms")));
        }
        if ms > Self::MAX_MS {
            return Err(DurationError::TooLong(format!("{ms}ms"), Self::MAX_DAYS));
        }
        Ok(Self(ms))
    }

    /// Parses `"500ms"`, `"2s"`, `"10m"`, `"4h"`, `"1d"`.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let malformed = || DurationError::Malformed(text.to_owned());
        let trimmed = text.trim();
        let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '+')).ok_or_else(malformed)?;
        let (number, unit) = trimmed.split_at(split);
        let value: i64 = number.parse().map_err(|_| malformed())?;
        let unit_ms: i64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(malformed()),
        };
        if value <= 0 {
            return Err(DurationError::NotPositive(text.to_owned()));
        }
        let ms = value
            .checked_mul(unit_ms)
            .filter(|ms| *ms <= Self::MAX_MS)
            .ok_or_else(|| DurationError::TooLong(text.to_owned(), Self::MAX_DAYS))?;
        Ok(Self(ms))
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_every_unit_of_the_spec() {
        assert_eq!(DurationMs::parse("500ms").map(DurationMs::as_millis), Ok(500));
        assert_eq!(DurationMs::parse("2s").map(DurationMs::as_millis), Ok(2_000));
        assert_eq!(DurationMs::parse("10m").map(DurationMs::as_millis), Ok(600_000));
        assert_eq!(DurationMs::parse("4h").map(DurationMs::as_millis), Ok(14_400_000));
        assert_eq!(DurationMs::parse("1d").map(DurationMs::as_millis), Ok(86_400_000));
    }

    #[test]
    fn zero_negative_and_unitless_durations_are_refused() {
        assert!(matches!(DurationMs::parse("0s"), Err(DurationError::NotPositive(_))));
        assert!(matches!(DurationMs::parse("-5m"), Err(DurationError::NotPositive(_))));
        assert!(matches!(DurationMs::parse("10"), Err(DurationError::Malformed(_))));
        assert!(matches!(DurationMs::parse("ten minutes"), Err(DurationError::Malformed(_))));
        assert!(matches!(DurationMs::parse("10 parsecs"), Err(DurationError::Malformed(_))));
        assert!(matches!(DurationMs::parse(""), Err(DurationError::Malformed(_))));
        assert!(matches!(DurationMs::parse("99999999999999d"), Err(DurationError::TooLong(..))));
    }

    proptest! {
        #[test]
        fn any_positive_count_of_a_unit_parses_to_count_times_unit(count in 1i64..100_000, unit in 0usize..5) {
            let (suffix, unit_ms) = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)][unit];
            let parsed = DurationMs::parse(&format!("{count}{suffix}"));
            let expected = count * unit_ms;
            if expected <= DurationMs::MAX_DAYS * 86_400_000 {
                prop_assert_eq!(parsed.map(DurationMs::as_millis), Ok(expected));
            } else {
                prop_assert!(parsed.is_err());
            }
        }

        #[test]
        fn seconds_round_down_for_any_timestamp(ms in -10_000_000_000_000i64..10_000_000_000_000) {
            let secs = Timestamp::from_millis(ms).as_secs_floor();
            prop_assert!(secs * 1000 <= ms && ms < (secs + 1) * 1000);
        }
    }
}
