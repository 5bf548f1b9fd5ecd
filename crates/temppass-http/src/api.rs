//! REST API V2 for TempPass (SPEC.md §3): configuration, sessions, profiles,
//! decisions and logout.
//!
//! Each handler runs the checks of SPEC.md §5 in order (bearer, service
//! provider, MVPD, headers, body) and leaves every TempPass decision to
//! `temppass_core` and the store.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use temppass_core::{
    DenyReason, DeviceId, IdentityHash, MvpdId, ProfileState, ResourceId, Rule, RuleKind, RuleScope, Timestamp, Trial,
    media_token_expiry, profile_state, remaining_resources,
};
use temppass_observe::DecisionKind;
use temppass_store::{Authorization, AuthorizeOutcome, Session, StoreError, TrialLookup};
use temppass_token::{MediaTokenClaims, issue_media_token};

use crate::auth::api_call;
use crate::error::{ApiError, ErrorBody, ErrorCode, json_bytes_response, json_response, unread_body};
use crate::headers::{self, InvalidIdentity};
use crate::observe::Decided;
use crate::settings::{MvpdRef, ServiceProvider, TempPassMvpd};
use crate::state::AppState;
use crate::wire;

type ApiResult = Result<Response, ApiError>;

fn parse_mvpd<'a>(sp: &'a ServiceProvider, raw: &str) -> Result<(MvpdId, MvpdRef<'a>), ApiError> {
    let id =
        MvpdId::parse(raw).map_err(|e| ApiError::with_details(ErrorCode::InvalidParameterMvpd, format!("mvpd {e}")))?;
    let mvpd = sp.mvpd(&id).ok_or_else(|| {
        ApiError::with_details(ErrorCode::InvalidIntegration, format!("{id} is not an MVPD of {}", sp.id))
    })?;
    Ok((id, mvpd))
}

/// A stable opaque id: the first 128 bits of SHA-256 over the parts.
fn opaque_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The profile's `userID`: stable and opaque. A promotional trial may span
/// devices, so its viewer is the identity; a basic one's is the device.
fn user_id(sp: &ServiceProvider, device: &DeviceId, identity: Option<&IdentityHash>) -> String {
    let hash = match identity {
        Some(identity) => opaque_hash(&["identity", sp.id.as_str(), identity.as_str()]),
        None => opaque_hash(&["device", sp.id.as_str(), device.as_str()]),
    };
    format!("temppass_{hash}")
}

/// `…/profiles/`, `…/decisions/authorize/` and the like: the MVPD segment is empty.
pub(crate) async fn missing_mvpd(
    State(state): State<AppState>,
    Path(sp): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    api_call(&state, &headers, &sp).await?;
    Err(ApiError::with_details(ErrorCode::InvalidParameterMvpd, "the mvpd path segment is empty"))
}

pub(crate) async fn configuration(
    State(state): State<AppState>,
    Path(sp): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let (index, _) = api_call(&state, &headers, &sp).await?;
    Ok(json_bytes_response(StatusCode::OK, state.0.configuration_json[index].clone()))
}

// --- profiles ---

pub(crate) async fn all_profiles(
    State(state): State<AppState>,
    Path(sp): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    api_call(&state, &headers, &sp).await?;
    Ok(json_response(StatusCode::OK, &json!({ "profiles": {} })))
}

