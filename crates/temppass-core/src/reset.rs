//! Scheduled resets (SPEC.md §1 `reset`): computed from the clock, never run as a job.
//!
//! A rule with `reset = { daily_at = "00:00", timezone = "America/New_York" }`
//! treats every trial that started before the most recent scheduled instant as
//! absent. The instant is found with the IANA time-zone database (jiff), so it
//! is right across daylight-saving changes.

use jiff::civil::Time;
use jiff::tz::TimeZone;

use crate::Timestamp;

/// Why a reset schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    #[error("{0:?} is not a time of day: use \"HH:MM\", e.g. \"00:00\" or \"04:30\"")]
    BadTime(String),
    #[error("{0:?} is not a known IANA time zone, e.g. \"America/New_York\"")]
    UnknownTimeZone(String),
}

/// A reset every day at one local time in one time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyReset {
    at: Time,
    time_zone: TimeZone,
}

impl DailyReset {
    pub fn parse(daily_at: &str, timezone: &str) -> Result<Self, ResetError> {
        let bad_time = || ResetError::BadTime(daily_at.to_owned());
        let (hour, minute) = daily_at.split_once(':').ok_or_else(bad_time)?;
        if hour.len() != 2 || minute.len() != 2 {
            return Err(bad_time());
        }
        let hour: i8 = hour.parse().map_err(|_| bad_time())?;
        let minute: i8 = minute.parse().map_err(|_| bad_time())?;
        let at = Time::new(hour, minute, 0, 0).map_err(|_| bad_time())?;
        let time_zone = TimeZone::get(timezone).map_err(|_| ResetError::UnknownTimeZone(timezone.to_owned()))?;
        Ok(Self { at, time_zone })
    }

    /// The day `now` falls on in the reset's time zone.
    pub fn day_of(&self, now: Timestamp) -> crate::Day {
        crate::Day::of(now, &self.time_zone)
    }

    /// The most recent scheduled instant at or before `now`.
    ///
    /// On a day where the local time does not exist (spring forward) the
    /// instant is the first one after the gap; where it exists twice (fall
    /// back) it is the first of the two. Both follow jiff's "compatible"
    /// disambiguation, the same rule as RFC 5545.
    pub fn most_recent_instant(&self, now: Timestamp) -> Timestamp {
        let Ok(now_instant) = jiff::Timestamp::from_millisecond(now.as_millis()) else {
            // Out of jiff's range (beyond year 9999): no reset is meaningful there.
            return Timestamp::from_millis(i64::MIN);
        };
        let today = now_instant.to_zoned(self.time_zone.clone()).date();
        let mut day = today;
        // Two steps back are always enough; the loop bound keeps it finite regardless.
        for _ in 0..3 {
            let Ok(zoned) = day.to_datetime(self.at).to_zoned(self.time_zone.clone()) else {
                return Timestamp::from_millis(i64::MIN);
            };
            let instant = Timestamp::from_millis(zoned.timestamp().as_millisecond());
            if instant <= now {
                return instant;
            }
            match day.yesterday() {
                Ok(previous) => day = previous,
                Err(_) => break,
            }
        }
        Timestamp::from_millis(i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(text: &str) -> Timestamp {
        let instant: jiff::Timestamp = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        Timestamp::from_millis(instant.as_millisecond())
    }

    fn new_york_midnight() -> DailyReset {
        DailyReset::parse("00:00", "America/New_York").expect("a valid daily reset")
    }

    #[test]
    fn malformed_times_and_unknown_zones_are_refused() {
        assert!(matches!(DailyReset::parse("24:00", "UTC"), Err(ResetError::BadTime(_))));
        assert!(matches!(DailyReset::parse("7:00", "UTC"), Err(ResetError::BadTime(_))));
        assert!(matches!(DailyReset::parse("07:60", "UTC"), Err(ResetError::BadTime(_))));
        assert!(matches!(DailyReset::parse("noon", "UTC"), Err(ResetError::BadTime(_))));
        assert!(matches!(DailyReset::parse("00:00", "Mars/Olympus_Mons"), Err(ResetError::UnknownTimeZone(_))));
    }

    #[test]
    fn midnight_in_new_york_is_five_hours_after_utc_midnight_in_winter() {
        let reset = new_york_midnight();
        assert_eq!(reset.most_recent_instant(ms("2026-01-15T12:00:00Z")), ms("2026-01-15T05:00:00Z"));
        assert_eq!(reset.most_recent_instant(ms("2026-01-15T04:59:59.999Z")), ms("2026-01-14T05:00:00Z"));
        assert_eq!(reset.most_recent_instant(ms("2026-01-15T05:00:00Z")), ms("2026-01-15T05:00:00Z"));
    }

    #[test]
    fn midnight_in_new_york_is_four_hours_after_utc_midnight_in_summer() {
        let reset = new_york_midnight();
        assert_eq!(reset.most_recent_instant(ms("2026-07-04T12:00:00Z")), ms("2026-07-04T04:00:00Z"));
    }

    #[test]
    fn a_reset_inside_the_spring_forward_gap_happens_right_after_the_gap() {
        // 2026-03-08 02:30 does not exist in New York; clocks jump from 02:00 EST to 03:00 EDT.
        let reset = DailyReset::parse("02:30", "America/New_York").expect("a valid daily reset");
        assert_eq!(reset.most_recent_instant(ms("2026-03-08T12:00:00Z")), ms("2026-03-08T07:30:00Z"));
    }

    #[test]
    fn a_reset_inside_the_fall_back_fold_happens_once_at_the_first_occurrence() {
        // 2026-11-01 01:30 happens twice in New York; the first is 05:30Z (EDT).
        let reset = DailyReset::parse("01:30", "America/New_York").expect("a valid daily reset");
        assert_eq!(reset.most_recent_instant(ms("2026-11-01T06:10:00Z")), ms("2026-11-01T05:30:00Z"));
        assert_eq!(reset.most_recent_instant(ms("2026-11-01T06:40:00Z")), ms("2026-11-01T05:30:00Z"));
    }

    proptest! {
        // Around both 2026 changes in New York, every instant's most recent reset is
        // at or before it, less than 25 hours before it, and falls on local midnight.
        #[test]
        fn the_most_recent_new_york_midnight_is_local_midnight_within_a_day(
            offset_ms in -3 * 86_400_000i64..3 * 86_400_000,
            change in 0usize..2,
        ) {
            let centre = [ms("2026-03-08T07:00:00Z"), ms("2026-11-01T06:00:00Z")][change];
            let now = Timestamp::from_millis(centre.as_millis() + offset_ms);
            let reset = new_york_midnight();
            let instant = reset.most_recent_instant(now);
            prop_assert!(instant <= now);
            prop_assert!(now.as_millis() - instant.as_millis() < 25 * 3_600_000);
            let local = jiff::Timestamp::from_millisecond(instant.as_millis())
                .map(|t| t.to_zoned(TimeZone::get("America/New_York").unwrap_or(TimeZone::UTC)));
            let local = local.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!((local.hour(), local.minute(), local.second()), (0, 0, 0));
            // And no later midnight fits between it and now.
            let next = reset.most_recent_instant(Timestamp::from_millis(instant.as_millis() + 26 * 3_600_000));
            prop_assert!(next > now || next == instant);
        }
    }
}
