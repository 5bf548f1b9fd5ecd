//! Dynamic client registration (SPEC.md §6): software statements, clients and access tokens.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use temppass_core::Timestamp;
use temppass_store::{AccessToken, Application, Client};
use temppass_token::{Jwks, SigningKey, verify_jws};

use crate::auth::secret_hash;
use crate::error::{ApiError, DcrError, ErrorCode, OAuthError, json_response};
use crate::state::AppState;

/// The claims of a software statement: which registered application it stands for.
#[derive(Debug, Serialize, Deserialize)]
struct SoftwareStatementClaims {
    iss: String,
    sub: String,
    software_id: String,
    software_name: String,
    iat: i64,
    jti: String,
}

/// Signs a software statement for `application` with the server's current key.
pub fn issue_software_statement(key: &SigningKey, issuer: &str, application: &Application, now: Timestamp) -> String {
    key.sign_json(&SoftwareStatementClaims {
        iss: issuer.to_owned(),
        sub: application.id.clone(),
        software_id: application.id.clone(),
        software_name: application.name.clone(),
        iat: now.as_secs_floor(),
        jti: uuid::Uuid::new_v4().to_string(),
    })
}

/// Checks a software statement against the server's statement keys and returns the id of the registered
/// application it stands for; whether that application exists and is not revoked is the caller's question.
pub fn verify_software_statement(statement: &str, statement_keys: &Jwks) -> Result<String, DcrError> {
    let payload = verify_jws(statement, statement_keys).map_err(|_| {
        oauth(OAuthError::InvalidSoftwareStatement, "the software statement is not signed by this server")
    })?;
    let claims: SoftwareStatementClaims = serde_json::from_slice(&payload)
        .map_err(|_| oauth(OAuthError::InvalidSoftwareStatement, "the software statement lacks its claims"))?;
    Ok(claims.software_id)
}

/// A random 256-bit secret, URL-safe.
pub fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn oauth(error: OAuthError, description: &'static str) -> DcrError {
    DcrError::OAuth(error, description)
}

fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, DcrError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => DcrError::Api(ApiError::new(ErrorCode::PayloadTooLarge)),
        _ if crate::edge::is_body_timeout(&rejection) => DcrError::Api(ApiError::new(ErrorCode::RequestTimeout)),
        _ => oauth(OAuthError::InvalidRequest, "the request body could not be read"),
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

#[derive(Debug, Default, Deserialize)]
struct RegisterRequest {
    software_statement: Option<String>,
    redirect_uri: Option<String>,
}

pub(crate) async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DcrError> {
    let body = read_body(body)?;
    // JSON is the documented form; a form-encoded body is accepted too, and any
    // other RFC 7591 field (grant_types, token_endpoint_auth_method…) is ignored.
    let request: RegisterRequest = if is_json(&headers) || body.first() == Some(&b'{') {
        serde_json::from_slice(&body).map_err(|_| oauth(OAuthError::InvalidRequest, "the body is not valid JSON"))?
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|_| oauth(OAuthError::InvalidRequest, "the body is not a form"))?
    };
    let statement = request
        .software_statement
        .filter(|s| !s.is_empty())
        .ok_or_else(|| oauth(OAuthError::InvalidRequest, "software_statement is required"))?;
    let redirect_uris = match request.redirect_uri.filter(|u| !u.is_empty()) {
        None => Vec::new(),
        Some(uri) if is_absolute_uri(&uri) => vec![uri],
        Some(_) => return Err(oauth(OAuthError::InvalidRedirectUri, "redirect_uri must be an absolute URI")),
    };
    let application_id = verify_software_statement(&statement, &state.keys().statement_keys)?;
    let application = state
        .store_call(state.store().find_application(&application_id))
        .await
        .map_err(DcrError::Api)?
        .filter(|a| a.revoked_at.is_none())
        .ok_or_else(|| oauth(OAuthError::UnapprovedSoftwareStatement, "the application is unknown or revoked"))?;
    let now = state.now();
    let client_secret = random_secret();
    let client = Client {
        client_id: uuid::Uuid::new_v4().to_string(),
        secret_hash: secret_hash(&client_secret),
        application_id: application.id.clone(),
        redirect_uris,
        issued_at: now,
    };
    state.store_call(state.store().create_client(&client)).await.map_err(DcrError::Api)?;
    state.observer().registration(&application.name, now);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "client_id": client.client_id,
            "client_secret": client_secret,
            "redirect_uris": client.redirect_uris,
            "grant_types": ["client_credentials"],
            "scopes": application.scopes,
            "client_id_issued_at": now.as_secs_floor(),
        }),
    ))
}

