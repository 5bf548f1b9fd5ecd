//! Daily figures: `serve`'s flush of what it counted into the store, and
//! `temppass stats`, which prints them.

use std::time::Duration;

use temppass_http::AppState;
use temppass_http::management::{figures_json, figures_query};
use temppass_store::DailyFigures;

use crate::admin::{Target, open};
use crate::output::result;

/// How often a server adds its figures to the store: a `kill -9` loses at most this much of them.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Adds what this server counted to the store; on failure it is kept for the next flush.
pub(crate) async fn flush(state: &AppState) {
    if let Err(error) = state.observer().flush_figures(state.store().as_ref()).await {
        tracing::warn!(%error, "cannot add the daily figures to the store; keeping them for the next flush");
    }
}

pub(crate) async fn flush_forever(state: AppState) {
    let mut interval = tokio::time::interval(FLUSH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        flush(&state).await;
    }
}

/// `temppass stats`: the figures as a table, or as JSON with `--json`.
pub(crate) async fn print(
    target: Target<'_>,
    since: Option<&str>,
    service_provider: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let query = figures_query(since, service_provider).map_err(|e| anyhow::anyhow!("--{}", e.replacen('_', "-", 1)))?;
    let (_, store) = open(target).await?;
    let rows = store.figures(&query).await?;
    if json {
        return result(&figures_json(&rows).to_string());
    }
    result(&table(&rows))
}

const COLUMNS: [&str; 8] = ["day", "service provider", "mvpd", "started", "ended", "exhausted", "resources", "resets"];

fn table(rows: &[DailyFigures]) -> String {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|row| {
            let c = &row.counts;
            [
                row.day.to_string(),
                row.service_provider.to_string(),
                row.mvpd.to_string(),
                c.trials_started.to_string(),
                c.trials_ended.to_string(),
                c.trials_exhausted.to_string(),
                c.resources_used.to_string(),
                c.resets.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> =
        (0..8).map(|i| cells.iter().map(|row| row[i].len()).chain([COLUMNS[i].len()]).max().unwrap_or(0)).collect();
    let line = |values: Vec<&str>| {
        values
            .iter()
            .enumerate()
            .map(
                |(i, value)| {
                    if i < 3 { format!("{value:<w$}", w = widths[i]) } else { format!("{value:>w$}", w = widths[i]) }
                },
            )
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(COLUMNS.to_vec())];
    out.extend(cells.iter().map(|row| line(row.iter().map(String::as_str).collect())));
    if rows.is_empty() {
        out.push("(no figures yet)".to_owned());
    }
    out.join("\n")
}
