//! The API contract as OpenAPI 3.1, generated from the handlers'
//! `#[utoipa::path]` attributes and the types they take and answer, served at
//! `/events/swagger/v1/swagger.json` with Swagger UI at `/events/swagger`
//! (its assets are compiled in: no CDN).
//!
//! What every operation can answer whatever its handler does (a 503 while
//! starting or overloaded, a 401 for a bad token, a 413 or 408 for a body)
//! is added here, once, by [`Common`], so the document cannot forget it.
//! In dev mode the document also carries an OAuth2 client-credentials
//! scheme whose token URL is the local issuer, so Swagger UI's Authorize
//! button fetches a token ([`crate::localtest`]).

use axum::Router;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::PROBLEM_JSON;
use super::{health, instance, publish, query, subscriptions};
use crate::domain::subscription::{DeliveryAttempt, DeliveryView, SubscriptionFilters, SubscriptionView};

/// Where Swagger UI is served.
pub const SWAGGER_UI: &str = "/events/swagger";
/// Where the document is served.
pub const SWAGGER_JSON: &str = "/events/swagger/v1/swagger.json";
/// The OAuth2 token endpoint of the local issuer (dev mode).
#[cfg(feature = "dev")]
pub const DEV_TOKEN_URL: &str = "/localtest/oauth2/token";

/// The security schemes' names in the document.
pub mod scheme {
    pub const BEARER: &str = "altinnToken";
    pub const COOKIE: &str = "altinnStudioRuntime";
    pub const PLATFORM: &str = "platformAccessToken";
    pub const INSTANCE_KEY: &str = "instanceAccessKey";
    pub const DEV_ISSUER: &str = "localIssuer";
}

/// A stored CloudEvent 1.0 as the feeds return it: every attribute the
/// publisher gave (extension attributes too), with `id`, `time` and
/// `resource` always set.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "specversion": "1.0",
    "id": "0b6ad44f-5c7a-4f1e-93d2-7e3b6e0c3e4d",
    "source": "https://ttd.apps.altinn.no/ttd/apps-test/instances/50002108/3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11",
    "type": "app.instance.created",
    "subject": "/party/50002108",
    "resource": "urn:altinn:resource:app_ttd_apps-test",
    "resourceinstance": "50002108/3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11",
    "time": "2026-11-27T10:00:00.000000Z"
}))]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub time: String,
    pub resource: String,
    pub subject: Option<String>,
    pub alternativesubject: Option<String>,
    pub resourceinstance: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    /// Anything the publisher sent.
    pub data: Option<Value>,
}

/// An app's event about one of its instances (`POST /app`). The service
/// sets `id`, `time` and `resource`; `source` is the instance's URL in the
/// app's domain and `subject` its party.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "specversion": "1.0",
    "type": "app.instance.created",
    "source": "https://ttd.apps.altinn.no/ttd/apps-test/instances/50002108/3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11",
    "subject": "/party/50002108"
}))]
pub struct AppCloudEventRequest {
    #[schema(pattern = "^1\\.0$")]
    pub specversion: String,
    #[serde(rename = "type")]
    #[schema(max_length = 1024)]
    pub event_type: String,
    #[schema(max_length = 1024)]
    pub source: String,
    #[schema(max_length = 1024)]
    pub subject: String,
    pub alternativesubject: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub data: Option<Value>,
}

/// A generic CloudEvent about a resource (`POST /events`). The service
/// sets `time` when it stores the event.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "specversion": "1.0",
    "id": "e1d0c3a2-0b7e-4a55-8f5b-1c2d3e4f5a6b",
    "source": "https://example.org/case/42",
    "type": "case.updated",
    "resource": "urn:altinn:resource:ttd-events-demo",
    "subject": "/organisation/991825827"
}))]
pub struct GenericCloudEventRequest {
    #[schema(pattern = "^1\\.0$")]
    pub specversion: String,
    #[schema(max_length = 128)]
    pub id: String,
    #[schema(max_length = 1024)]
    pub source: String,
    #[serde(rename = "type")]
    #[schema(max_length = 1024)]
    pub event_type: String,
    #[schema(pattern = "^urn:altinn:resource:", max_length = 1024)]
    pub resource: String,
    pub subject: Option<String>,
    pub alternativesubject: Option<String>,
    pub resourceinstance: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub data: Option<Value>,
}

