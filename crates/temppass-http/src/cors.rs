//! Browser access (SPEC.md §11): CORS for the origins of the service
//! providers' `domains`, and loopback origins when the server listens on loopback.
//! Under `/api/v2/{serviceProvider}/…` only the domains of the service provider
//! in the path count, so one network's site cannot read another's answers;
//! the paths that name none (DCR, the JWKS) take the domains of every one.
//!
//! Other origins get no CORS headers at all (only `Vary`), so a browser
//! refuses to hand them the response. The reset API is for back ends and
//! gets none either.
//!
//! A layer of its own rather than `tower_http::cors`: that one clones its
//! whole configuration and builds its `Vary` value for every request, a share
//! of an authorize that `bench/load` can see. Here the policy is shared and
//! every header value is made once. Every `OPTIONS` request is a preflight,
//! answered here with 200 and no body, as tower-http does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use tower::{Layer, Service};

use crate::settings::Settings;

/// The request headers of SPEC.md §4 that a browser app may send, as one
/// `Access-Control-Allow-Headers` value. Headers that Adobe's clients send and
/// temppass ignores are allowed too, so an existing app's preflight does not
/// fail on them.
const ALLOWED_HEADERS: &str = "authorization,content-type,accept,ap-device-identifier,x-device-info,\
ap-temppass-identity,ap-visitor-identifier,ap-partner-framework-status,adobe-subject-token,ad-service-token,\
x-roku-reserved-roku-connect-token";

/// A preflight's answer is cached by the browser this long (seconds).
const MAX_AGE_SECONDS: &str = "600";

/// What every response carries: the answer depends on these request headers.
const VARY: &str = "origin, access-control-request-method, access-control-request-headers";

pub(crate) fn layer(settings: &Settings) -> CorsLayer {
    let normalised = |domains: &[String]| -> Vec<String> {
        domains
            .iter()
            .map(|domain| domain.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|domain| !domain.is_empty())
            .collect()
    };
    let by_service_provider =
        settings.service_providers.iter().map(|sp| (sp.id.as_str().to_owned(), normalised(&sp.domains))).collect();
    let every_domain = settings.service_providers.iter().flat_map(|sp| normalised(&sp.domains)).collect();
    CorsLayer {
        policy: Arc::new(Policy { by_service_provider, every_domain, loopback: settings.allow_loopback_origins }),
    }
}

struct Policy {
    by_service_provider: HashMap<String, Vec<String>>,
    every_domain: Vec<String>,
    loopback: bool,
}

impl Policy {
    /// The domains whose origins may read the answer to a request for `path`.
    fn domains_for(&self, path: &str) -> &[String] {
        match path.strip_prefix("/api/v2/") {
            Some(rest) => {
                let service_provider = rest.split('/').next().unwrap_or_default();
                self.by_service_provider.get(service_provider).map_or(&[], Vec::as_slice)
            }
            None => &self.every_domain,
        }
    }

    /// The request's `Origin`, if it is one this server lets browsers read answers from.
    fn allowed_origin(&self, headers: &HeaderMap, path: &str) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let allowed = origin.to_str().is_ok_and(|origin| is_allowed(origin, self.domains_for(path), self.loopback));
        allowed.then(|| origin.clone())
    }
}

#[derive(Clone)]
pub(crate) struct CorsLayer {
    policy: Arc<Policy>,
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors { inner, policy: Arc::clone(&self.policy) }
    }
}

#[derive(Clone)]
pub(crate) struct Cors<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let origin = self.policy.allowed_origin(request.headers(), request.uri().path());
        if request.method() == Method::OPTIONS {
            return CorsFuture::Preflight { response: Some(preflight(origin)) };
        }
        CorsFuture::Call { future: self.inner.call(request), origin }
    }
}

fn preflight(origin: Option<HeaderValue>) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static(VARY));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET,POST"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_SECONDS));
    }
    response
}

pin_project_lite::pin_project! {
    #[project = CorsFutureProjection]
    pub(crate) enum CorsFuture<F> {
        Preflight { response: Option<Response> },
        Call { #[pin] future: F, origin: Option<HeaderValue> },
    }
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CorsFutureProjection::Preflight { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            CorsFutureProjection::Call { future, origin } => {
                let Ok(mut response) = std::task::ready!(future.poll(cx));
                let headers = response.headers_mut();
                // A handler's own Vary values stay.
                headers.append(header::VARY, HeaderValue::from_static(VARY));
                if let Some(origin) = origin.take() {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("www-authenticate"));
                }
                Poll::Ready(Ok(response))
            }
        }
    }
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
    fn the_allowed_headers_are_lowercase_names_separated_by_commas() {
        let names: Vec<&str> = ALLOWED_HEADERS.split(',').collect();
        assert_eq!(names.len(), 11, "{ALLOWED_HEADERS}");
        for name in names {
            assert!(axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok(), "{name:?}");
            assert_eq!(name, name.trim().to_ascii_lowercase(), "{name:?}");
        }
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
    fn an_origin_is_allowed_only_on_the_paths_of_its_own_service_provider() {
        let policy = Policy {
            by_service_provider: HashMap::from([
                ("REF30".to_owned(), vec!["example.com".to_owned()]),
                ("OTHER".to_owned(), vec!["other.org".to_owned()]),
            ]),
            every_domain: vec!["example.com".to_owned(), "other.org".to_owned()],
            loopback: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://www.other.org"));
        assert!(policy.allowed_origin(&headers, "/api/v2/OTHER/configuration").is_some());
        assert!(policy.allowed_origin(&headers, "/api/v2/REF30/configuration").is_none());
        assert!(policy.allowed_origin(&headers, "/api/v2/UNKNOWN/configuration").is_none());
        assert!(policy.allowed_origin(&headers, "/o/client/register").is_some());
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
