//! The configuration file and its environment overrides (SPEC.md §10), by
//! the binary's own `temppass::config::parse`.
//!
//! Input: TOML text, then optionally a NUL byte and `NAME=value` lines taken
//! as the environment (`TEMPPASS_<SECTION>__<KEY>`).
//!
//! Holds: no panic; a configuration that starts is within the limits the
//! validation promises (durations positive, body limit and pool size in
//! range, service provider ids unique).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;

temppass_fuzz::bound_allocations!();

fuzz_target!(|data: &[u8]| {
    let (text, env) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let Ok(config) = temppass::config::parse(text, env) else { return };
    let settings = &config.settings;
    assert!(settings.media_token_ttl.as_millis() > 0 && settings.access_token_ttl.as_millis() > 0);
    assert!((1024..=16 * 1024 * 1024).contains(&settings.limits.body_bytes));
    assert!((1..=1000).contains(&config.storage_pool_size));
    let mut ids = HashSet::new();
    assert!(settings.service_providers.iter().all(|sp| ids.insert(sp.id.clone())));
});