/// An RFC 9457 problem document: every error this service answers.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// A stable URI per kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Altinn's text for 4xx; at most the failing dependency for 5xx.
    pub detail: Option<String>,
}

/// The body of `POST /events/api/v1/party`: the party query of
/// `GET /app/party`, with identity numbers out of the URL. Other fields are
/// refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartyQueryBody {
    /// A party id: a number, or a string of digits.
    #[schema(value_type = Option<PartyId>)]
    pub party: Option<Value>,
    /// An organisation number.
    #[schema(pattern = "^[0-9]{9}$")]
    pub unit: Option<String>,
    /// A national identity number.
    #[schema(pattern = "^[0-9]{11}$")]
    pub person: Option<String>,
    pub after: Option<String>,
    #[schema(format = DateTime)]
    pub from: Option<String>,
    #[schema(format = DateTime)]
    pub to: Option<String>,
    pub source: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub event_type: Option<Vec<String>>,
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub size: Option<Value>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 30)]
    pub wait: Option<Value>,
}

/// How a page is read: every feed read takes these.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Where to continue: `0` for the beginning, a cursor from `next`, or
    /// (Altinn's form) an event id.
    after: Option<String>,
    /// Events per page: 50 unless given, at most 1000 (larger is taken as 1000).
    #[param(minimum = 1)]
    size: Option<i64>,
    /// Long-poll: seconds to hold an empty page open until an event
    /// arrives (ours; 0 unless given).
    #[param(minimum = 0, maximum = 30)]
    wait: Option<i64>,
}

/// The filters of the app event queries, and whose events (with the
/// `person` header beside them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AppEventParams {
    /// Events at or after this time (with timezone). `from` or `after` is
    /// required.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Events at or before this time (with timezone).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Event types to include (repeat for several).
    #[param(rename = "type", style = Form, explode)]
    event_type: Option<Vec<String>>,
    /// A party id.
    party: Option<i64>,
    /// An organisation number.
    #[param(pattern = "^[0-9]{9}$")]
    unit: Option<String>,
}

/// A party id as `POST /party` takes it: a number or a string of digits.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PartyId {
    Number(u64),
    /// Digits only.
    Digits(String),
}

/// An instance access key (`POST .../accesskey`).
#[derive(Serialize, ToSchema)]
pub struct InstanceAccessKey {
    /// Send it as `Altinn-Instance-Access-Key`.
    pub key: String,
    /// `{partyId}/{instanceGuid}`.
    pub instance: String,
    pub expires: String,
}

/// A subscription as created or rotated: the view and, once, its secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionWithSecret {
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    /// The Standard Webhooks signing secret (`whsec_...`). Shown only here.
    pub secret: Option<String>,
}

/// `GET /subscriptions`.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    pub count: usize,
    pub subscriptions: Vec<SubscriptionView>,
}

/// `GET /subscriptions/{id}/deliveries`: recent push attempts, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub count: usize,
    pub deliveries: Vec<DeliveryAttempt>,
}

/// `/health`, `/health/live`.
#[derive(Serialize, ToSchema)]
pub struct Live {
    #[schema(example = "live")]
    pub status: String,
}

/// `/health/ready` when ready.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: String,
}

/// `/health/dependencies` when every dependency answers.
#[derive(Serialize, ToSchema)]
pub struct Dependencies {
    #[schema(example = "ok")]
    pub status: String,
    /// Each dependency: `ok` or `unavailable`.
    pub checks: std::collections::BTreeMap<String, String>,
}

