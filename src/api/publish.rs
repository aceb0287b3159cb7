//! Publishing over HTTP: `POST /events/api/v1/app` (Altinn apps) and
//! `POST /events/api/v1/events` (generic CloudEvents). The handlers check
//! the media type and who calls; the publish use case does the rest.
//! [`routes`] registers the handlers with their operations in the document.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, Problem};
use super::extract::{JsonBody, MaybePlatformApp, MaybePrincipal};
use super::routes::{EVENTS, PUBLISH_APP};
use super::schema::{NO_CONTROL_CHARACTERS, dev, nullable_string, string};
use super::state::AppState;
use crate::authz::Caller;
use crate::domain::cloud_event::{MAX_FIELD_LEN, MAX_ID_LEN};
use crate::domain::{PlatformApp, Principal};
use crate::publish::PublishCheck;

pub const SCOPE_PUBLISH: &str = "altinn:events.publish";
pub const SCOPE_PUBLISH_ADMIN: &str = "altinn:events.publish.admin";
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The publishes, with their operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(publish_app)).routes(routes!(publish_generic))
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("The body is not valid JSON: {e}")))
}

/// An app's event about one of its instances (`POST /app`), as JSON: the
/// publish use case parses it (`domain::cloud_event::app_event`) and keeps
/// every attribute it was given.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct AppCloudEvent(Value);

impl PartialSchema for AppCloudEvent {
    fn schema() -> RefOr<Schema> {
        let event = ObjectBuilder::new().description(Some(
            "An app's event about one of its instances (`POST /app`). The service sets `id`, `time` and \
             `resource`; `source` is the instance's URL in the app's domain \
             (`https://{org}.apps.../{org}/{app}/instances/{partyId}/{instanceGuid}`, its `{org}/{app}` \
             the platform access token's) and `subject` its party (`/party/{partyId}`). Strings are at \
             most 1024 bytes (UTF-8), without control characters. Members other than the attributes \
             are extension attributes.",
        ));
        let event = event
            .property("specversion", spec_version())
            .required("specversion")
            .property("type", attribute())
            .required("type")
            .property("source", attribute().pattern(Some(APP_SOURCE)))
            .required("source")
            .property("subject", attribute())
            .required("subject");
        let event = optional_attributes(event, &["alternativesubject", "datacontenttype", "dataschema"]);
        extensions(event)
            .examples([json!({
                "specversion": "1.0",
                "type": "app.instance.created",
                "source": "https://ttd.apps.altinn.no/ttd/apps-test/instances/50002108/3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11",
                "subject": "/party/50002108"
            })])
            .into()
    }
}

impl ToSchema for AppCloudEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AppCloudEventRequest")
    }
}

/// A generic CloudEvent about a resource (`POST /events`), as JSON: the
/// publish use case parses it (`domain::cloud_event::generic_event`) and
/// keeps every attribute it was given.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct GenericCloudEvent(Value);

impl PartialSchema for GenericCloudEvent {
    fn schema() -> RefOr<Schema> {
        let event = ObjectBuilder::new().description(Some(
            "A generic CloudEvent about a resource (`POST /events`). The service sets `time` when it \
             stores the event. `source` is an absolute URI (or a URN). Strings are at most 1024 bytes \
             (UTF-8), without control characters. Members other than the attributes are extension \
             attributes.",
        ));
        let event = event
            .property("specversion", spec_version())
            .required("specversion")
            .property("id", string().max_length(Some(MAX_ID_LEN)).pattern(Some(TEXT)))
            .required("id")
            .property("source", attribute().pattern(Some(SOURCE)))
            .required("source")
            .property("type", attribute())
            .required("type")
            .property("resource", attribute().pattern(Some(RESOURCE)))
            .required("resource");
        let optional = ["subject", "alternativesubject", "resourceinstance", "datacontenttype", "dataschema"];
        extensions(optional_attributes(event, &optional))
            .examples([json!({
                "specversion": "1.0",
                "id": "e1d0c3a2-0b7e-4a55-8f5b-1c2d3e4f5a6b",
                "source": "urn:no:skd:estate:42",
                "type": "no.altinn.estate.registered",
                "resource": dev::RESOURCE,
                "subject": "/party/1337"
            })])
            .into()
    }
}

impl ToSchema for GenericCloudEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("GenericCloudEventRequest")
    }
}

// Patterns of the attributes (ECMA-262 and Python alike), each whole: the
// control characters (`\u0000-\u001F`, `\u007F-\u009F`) are refused in
// every attribute the service reads, and a blank one counts as missing.

