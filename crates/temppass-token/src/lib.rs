//! Media tokens (SPEC.md §8): issue and verify Ed25519 compact JWS.
//!
//! This crate owns the token format and nothing else: no HTTP, no async runtime, no clock. A programmer's back
//! end (or a CDN edge function) can depend on it alone to check the `serializedToken` of a permit against the
//! server's `/.well-known/jwks.json`.
//!
//! - `key.rs`: the private signing key, its key id and the signing hot path.
//! - `jwks.rs`: public keys as JSON Web Keys, and parsing a key set from the wire.
//! - `jws.rs`: the generic compact JWS checks (used for media tokens and for software statements).
//! - `media.rs`: the media token claims and the verdicts of the verifier.
//! - `cache.rs`: a key-set cache that refetches on an unknown `kid`, at most once per interval.
//! - `client.rs` (feature `client`): `JwksClient`, the cache with an HTTPS fetcher.
//! - `replay.rs`: an optional bounded guard that accepts each `jti` once.
//!
//! Time is always a parameter: every check takes `now` in epoch seconds.
//!
//! ```
//! use temppass_token::{issue_media_token, verify_media_token, Jwks, MediaTokenClaims, SigningKey, Verdict, VerifyOptions};
//!
//! let key = SigningKey::from_seed([7; 32]);
//! let now = 1_700_000_000;
//! let claims = MediaTokenClaims {
//!     iss: "https://temppass.example".into(),
//!     sp: "acme".into(),
//!     mvpd: "TempPass".into(),
//!     resource: "news".into(),
//!     sid: "trial-1".into(),
//!     iat: now,
//!     exp: now + 420,
//!     jti: "token-1".into(),
//! };
//! let token = issue_media_token(&key, &claims);
//! let jwks = Jwks { keys: vec![key.public_jwk()] };
//! let verdict = verify_media_token(&token, &jwks, &VerifyOptions { resource: Some("news"), ..VerifyOptions::new(now) });
//! assert_eq!(verdict, Verdict::Valid(claims));
//! ```

mod cache;
#[cfg(feature = "client")]
mod client;
mod jwks;
mod jws;
mod key;
mod media;
mod replay;

pub use cache::{CachePolicy, JwksCache};
#[cfg(feature = "client")]
pub use client::{FetchError, JwksClient, fetch_jwks};
pub use jwks::{Jwk, Jwks, JwksError, MAX_JWKS_BYTES};
pub use jws::{JwsError, verify_jws};
pub use key::SigningKey;
pub use media::{
    DEFAULT_SKEW_SECS, MediaTokenClaims, Verdict, VerifyOptions, issue_media_token, token_kid, verify_media_token,
};
pub use replay::{ReplayError, ReplayGuard};

/// The only JWS algorithm this crate signs with or accepts (RFC 8037).
pub const ALGORITHM: &str = "EdDSA";

/// Longest token (compact or Base64-wrapped) the verifiers look at. Our media tokens are about 500 bytes; the
/// limit keeps a hostile input from costing more than a few kilobytes of decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