/// `/health/ready` or `/health/dependencies` when not: a problem naming
/// what it waits for (`checks`: each dependency, `ok` or `unavailable`).
#[derive(Serialize, ToSchema)]
pub struct NotReady {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: Option<String>,
    pub checks: std::collections::BTreeMap<String, String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Altinn Events",
        description = "CloudEvents about Altinn instances and resources: publish, read ordered feeds \
            (each event authorized by the Altinn PDP), and subscribe with webhooks. A drop-in \
            replacement for Altinn 3 Events; where it differs, docs/api.md says so.",
        version = "1",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        publish::publish_app,
        publish::publish_generic,
        query::generic,
        query::app_owner,
        query::app_party,
        query::party_post,
        instance::issue_key,
        instance::read_with_key,
        subscriptions::create,
        subscriptions::list,
        subscriptions::get,
        subscriptions::delete,
        subscriptions::get_singular,
        subscriptions::delete_singular,
        subscriptions::validate,
        subscriptions::rotate_secret,
        subscriptions::enable,
        subscriptions::replay,
        subscriptions::deliveries,
        health::health,
        health::live,
        health::ready,
        health::dependencies,
        health::metrics,
    ),
    components(schemas(
        CloudEvent,
        Problem,
        SubscriptionFilters,
        SubscriptionView,
        DeliveryView,
    )),
    modifiers(&Common),
    tags(
        (name = "Publish", description = "Apps and systems publish CloudEvents."),
        (name = "Read", description = "Ordered feeds, each page filtered by the PDP. Follow the `next` header."),
        (name = "Instances", description = "Events of one instance for whoever holds its access key."),
        (name = "Subscriptions", description = "Webhook push of a feed, in order, signed (Standard Webhooks)."),
        (name = "Health", description = "Probes and metrics."),
    ),
)]
struct ApiDoc;

/// Adds the security schemes and the responses every operation of a kind
/// can give.
struct Common;

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build())
        .build()
}

fn with_retry_after(description: &str) -> utoipa::openapi::Response {
    let mut resp = problem(description);
    resp.headers.insert(
        "Retry-After".into(),
        utoipa::openapi::header::HeaderBuilder::new()
            .schema(Some(seconds_schema()))
            .description(Some("Seconds to wait before trying again."))
            .build()
            .into(),
    );
    resp
}

/// A whole number of seconds (`Retry-After`).
fn seconds_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(0))
        .into()
}

fn add_if_missing(op: &mut Operation, status: &str, response: utoipa::openapi::Response) {
    op.responses.responses.entry(status.into()).or_insert(response.into());
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

impl Modify for Common {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            scheme::BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An Altinn token (from Altinn's authentication, or exchanged from Maskinporten or ID-porten).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            scheme::COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::extract::RUNTIME_COOKIE,
                "The Altinn token as the `AltinnStudioRuntime` cookie (apps and the browser).",
            ))),
        );
        components.add_security_scheme(
            scheme::PLATFORM,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                super::extract::ACCESS_TOKEN_HEADER,
                "A platform access token: which app or platform component calls.",
            ))),
        );
        components.add_security_scheme(
            scheme::INSTANCE_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Altinn-Instance-Access-Key",
                "A key the app owner issued for one instance (`POST .../accesskey`).",
            ))),
        );
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                if secured {
                    add_if_missing(op, "401", problem("No token, or one that is not valid."));
                }
                if op.request_body.is_some() {
                    add_if_missing(op, "408", problem("The body did not arrive in time."));
                    add_if_missing(
                        op,
                        "413",
                        problem("The body is larger than `limits.max_body_bytes` (256 KiB unless configured)."),
                    );
                }
                if op.parameters.as_ref().is_some_and(|ps| ps.iter().any(is_path_param)) {
                    add_if_missing(op, "400", problem("A path parameter is not valid."));
                }
                add_if_missing(
                    op,
                    "503",
                    with_retry_after(
                        "Starting, overloaded (with `Retry-After`), or a dependency (Cosmos DB, the PDP, \
                         Register) is unavailable: nothing was stored, no event was shown.",
                    ),
                );
                add_if_missing(op, "500", problem("Unexpected; the body says no more."));
            }
        }
    }
}

fn is_path_param(p: &utoipa::openapi::RefOr<utoipa::openapi::path::Parameter>) -> bool {
    matches!(p, utoipa::openapi::RefOr::T(p) if matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path))
}

