//! Publishing over HTTP: `POST /events/api/v1/app` (Altinn apps) and
//! `POST /events/api/v1/events` (generic CloudEvents). The handlers check
//! the media type and who calls; the publish use case does the rest.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::{ApiError, ApiJson};
use super::extract::{JsonBody, MaybePlatformApp, MaybePrincipal};
use super::state::AppState;
use crate::authz::Caller;
use crate::domain::{PlatformApp, Principal};
use crate::publish::PublishCheck;

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

/// An app publishes an event about one of its instances. Needs an Altinn
/// token and the app's platform access token, whose `{org}/{app}` must own
/// the source.
#[utoipa::path(
    post, path = "/events/api/v1/app", tag = "Publish", operation_id = "publishAppEvent",
    summary = "An app publishes an event about one of its instances",
    request_body(content = crate::api::openapi::AppCloudEventRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored: the event's id. Readable at once.", body = String, content_type = "application/json", headers(("Location" = String, description = "The event's subject (its party)."))),
        (status = 400, description = "Not a valid app CloudEvent (Altinn's texts).", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid Altinn token, or the platform access token's app may not publish for this source (Altinn's text).", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "No platform access token.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another event already has this id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = [], "platformAccessToken" = []), ("altinnStudioRuntime" = [], "platformAccessToken" = [])),
)]
pub async fn publish_app(
    State(state): State<AppState>,
    _principal: Principal,
    app: PlatformApp,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let published = state.publisher.publish_app(&app, parse_json(Ok(body))?).await?;
    let mut resp = (StatusCode::CREATED, ApiJson(published.id)).into_response();
    if let Ok(location) = HeaderValue::from_str(&published.subject) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// A generic CloudEvent for a resource. Scope `altinn:events.publish` (or a
/// platform access token), then the PDP's `publish` decision unless the
/// caller has `altinn:events.publish.admin`. Publishing the same `(id,
/// source)` again stores nothing new.
#[utoipa::path(
    post, path = "/events/api/v1/events", tag = "Publish", operation_id = "publishEvent",
    summary = "Publish a generic CloudEvent about a resource",
    description = "Scope `altinn:events.publish` and the PDP's `publish` permission on the resource (or `altinn:events.publish.admin`), or a platform access token. Publishing the same `(id, source)` again stores nothing new and answers the same.",
    request_body(content = crate::api::openapi::GenericCloudEventRequest, content_type = "application/cloudevents+json"),
    responses(
        (status = 200, description = "Stored (or already stored): the event's id.", body = String, content_type = "application/json"),
        (status = 400, description = "Not a valid CloudEvent.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope, or the PDP does not permit publishing on this resource.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another source already published this id.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/cloudevents+json`.", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = []), ("altinnStudioRuntime" = []), ("platformAccessToken" = [])),
)]
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
    let check = match principal.as_ref().is_some_and(|p| p.has_scope(SCOPE_PUBLISH_ADMIN)) {
        true => PublishCheck::Admin,
        false => PublishCheck::Pdp(caller),
    };
    let published = state.publisher.publish_generic(check, parse_json(body)?).await?;
    Ok((StatusCode::OK, ApiJson(published.id)).into_response())
}