pub(crate) async fn mvpd_profile(
    State(state): State<AppState>,
    Path((sp, mvpd)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (_, sp) = api_call(&state, &headers, &sp).await?;
    let (mvpd_id, mvpd) = parse_mvpd(sp, &mvpd)?;
    let device = headers::device_id(&headers)?;
    match mvpd {
        MvpdRef::Regular(_) => Ok(json_response(StatusCode::OK, &json!({ "profiles": {} }))),
        MvpdRef::TempPass(temppass) => temppass_profile(&state, sp, &mvpd_id, temppass, &device, &headers).await,
    }
}

pub(crate) async fn code_profile(
    State(state): State<AppState>,
    Path((sp, code)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (_, sp) = api_call(&state, &headers, &sp).await?;
    let session = find_session(&state, sp, &code).await?;
    let Some(mvpd) = session.mvpd.clone() else {
        return Ok(json_response(StatusCode::OK, &json!({ "profiles": {} })));
    };
    let (mvpd_id, mvpd) = parse_mvpd(sp, mvpd.as_str())?;
    let device = match session.device {
        Some(device) => device,
        None => headers::device_id(&headers)?,
    };
    match mvpd {
        MvpdRef::Regular(_) => Ok(json_response(StatusCode::OK, &json!({ "profiles": {} }))),
        MvpdRef::TempPass(temppass) => temppass_profile(&state, sp, &mvpd_id, temppass, &device, &headers).await,
    }
}

/// The identity of a promotional request: required unless `optional`.
fn request_identity(
    temppass: &TempPassMvpd,
    headers: &HeaderMap,
    optional: bool,
) -> Result<Option<IdentityHash>, InvalidIdentity> {
    let Some(key) = temppass.rule.identity_key() else {
        return Ok(None);
    };
    match headers::identity(headers, key)? {
        None if !optional => Err(InvalidIdentity("the AP-TempPass-Identity header is missing")),
        identity => Ok(identity),
    }
}

async fn temppass_profile(
    state: &AppState,
    sp: &ServiceProvider,
    mvpd_id: &MvpdId,
    temppass: &TempPassMvpd,
    device: &DeviceId,
    headers: &HeaderMap,
) -> ApiResult {
    let identity = request_identity(temppass, headers, false)
        .map_err(|e| ApiError::with_details(ErrorCode::InvalidHeaderIdentityForTemporaryAccess, e.0))?;
    let scope = sp.scope(mvpd_id);
    let now = state.now();
    let rule = &temppass.rule;
    let lookup = TrialLookup::new(&scope, device, identity.as_ref(), rule, now);
    let trial = state.store_call(state.store().find_trial(lookup)).await?;
    let (not_before, not_after, used) = match profile_state(rule, trial.as_ref(), now) {
        ProfileState::Denied(reason) => return Err(ApiError::new(reason.into())),
        ProfileState::Prospective { not_before, not_after } => (not_before, not_after, &[][..]),
        ProfileState::Active(trial) => (trial.started_at, trial.expires_at, &trial.used_resources[..]),
    };
    let (remaining, used_assets) = match rule.kind {
        RuleKind::Basic => (None, None),
        RuleKind::Promotional { max_resources, .. } => (
            Some(wire::Attribute::plain(remaining_resources(max_resources, used.len()))),
            Some(wire::Attribute::plain(used.iter().map(|r| r.as_str().to_owned()).collect())),
        ),
    };
    let profile = wire::Profile {
        not_before: not_before.as_millis(),
        not_after: not_after.as_millis(),
        issuer: "temppass",
        kind: "temporary",
        attributes: wire::ProfileAttributes {
            expiration_date: wire::Attribute::plain(not_after.as_millis()),
            remaining_resources: remaining,
            used_assets,
            user_id: wire::Attribute::plain(user_id(sp, device, identity.as_ref())),
        },
    };
    Ok(json_response(StatusCode::OK, &json!({ "profiles": { mvpd_id.as_str(): profile } })))
}

// --- decisions ---

fn parse_resources(body: Result<Bytes, BytesRejection>, max_resources: usize) -> Result<Vec<ResourceId>, ApiError> {
    let body = body.map_err(|rejection| {
        unread_body(
            &rejection,
            ApiError::with_details(ErrorCode::InvalidParameterResources, "the body could not be read"),
        )
    })?;
    decision_resources(&body, max_resources)
}

/// The body of a decision request (authorize and preauthorize): `{"resources":["…"]}`, at least one and at most
/// `max_resources`, each a valid resource id; anything else is `invalid_parameter_resources`. A body naming more
/// is refused while it is parsed (SPEC.md §4), so no answer grows with it. The body size limit is applied before.
pub fn decision_resources(body: &[u8], max_resources: usize) -> Result<Vec<ResourceId>, ApiError> {
    let invalid = |details: &str| ApiError::with_details(ErrorCode::InvalidParameterResources, details);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let request = DecisionRequest::deserialize_bounded(&mut deserializer, max_resources)
        .and_then(|request| deserializer.end().map(|()| request))
        .map_err(|error| match error.classify() {
            serde_json::error::Category::Data if error.to_string().starts_with(TOO_MANY) => {
                invalid(&format!("at most {max_resources} resources per request"))
            }
            _ => invalid("expected a JSON body {\"resources\":[\"…\"]}"),
        })?;
    if request.resources.is_empty() {
        return Err(invalid("resources is empty"));
    }
    request.resources.iter().map(|r| ResourceId::parse(r).map_err(|e| invalid(&format!("a resource {e}")))).collect()
}

const TOO_MANY: &str = "too many resources";

struct DecisionRequest {
    resources: Vec<String>,
}

impl DecisionRequest {
    /// `{"resources":[…]}` (other fields ignored), stopping at the first resource past `max_resources`.
    fn deserialize_bounded<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
        max_resources: usize,
    ) -> Result<Self, D::Error> {
        use serde::de::{DeserializeSeed, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
        use std::fmt;

        struct Resources(usize);
        impl<'de> Visitor<'de> for Resources {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of resource ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut resources = Vec::with_capacity(self.0.min(8));
                while let Some(resource) = seq.next_element::<String>()? {
                    if resources.len() == self.0 {
                        return Err(A::Error::custom(TOO_MANY));
                    }
                    resources.push(resource);
                }
                Ok(resources)
            }
        }
        impl<'de> DeserializeSeed<'de> for Resources {
            type Value = Vec<String>;
            fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_seq(self)
            }
        }
        struct Request(usize);
        impl<'de> Visitor<'de> for Request {
            type Value = DecisionRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object {\"resources\":[…]}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut resources = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "resources" {
                        if resources.is_some() {
                            return Err(A::Error::duplicate_field("resources"));
                        }
                        resources = Some(map.next_value_seed(Resources(self.0))?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                let resources = resources.ok_or_else(|| A::Error::missing_field("resources"))?;
                Ok(DecisionRequest { resources })
            }
        }
        deserializer.deserialize_map(Request(max_resources))
    }
}

pub(crate) async fn authorize(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    decisions(state, path, headers, body, DecisionKind::Authorize).await
}

pub(crate) async fn preauthorize(
    state: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    decisions(state, path, headers, body, DecisionKind::Preauthorize).await
}

/// Authorize and preauthorize: one decision per resource of the body.
async fn decisions(
    State(state): State<AppState>,
    Path((sp, mvpd)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: DecisionKind,
) -> ApiResult {
    let (_, sp) = api_call(&state, &headers, &sp).await?;
    let (mvpd_id, mvpd) = parse_mvpd(sp, &mvpd)?;
    let device = headers::device_id(&headers)?;
    let resources = parse_resources(body, state.settings().limits.body_resources)?;
    let items = Items { sp: sp.id.as_str(), mvpd: mvpd_id.as_str() };
    let scope = sp.scope(&mvpd_id);
    let now = state.now();
    let seen = Seen { state: &state, scope: &scope, kind, device: &device, now };
    let temppass = match mvpd {
        MvpdRef::Regular(_) => {
            seen.denied_all(None, false, &resources, ErrorCode::AuthenticatedProfileMissing);
            return Ok(items.deny_all(&resources, ErrorBody::new(ErrorCode::AuthenticatedProfileMissing)));
        }
        MvpdRef::TempPass(temppass) => temppass,
    };
    let rule = &temppass.rule;
    let limit = match kind {
        DecisionKind::Authorize => state.settings().limits.authorize_resources,
        DecisionKind::Preauthorize => state.settings().limits.preauthorize_resources,
    };
    let identity_sent = headers.contains_key(headers::TEMPPASS_IDENTITY);
    if resources.len() > limit {
        seen.denied_all(Some(rule), identity_sent, &resources, ErrorCode::TooManyResources);
        let error = ErrorBody::new(ErrorCode::TooManyResources)
            .with_details(format!("at most {limit} resources per request on a TempPass MVPD"));
        return Ok(items.deny_all(&resources, error));
    }
    let identity = match request_identity(temppass, &headers, kind == DecisionKind::Preauthorize) {
        Ok(identity) => identity,
        Err(InvalidIdentity(details)) => {
            seen.denied_all(Some(rule), identity_sent, &resources, ErrorCode::InvalidHeaderIdentityForTemporaryAccess);
            let error = ErrorBody::new(ErrorCode::InvalidHeaderIdentityForTemporaryAccess).with_details(details);
            return Ok(items.deny_all(&resources, error));
        }
    };
    let lookup = TrialLookup::new(&scope, &device, identity.as_ref(), rule, now);
    let decided =
        |resource: &ResourceId, deny: Option<DenyReason>, outcome: Option<&AuthorizeOutcome>, trial: Option<&Trial>| {
            seen.decided(Decided {
                scope: &scope,
                kind,
                rule: Some(rule),
                device: &device,
                identity_present: identity.is_some(),
                resource: resource.as_str(),
                deny_code: deny.map(|reason| ErrorCode::from(reason).as_str()),
                outcome,
                trial_ref: trial.map(|trial| items.sid(trial)),
                now,
            })
        };
    let decisions = match kind {
        DecisionKind::Authorize => {
            let mut decisions = Vec::with_capacity(resources.len());
            for resource in &resources {
                let outcome =
                    state.store_call(state.store().authorize(Authorization::new(lookup, rule, resource, now))).await?;
                decided(resource, outcome.decision.err(), Some(&outcome), Some(&outcome.trial));
                decisions.push(match outcome.decision {
                    Ok(()) => {
                        let token = media_token(&state, &items, resource, &outcome.trial, now);
                        items.permit(resource, &outcome.trial, now, token)
                    }
                    Err(reason) => items.deny(resource, ErrorBody::new(reason.into())),
                });
            }
            decisions
        }
        DecisionKind::Preauthorize => {
            let trial = state.store_call(state.store().find_trial(lookup)).await?;
            temppass_core::preauthorize(rule, trial.as_ref(), &resources, now)
                .into_iter()
                .zip(&resources)
                .map(|(answer, resource)| {
                    decided(resource, answer.err(), None, trial.as_ref());
                    match answer {
                        Ok(()) => items.preauthorized(resource),
                        Err(reason) => items.deny(resource, ErrorBody::new(reason.into())),
                    }
                })
                .collect()
        }
    };
    Ok(json_response(StatusCode::OK, &wire::Decisions { decisions }))
}

/// What a decision request tells the observer: who asked, on which rule.
struct Seen<'a> {
    state: &'a AppState,
    scope: &'a RuleScope,
    kind: DecisionKind,
    device: &'a DeviceId,
    now: Timestamp,
}

impl Seen<'_> {
    fn decided(&self, decided: Decided<'_>) {
        self.state.observer().decision(decided);
    }

    /// Every resource of the request denied with `code` before any trial was read.
    fn denied_all(&self, rule: Option<&Rule>, identity_present: bool, resources: &[ResourceId], code: ErrorCode) {
        for resource in resources {
            self.decided(Decided {
                scope: self.scope,
                kind: self.kind,
                rule,
                device: self.device,
                identity_present,
                resource: resource.as_str(),
                deny_code: Some(code.as_str()),
                outcome: None,
                trial_ref: None,
                now: self.now,
            });
        }
    }
}

