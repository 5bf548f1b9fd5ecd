//! Software statements (SPEC.md §6), checked by registration's own
//! `temppass_http::verify_software_statement` against a fixed key set.
//!
//! Holds: no panic; a statement is accepted only when it carries the fixed
//! key's own signature, and then names the application of its claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use temppass_fuzz::{JWKS, signed_by_the_fixed_key};
use temppass_http::verify_software_statement;

temppass_fuzz::bound_allocations!();

fuzz_target!(|data: &[u8]| {
    let Ok(statement) = std::str::from_utf8(data) else { return };
    if let Ok(application_id) = verify_software_statement(statement, &JWKS) {
        assert!(signed_by_the_fixed_key(statement), "{statement:?} was accepted but is not ours");
        let _ = application_id;
    }
});
