//! A playback back end's check, as docs/verifying-media-tokens.md describes it:
//!
//!     cargo run -p temppass-token --example verify -- JWKS_FILE RESOURCE TOKEN
//!
//! (With the `client` feature, `JwksClient::new(url, CachePolicy::default())`
//! replaces the file-reading fetch below.)

use std::process::ExitCode;

use temppass_token::{CachePolicy, Jwks, JwksCache, ReplayGuard, Verdict, VerifyOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [jwks_file, resource, token] = args.as_slice() else {
        eprintln!("usage: verify JWKS_FILE RESOURCE TOKEN");
        return ExitCode::from(2);
    };
    // Long-lived in a real back end: one cache per temppass server, one replay guard.
    let mut keys = JwksCache::new(CachePolicy::default());
    let mut replays = ReplayGuard::new(1_000_000, temppass_token::DEFAULT_SKEW_SECS);

    #[allow(clippy::disallowed_methods)] // an example back end reads its own clock
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let options = VerifyOptions { resource: Some(resource), ..VerifyOptions::new(now) };
    let fetch = || {
        std::fs::read(jwks_file).map_err(|e| e.to_string()).and_then(|b| Jwks::from_json(&b).map_err(|e| e.to_string()))
    };
    match keys.verify(token, &options, fetch) {
        Ok(Verdict::Valid(claims)) => match replays.check_and_record(&claims, now) {
            Ok(()) => {
                println!("Valid: start streaming {} for {}", claims.resource, claims.sp);
                ExitCode::SUCCESS
            }
            Err(replayed) => {
                println!("refused: {replayed}");
                ExitCode::from(1)
            }
        },
        Ok(verdict) => {
            println!("refused: {}", verdict.name());
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("cannot read the key set: {error}");
            ExitCode::from(2)
        }
    }
}
