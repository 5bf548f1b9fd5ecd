//! Calendar days in a rule's own time zone, for the daily figures an operator
//! reads (`temppass stats`): "trials started on 4 December" means 4 December
//! where the rule's daily reset is scheduled, or in UTC for a rule without one.

use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::Timestamp;

/// One calendar day, `YYYY-MM-DD`; ordered as days are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(Date);

/// Why a day was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a day: use YYYY-MM-DD, e.g. \"2026-12-04\"")]
pub struct DayError(String);

impl Day {
    /// Parses `YYYY-MM-DD`, and nothing else.
    pub fn parse(text: &str) -> Result<Self, DayError> {
        let bad = || DayError(text.to_owned());
        if text.len() != 10 {
            return Err(bad());
        }
        text.parse::<Date>().map(Self).map_err(|_| bad())
    }

    /// The day `now` falls on in `time_zone`; the first representable day for
    /// an instant out of range.
    pub(crate) fn of(now: Timestamp, time_zone: &TimeZone) -> Self {
        match jiff::Timestamp::from_millisecond(now.as_millis()) {
            Ok(instant) => Self(instant.to_zoned(time_zone.clone()).date()),
            Err(_) => Self(Date::MIN),
        }
    }

    /// `YYYY-MM-DD`, as stored and printed.
    pub fn as_text(&self) -> String {
        self.0.to_string()
    }
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_year_month_day_parses() {
        assert_eq!(Day::parse("2026-12-04").map(|d| d.to_string()), Ok("2026-12-04".to_owned()));
        for bad in ["2026-12-4", "2026-13-01", "2026-02-30", "04/12/2026", "2026-12-04T00:00", ""] {
            assert!(Day::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_day_of_an_instant_is_the_local_day_of_its_time_zone() {
        // 2026-12-05T03:30Z is still 4 December in New York (UTC−5).
        let instant = Timestamp::from_millis(1_796_441_400_000);
        let new_york = TimeZone::get("America/New_York").expect("zone");
        assert_eq!(Day::of(instant, &new_york).to_string(), "2026-12-04");
        assert_eq!(Day::of(instant, &TimeZone::UTC).to_string(), "2026-12-05");
    }
}
