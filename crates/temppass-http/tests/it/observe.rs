//! What an operator sees (docs/operating.md): the metrics a scripted
//! sequence of requests moves, the tracking events it writes, the daily
//! figures it counts, and the management listener's endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use temppass_core::{DailyReset, Day};
use temppass_observe::EventSettings;
use temppass_store::{FigureCounts, FiguresQuery};

use crate::support::*;

/// The samples of a scrape that are not histogram buckets: `name{labels}` → value.
fn samples(scrape: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.contains("_bucket{"))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(key, value)| value.parse().ok().map(|value| (key.to_owned(), value)))
        .collect()
}

async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let reply = app.management("/metrics").await;
    reply.assert_status(200);
    let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(reply.text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
    samples(&reply.text)
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

const BASIC_PERMIT: &str =
    r#"temppass_decisions_total{service_provider="REF30",mvpd="TempPass",kind="authorize",outcome="permit",code=""}"#;
const BASIC_DURATION_DENY: &str = r#"temppass_decisions_total{service_provider="REF30",mvpd="TempPass",kind="authorize",outcome="deny",code="temporary_access_duration_limit_exceeded"}"#;
const PROMO_PERMIT: &str = r#"temppass_decisions_total{service_provider="REF30",mvpd="flexibleTempPass",kind="authorize",outcome="permit",code=""}"#;
const PROMO_CAP_DENY: &str = r#"temppass_decisions_total{service_provider="REF30",mvpd="flexibleTempPass",kind="authorize",outcome="deny",code="temporary_access_resources_limit_exceeded"}"#;
const BASIC_STARTED: &str = r#"temppass_trials_started_total{service_provider="REF30",mvpd="TempPass"}"#;
const PROMO_STARTED: &str = r#"temppass_trials_started_total{service_provider="REF30",mvpd="flexibleTempPass"}"#;
const PROMO_RESOURCES: &str = r#"temppass_resources_used_total{service_provider="REF30",mvpd="flexibleTempPass"}"#;
const RESET_ONE_DEVICE: &str = r#"temppass_resets_total{api="v3",scope="one",key_kind="device"}"#;
const BEARER_FAILURE: &str = r#"temppass_auth_failures_total{code="invalid_access_token_client_application"}"#;
const AUTHORIZE_2XX: &str = r#"temppass_http_server_request_duration_seconds_count{route="/api/v2/{sp}/decisions/authorize/{mvpd}",status_class="2xx"}"#;
const AUTHORIZE_4XX: &str = r#"temppass_http_server_request_duration_seconds_count{route="/api/v2/{sp}/decisions/authorize/{mvpd}",status_class="4xx"}"#;
const STORE_AUTHORIZE: &str = r#"temppass_store_operation_duration_seconds_count{operation="authorize"}"#;

#[tokio::test]
async fn counters_move_by_exactly_what_a_scripted_sequence_of_requests_implies() {
    let app = TestApp::observed(settings(), &EventSettings::default()).await;
    let before = scrape(&app).await;
    assert_eq!(value(&before, "temppass_registrations_total"), 1.0, "the test app registered one client");
    assert_eq!(value(&before, "temppass_access_tokens_issued_total"), 1.0, "and took one token");

    // A permit that starts a basic trial, a permit that continues it, a deny for duration.
    assert_permitted(app.authorize(BASIC, "device-1", &["res"]).send().await.decision(), "res");
    assert_permitted(app.authorize(BASIC, "device-1", &["res"]).send().await.decision(), "res");
    app.advance_ms(BASIC_TTL_MS);
    let denied = app.authorize(BASIC, "device-1", &["res"]).send().await;
    assert_eq!(denied.decision()["authorized"], false);
    // Three promotional titles, then the cap.
    for title in ["t1", "t2", "t3"] {
        assert_permitted(
            app.authorize(PROMO, "device-2", &[title]).identity("viewer@example.com").send().await.decision(),
            title,
        );
    }
    let capped = app.authorize(PROMO, "device-2", &["t4"]).identity("viewer@example.com").send().await;
    assert_eq!(capped.decision()["authorized"], false);
    // A reset of one device, and a 401.
    app.delete(&format!("/reset-tempass/v3/reset?requestor_id={SP}&mvpd_id={BASIC}&device_id=device-1"))
        .send()
        .await
        .assert_status(204);
    app.authorize(BASIC, "device-1", &["res"]).bearer("not-a-token").send().await.assert_status(401);

    let after = scrape(&app).await;
    let moved = |key: &str| value(&after, key) - value(&before, key);
    let expected = [
        (BASIC_PERMIT, 2.0),
        (BASIC_DURATION_DENY, 1.0),
        (PROMO_PERMIT, 3.0),
        (PROMO_CAP_DENY, 1.0),
        (BASIC_STARTED, 1.0),
        (PROMO_STARTED, 1.0),
        (PROMO_RESOURCES, 3.0),
        (RESET_ONE_DEVICE, 1.0),
        (BEARER_FAILURE, 1.0),
        (AUTHORIZE_2XX, 7.0),
        (AUTHORIZE_4XX, 1.0),
        (STORE_AUTHORIZE, 7.0),
        ("temppass_registrations_total", 0.0),
        ("temppass_access_tokens_issued_total", 0.0),
    ];
    for (key, by) in expected {
        assert_eq!(moved(key), by, "{key} moved by {}, expected {by}", moved(key));
    }

    ok(app.state.observer().flush_figures(app.store().as_ref()).await, "the flush");
    let figures = ok(app.store().figures(&FiguresQuery::default()).await, "the figures");
    let of =
        |mvpd: &str| figures.iter().find(|row| row.mvpd.as_str() == mvpd).map(|row| row.counts).unwrap_or_default();
    assert_eq!(of(BASIC), FigureCounts { trials_started: 1, trials_ended: 1, resets: 1, ..FigureCounts::default() });
    assert_eq!(
        of(PROMO),
        FigureCounts { trials_started: 1, trials_exhausted: 1, resources_used: 3, ..FigureCounts::default() }
    );
}

#[tokio::test]
async fn every_decision_reset_registration_and_token_writes_one_event_with_hashes_only() {
    let dir = ok(tempfile::tempdir(), "temporary directory");
    let file = dir.path().join("events.jsonl");
    let events = EventSettings { file: Some(file.clone()), ..EventSettings::default() };
    let app = TestApp::observed(settings(), &events).await;
    assert_permitted(app.authorize(BASIC, "device-raw-7", &["res"]).send().await.decision(), "res");
    let promo =
        app.preauthorize(PROMO, "device-raw-7", &["t1", "t2"]).identity("secret.viewer@example.com").send().await;
    assert_eq!(promo.decisions().len(), 2);
    app.delete(&format!("/reset-tempass/v3/reset/generic?requestor_id={SP}&mvpd_id={PROMO}"))
        .send()
        .await
        .assert_status(204);
    assert!(app.state.observer().events().flush(Duration::from_secs(10)), "the events were written");

    let text = ok(std::fs::read_to_string(&file), "the event file");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|line| ok(serde_json::from_str(line), "a JSON line")).collect();
    let types: Vec<&str> = lines.iter().map(|event| event["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, ["registration", "access_token", "decision", "decision", "decision", "reset"], "{text}");
    let permit = &lines[2];
    assert_eq!(
        permit["tracking_id"],
        temppass_observe::tracking_id("device-raw-7"),
        "the tracking id is the device id's SHA-256"
    );
    assert_eq!(
        (permit["outcome"].as_str(), permit["rule"].as_str(), permit["trial_started"].as_bool()),
        (Some("permit"), Some("basic"), Some(true))
    );
    assert!(permit["trial"].as_str().is_some_and(|sid| sid.len() == 32), "the trial is its sid: {permit}");
    assert_eq!(lines[3]["identity_present"], true, "a promotional decision says an identity was sent");
    assert_eq!(
        (lines[5]["scope"].as_str(), lines[5]["key_kind"].as_str(), lines[5]["action"].as_str()),
        (Some("all"), Some("identity"), Some("v3"))
    );
    for secret in ["device-raw-7", "secret.viewer", "c2VjcmV0", &identity_header("secret.viewer@example.com")] {
        assert!(!text.contains(secret), "an event carries {secret:?}: {text}");
    }
    let scrape = app.management("/metrics").await.text;
    for secret in ["device-raw-7", "secret.viewer", "t1", "res\""] {
        assert!(!scrape.contains(secret), "the scrape carries {secret:?}");
    }
}

#[tokio::test]
async fn the_daily_figures_of_a_pinned_clock_land_on_the_local_day_across_midnight() {
    let mut settings = settings();
    // The rule's time zone is New York's (its reset is at 04:00 there): its days end at New York's midnight.
    let basic = &mut settings.service_providers[0].temppass_mvpds[0];
    basic.rule.reset = Some(ok(DailyReset::parse("04:00", "America/New_York"), "a reset"));
    let mut app = TestApp::observed(settings, &EventSettings::default()).await;
    // 2026-12-04T23:59 in New York is 2026-12-05T04:59Z: the UTC day has already turned.
    let before_midnight_ms = 1_796_446_740_000;
    app.advance_ms(before_midnight_ms - app.now_ms());
    app.renew_token().await;
    assert_permitted(app.authorize(BASIC, "device-a", &["res"]).send().await.decision(), "res");
    assert_permitted(app.authorize(PROMO, "device-a", &["t1"]).identity("a@example.com").send().await.decision(), "t1");
    app.advance_ms(2 * 60 * 1000);
    assert_permitted(app.authorize(BASIC, "device-b", &["res"]).send().await.decision(), "res");
    ok(app.state.observer().flush_figures(app.store().as_ref()).await, "the flush");

    let figures = ok(app.store().figures(&FiguresQuery::default()).await, "the figures");
    let days: Vec<(&str, String, u64)> =
        figures.iter().map(|row| (row.mvpd.as_str(), row.day.to_string(), row.counts.trials_started)).collect();
    assert_eq!(
        days,
        [
            (BASIC, "2026-12-04".to_owned(), 1),
            (BASIC, "2026-12-05".to_owned(), 1),
            // The promotional rule has no reset: its day is UTC's.
            (PROMO, "2026-12-05".to_owned(), 1),
        ],
        "{figures:?}"
    );
    let since = ok(Day::parse("2026-12-05"), "a day");
    let reply = app.management(&format!("/stats?since={since}&service_provider={SP}")).await;
    let rows = reply.assert_ok_json()["figures"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2, "{}", reply.text);
    app.management("/stats?since=yesterday").await.assert_error(400, "bad_request", "none");
}

#[tokio::test]
async fn the_management_listener_says_live_and_ready_and_nothing_else() {
    let app = TestApp::observed(settings(), &EventSettings::default()).await;
    app.management("/health/live").await.assert_ok_json();
    assert_eq!(app.management("/health/ready").await.assert_ok_json()["status"], "ready");
    app.management("/api/v2/REF30/configuration").await.assert_status(404);
    // The public router does not serve the management endpoints.
    app.get("/metrics").send().await.assert_status(404);
}