fn is_absolute_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && uri.len() <= 2048
        && !uri.chars().any(|c| c.is_control() || c.is_whitespace())
}

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
    scope: Option<String>,
}

impl TokenRequest {
    /// Fields of the body win over fields of the query.
    fn or(self, other: TokenRequest) -> TokenRequest {
        TokenRequest {
            client_id: self.client_id.or(other.client_id),
            client_secret: self.client_secret.or(other.client_secret),
            grant_type: self.grant_type.or(other.grant_type),
            scope: self.scope.or(other.scope),
        }
    }
}

pub(crate) async fn token(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DcrError> {
    let body = read_body(body)?;
    let from_body: TokenRequest =
        serde_urlencoded::from_bytes(&body).map_err(|_| oauth(OAuthError::InvalidRequest, "the body is not a form"))?;
    let from_query: TokenRequest = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|_| oauth(OAuthError::InvalidRequest, "the query is malformed"))?;
    let request = from_body.or(from_query);
    let grant_type = request.grant_type.ok_or_else(|| oauth(OAuthError::InvalidRequest, "grant_type is required"))?;
    if grant_type != "client_credentials" {
        return Err(oauth(OAuthError::UnsupportedGrantType, "only client_credentials is supported"));
    }
    let (Some(client_id), Some(client_secret)) = (request.client_id, request.client_secret) else {
        return Err(oauth(OAuthError::InvalidRequest, "client_id and client_secret are required"));
    };
    let client = state
        .store_call(state.store().find_client(&client_id))
        .await
        .map_err(DcrError::Api)?
        .filter(|c| constant_time_eq(c.secret_hash.as_bytes(), secret_hash(&client_secret).as_bytes()))
        .ok_or_else(|| oauth(OAuthError::InvalidClient, "unknown client or wrong secret"))?;
    let application = state
        .store_call(state.store().find_application(&client.application_id))
        .await
        .map_err(DcrError::Api)?
        .filter(|a| a.revoked_at.is_none())
        .ok_or_else(|| oauth(OAuthError::UnauthorizedClient, "the client's application was revoked"))?;
    let scopes: Vec<String> = match request.scope.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => application.scopes.clone(),
        Some(requested) => {
            let requested: Vec<&str> = requested.split_whitespace().collect();
            if !requested.iter().all(|s| application.scopes.iter().any(|granted| granted == s)) {
                return Err(oauth(OAuthError::InvalidScope, "a requested scope is not granted to the application"));
            }
            // In the application's order, each once: a token (and each server's
            // cache of it) is never larger than its application's grants, however
            // often a request repeats a scope.
            application.scopes.iter().filter(|granted| requested.contains(&granted.as_str())).cloned().collect()
        }
    };
    let now = state.now();
    let ttl = state.settings().access_token_ttl;
    let access_token = random_secret();
    let token = AccessToken {
        id: uuid::Uuid::new_v4().to_string(),
        token_hash: secret_hash(&access_token),
        client_id: client.client_id,
        application_id: application.id,
        scopes,
        created_at: now,
        expires_at: now.saturating_add(ttl),
    };
    state.store_call(state.store().create_access_token(&token)).await.map_err(DcrError::Api)?;
    state.observer().access_token(&application.name, now);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "id": token.id,
            "access_token": access_token,
            "created_at": now.as_millis(),
            "expires_in": ttl.as_millis() / 1000,
            "token_type": "bearer",
            "scope": token.scopes.join(" "),
        }),
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
