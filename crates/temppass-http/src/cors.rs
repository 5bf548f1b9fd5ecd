//! Browser access (SPEC.md §11): CORS for the origins of the service
//! providers' `domains`, and loopback origins when the server listens on loopback.
//!
//! Other origins get no CORS headers at all, so a browser refuses to hand
//! them the response. The reset API is for back ends and gets none either.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::settings::Settings;

/// The request headers of SPEC.md §4 that a browser app may send.
/// Headers that Adobe's clients send and temppass ignores are allowed too, so
/// an existing app's preflight does not fail on them.
const ALLOWED_HEADERS: [&str; 11] = [
    "authorization",
    "content-type",
    "accept",
    "ap-device-identifier",
    "x-device-info",
    "ap-temppass-identity",
    "ap-visitor-identifier",
    "ap-partner-framework-status",
    "adobe-subject-token",
    "ad-service-token",
    "x-roku-reserved-roku-connect-token",
];

pub(crate) fn layer(settings: &Settings) -> CorsLayer {
    let domains: Vec<String> = settings
        .service_providers
        .iter()
        .flat_map(|sp| sp.domains.iter())
        .map(|domain| domain.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|domain| !domain.is_empty())
        .collect();
    let loopback = settings.allow_loopback_origins;
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|origin| is_allowed(origin, &domains, loopback))
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers([header::WWW_AUTHENTICATE])
        .max_age(Duration::from_secs(600))
}

/// `https://app.example.com` is allowed by the domain `example.com`; so is `http://example.com`.
fn is_allowed(origin: &str, domains: &[String], loopback: bool) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") || authority.contains(['/', '@', '?', '#']) {
        return false;
    }
    let host = match authority.rsplit_once(':') {
        // An IPv6 literal keeps its colons inside brackets.
        Some((host, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.to_ascii_lowercase();
    if loopback && scheme == "http" && matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        return true;
    }
    domains
        .iter()
        .any(|domain| host == *domain || host.strip_suffix(domain.as_str()).is_some_and(|rest| rest.ends_with('.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<String> {
        vec!["example.com".into()]
    }

    #[test]
    fn the_domain_and_its_subdomains_are_allowed_on_http_and_https() {
        for origin in
            ["https://example.com", "http://example.com", "https://www.example.com", "https://a.b.example.com:8443"]
        {
            assert!(is_allowed(origin, &domains(), false), "{origin}");
        }
    }

    #[test]
    fn look_alike_and_malformed_origins_are_refused() {
        for origin in [
            "https://notexample.com",
            "https://example.com.evil.net",
            "https://evilexample.com",
            "ftp://example.com",
            "null",
            "https://user@example.com",
            "example.com",
        ] {
            assert!(!is_allowed(origin, &domains(), true), "{origin}");
        }
    }

    #[test]
    fn loopback_origins_are_allowed_only_when_the_server_listens_on_loopback() {
        for origin in ["http://127.0.0.1:5173", "http://localhost:8080", "http://localhost", "http://[::1]:3000"] {
            assert!(is_allowed(origin, &domains(), true), "{origin}");
            assert!(!is_allowed(origin, &domains(), false), "{origin}");
        }
        assert!(!is_allowed("http://127.0.0.2:80", &domains(), true));
    }
}
