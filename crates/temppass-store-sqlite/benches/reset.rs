//! `cargo bench -p temppass-store-sqlite --bench reset`: "reset all" against
//! "reset one" on a store of a million trials, and on a store of one.
//!
//! Figures, not assertions: prints the median and worst time of each reset,
//! then how long reclaiming the superseded bindings takes and the longest
//! single reclaiming step (the longest the writer is held).
//! `TEMPPASS_BENCH_TRIALS` sets the size (default 1 000 000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use temppass_core::{
    DeviceId, DurationMs, MvpdId, ResourceId, Rule, RuleKind, RuleScope, ServiceProviderId, Timestamp,
};
use temppass_store::{Store, TrialLookup};
use temppass_store_sqlite::{SqliteOptions, SqliteStore};

const NOW_MS: i64 = 1_700_000_000_000;

fn scope() -> RuleScope {
    RuleScope {
        service_provider: ServiceProviderId::parse("REF30").unwrap_or_else(|e| panic!("{e}")),
        mvpd: MvpdId::parse("TempPass").unwrap_or_else(|e| panic!("{e}")),
    }
}

fn rule() -> Rule {
    Rule { kind: RuleKind::Basic, ttl: DurationMs::parse("1d").unwrap_or_else(|e| panic!("{e}")), reset: None }
}

async fn fill(store: &Arc<SqliteStore>, trials: usize) {
    let tasks = 8;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = Arc::clone(store);
        handles.push(tokio::spawn(async move {
            let (scope, rule) = (scope(), rule());
            let resource = ResourceId::parse("res").unwrap_or_else(|e| panic!("{e}"));
            for n in (task..trials).step_by(tasks) {
                let device = DeviceId::parse(&format!("device-{n:08}")).unwrap_or_else(|e| panic!("{e}"));
                let lookup = TrialLookup {
                    scope: &scope,
                    device: &device,
                    identity: None,
                    valid_since: Timestamp::from_millis(i64::MIN),
                };
                store
                    .authorize(lookup, &rule, &resource, Timestamp::from_millis(NOW_MS))
                    .await
                    .unwrap_or_else(|e| panic!("fill: {e}"));
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap_or_else(|e| panic!("fill task: {e}"));
    }
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let median = samples[samples.len() / 2];
    let worst = samples[samples.len() - 1];
    format!("median {:>8.1} µs   worst {:>8.1} µs", median.as_secs_f64() * 1e6, worst.as_secs_f64() * 1e6)
}

async fn time_resets(store: &SqliteStore, trials: usize, label: &str) {
    let scope = scope();
    let mut one = Vec::new();
    for n in 0..200.min(trials.max(1)) {
        let device = DeviceId::parse(&format!("device-{n:08}")).unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        store.reset_devices(&scope, Some(&device)).await.unwrap_or_else(|e| panic!("reset one: {e}"));
        one.push(start.elapsed());
    }
    let mut all = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        store.reset_devices(&scope, None).await.unwrap_or_else(|e| panic!("reset all: {e}"));
        all.push(start.elapsed());
    }
    println!("{label:<22} reset one device: {}", summary(one));
    println!("{label:<22} reset all devices: {}", summary(all));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::var("TEMPPASS_BENCH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));

    let small =
        SqliteStore::open(dir.path().join("one.db"), SqliteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let small = Arc::new(small);
    fill(&small, 1).await;
    time_resets(&small, 1, "store of 1 trial:").await;

    let big = SqliteStore::open(dir.path().join("big.db"), SqliteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let big = Arc::new(big);
    let start = Instant::now();
    fill(&big, trials).await;
    println!(
        "filled {trials} trials in {:.1} s (first authorizations through the store)",
        start.elapsed().as_secs_f64()
    );
    time_resets(&big, trials, &format!("store of {trials} trials:")).await;

    // Everything is now superseded: measure reclaiming it in bounded steps.
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    let (mut bindings, mut removed_trials) = (0, 0);
    loop {
        let step = Instant::now();
        let report = big.reclaim(Timestamp::from_millis(NOW_MS), 500).await.unwrap_or_else(|e| panic!("reclaim: {e}"));
        longest = longest.max(step.elapsed());
        bindings += report.bindings;
        removed_trials += report.trials;
        if report.pass_complete {
            break;
        }
    }
    println!(
        "reclaimed {bindings} bindings and {removed_trials} trials in {:.1} s; longest step (writer held) {:.1} ms",
        start.elapsed().as_secs_f64(),
        longest.as_secs_f64() * 1e3
    );
}
