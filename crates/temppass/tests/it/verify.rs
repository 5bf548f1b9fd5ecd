//! `temppass token verify` and the Python example of docs/verifying-media-tokens.md, on real tokens.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Sandbox, Server, access_token, authorize};

/// A permit's media token from a running server, and the server's key set saved to a file.
async fn real_token(sandbox: &Sandbox, server: &Server, resource: &str) -> (String, String) {
    let statement = sandbox.create_app("verifier", &["REF30"]);
    let token = access_token(&server.base, &statement).await;
    let (_, permit) = authorize(&server.base, &token, "REF30", "tv", resource).await;
    let media_token = permit["decisions"][0]["token"]["serializedToken"].as_str().unwrap_or_default().to_owned();
    assert!(!media_token.is_empty(), "no media token in {permit}");
    let jwks = reqwest::get(format!("{}/.well-known/jwks.json", server.base))
        .await
        .expect("the JWKS answers")
        .text()
        .await
        .unwrap_or_default();
    let file = sandbox.dir.path().join("jwks.json");
    std::fs::write(&file, jwks).expect("the JWKS file is written");
    (media_token, file.display().to_string())
}

fn verify(sandbox: &Sandbox, args: &[&str]) -> (i32, String) {
    let mut full = vec!["token", "verify"];
    full.extend_from_slice(args);
    let output = sandbox.run(&full);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn token_verify_prints_each_verdict_and_exits_zero_only_for_valid() {
    let sandbox = Sandbox::new("10m");
    let server = sandbox.start();
    let (token, jwks_file) = real_token(&sandbox, &server, "res01").await;
    let jwks_url = format!("{}/.well-known/jwks.json", server.base);

    assert_eq!(verify(&sandbox, &["--jwks", &jwks_url, "--resource", "res01", &token]), (0, "Valid".into()));
    assert_eq!(verify(&sandbox, &["--jwks", &jwks_file, &token]), (0, "Valid".into()));
    assert_eq!(verify(&sandbox, &["--jwks", &jwks_file, "--resource", "other", &token]), (1, "InvalidResource".into()));
    assert_eq!(verify(&sandbox, &["--jwks", &jwks_file, "not-a-token"]), (1, "InvalidFormat".into()));
    // Change the signature's first character: all six of its bits are signature
    // bits. (The last character also carries padding bits, which a strict
    // decoder rejects as InvalidFormat, so tampering there was flaky.)
    let mut tampered = token.clone();
    let signature_start = tampered.rfind('.').map_or(0, |dot| dot + 1);
    let replacement = if tampered[signature_start..].starts_with('A') { "B" } else { "A" };
    tampered.replace_range(signature_start..signature_start + 1, replacement);
    assert_eq!(verify(&sandbox, &["--jwks", &jwks_file, &tampered]), (1, "InvalidSignature".into()));
    let (code, _) = verify(&sandbox, &["--jwks", "/nonexistent/jwks.json", &token]);
    assert_eq!(code, 2, "an unreadable key set is an error, not a verdict");
}

#[tokio::test]
async fn token_verify_says_expired_once_the_trial_has_ended() {
    let sandbox = Sandbox::new("1s");
    let server = sandbox.start();
    let (token, jwks_file) = real_token(&sandbox, &server, "res01").await;
    // The token's exp is the trial's end (1 s away), rounded down to the second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(verify(&sandbox, &["--jwks", &jwks_file, "--skew", "0", &token]), (1, "Expired".into()));
}

/// The Python example needs python3 with `cryptography`; CI installs it (`.ci/run`), so there it must run.
fn python_with_cryptography() -> bool {
    let available =
        Command::new("python3").args(["-c", "import cryptography"]).output().is_ok_and(|o| o.status.success());
    if !available && std::env::var_os("CI").is_some() {
        panic!("CI must provide python3 with the cryptography package (see .ci/run)");
    }
    available
}

#[tokio::test]
async fn the_python_example_in_the_docs_verifies_a_real_token() {
    if !python_with_cryptography() {
        eprintln!(
            "SKIPPED: python3 with `cryptography` is not installed (pip install cryptography); CI runs this test"
        );
        return;
    }
    let sandbox = Sandbox::new("10m");
    let server = sandbox.start();
    let (token, jwks_file) = real_token(&sandbox, &server, "res01").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/verify_media_token.py");
    let run = |args: &[&str]| {
        let output = Command::new("python3").arg(&script).args(args).output().expect("python3 runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).trim().to_owned(), stderr)
    };
    let (code, verdict, stderr) = run(&["--jwks", &jwks_file, "--resource", "res01", &token]);
    assert_eq!((code, verdict.as_str()), (0, "Valid"), "{stderr}");
    let jwks_url = format!("{}/.well-known/jwks.json", server.base);
    assert_eq!(run(&["--jwks", &jwks_url, &token]).1, "Valid");
    assert_eq!(run(&["--jwks", &jwks_file, "--resource", "other", &token]).1, "InvalidResource");
    let (header, rest) = token.split_once('.').unwrap_or_default();
    let none_alg = format!("{}.{rest}", header.replace('J', "K"));
    assert_ne!(run(&["--jwks", &jwks_file, &none_alg]).1, "Valid");
}