/// Builds decision items for one service provider and MVPD.
struct Items<'a> {
    sp: &'a str,
    mvpd: &'a str,
}

impl<'a> Items<'a> {
    /// A trial's `sid` in its media tokens, and its reference in tracking events.
    fn sid(&self, trial: &Trial) -> String {
        opaque_hash(&["trial", self.sp, self.mvpd, &trial.id.0.to_string()])
    }

    fn item(&self, resource: &'a ResourceId, authorized: bool) -> wire::Decision<'a> {
        wire::Decision {
            resource: resource.as_str(),
            service_provider: self.sp,
            mvpd: self.mvpd,
            source: "temppass",
            authorized,
            not_before: None,
            not_after: None,
            token: None,
            error: None,
        }
    }

    fn deny(&self, resource: &'a ResourceId, error: ErrorBody) -> wire::Decision<'a> {
        wire::Decision { error: Some(error), ..self.item(resource, false) }
    }

    fn deny_all(&self, resources: &'a [ResourceId], error: ErrorBody) -> Response {
        let decisions = resources.iter().map(|r| self.deny(r, error.clone())).collect();
        json_response(StatusCode::OK, &wire::Decisions { decisions })
    }

    fn preauthorized(&self, resource: &'a ResourceId) -> wire::Decision<'a> {
        self.item(resource, true)
    }

    /// A permit of `resource` on `trial`, carrying `token`.
    fn permit(
        &self,
        resource: &'a ResourceId,
        trial: &Trial,
        now: Timestamp,
        token: wire::MediaToken,
    ) -> wire::Decision<'a> {
        wire::Decision {
            not_before: Some(now.as_millis()),
            not_after: Some(trial.expires_at.as_millis()),
            token: Some(token),
            ..self.item(resource, true)
        }
    }
}

/// Signs the media token of a permit of `resource` on `trial` (SPEC.md §8).
fn media_token(
    state: &AppState,
    items: &Items<'_>,
    resource: &ResourceId,
    trial: &Trial,
    now: Timestamp,
) -> wire::MediaToken {
    let settings = state.settings();
    let exp = media_token_expiry(now, settings.media_token_ttl, trial.expires_at);
    let claims = MediaTokenClaims {
        iss: settings.public_url.clone(),
        sp: items.sp.to_owned(),
        mvpd: items.mvpd.to_owned(),
        resource: resource.as_str().to_owned(),
        sid: items.sid(trial),
        iat: now.as_secs_floor(),
        exp: exp.as_secs_floor(),
        // From the thread's CSPRNG: `Uuid::new_v4` asks the kernel (a system call) every time.
        jti: uuid::Builder::from_random_bytes(rand::random()).into_uuid().simple().to_string(),
    };
    let serialized_token = issue_media_token(&state.keys().signing, &claims);
    wire::MediaToken { not_before: now.as_millis(), not_after: exp.as_millis(), serialized_token }
}

// --- sessions (SPEC.md §3) ---

/// Codes avoid look-alike characters (no I, O, 0, 1).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LENGTH: usize = 8;
const SESSION_TTL_MS: i64 = 30 * 60 * 1000;
/// `domainName` and `redirectUrl` are kept for the session's life: a URL's worth each.
const MAX_SESSION_FIELD_BYTES: usize = 2048;

#[derive(Debug, Default, Deserialize)]
struct SessionForm {
    mvpd: Option<String>,
    #[serde(rename = "domainName")]
    domain_name: Option<String>,
    #[serde(rename = "redirectUrl")]
    redirect_url: Option<String>,
}

fn parse_session_form(body: Result<Bytes, BytesRejection>) -> Result<SessionForm, ApiError> {
    let body = body.map_err(|rejection| {
        let unreadable = ApiError::with_details(ErrorCode::InvalidAuthenticationSession, "the body could not be read");
        unread_body(&rejection, unreadable)
    })?;
    let form: SessionForm = serde_urlencoded::from_bytes(&body).map_err(|_| {
        ApiError::with_details(ErrorCode::InvalidAuthenticationSession, "expected a form-urlencoded body")
    })?;
    for (name, value) in [("domainName", &form.domain_name), ("redirectUrl", &form.redirect_url)] {
        if value.as_deref().is_some_and(|v| v.len() > MAX_SESSION_FIELD_BYTES || v.chars().any(char::is_control)) {
            return Err(ApiError::with_details(
                ErrorCode::InvalidAuthenticationSession,
                format!("{name} is longer than {MAX_SESSION_FIELD_BYTES} bytes or holds a control character"),
            ));
        }
    }
    let non_empty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    Ok(SessionForm {
        mvpd: non_empty(form.mvpd),
        domain_name: non_empty(form.domain_name),
        redirect_url: non_empty(form.redirect_url),
    })
}

fn new_code() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..CODE_LENGTH).map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char).collect()
}

