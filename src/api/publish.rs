//! Publishing: `POST /events/api/v1/app` (Altinn apps) and
//! `POST /events/api/v1/events` (generic CloudEvents).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::auth::{MaybePlatformApp, MaybePrincipal, PlatformApp, Principal};
use crate::authz::{Action, Caller};
use crate::domain::cloud_event::{self, CloudEventError};
use crate::error::{ApiError, ApiJson};
use crate::state::AppState;

pub const SCOPE_PUBLISH: &str = "altinn:events.publish";
pub const SCOPE_PUBLISH_ADMIN: &str = "altinn:events.publish.admin";
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

fn parse_json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("The body is not valid JSON: {e}")))
}

impl From<CloudEventError> for ApiError {
    fn from(e: CloudEventError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// An app publishes an event about one of its instances. Needs an Altinn
/// token and the app's platform access token, whose `{org}/{app}` must own
/// the source.
pub async fn publish_app(
    State(state): State<AppState>,
    _principal: Principal,
    app: PlatformApp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if media_type(&headers).is_some_and(|m| m != "application/json" && m != CLOUDEVENTS_JSON) {
        return Err(ApiError::UnsupportedMediaType("Expected `Content-Type: application/json`.".into()));
    }
    let body = parse_json(body)?;
    let id = uuid::Uuid::new_v4().to_string();
    let (record, source) = cloud_event::app_event(body, id.clone(), cloud_event::server_time())?;
    if source.org != app.issuer || source.app != app.app {
        return Err(ApiError::Unauthorized(format!(
            "{} is not authorized to create events for {}",
            app.app_id(),
            record.source
        )));
    }
    let subject = record.subject.clone();
    state.feeds.append(record, false).await?;
    let mut resp = (StatusCode::CREATED, ApiJson(id)).into_response();
    if let Ok(location) = HeaderValue::from_str(&subject) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// A generic CloudEvent for a resource. Scope `altinn:events.publish` (or a
/// platform access token), then the PDP's `publish` decision unless the
/// caller has `altinn:events.publish.admin`. Publishing the same `(id,
/// source)` again stores nothing new.
pub async fn publish_generic(
    State(state): State<AppState>,
    MaybePrincipal(principal): MaybePrincipal,
    MaybePlatformApp(app): MaybePlatformApp,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = match (&principal, &app) {
        (Some(p), _) if p.has_scope(SCOPE_PUBLISH) || p.has_scope(SCOPE_PUBLISH_ADMIN) => Caller::Principal(p),
        (_, Some(a)) => Caller::App(a),
        (Some(_), None) => {
            return Err(ApiError::Forbidden(format!("The token lacks the scope {SCOPE_PUBLISH}.")));
        }
        (None, None) => {
            return Err(ApiError::Unauthorized("Missing bearer token or AltinnStudioRuntime cookie.".into()));
        }
    };
    if media_type(&headers).as_deref() != Some(CLOUDEVENTS_JSON) {
        return Err(ApiError::UnsupportedMediaType(format!("Expected `Content-Type: {CLOUDEVENTS_JSON}`.")));
    }
    let record = cloud_event::generic_event(parse_json(body)?, cloud_event::server_time())?;
    let admin = principal.as_ref().is_some_and(|p| p.has_scope(SCOPE_PUBLISH_ADMIN));
    if !admin {
        let permitted = state
            .pdp
            .authorize(caller, Action::Publish, &[&record])
            .await
            .map_err(|e| ApiError::unavailable("authorization", e))?;
        if permitted.first() != Some(&true) {
            return Err(ApiError::Forbidden(format!("Not authorized to publish events for {}.", record.resource)));
        }
    }
    let id = record.id.clone();
    state.feeds.append(record, true).await?;
    Ok((StatusCode::OK, ApiJson(id)).into_response())
}
