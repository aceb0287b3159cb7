//! The HTTP edge: routes, extractors, the problem+json error, and the layers
//! every request goes through. Handlers are thin: parse, call a use case
//! (`read`, `publish`), map the outcome to HTTP. Nothing below this module
//! sees an HTTP type.

pub mod cursor;
pub mod error;
pub mod extract;
mod health;
mod instance;
mod observe;
mod publish;
mod query;
pub(crate) mod rate_limit;
pub mod server;
pub mod state;
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

/// The service's own routes (in dev mode with its debugging routes),
/// `extra` routes (the dev stand-ins), and the layers every request goes
/// through.
pub fn router(state: AppState, extra: Router, mode: Mode) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    #[allow(unused_mut)]
    let mut routes = Router::new()
        .merge(health::router())
        .route("/events/api/v1/app", post(publish::publish_app))
        .route("/events/api/v1/events", post(publish::publish_generic).get(query::generic))
        .route("/events/api/v1/app/party", get(query::app_party))
        .route("/events/api/v1/app/{org}/{app}", get(query::app_owner))
        .route("/events/api/v1/party", post(query::party_post))
        .route("/events/api/v1/app/{org}/{app}/instances/{party}/{guid}/accesskey", post(instance::issue_key))
        .route("/events/instanceeventsforinstance/{party}/{guid}", post(instance::read_with_key));
    #[cfg(feature = "dev")]
    if mode == Mode::Dev {
        routes = routes.merge(whoami::router());
    }
    let _ = mode;
    routes
        .with_state(state)
        .merge(extra)
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