fn missing_parameters(session: &Session) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if session.mvpd.is_none() {
        missing.push("mvpd");
    }
    if session.domain_name.is_none() {
        missing.push("domainName");
    }
    if session.redirect_url.is_none() {
        missing.push("redirectUrl");
    }
    missing
}

/// `sessionId` is the code, as in the `authorize` answer that completes the
/// session; Adobe's `SessionResponse` requires it in every answer.
fn resume_response(sp: &ServiceProvider, session: &Session) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "actionName": "resume",
            "actionType": "direct",
            "reasonType": "none",
            "code": session.code,
            "sessionId": session.code,
            "url": format!("/api/v2/{}/sessions/{}", sp.id, session.code),
            "missingParameters": missing_parameters(session),
            "notBefore": session.created_at.as_millis(),
            "notAfter": session.expires_at.as_millis(),
            "serviceProvider": sp.id.as_str(),
        }),
    )
}

/// The session must continue with a TempPass MVPD: temppass logs no one in to a regular MVPD.
fn temppass_session_response(
    sp: &ServiceProvider,
    mvpd_raw: &str,
    session_id: &str,
) -> Result<(MvpdId, Response), ApiError> {
    let (mvpd_id, mvpd) = parse_mvpd(sp, mvpd_raw)?;
    match mvpd {
        MvpdRef::TempPass(_) => {
            let body = wire::temporary_session(sp.id.as_str(), mvpd_id.as_str(), session_id);
            Ok((mvpd_id, json_response(StatusCode::OK, &body)))
        }
        MvpdRef::Regular(_) => Err(ApiError::with_details(
            ErrorCode::InvalidIntegration,
            format!("{mvpd_id} is a regular MVPD; temppass only serves TempPass MVPDs"),
        )),
    }
}

