//! The one place that turns failures into HTTP: enhanced error codes (SPEC.md §5)
//! for REST API V2 and the reset API, and OAuth-style errors for DCR (§6).
//!
//! 5xx bodies are generic; the detail goes to the log with the trace id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use temppass_core::DenyReason;
use temppass_store::StoreError;

/// Every enhanced error code temppass produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    TemporaryAccessDurationLimitExceeded,
    TemporaryAccessResourcesLimitExceeded,
    InvalidConfigurationTemporaryAccess,
    InvalidIntegration,
    InvalidHeaderIdentityForTemporaryAccess,
    InvalidHeaderDeviceIdentifier,
    InvalidParameterServiceProvider,
    InvalidParameterMvpd,
    InvalidParameterResources,
    InvalidParameterCode,
    InvalidAuthenticationSession,
    TooManyResources,
    AuthenticatedProfileMissing,
    InvalidAccessTokenServiceProvider,
    InvalidAccessTokenClientApplication,
    PayloadTooLarge,
    InternalServerError,
    /// A request that is not HTTP this server can parse (temppass's own code;
    /// hyper's empty 400 is rewritten to it, see `listener::io`).
    BadRequest,
    /// The request body did not arrive within `server.body_timeout` (temppass's own code).
    RequestTimeout,
    /// The request line is longer than the server reads (temppass's own code).
    UriTooLong,
    /// The request's headers are too many or too large (temppass's own code).
    RequestHeaderFieldsTooLarge,
    /// The server sheds load: too many connections or queued writes (temppass's own code).
    ServiceUnavailable,
    /// No such endpoint (temppass's own code: a JSON 404 instead of an empty one).
    NotFound,
    /// The endpoint exists, with other methods (temppass's own code, a JSON 405).
    MethodNotAllowed,
    // The reset API's own codes (SPEC.md §7 gives statuses, not codes).
    InvalidParameterDeviceId,
    InvalidParameterKey,
    ResetNotPermitted,
    ApiKeyMissing,
}

