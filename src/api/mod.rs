//! The HTTP edge: routes, extractors, the problem+json error, and the layers
//! every request goes through. Handlers are thin: parse, call a use case
//! (`read`, `publish`), map the outcome to HTTP. Nothing below this module
//! sees an HTTP type.

pub mod cursor;
pub mod error;
pub mod extract;
pub mod health;
mod instance;
mod observe;
pub mod openapi;
mod publish;
mod query;
pub(crate) mod rate_limit;
pub mod server;
pub mod starting;
pub mod state;
mod subscriptions;
#[cfg(feature = "dev")]
mod whoami;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use state::AppState;

use crate::config::Mode;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The service's routes, as the router matches them. Altinn's routing
/// (ASP.NET) also takes a trailing `/` and any ASCII case of the fixed
/// segments: [`canonical_path`] maps such a spelling to one of these before
/// routing, so handlers and `next` links see the canonical path.
pub mod routes {
    pub const PUBLISH_APP: &str = "/events/api/v1/app";
    pub const EVENTS: &str = "/events/api/v1/events";
    pub const APP_PARTY: &str = "/events/api/v1/app/party";
    pub const APP_OWNER: &str = "/events/api/v1/app/{org}/{app}";
    pub const PARTY: &str = "/events/api/v1/party";
    pub const ACCESS_KEY: &str = "/events/api/v1/app/{org}/{app}/instances/{party}/{guid}/accesskey";
    pub const INSTANCE_EVENTS: &str = "/events/instanceeventsforinstance/{party}/{guid}";
    pub const SUBSCRIPTIONS: &str = "/events/api/v1/subscriptions";
    pub const SUBSCRIPTION: &str = "/events/api/v1/subscriptions/{id}";
    /// Where Altinn's `Location` header points (singular).
    pub const SUBSCRIPTION_LOCATION: &str = "/events/api/v1/subscription/{id}";
    pub const SUBSCRIPTION_VALIDATE: &str = "/events/api/v1/subscriptions/{id}/validate";
    pub const SUBSCRIPTION_ROTATE: &str = "/events/api/v1/subscriptions/{id}/secret/rotate";
    pub const SUBSCRIPTION_ENABLE: &str = "/events/api/v1/subscriptions/{id}/enable";
    pub const SUBSCRIPTION_REPLAY: &str = "/events/api/v1/subscriptions/{id}/replay";
    pub const SUBSCRIPTION_DELIVERIES: &str = "/events/api/v1/subscriptions/{id}/deliveries";
    pub const HEALTH: &str = "/health";
    pub const LIVE: &str = "/health/live";
    pub const READY: &str = "/health/ready";
    pub const DEPENDENCIES: &str = "/health/dependencies";
    pub const METRICS: &str = "/metrics";

    pub const ALL: &[&str] = &[
        PUBLISH_APP,
        EVENTS,
        APP_PARTY,
        APP_OWNER,
        PARTY,
        ACCESS_KEY,
        INSTANCE_EVENTS,
        SUBSCRIPTIONS,
        SUBSCRIPTION,
        SUBSCRIPTION_LOCATION,
        SUBSCRIPTION_VALIDATE,
        SUBSCRIPTION_ROTATE,
        SUBSCRIPTION_ENABLE,
        SUBSCRIPTION_REPLAY,
        SUBSCRIPTION_DELIVERIES,
        HEALTH,
        LIVE,
        READY,
        DEPENDENCIES,
        METRICS,
    ];
}

/// The canonical spelling of `path` when it is a route of the service
/// written with a trailing `/`, with empty segments (`//`, which Altinn's
/// clients build and the platform's proxies merge) or in another ASCII
/// case; `None` when it already is canonical or is no route.
pub fn canonical_path(path: &str) -> Option<String> {
    // Every fixed segment of a route is lower case: a path without upper
    // case, `//` and a trailing `/` is canonical already (or no route).
    // The common case, so it costs no more than this scan.
    if !path.ends_with('/') && !path.bytes().any(|b| b.is_ascii_uppercase()) && !path.contains("//") {
        return None;
    }
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    // The leading empty segment (before the first `/`) stays; others go.
    let segments: Vec<&str> =
        trimmed.split('/').enumerate().filter(|(i, s)| *i == 0 || !s.is_empty()).map(|(_, s)| s).collect();
    let mut best: Option<(usize, String)> = None;
    for pattern in routes::ALL {
        let fixed: Vec<&str> = pattern.split('/').collect();
        if fixed.len() != segments.len() {
            continue;
        }
        let mut exact = 0;
        let mut rebuilt = Vec::with_capacity(fixed.len());
        let matches = fixed.iter().zip(&segments).all(|(f, s)| {
            if f.starts_with('{') {
                rebuilt.push(*s);
                !s.is_empty()
            } else if f.eq_ignore_ascii_case(s) {
                exact += 1;
                rebuilt.push(*f);
                true
            } else {
                false
            }
        });
        if matches && best.as_ref().is_none_or(|(n, _)| exact > *n) {
            best = Some((exact, rebuilt.join("/")));
        }
    }
    best.map(|(_, p)| p).filter(|p| p != path)
}

