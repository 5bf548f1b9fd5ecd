//! Daily figures in SQL: one row per rule and day, added to by each flush
//! (`temppass_store::Store::add_figures`), and the mark that counts a trial's
//! end once, whichever server saw it.
//!
//! Each delta is one statement, so one transaction of its own: it locks the
//! trials it marks in id order (the third step of `locks.rs`'s order), then
//! its figures row, which no authorization ever locks.

use temppass_core::{Day, MvpdId, ServiceProviderId};
use temppass_store::{DailyFigures, FigureCounts, FigureDelta, FiguresQuery, StoreError};

use crate::connection::Conn;

/// $1 service provider, $2 mvpd, $3 day, $4 the trials denied for duration,
/// $5..$8 the other counts; a delta that adds nothing writes no row. `FOR UPDATE` under `ORDER BY` locks in id order;
/// after a wait, READ COMMITTED re-checks `NOT end_counted` on the row as
/// the other transaction left it, so two servers never both count one end.
/// A trial that is gone (reset or merged away since its deny) counts: it did
/// end, and nothing is left to mark.
const ADD: &str = "
    WITH locked AS (
        SELECT id FROM trials WHERE id = ANY($4::bigint[]) AND NOT end_counted ORDER BY id FOR UPDATE
    ), marked AS (
        UPDATE trials t SET end_counted = TRUE FROM locked WHERE t.id = locked.id RETURNING t.id
    )
    INSERT INTO daily_figures AS f
        (service_provider, mvpd, day, trials_started, trials_ended, trials_exhausted, resources_used, resets)
    SELECT $1, $2, $3, $5, ended.count, $6, $7, $8
    FROM (SELECT (SELECT count(*) FROM marked)
               + (SELECT count(*) FROM unnest($4::bigint[]) AS e(id) WHERE NOT EXISTS (SELECT 1 FROM trials WHERE id = e.id))
          AS count) AS ended
    WHERE $5::bigint + ended.count + $6::bigint + $7::bigint + $8::bigint > 0
    ON CONFLICT (service_provider, mvpd, day) DO UPDATE SET
        trials_started = f.trials_started + excluded.trials_started,
        trials_ended = f.trials_ended + excluded.trials_ended,
        trials_exhausted = f.trials_exhausted + excluded.trials_exhausted,
        resources_used = f.resources_used + excluded.resources_used,
        resets = f.resets + excluded.resets";

const READ: &str = "
    SELECT service_provider, mvpd, day, trials_started, trials_ended, trials_exhausted, resources_used, resets
    FROM daily_figures
    WHERE ($1::text IS NULL OR day >= $1) AND ($2::text IS NULL OR service_provider = $2)
    ORDER BY service_provider, mvpd, day";

pub(crate) async fn add(conn: &mut Conn, deltas: &[FigureDelta]) -> Result<(), StoreError> {
    let number = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for delta in deltas.iter().filter(|delta| !delta.counts.is_zero() || !delta.ended_trials.is_empty()) {
        let ended: Vec<i64> = delta.ended_trials.iter().map(|trial| trial.0).collect();
        let counts = &delta.counts;
        conn.query(
            ADD,
            &[
                &delta.scope.service_provider.as_str(),
                &delta.scope.mvpd.as_str(),
                &delta.day.as_text(),
                &ended,
                &number(counts.trials_started),
                &number(counts.trials_exhausted),
                &number(counts.resources_used),
                &number(counts.resets),
            ],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn read(conn: &mut Conn, query: &FiguresQuery) -> Result<Vec<DailyFigures>, StoreError> {
    let since = query.since.map(|day| day.as_text());
    let service_provider = query.service_provider.as_ref().map(|id| id.as_str().to_owned());
    let rows = conn.query(READ, &[&since, &service_provider]).await?;
    rows.iter()
        .map(|row| {
            let bad = |what: &str, error: String| {
                StoreError::Internal(format!("a daily figures row has a bad {what}: {error}"))
            };
            let text = |column: usize| row.try_get::<_, String>(column).map_err(crate::to_store_error);
            let count = |column: usize| {
                row.try_get::<_, i64>(column).map(|n| u64::try_from(n).unwrap_or(0)).map_err(crate::to_store_error)
            };
            Ok(DailyFigures {
                service_provider: ServiceProviderId::parse(&text(0)?)
                    .map_err(|e| bad("service provider", e.to_string()))?,
                mvpd: MvpdId::parse(&text(1)?).map_err(|e| bad("mvpd", e.to_string()))?,
                day: Day::parse(&text(2)?).map_err(|e| bad("day", e.to_string()))?,
                counts: FigureCounts {
                    trials_started: count(3)?,
                    trials_ended: count(4)?,
                    trials_exhausted: count(5)?,
                    resources_used: count(6)?,
                    resets: count(7)?,
                },
            })
        })
        .collect()
}