/// What the client should do next (Adobe's `action` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Authentication,
    Configuration,
    ApplicationRegistration,
    Retry,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Authentication => "authentication",
            Action::Configuration => "configuration",
            Action::ApplicationRegistration => "application-registration",
            Action::Retry => "retry",
        }
    }
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            TemporaryAccessDurationLimitExceeded => "temporary_access_duration_limit_exceeded",
            TemporaryAccessResourcesLimitExceeded => "temporary_access_resources_limit_exceeded",
            InvalidConfigurationTemporaryAccess => "invalid_configuration_temporary_access",
            InvalidIntegration => "invalid_integration",
            InvalidHeaderIdentityForTemporaryAccess => "invalid_header_identity_for_temporary_access",
            InvalidHeaderDeviceIdentifier => "invalid_header_device_identifier",
            InvalidParameterServiceProvider => "invalid_parameter_service_provider",
            InvalidParameterMvpd => "invalid_parameter_mvpd",
            InvalidParameterResources => "invalid_parameter_resources",
            InvalidParameterCode => "invalid_parameter_code",
            InvalidAuthenticationSession => "invalid_authentication_session",
            TooManyResources => "too_many_resources",
            AuthenticatedProfileMissing => "authenticated_profile_missing",
            InvalidAccessTokenServiceProvider => "invalid_access_token_service_provider",
            InvalidAccessTokenClientApplication => "invalid_access_token_client_application",
            PayloadTooLarge => "payload_too_large",
            InternalServerError => "internal_server_error",
            BadRequest => "bad_request",
            RequestTimeout => "request_timeout",
            UriTooLong => "uri_too_long",
            RequestHeaderFieldsTooLarge => "request_header_fields_too_large",
            ServiceUnavailable => "service_unavailable",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            InvalidParameterDeviceId => "invalid_parameter_device_id",
            InvalidParameterKey => "invalid_parameter_key",
            ResetNotPermitted => "reset_not_permitted",
            ApiKeyMissing => "api_key_missing",
        }
    }

    /// HTTP status and default action, as in SPEC.md §5.
    pub fn status_and_action(self) -> (StatusCode, Action) {
        use ErrorCode::*;
        match self {
            TemporaryAccessDurationLimitExceeded | TemporaryAccessResourcesLimitExceeded => {
                (StatusCode::FORBIDDEN, Action::Authentication)
            }
            InvalidConfigurationTemporaryAccess => (StatusCode::INTERNAL_SERVER_ERROR, Action::Configuration),
            InvalidIntegration
            | InvalidHeaderIdentityForTemporaryAccess
            | InvalidHeaderDeviceIdentifier
            | InvalidParameterServiceProvider
            | InvalidParameterMvpd
            | InvalidParameterResources
            | InvalidParameterCode
            | InvalidAuthenticationSession
            | InvalidParameterDeviceId
            | InvalidParameterKey => (StatusCode::BAD_REQUEST, Action::None),
            ResetNotPermitted => (StatusCode::FORBIDDEN, Action::ApplicationRegistration),
            ApiKeyMissing => (StatusCode::UNAUTHORIZED, Action::ApplicationRegistration),
            TooManyResources => (StatusCode::FORBIDDEN, Action::Configuration),
            AuthenticatedProfileMissing => (StatusCode::FORBIDDEN, Action::Authentication),
            InvalidAccessTokenServiceProvider | InvalidAccessTokenClientApplication => {
                (StatusCode::UNAUTHORIZED, Action::ApplicationRegistration)
            }
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, Action::None),
            InternalServerError => (StatusCode::INTERNAL_SERVER_ERROR, Action::None),
            BadRequest => (StatusCode::BAD_REQUEST, Action::None),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, Action::None),
            UriTooLong => (StatusCode::URI_TOO_LONG, Action::None),
            RequestHeaderFieldsTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Action::None),
            ServiceUnavailable => (StatusCode::SERVICE_UNAVAILABLE, Action::Retry),
            NotFound => (StatusCode::NOT_FOUND, Action::None),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, Action::None),
        }
    }

    /// The default message, after Adobe's enhanced error codes page where it has one.
    fn default_message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            TemporaryAccessDurationLimitExceeded => "The temporary access duration limit has been exceeded.",
            TemporaryAccessResourcesLimitExceeded => "The temporary access resources limit has been exceeded.",
            InvalidConfigurationTemporaryAccess => "The temporary access configuration is invalid.",
            InvalidIntegration => "The integration between the service provider and the MVPD is not configured.",
            InvalidHeaderIdentityForTemporaryAccess => {
                "The identity header for temporary access is missing or invalid."
            }
            InvalidHeaderDeviceIdentifier => "The device identifier header is missing or invalid.",
            InvalidParameterServiceProvider => "The service provider parameter value is missing or invalid.",
            InvalidParameterMvpd => "The MVPD parameter value is missing or invalid.",
            InvalidParameterResources => "The resources parameter value is missing or invalid.",
            InvalidParameterCode => "The code parameter value is missing, unknown or expired.",
            InvalidAuthenticationSession => "The authentication session is missing or invalid.",
            TooManyResources => "The request names more resources than allowed.",
            AuthenticatedProfileMissing => "The authenticated profile is missing.",
            InvalidAccessTokenServiceProvider => "The access token is not valid for this service provider.",
            InvalidAccessTokenClientApplication => {
                "The access token is missing, invalid or expired; obtain a new one and try again."
            }
            PayloadTooLarge => "The request body is too large.",
            InternalServerError => "The server encountered an internal error.",
            BadRequest => "The request could not be read as HTTP.",
            RequestTimeout => "The request body did not arrive in time.",
            UriTooLong => "The request URI is too long.",
            RequestHeaderFieldsTooLarge => "The request headers are too many or too large.",
            ServiceUnavailable => "The server is busy; try again shortly.",
            NotFound => "There is no such endpoint.",
            MethodNotAllowed => "This endpoint does not accept that method.",
            InvalidParameterDeviceId => "The device_id parameter value is invalid.",
            InvalidParameterKey => "The key parameter value is invalid.",
            ResetNotPermitted => "The credentials are not allowed to reset temporary passes of this service provider.",
            ApiKeyMissing => "The ApiKey header is missing.",
        }
    }
}

impl ErrorCode {
    /// The code of an error answer that only has a status: one made by hyper
    /// or by an axum extractor, which `edge.rs` and `listener::io` give the
    /// §5 body of this code.
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::RequestHeaderFieldsTooLarge,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailable,
            status if status.is_server_error() => ErrorCode::InternalServerError,
            _ => ErrorCode::BadRequest,
        }
    }
}

impl From<DenyReason> for ErrorCode {
    fn from(reason: DenyReason) -> Self {
        match reason {
            DenyReason::DurationLimitExceeded => ErrorCode::TemporaryAccessDurationLimitExceeded,
            DenyReason::ResourcesLimitExceeded => ErrorCode::TemporaryAccessResourcesLimitExceeded,
        }
    }
}

/// The enhanced error body (SPEC.md §5), also used inside decision items.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub action: &'static str,
    #[serde(rename = "helpUrl")]
    pub help_url: &'static str,
    pub trace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

const HELP_URL: &str = "https://experienceleague.adobe.com/docs/pass/authentication/integration-guide-programmers/features-standard/error-reporting/enhanced-error-codes.html";

