//! The body of `decisions/authorize` and `decisions/preauthorize`
//! (`{"resources":["…"]}`, SPEC.md §3–§4), parsed by the handlers' own
//! `temppass_http::decision_resources`.
//!
//! Holds: no panic; a refusal is always `invalid_parameter_resources`; an
//! accepted body names 1 to 50 resources (the default limit per body) of
//! 1..=4096 bytes without NUL, and the same resources sent back as JSON parse
//! to the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use temppass_core::ResourceId;
use temppass_http::decision_resources;

/// `limits.body_resources` by default (SPEC.md §4).
const MAX_RESOURCES: usize = 50;

temppass_fuzz::bound_allocations!();

fuzz_target!(|data: &[u8]| {
    let resources = match decision_resources(data, MAX_RESOURCES) {
        Ok(resources) => resources,
        Err(error) => {
            assert_eq!(error.code(), "invalid_parameter_resources");
            return;
        }
    };
    assert!((1..=MAX_RESOURCES).contains(&resources.len()));
    for resource in &resources {
        assert!((1..=ResourceId::MAX_LEN).contains(&resource.as_str().len()));
        assert!(!resource.as_str().contains('\0'));
    }
    let names: Vec<&str> = resources.iter().map(ResourceId::as_str).collect();
    let body = serde_json::json!({ "resources": names }).to_string();
    assert_eq!(decision_resources(body.as_bytes(), MAX_RESOURCES).ok(), Some(resources));
});
