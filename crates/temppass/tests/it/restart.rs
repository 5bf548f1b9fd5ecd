//! What survives a restart and a `kill -9`.

use std::time::Duration;

use crate::support::{Sandbox, access_token, authorize};

#[tokio::test]
async fn a_permitted_trial_survives_kill_9_with_the_same_expiry_and_ends_on_time() {
    let sandbox = Sandbox::new("3s");
    let statement = sandbox.create_app("restart", &["REF30"]);
    let server = sandbox.start();
    let token = access_token(&server.base, &statement).await;
    let (status, first) = authorize(&server.base, &token, "REF30", "living-room", "res01").await;
    assert_eq!(status, 200);
    let decision = &first["decisions"][0];
    assert_eq!(decision["authorized"], true, "{first}");
    let not_after = decision["notAfter"].as_i64().unwrap_or_default();
    let jwks_before = reqwest::get(format!("{}/.well-known/jwks.json", server.base))
        .await
        .expect("the JWKS answers")
        .text()
        .await
        .unwrap_or_default();
    server.kill();

    let server = sandbox.start();
    let (_, again) = authorize(&server.base, &token, "REF30", "living-room", "res01").await;
    assert_eq!(again["decisions"][0]["authorized"], true, "{again}");
    assert_eq!(again["decisions"][0]["notAfter"].as_i64(), Some(not_after), "the restart changed the expiry");
    let jwks_after = reqwest::get(format!("{}/.well-known/jwks.json", server.base))
        .await
        .expect("the JWKS answers")
        .text()
        .await
        .unwrap_or_default();
    assert_eq!(jwks_before, jwks_after, "the signing key was regenerated on restart");

    #[allow(clippy::disallowed_methods)] // waiting for the server's real clock to pass the expiry
    let wait_ms = not_after
        - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    tokio::time::sleep(Duration::from_millis(wait_ms.max(0) as u64 + 50)).await;
    server.kill();

    let server = sandbox.start();
    let (status, expired) = authorize(&server.base, &token, "REF30", "living-room", "res01").await;
    assert_eq!(status, 200);
    assert_eq!(expired["decisions"][0]["authorized"], false, "{expired}");
    assert_eq!(expired["decisions"][0]["error"]["code"], "temporary_access_duration_limit_exceeded");
}

#[tokio::test]
async fn sigterm_finishes_and_exits_zero() {
    let sandbox = Sandbox::new("10m");
    let mut server = sandbox.start();
    let management = server.management.clone().expect("the sandbox's servers have a management listener");
    let live = reqwest::get(format!("{management}/health/live")).await.expect("the management listener answers");
    assert_eq!(live.status(), 200, "a started server is live");
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    assert!(status.is_ok_and(|s| s.success()));
    let exit = server.child.wait().expect("the server's exit status");
    assert!(exit.success(), "temppass serve exited with {exit:?} on SIGTERM");
}