/// Rewrites the request's path to its canonical spelling (see
/// [`canonical_path`]); everything else of the URI stays.
pub fn canonicalize<B>(req: &mut axum::http::Request<B>) {
    let Some(path) = canonical_path(req.uri().path()) else { return };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// The service's own routes (in dev mode with its debugging routes),
/// `extra` routes (the dev stand-ins), and the layers every request goes
/// through.
pub fn router(state: AppState, extra: Router, mode: Mode) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    #[allow(unused_mut)]
    let mut routes = Router::new()
        .merge(health::router())
        .route(routes::PUBLISH_APP, post(publish::publish_app))
        .route(routes::EVENTS, post(publish::publish_generic).get(query::generic))
        .route(routes::APP_PARTY, get(query::app_party))
        .route(routes::APP_OWNER, get(query::app_owner))
        .route(routes::PARTY, post(query::party_post))
        .route(routes::ACCESS_KEY, post(instance::issue_key))
        .route(routes::INSTANCE_EVENTS, post(instance::read_with_key))
        .route(routes::SUBSCRIPTIONS, post(subscriptions::create).get(subscriptions::list))
        .route(routes::SUBSCRIPTION, get(subscriptions::get).delete(subscriptions::delete))
        .route(routes::SUBSCRIPTION_LOCATION, get(subscriptions::get_singular).delete(subscriptions::delete_singular))
        .route(routes::SUBSCRIPTION_VALIDATE, post(subscriptions::validate))
        .route(routes::SUBSCRIPTION_ROTATE, post(subscriptions::rotate_secret))
        .route(routes::SUBSCRIPTION_ENABLE, post(subscriptions::enable))
        .route(routes::SUBSCRIPTION_REPLAY, post(subscriptions::replay))
        .route(routes::SUBSCRIPTION_DELIVERIES, get(subscriptions::deliveries));
    #[cfg(feature = "dev")]
    if mode == Mode::Dev {
        routes = routes.merge(whoami::router());
    }
    layered(routes.with_state(state).merge(openapi::router(mode == Mode::Dev)).merge(extra), max_body)
}

/// What an instance of the `deliver` role serves: the probes, the
/// dependency check and metrics (and `extra`, dev mode's stand-ins).
pub fn ops_router(state: AppState, extra: Router) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    layered(health::router().with_state(state).merge(extra), max_body)
}

/// The fallback and the layers every request goes through.
fn layered(routes: Router, max_body: usize) -> Router {
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(observe::record_http_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(observe::make_span)
                .on_request(())
                .on_response(observe::on_response)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::from_fn(observe::plain_request_id))
}

async fn not_found() -> impl IntoResponse {
    ApiError::NotFound("No such endpoint.".into())
}

#[cfg(test)]
mod tests {
    use super::canonical_path;

    #[test]
    fn routes_in_any_case_and_with_a_trailing_slash_map_to_their_canonical_form() {
        assert_eq!(canonical_path("/events/api/v1/events/").as_deref(), Some("/events/api/v1/events"));
        assert_eq!(canonical_path("/Events/Api/V1/App/Party/").as_deref(), Some("/events/api/v1/app/party"));
        assert_eq!(
            canonical_path("/EVENTS/API/V1/APP/TTD/Apps-Test").as_deref(),
            Some("/events/api/v1/app/TTD/Apps-Test")
        );
        assert_eq!(
            canonical_path("/events/api/v1/app/ttd/a/Instances/1/G/AccessKey").as_deref(),
            Some("/events/api/v1/app/ttd/a/instances/1/G/accesskey")
        );
        assert_eq!(canonical_path("/events/api/v1/app/party"), None, "already canonical");
        assert_eq!(canonical_path("/events/api/v1/nope"), None, "not a route");
        assert_eq!(canonical_path("/Health/").as_deref(), Some("/health"));
        assert_eq!(
            canonical_path("/events/api/v1/subscriptions//1").as_deref(),
            Some("/events/api/v1/subscriptions/1")
        );
        assert_eq!(canonical_path("//events//api/v1/app/party/").as_deref(), Some("/events/api/v1/app/party"));
        assert_eq!(canonical_path("/"), None);
    }
}
