//! The API contract as OpenAPI 3.1, served at
//! `/events/swagger/v1/swagger.json` with Swagger UI at `/events/swagger`
//! (its assets are compiled in: no CDN).
//!
//! Each handler group (`publish`, `query`, `instance`, `subscriptions`,
//! `health`) owns its routes and their operations: its `routes()` registers
//! every handler with the `#[utoipa::path]` beside it, and the types the
//! handler takes and answers are the types the document describes. This
//! module keeps only what belongs to the whole document: the base (info,
//! security schemes, tags), the merge of the groups ([`api`]), and what
//! every operation can answer whatever its handler does (a 503 while
//! starting or overloaded, a 401 for a bad token, a 413 or 408 for a body,
//! a 414 for a URL longer than the HTTP server reads),
//! added once so that no operation can forget it. In dev mode the document
//! also carries an OAuth2 client-credentials scheme whose token URL is the
//! local issuer, so Swagger UI's Authorize button fetches a token
//! ([`crate::localtest`]).

use axum::Router;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use super::error::PROBLEM_JSON;
use super::state::AppState;
use super::{health, instance, publish, query, subscriptions};

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
    modifiers(&SecuritySchemes),
    tags(
        (name = "Publish", description = "Apps and systems publish CloudEvents."),
        (name = "Read", description = "Ordered feeds, each page filtered by the PDP. Follow the `next` header."),
        (name = "Instances", description = "Events of one instance for whoever holds its access key."),
        (name = "Subscriptions", description = "Webhook push of a feed, in order, signed (Standard Webhooks)."),
        (name = "Health", description = "Probes and metrics."),
    ),
)]
struct ApiDoc;

/// The service's routes with the document that describes them: each
/// group's routes and operations merged onto the base document, then the
/// responses every operation of a kind can give. In dev mode the document
/// also has the local issuer's OAuth2 scheme, offered beside the Altinn
/// token on every operation that takes one.
pub fn api(dev: bool) -> (Router<AppState>, Document) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(publish::routes())
        .merge(query::routes())
        .merge(instance::routes())
        .merge(subscriptions::routes())
        .merge(health::routes())
        .split_for_parts();
    add_common_responses(&mut doc);
    #[cfg(feature = "dev")]
    if dev {
        add_dev_issuer(&mut doc);
    }
    let _ = dev;
    (router, doc)
}

/// The document alone (see [`api`]).
pub fn document(dev: bool) -> Document {
    api(dev).1
}

/// The security schemes of the base document.
struct SecuritySchemes;

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

impl Modify for SecuritySchemes {
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
    }
}

/// Adds to every operation the responses every operation of its kind can
/// give, unless its handler describes them itself.
fn add_common_responses(doc: &mut Document) {
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
            if op.parameters.as_ref().is_some_and(|ps| ps.iter().any(in_url)) {
                let too_long = ResponseBuilder::new().description(
                    "The URL is longer than the HTTP server reads (about 400 KB); it answers itself, without a body.",
                );
                add_if_missing(op, "414", too_long.build());
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

fn is_path_param(p: &utoipa::openapi::RefOr<utoipa::openapi::path::Parameter>) -> bool {
    matches!(p, utoipa::openapi::RefOr::T(p) if matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path))
}

/// A parameter in the URL (path or query): the client decides its length.
fn in_url(p: &utoipa::openapi::RefOr<utoipa::openapi::path::Parameter>) -> bool {
    use utoipa::openapi::path::ParameterIn;
    matches!(p, utoipa::openapi::RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query))
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

/// Swagger UI at [`SWAGGER_UI`] and `doc` at [`SWAGGER_JSON`].
pub fn swagger_ui(doc: Document, dev: bool) -> Router {
    let mut config = utoipa_swagger_ui::Config::new([SWAGGER_JSON])
        .try_it_out_enabled(true)
        .persist_authorization(true)
        .display_request_duration(true)
        .filter(true);
    if dev {
        config = config.with_credentials(true);
    }
    Router::from(utoipa_swagger_ui::SwaggerUi::new(SWAGGER_UI).url(SWAGGER_JSON, doc).config(config))
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
