//! The body of `decisions/authorize` and `decisions/preauthorize`
//! (`{"resources":["…"]}`, SPEC.md §3–§4), parsed by the handlers' own
//! `temppass_http::decision_resources`.
//!
//! Holds: no panic; a refusal is always `invalid_parameter_resources`; an
//! accepted body names 1 or more resources of 1..=4096 bytes, and the same
//! resources sent back as JSON parse to the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use temppass_core::ResourceId;
use temppass_http::decision_resources;

temppass_fuzz::bound_allocations!();

fuzz_target!(|data: &[u8]| {
    let resources = match decision_resources(data) {
        Ok(resources) => resources,
        Err(error) => {
            assert_eq!(error.code(), "invalid_parameter_resources");
            return;
        }
    };
    assert!(!resources.is_empty());
    for resource in &resources {
        assert!((1..=ResourceId::MAX_LEN).contains(&resource.as_str().len()));
    }
    let names: Vec<&str> = resources.iter().map(ResourceId::as_str).collect();
    let body = serde_json::json!({ "resources": names }).to_string();
    assert_eq!(decision_resources(body.as_bytes()).ok(), Some(resources));
});
