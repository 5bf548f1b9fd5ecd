//! Concurrency claims of SPEC.md §2 through HTTP: many tasks, one key, count the results.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use crate::support::{BASIC, BASIC_TTL_MS, PROMO, PROMO_MAX_RESOURCES, Reply, TestApp, int, ok, settings};

/// Generous limits: these tests count decisions, they do not time the store.
async fn app_without_tight_timeouts() -> TestApp {
    let mut settings = settings();
    settings.limits.request_timeout = Duration::from_secs(120);
    TestApp::with_settings(settings).await
}

/// Sends every call at once (behind a barrier) from its own task and returns the replies.
async fn send_all_at_once(calls: Vec<crate::support::Call>) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(calls.len()));
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                call.send().await
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(tasks.len());
    for task in tasks {
        replies.push(ok(task.await, "a request task"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_simultaneous_first_authorizations_of_one_device_share_one_trial() {
    let app = app_without_tight_timeouts().await;
    let now = app.now_ms();
    let calls = (0..100).map(|i| app.authorize(BASIC, "device-1", &[&format!("channel-{}", i % 7)])).collect();

    let replies = send_all_at_once(calls).await;

    let mut not_afters: Vec<i64> = replies
        .iter()
        .map(|reply| {
            let item = reply.decision();
            assert_eq!(item["authorized"], true, "{item}");
            int(&item["notAfter"])
        })
        .collect();
    not_afters.dedup();
    assert_eq!(not_afters, [now + BASIC_TTL_MS], "every permit carries the one trial's end");
    app.advance_ms(1_000);
    let profile = app.profile(BASIC, "device-1").send().await;
    let profile = profile.profile(BASIC);
    assert_eq!(int(&profile["notBefore"]), now);
    assert_eq!(int(&profile["notAfter"]), now + BASIC_TTL_MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_simultaneous_promotional_authorizations_of_different_resources_permit_exactly_the_cap() {
    let app = app_without_tight_timeouts().await;
    let email = "viewer@example.com";
    let calls = (0..50).map(|i| app.authorize(PROMO, "device-1", &[&format!("title-{i}")]).identity(email)).collect();

    let replies = send_all_at_once(calls).await;

    let mut permitted = Vec::new();
    for reply in &replies {
        let item = reply.decision();
        if item["authorized"] == true {
            permitted.push(ok(serde_json::from_value::<String>(item["resource"].clone()), "resource"));
        } else {
            assert_eq!(item["error"]["code"], "temporary_access_resources_limit_exceeded", "{item}");
        }
    }
    assert_eq!(permitted.len() as i64, PROMO_MAX_RESOURCES, "permitted: {permitted:?}");
    let exhausted = app.profile(PROMO, "device-1").identity(email).send().await;
    exhausted.assert_error(403, "temporary_access_resources_limit_exceeded", "authentication");
    for resource in &permitted {
        let again = app.authorize(PROMO, "device-2", &[resource]).identity(email).send().await;
        assert_eq!(again.decision()["authorized"], true, "{resource} is among the trial's used assets");
    }
}