pub(crate) async fn create_session(
    State(state): State<AppState>,
    Path(sp): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (_, sp) = api_call(&state, &headers, &sp).await?;
    let device = headers::device_id(&headers)?;
    let form = parse_session_form(body)?;
    if let Some(mvpd) = &form.mvpd {
        return temppass_session_response(sp, mvpd, &uuid::Uuid::new_v4().to_string()).map(|(_, response)| response);
    }
    let now = state.now();
    let mut session = Session {
        code: String::new(),
        service_provider: sp.id.clone(),
        device: Some(device),
        mvpd: None,
        domain_name: form.domain_name,
        redirect_url: form.redirect_url,
        created_at: now,
        expires_at: Timestamp::from_millis(now.as_millis() + SESSION_TTL_MS),
    };
    // 32^8 codes: a collision is rare, and a few tries make failure practically impossible.
    for _ in 0..5 {
        session.code = new_code();
        let created = state.store_call(async {
            match state.store().create_session(&session).await {
                Ok(()) => Ok(true),
                Err(StoreError::Conflict(_)) => Ok(false),
                Err(error) => Err(error),
            }
        });
        if created.await? {
            return Ok(resume_response(sp, &session));
        }
    }
    Err(ApiError::new(ErrorCode::InternalServerError))
}

