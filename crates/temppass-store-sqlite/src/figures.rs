//! Daily figures in SQL: one row per rule and day, added to by each flush
//! (`temppass_store::Store::add_figures`), and the mark that counts a trial's
//! end once.

use rusqlite::{Connection, params};
use temppass_core::{Day, MvpdId, ServiceProviderId};
use temppass_store::{DailyFigures, FigureCounts, FigureDelta, FiguresQuery, StoreError};

use crate::to_store_error;

const ADD: &str = "
    INSERT INTO daily_figures
        (service_provider, mvpd, day, trials_started, trials_ended, trials_exhausted, resources_used, resets)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (service_provider, mvpd, day) DO UPDATE SET
        trials_started = trials_started + excluded.trials_started,
        trials_ended = trials_ended + excluded.trials_ended,
        trials_exhausted = trials_exhausted + excluded.trials_exhausted,
        resources_used = resources_used + excluded.resources_used,
        resets = resets + excluded.resets";

/// Marks a trial's end counted; 1 when this call marked it.
const MARK_ENDED: &str = "UPDATE trials SET end_counted = 1 WHERE id = ?1 AND end_counted = 0";
const EXISTS: &str = "SELECT 1 FROM trials WHERE id = ?1";

/// 1 when the end of `trial` is to be counted now: it was not counted before,
/// or the trial is gone (reset or merged away since its deny: it did end).
fn count_end(conn: &Connection, trial: i64) -> rusqlite::Result<u64> {
    if conn.prepare_cached(MARK_ENDED)?.execute([trial])? == 1 {
        return Ok(1);
    }
    let exists = conn.prepare_cached(EXISTS)?.exists([trial])?;
    Ok(u64::from(!exists))
}

pub(crate) fn add(conn: &Connection, deltas: &[FigureDelta]) -> Result<(), StoreError> {
    for delta in deltas {
        let mut counts = delta.counts;
        counts.trials_ended = 0;
        for trial in &delta.ended_trials {
            counts.trials_ended += count_end(conn, trial.0).map_err(to_store_error)?;
        }
        if counts.is_zero() {
            continue;
        }
        let number = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        conn.prepare_cached(ADD)
            .and_then(|mut statement| {
                statement.execute(params![
                    delta.scope.service_provider.as_str(),
                    delta.scope.mvpd.as_str(),
                    delta.day.as_text(),
                    number(counts.trials_started),
                    number(counts.trials_ended),
                    number(counts.trials_exhausted),
                    number(counts.resources_used),
                    number(counts.resets),
                ])
            })
            .map_err(to_store_error)?;
    }
    Ok(())
}

pub(crate) fn read(conn: &Connection, query: &FiguresQuery) -> rusqlite::Result<Vec<DailyFigures>> {
    let mut statement = conn.prepare_cached(
        "SELECT service_provider, mvpd, day, trials_started, trials_ended, trials_exhausted, resources_used, resets
         FROM daily_figures
         WHERE (?1 IS NULL OR day >= ?1) AND (?2 IS NULL OR service_provider = ?2)
         ORDER BY service_provider, mvpd, day",
    )?;
    let since = query.since.map(|day| day.as_text());
    let service_provider = query.service_provider.as_ref().map(|id| id.as_str());
    let rows = statement.query_map(params![since, service_provider], |row| {
        let text = |column: usize| row.get::<_, String>(column);
        let bad = |column: usize, message: String| {
            rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
        };
        let count = |column: usize| row.get::<_, i64>(column).map(|n| u64::try_from(n).unwrap_or(0));
        Ok(DailyFigures {
            service_provider: ServiceProviderId::parse(&text(0)?).map_err(|e| bad(0, e.to_string()))?,
            mvpd: MvpdId::parse(&text(1)?).map_err(|e| bad(1, e.to_string()))?,
            day: Day::parse(&text(2)?).map_err(|e| bad(2, e.to_string()))?,
            counts: FigureCounts {
                trials_started: count(3)?,
                trials_ended: count(4)?,
                trials_exhausted: count(5)?,
                resources_used: count(6)?,
                resets: count(7)?,
            },
        })
    })?;
    rows.collect()
}
