//! The HTTP edge: routes, extractors, the problem+json error, and the layers
//! every request goes through. Handlers are thin: parse, call a use case
//! (`read`, `publish`), map the outcome to HTTP. Nothing below this module
//! sees an HTTP type.

mod console;
pub mod cursor;
pub mod error;
pub mod extract;
pub mod health;
mod instance;
mod observe;
pub mod openapi;
mod paging;
mod publish;
mod query;
pub(crate) mod rate_limit;
pub mod routes;
mod schema;
pub mod server;
pub mod starting;
pub mod state;
mod subscriptions;
#[cfg(feature = "dev")]
mod whoami;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::IntoResponse;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
use observe::REQUEST_ID;
pub use state::AppState;

use crate::config::Mode;

/// The service's own routes (each group's, with the document that
/// describes them; in dev mode with its debugging routes), `extra` routes
/// (the dev stand-ins), and the layers every request goes through.
pub fn router(state: AppState, extra: Router, mode: Mode) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    let dev = mode == Mode::Dev;
    #[allow(unused_mut)]
    let (mut routes, doc) = openapi::api(dev);
    #[cfg(feature = "dev")]
    if dev {
        routes = routes.merge(whoami::router());
    }
    let console = if state.config.console.enabled { console::router(dev) } else { Router::new() };
    layered(routes.with_state(state).merge(openapi::swagger_ui(doc, dev)).merge(console).merge(extra), max_body)
}

/// What an instance of the `deliver` role serves: the probes, the
/// dependency check and metrics (and `extra`, dev mode's stand-ins).
pub fn ops_router(state: AppState, extra: Router) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    layered(Router::from(health::routes()).with_state(state).merge(extra), max_body)
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
