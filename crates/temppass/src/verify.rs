//! `temppass token verify`: check a media token as a playback back end would (SPEC.md §8, §10).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use temppass_http::clock::{Clock, SystemClock};
use temppass_token::{Jwks, Verdict, VerifyOptions, fetch_jwks, verify_media_token};

/// Prints the verdict; exits 0 only for `Valid`, 1 for any other verdict, 2 when the keys cannot be read.
pub(crate) fn run(jwks: &str, resource: Option<&str>, skew_secs: i64, token: &str) -> ExitCode {
    let key_set = match load(jwks) {
        Ok(key_set) => key_set,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let now = SystemClock.now().as_secs_floor();
    let verdict = verify_media_token(token.trim(), &key_set, &VerifyOptions { now, skew_secs, resource });
    // A closed stdout (`| head`) changes nothing: the exit status is the verdict.
    let _ = crate::output::result(verdict.name());
    match verdict {
        Verdict::Valid(claims) => {
            let _ = crate::output::result(&serde_json::to_string(&claims).unwrap_or_default());
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(1),
    }
}

/// A key set from an `http(s)://` URL (the server's `/.well-known/jwks.json`) or a file.
fn load(source: &str) -> anyhow::Result<Jwks> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return Ok(fetch_jwks(source, Duration::from_secs(10))?);
    }
    let bytes = std::fs::read(source).with_context(|| format!("cannot read the key set {source}"))?;
    Jwks::from_json(&bytes).with_context(|| format!("{source} is not a JSON Web Key Set"))
}
