//! Wire shapes of REST API V2 (field names as Adobe's OpenAPI file).

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ErrorBody;
use crate::settings::ServiceProvider;

/// `GET …/configuration`, serialised once per service provider at start-up.
pub(crate) fn configuration_json(sp: &ServiceProvider) -> Vec<u8> {
    let mvpd = |id: &str, display_name: &str, logo_url: &Option<String>, is_temp_pass: bool| {
        json!({
            "id": id,
            "displayName": display_name,
            "logoUrl": logo_url.as_deref().unwrap_or(""),
            "isTempPass": is_temp_pass,
            "isProxy": false,
            "authPerAggregator": false,
            "passiveAuthnEnabled": false,
            "displayInPlatformPicker": !is_temp_pass,
            "enablePlatformServices": false,
            "enforcePlatformPermissions": false,
            "authPerBrowserSession": false,
        })
    };
    let mvpds: Vec<Value> = sp
        .regular_mvpds
        .iter()
        .map(|m| mvpd(m.id.as_str(), &m.display_name, &m.logo_url, false))
        .chain(sp.temppass_mvpds.iter().map(|m| mvpd(m.id.as_str(), &m.display_name, &m.logo_url, true)))
        .collect();
    let domains: Vec<Value> = sp.domains.iter().map(|d| json!({ "name": d, "mvpdInitiated": false })).collect();
    let body = json!({
        "requestor": { "id": sp.id.as_str(), "name": sp.name, "domains": domains, "mvpds": mvpds }
    });
    body.to_string().into_bytes()
}

#[derive(Debug, Serialize)]
pub(crate) struct Attribute<T: Serialize> {
    pub value: T,
    pub state: &'static str,
}

impl<T: Serialize> Attribute<T> {
    pub(crate) fn plain(value: T) -> Self {
        Self { value, state: "plain" }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ProfileAttributes {
    pub expiration_date: Attribute<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_resources: Option<Attribute<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_assets: Option<Attribute<Vec<String>>>,
    #[serde(rename = "userID")]
    pub user_id: Attribute<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Profile {
    pub not_before: i64,
    pub not_after: i64,
    pub issuer: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub attributes: ProfileAttributes,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MediaToken {
    pub not_before: i64,
    pub not_after: i64,
    pub serialized_token: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Decision<'a> {
    pub resource: &'a str,
    pub service_provider: &'a str,
    pub mvpd: &'a str,
    pub source: &'static str,
    pub authorized: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<MediaToken>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Decisions<'a> {
    pub decisions: Vec<Decision<'a>>,
}

/// The answer for a TempPass MVPD on `sessions`: no login, go straight to authorize.
pub(crate) fn temporary_session(sp: &str, mvpd: &str, session_id: &str) -> Value {
    json!({
        "actionName": "authorize",
        "actionType": "direct",
        "reasonType": "temporary",
        "url": format!("/api/v2/{sp}/decisions/authorize/{mvpd}"),
        "sessionId": session_id,
        "mvpd": mvpd,
        "serviceProvider": sp,
    })
}

pub(crate) fn logout(mvpd: &str) -> Value {
    json!({ "logouts": { mvpd: { "actionName": "complete", "actionType": "none", "mvpd": mvpd } } })
}
