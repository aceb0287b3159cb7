//! Kubernetes probes and Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::error::PROBLEM_JSON;
use super::state::AppState;
use crate::telemetry::{self, error_chain};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(super::routes::HEALTH, get(health))
        .route(super::routes::LIVE, get(live))
        .route(super::routes::READY, get(ready))
        .route(super::routes::METRICS, get(metrics))
}

/// The process is up and serving (`/health/live`, and `/health`, Altinn's
/// probe path). Checks nothing else, so a slow dependency never gets a pod
/// restarted.
#[utoipa::path(
    get, path = "/health", tag = "Health", operation_id = "health",
    summary = "Alive (Altinn's health path)",
    responses((status = 200, description = "The process serves requests.", body = crate::api::openapi::Live)),
)]
pub(super) async fn health() -> impl IntoResponse {
    live().await
}

#[utoipa::path(
    get, path = "/health/live", tag = "Health", operation_id = "live",
    summary = "Liveness probe",
    responses((status = 200, description = "The process serves requests.", body = crate::api::openapi::Live)),
)]
pub(super) async fn live() -> impl IntoResponse {
    axum::Json(json!({"status": "live"}))
}

/// Cosmos and the PDP both answer. 503 names every dependency that did not.
#[utoipa::path(
    get, path = "/health/ready", tag = "Health", operation_id = "ready",
    summary = "Readiness probe",
    responses(
        (status = 200, description = "Ready: its dependencies answer.", body = crate::api::openapi::Ready),
        (status = 503, description = "Not ready, and what it waits for.", body = crate::api::openapi::NotReady, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let (cosmos, pdp) = tokio::join!(state.feeds.ping(), state.pdp.ping());
    let mut failed = Vec::new();
    if let Err(e) = cosmos {
        tracing::warn!(error.chain = %error_chain(&e), "readiness: cosmos unreachable");
        failed.push("cosmos");
    }
    if let Err(e) = pdp {
        tracing::warn!(error.chain = %error_chain(&e), "readiness: PDP unreachable");
        failed.push("pdp");
    }
    if failed.is_empty() {
        return axum::Json(json!({"status": "ready", "checks": {"cosmos": "ok", "pdp": "ok"}})).into_response();
    }
    let checks: serde_json::Map<_, _> = ["cosmos", "pdp"]
        .iter()
        .map(|d| (d.to_string(), json!(if failed.contains(d) { "unavailable" } else { "ok" })))
        .collect();
    not_ready(format!("Unavailable: {}.", failed.join(", ")), checks)
}

/// The readiness probe's 503: a problem naming what is missing, with each
/// dependency's state in `checks`.
pub(super) fn not_ready(detail: String, checks: serde_json::Map<String, serde_json::Value>) -> Response {
    let body = json!({
        "type": "https://altinn.no/events/problems/not-ready",
        "title": "Not ready",
        "status": 503,
        "detail": detail,
        "checks": checks,
    });
    (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, PROBLEM_JSON)], body.to_string()).into_response()
}

#[utoipa::path(
    get, path = "/metrics", tag = "Health", operation_id = "metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The Prometheus text format.", body = String, content_type = "text/plain")),
)]
pub(super) async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry::prometheus().render())
}