impl ErrorBody {
    pub fn new(code: ErrorCode) -> Self {
        let (status, action) = code.status_and_action();
        Self {
            status: status.as_u16(),
            code: code.as_str(),
            message: code.default_message().to_owned(),
            action: action.as_str(),
            help_url: HELP_URL,
            trace: uuid::Uuid::new_v4().to_string(),
            details: None,
        }
    }

    pub fn with_action(mut self, action: Action) -> Self {
        self.action = action.as_str();
        self
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }
}

/// A request-level error: the whole response body, with its HTTP status.
/// Boxed: errors are rare, and a small `Result` keeps the success path cheap.
#[derive(Debug)]
pub struct ApiError(pub Box<ErrorBody>);

impl ApiError {
    pub fn new(code: ErrorCode) -> Self {
        Self::from_body(ErrorBody::new(code))
    }

    pub fn from_body(body: ErrorBody) -> Self {
        Self(Box::new(body))
    }

    pub fn with_details(code: ErrorCode, details: impl Into<String>) -> Self {
        Self::from_body(ErrorBody::new(code).with_details(details))
    }

    pub fn code(&self) -> &'static str {
        self.0.code
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let body = ErrorBody::new(ErrorCode::InternalServerError);
        match &error {
            StoreError::Unavailable(_) => {
                tracing::warn!(trace = %body.trace, %error, "store unavailable");
                ApiError::from_body(body.with_action(Action::Retry))
            }
            StoreError::Busy(_) => {
                tracing::warn!(trace = %body.trace, %error, "shedding load");
                ApiError::new(ErrorCode::ServiceUnavailable)
            }
            StoreError::Conflict(_) | StoreError::Internal(_) | StoreError::InvalidValue(_) => {
                tracing::error!(trace = %body.trace, %error, "store failure");
                ApiError::from_body(body)
            }
        }
    }
}

/// The code of an error answer, as a response extension for the access log
/// and the metrics (`access.rs`): the one place that knows codes says which
/// are refused credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorTag {
    pub code: &'static str,
    /// Credentials were missing, unknown, expired, revoked or not allowed (401 and 403).
    pub auth_failure: bool,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(status, &*self.0);
        let auth_failure = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        response.extensions_mut().insert(ErrorTag { code: self.0.code, auth_failure });
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            let scheme = if self.0.code == ErrorCode::ApiKeyMissing.as_str() { "ApiKey" } else { "Bearer" };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        }
        response
    }
}

/// A request body that could not be read: 413 `payload_too_large` when it was
/// over the limit, else `unreadable` (each endpoint names its own 400).
pub(crate) fn unread_body(rejection: &axum::extract::rejection::BytesRejection, unreadable: ApiError) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge)
    } else if crate::edge::is_body_timeout(rejection) {
        ApiError::new(ErrorCode::RequestTimeout)
    } else {
        unreadable
    }
}

/// A JSON response with the content type of Adobe's API.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes_response(status, bytes),
        Err(error) => {
            tracing::error!(%error, "cannot serialise a response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub const JSON_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/json;charset=utf-8");

pub fn json_bytes_response(status: StatusCode, bytes: impl Into<axum::body::Body>) -> Response {
    let mut response = (status, bytes.into()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, JSON_CONTENT_TYPE);
    response
}

/// OAuth errors of the DCR endpoints (`{"error":"invalid_client"}`, status 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    InvalidRequest,
    InvalidRedirectUri,
    InvalidSoftwareStatement,
    UnapprovedSoftwareStatement,
    InvalidClient,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
}

impl OAuthError {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest => "invalid_request",
            OAuthError::InvalidRedirectUri => "invalid_redirect_uri",
            OAuthError::InvalidSoftwareStatement => "invalid_software_statement",
            OAuthError::UnapprovedSoftwareStatement => "unapproved_software_statement",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::UnauthorizedClient => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope => "invalid_scope",
        }
    }
}

/// A DCR failure: an OAuth error, or the store failing underneath.
#[derive(Debug)]
pub enum DcrError {
    OAuth(OAuthError, &'static str),
    Api(ApiError),
}

impl From<StoreError> for DcrError {
    fn from(error: StoreError) -> Self {
        DcrError::Api(error.into())
    }
}

impl IntoResponse for DcrError {
    fn into_response(self) -> Response {
        match self {
            DcrError::OAuth(error, description) => {
                let mut response = json_response(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": error.as_str(), "error_description": description }),
                );
                let auth_failure = matches!(
                    error,
                    OAuthError::InvalidClient
                        | OAuthError::UnauthorizedClient
                        | OAuthError::InvalidSoftwareStatement
                        | OAuthError::UnapprovedSoftwareStatement
                );
                response.extensions_mut().insert(ErrorTag { code: error.as_str(), auth_failure });
                response
            }
            DcrError::Api(error) => error.into_response(),
        }
    }
}