/// The document. In dev mode it also has the local issuer's OAuth2 scheme,
/// offered beside the Altinn token on every operation that takes one.
pub fn document(dev: bool) -> Document {
    #[allow(unused_mut)]
    let mut doc = ApiDoc::openapi();
    #[cfg(feature = "dev")]
    if dev {
        add_dev_issuer(&mut doc);
    }
    let _ = dev;
    doc
}

#[cfg(feature = "dev")]
fn add_dev_issuer(doc: &mut Document) {
    use utoipa::openapi::security::{ClientCredentials, Flow, OAuth2, Scopes, SecurityRequirement};
    let scopes = Scopes::from_iter([
        ("altinn:events.publish", "publish generic events"),
        ("altinn:events.publish.admin", "publish generic events without a PDP check"),
        ("altinn:events.subscribe", "read generic events and subscribe"),
        ("altinn:serviceowner/instances.read", "service owner: read app events"),
        ("altinn:events/ttd/apps-test", "the app owner's feed of ttd/apps-test"),
    ]);
    let flow = Flow::ClientCredentials(ClientCredentials::new(DEV_TOKEN_URL, scopes));
    let description = "Dev mode only: a token from the local issuer. client_id says who you are: an org code \
        (`ttd`), an organisation number (`991825827`), or `user:{userId}` (`user:1337`); any client_secret.";
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            scheme::DEV_ISSUER,
            SecurityScheme::OAuth2(OAuth2::with_description([flow], description)),
        );
    }
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let Some(security) = op.security.as_mut() else { continue };
            // Every requirement that needs the Altinn token may instead use
            // the local issuer's, with the same other parts.
            let alternatives: Vec<SecurityRequirement> = security
                .iter()
                .filter_map(|req| {
                    let value = serde_json::to_value(req).ok()?;
                    let map = value.as_object()?;
                    map.contains_key(scheme::BEARER).then(|| {
                        let mut names: Vec<&str> = vec![scheme::DEV_ISSUER];
                        names.extend(map.keys().map(String::as_str).filter(|k| *k != scheme::BEARER));
                        names
                            .into_iter()
                            .fold(SecurityRequirement::default(), |r, n| r.add::<&str, [&str; 0], &str>(n, []))
                    })
                })
                .collect();
            security.extend(alternatives);
        }
    }
}

/// Swagger UI at [`SWAGGER_UI`] and the document at [`SWAGGER_JSON`].
pub fn router(dev: bool) -> Router {
    let mut config = utoipa_swagger_ui::Config::new([SWAGGER_JSON])
        .try_it_out_enabled(true)
        .persist_authorization(true)
        .display_request_duration(true)
        .filter(true);
    if dev {
        config = config.with_credentials(true);
    }
    Router::from(utoipa_swagger_ui::SwaggerUi::new(SWAGGER_UI).url(SWAGGER_JSON, document(dev)).config(config))
}

/// The paths and methods the document lists, for the route check.
pub fn documented_operations(doc: &Document) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, present) in [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PATCH", item.patch.is_some()),
        ] {
            if present {
                out.push((path.clone(), method));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_mode_offers_the_local_issuer_beside_every_altinn_token() {
        let doc = serde_json::to_value(document(true)).unwrap();
        let mut alternatives = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let security = op["security"].as_array().cloned().unwrap_or_default();
                for req in security.iter().filter(|r| r.get(scheme::BEARER).is_some()) {
                    // The same requirement with the local issuer's token
                    // in place of the Altinn token.
                    let mut expected = req.as_object().unwrap().clone();
                    expected.remove(scheme::BEARER);
                    expected.insert(scheme::DEV_ISSUER.into(), serde_json::json!([]));
                    let found = security.iter().any(|r| r.as_object() == Some(&expected));
                    assert!(found, "{method} {path}: no local-issuer alternative to {req}");
                    alternatives += 1;
                }
            }
        }
        assert_eq!(alternatives, 18, "every operation that takes an Altinn token");
        let flows = &doc["components"]["securitySchemes"][scheme::DEV_ISSUER]["flows"];
        assert_eq!(flows["clientCredentials"]["tokenUrl"], DEV_TOKEN_URL);
        let prod = serde_json::to_value(document(false)).unwrap();
        assert!(prod["components"]["securitySchemes"].get(scheme::DEV_ISSUER).is_none());
    }
}