async fn find_session(state: &AppState, sp: &ServiceProvider, code: &str) -> Result<Session, ApiError> {
    let invalid = || ApiError::new(ErrorCode::InvalidParameterCode);
    let code = code.to_ascii_uppercase();
    if code.len() != CODE_LENGTH || !code.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
        return Err(invalid());
    }
    let session = state.store_call(state.store().find_session(&code)).await?.ok_or_else(invalid)?;
    if session.service_provider != sp.id || state.now() >= session.expires_at {
        return Err(invalid());
    }
    Ok(session)
}

pub(crate) async fn session_status(
    State(state): State<AppState>,
    Path((sp, code)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (_, sp) = api_call(&state, &headers, &sp).await?;
    let session = find_session(&state, sp, &code).await?;
    let mut existing = serde_json::Map::new();
    for (name, value) in [
        ("mvpd", session.mvpd.as_ref().map(|m| m.as_str().to_owned())),
        ("domainName", session.domain_name.clone()),
        ("redirectUrl", session.redirect_url.clone()),
    ] {
        if let Some(value) = value {
            existing.insert(name.to_owned(), value.into());
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "existingParameters": existing,
            "missingParameters": missing_parameters(&session),
            "notBefore": session.created_at.as_millis(),
            "notAfter": session.expires_at.as_millis(),
        }),
    ))
}

pub(crate) async fn resume_session(
    State(state): State<AppState>,
    Path((sp, code)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (_, sp) = api_call(&state, &headers, &sp).await?;
    let mut session = find_session(&state, sp, &code).await?;
    let form = parse_session_form(body)?;
    if session.device.is_none() && headers.contains_key(headers::DEVICE_IDENTIFIER) {
        session.device = Some(headers::device_id(&headers)?);
    }
    session.domain_name = form.domain_name.or(session.domain_name);
    session.redirect_url = form.redirect_url.or(session.redirect_url);
    let Some(mvpd) = form.mvpd.or_else(|| session.mvpd.as_ref().map(|m| m.as_str().to_owned())) else {
        state.store_call(state.store().update_session(&session)).await?;
        return Ok(resume_response(sp, &session));
    };
    let (mvpd_id, response) = temppass_session_response(sp, &mvpd, &session.code)?;
    session.mvpd = Some(mvpd_id);
    state.store_call(state.store().update_session(&session)).await?;
    Ok(response)
}

// --- logout ---

pub(crate) async fn logout(
    State(state): State<AppState>,
    Path((sp, mvpd)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (_, sp) = api_call(&state, &headers, &sp).await?;
    let (mvpd_id, _) = parse_mvpd(sp, &mvpd)?;
    headers::device_id(&headers)?;
    Ok(json_response(StatusCode::OK, &wire::logout(mvpd_id.as_str())))
}