/// Text: not blank, no control characters.
const TEXT: &str =
    "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$";
/// An app's source: a URL with a host and at least two path segments
/// (`{org}/{app}`).
const APP_SOURCE: &str = "^[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9.-]+/[^/?#\\s\\u0000-\\u001F\\u007F-\\u009F]+/[^/?#\\s\\u0000-\\u001F\\u007F-\\u009F]+([/?#][^\\u0000-\\u001F\\u007F-\\u009F]*)?$";
/// A generic event's source: an absolute URI with a host, or a URN.
const SOURCE: &str = "^([A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9.-]+([/?#][^\\u0000-\\u001F\\u007F-\\u009F]*)?|[Uu][Rr][Nn]:[^\\s\\u0000-\\u001F\\u007F-\\u009F]+)$";
/// A resource: the prefix and a name.
const RESOURCE: &str = "^urn:altinn:resource:[^\\u0000-\\u001F\\u007F-\\u009F]+$";

/// `specversion`: CloudEvents 1.0.
fn spec_version() -> ObjectBuilder {
    string().enum_values(Some(["1.0"]))
}

/// A required attribute: a string within the bounds the service keeps.
fn attribute() -> ObjectBuilder {
    string().max_length(Some(MAX_FIELD_LEN)).pattern(Some(TEXT))
}

/// Attributes that may be left out (or `null`): strings within the same
/// bounds, when given.
fn optional_attributes(mut event: ObjectBuilder, names: &[&str]) -> ObjectBuilder {
    for name in names {
        let text = nullable_string().max_length(Some(MAX_FIELD_LEN)).pattern(Some(NO_CONTROL_CHARACTERS));
        event = event.property(*name, text);
    }
    event
}

/// `data` (anything), and extension attributes as CloudEvents defines them
/// (`domain::cloud_event`): names of lower-case letters and digits, values
/// a string (at most 1024 characters, no control characters), a number, a
/// boolean or `null`.
fn extensions(event: ObjectBuilder) -> ObjectBuilder {
    let any = || ObjectBuilder::new().schema_type(SchemaType::AnyValue);
    let scalar = ObjectBuilder::new()
        .schema_type([Type::String, Type::Number, Type::Boolean, Type::Null].into_iter().collect::<SchemaType>())
        .max_length(Some(MAX_FIELD_LEN))
        .pattern(Some(NO_CONTROL_CHARACTERS));
    event
        .property("data", any())
        .property("data_base64", any())
        .property_names(Some(string().pattern(Some("^([a-z0-9]+|data_base64)$"))))
        .additional_properties(Some(scalar))
}

/// An app publishes an event about one of its instances. Needs an Altinn
/// token and the app's platform access token, whose `{org}/{app}` must own
/// the source.
#[utoipa::path(
    post, path = PUBLISH_APP, tag = "Publish", operation_id = "publishAppEvent",
    summary = "An app publishes an event about one of its instances",
    request_body(content = AppCloudEvent, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored: the event's id. Readable at once.", body = String, content_type = "application/json", headers(("Location" = String, description = "The event's subject (its party)."))),
        (status = 400, description = "Not a valid app CloudEvent (Altinn's texts).", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid Altinn token, or the platform access token's app may not publish for this source (Altinn's text).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No platform access token.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another event already has this id.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("altinnToken" = [], "platformAccessToken" = []), ("altinnStudioRuntime" = [], "platformAccessToken" = [])),
)]
pub async fn publish_app(
    State(state): State<AppState>,
    _principal: Principal,
    app: PlatformApp,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let AppCloudEvent(event) = parse_json(Ok(body))?;
    let published = state.publisher.publish_app(&app, event).await?;
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
    post, path = EVENTS, tag = "Publish", operation_id = "publishEvent",
    summary = "Publish a generic CloudEvent about a resource",
    description = "Scope `altinn:events.publish` and the PDP's `publish` permission on the resource (or `altinn:events.publish.admin`), or a platform access token. Publishing the same `(id, source)` again stores nothing new and answers the same.",
    request_body(content = GenericCloudEvent, content_type = "application/cloudevents+json"),
    responses(
        (status = 200, description = "Stored (or already stored): the event's id.", body = String, content_type = "application/json"),
        (status = 400, description = "Not a valid CloudEvent.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope, or the PDP does not permit publishing on this resource.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another source already published this id.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/cloudevents+json`.", body = Problem, content_type = "application/problem+json"),
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
    let GenericCloudEvent(event) = parse_json(body)?;
    let published = state.publisher.publish_generic(check, event).await?;
    Ok((StatusCode::OK, ApiJson(published.id)).into_response())
}
