//! `cargo bench -p temppass-store-sqlite --bench reset`: "reset all" against
//! "reset one" on a store of a million trials, and on a store of one.
//!
//! Figures, not assertions: prints the median and worst time of each reset,
//! then how long reclaiming the superseded bindings takes and the longest
//! single reclaiming step (the longest the writer is held).
//! `TEMPPASS_BENCH_TRIALS` sets the size (default 1 000 000).

// A benchmark stops at its first failed step, as a test does; clippy's
// allow-expect-in-tests does not cover a bench target.
#![allow(clippy::expect_used, reason = "benchmark code")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use temppass_core::{
    DeviceId, DurationMs, MvpdId, ResourceId, Rule, RuleKind, RuleScope, ServiceProviderId, Timestamp,
};
use temppass_store::Authorization;
use temppass_store::{Store, TrialLookup};
use temppass_store_sqlite::{SqliteOptions, SqliteStore};

const NOW_MS: i64 = 1_700_000_000_000;

fn scope() -> RuleScope {
    RuleScope {
        service_provider: ServiceProviderId::parse("REF30").expect("a valid service provider id"),
        mvpd: MvpdId::parse("TempPass").expect("a valid mvpd id"),
    }
}

fn rule() -> Rule {
    Rule { kind: RuleKind::Basic, ttl: DurationMs::parse("1d").expect("a valid duration"), reset: None }
}

async fn fill(store: &Arc<SqliteStore>, trials: usize) {
    let tasks = 8;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = Arc::clone(store);
        handles.push(tokio::spawn(async move {
            let (scope, rule) = (scope(), rule());
            let resource = ResourceId::parse("res").expect("a valid resource id");
            for n in (task..trials).step_by(tasks) {
                let device = DeviceId::parse(&format!("device-{n:08}")).expect("a valid device id");
                let lookup = TrialLookup {
                    scope: &scope,
                    device: &device,
                    identity: None,
                    valid_since: Timestamp::from_millis(i64::MIN),
                };
                store
                    .authorize(Authorization::new(lookup, &rule, &resource, Timestamp::from_millis(NOW_MS)))
                    .await
                    .expect("authorize succeeds while filling the store");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a fill task finishes");
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
        let device = DeviceId::parse(&format!("device-{n:08}")).expect("a valid device id");
        let start = Instant::now();
        store.reset_devices(&scope, Some(&device)).await.expect("resetting one device succeeds");
        one.push(start.elapsed());
    }
    let mut all = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        store.reset_devices(&scope, None).await.expect("resetting all devices succeeds");
        all.push(start.elapsed());
    }
    println!("{label:<22} reset one device: {}", summary(one));
    println!("{label:<22} reset all devices: {}", summary(all));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::var("TEMPPASS_BENCH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");

    let small = SqliteStore::open(dir.path().join("one.db"), SqliteOptions::default()).expect("the small store opens");
    let small = Arc::new(small);
    fill(&small, 1).await;
    time_resets(&small, 1, "store of 1 trial:").await;

    let big = SqliteStore::open(dir.path().join("big.db"), SqliteOptions::default()).expect("the big store opens");
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
        let report = big.reclaim(Timestamp::from_millis(NOW_MS), 500).await.expect("reclaim succeeds");
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
