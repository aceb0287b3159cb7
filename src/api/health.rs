//! Kubernetes probes and Prometheus metrics. [`routes`] registers them with
//! their operations in the document; the `deliver` role serves them too.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::PROBLEM_JSON;
use super::routes::{DEPENDENCIES, HEALTH, LIVE, METRICS, READY};
use super::state::AppState;
use crate::telemetry::{self, Liveness, error_chain};

/// The probes and metrics, with their operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(dependencies))
        .routes(routes!(metrics))
}

/// `/health`, `/health/live`.
#[derive(Serialize, ToSchema)]
pub(super) struct Live {
    #[schema(example = "live")]
    status: &'static str,
}

/// `/health/ready` when ready.
#[derive(Serialize, ToSchema)]
struct Ready {
    #[schema(example = "ready")]
    status: &'static str,
}

/// Each dependency: `ok` or `unavailable`.
type Checks = BTreeMap<&'static str, &'static str>;

/// `/health/dependencies` when every dependency answers.
#[derive(Serialize, ToSchema)]
struct Dependencies {
    #[schema(example = "ok")]
    status: &'static str,
    /// Each dependency: `ok` or `unavailable`.
    #[schema(value_type = BTreeMap<String, String>)]
    checks: Checks,
}

/// `/health/ready` or `/health/dependencies` when not: a problem naming
/// what it waits for (`checks`: each dependency, `ok` or `unavailable`).
#[derive(Serialize, ToSchema)]
pub(super) struct NotReady<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[schema(value_type = BTreeMap<String, String>)]
    checks: Checks,
}

/// The process is whole and serving (`/health/live`, and `/health`,
/// Altinn's probe path): 200 while every background task runs, 503 naming
/// those that ended unasked (a panic or an early return; `supervise.rs`),
/// so that Kubernetes restarts the pod. Calls no dependency, so a slow one
/// never gets a pod restarted.
#[utoipa::path(
    get, path = HEALTH, tag = "Health", operation_id = "health",
    summary = "Alive (Altinn's health path)",
    responses(
        (status = 200, description = "The process serves requests and its background tasks run.", body = Live),
        (status = 503, description = "A background task ended; `checks` names it. The pod is to be restarted.", body = NotReady, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn health(State(state): State<AppState>) -> Response {
    live_answer(&state.liveness)
}

#[utoipa::path(
    get, path = LIVE, tag = "Health", operation_id = "live",
    summary = "Liveness probe",
    responses(
        (status = 200, description = "The process serves requests and its background tasks run.", body = Live),
        (status = 503, description = "A background task ended; `checks` names it. The pod is to be restarted.", body = NotReady, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn live(State(state): State<AppState>) -> Response {
    live_answer(&state.liveness)
}

/// 200 while the instance is whole; 503 naming the tasks that ended.
pub(super) fn live_answer(liveness: &Liveness) -> Response {
    let ended = liveness.ended();
    if ended.is_empty() {
        return axum::Json(Live { status: "live" }).into_response();
    }
    problem_with_checks(
        "https://altinn.no/events/problems/not-live",
        "Not live",
        format!("Background tasks ended: {}. The instance is to be restarted.", ended.join(", ")),
        ended.iter().map(|task| (*task, "ended")).collect(),
    )
}

/// Ready: started (Cosmos DB was reached once; until then the start-up
/// gate answers this route, naming it). A stopping instance accepts no new
/// connection, so its probes fail from the first moment of the drain.
/// Dependencies are not called:
/// a blip of the PDP or Cosmos DB, shared by every pod, must not mark all of
/// them unready at once and leave clients the ingress's bare 503. Requests
/// that need a failing dependency answer the service's own 503 instead, and
/// `/health/dependencies`, metrics and alerts say which one fails.
#[utoipa::path(
    get, path = READY, tag = "Health", operation_id = "ready",
    summary = "Readiness probe",
    responses(
        (status = 200, description = "Ready: started. Dependencies are not called (see /health/dependencies).", body = Ready),
        (status = 503, description = "Starting: Cosmos DB not reached yet.", body = NotReady, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn ready() -> Response {
    axum::Json(Ready { status: "ready" }).into_response()
}

/// Cosmos DB and the PDP, each called now. For operators and dashboards,
/// not for probes; sets `dependency_up{dependency}`.
#[utoipa::path(
    get, path = DEPENDENCIES, tag = "Health", operation_id = "dependencies",
    summary = "Whether Cosmos DB and the PDP answer now (diagnostics; not a probe)",
    responses(
        (status = 200, description = "Both answer.", body = Dependencies),
        (status = 503, description = "One or both do not; `checks` names them.", body = NotReady, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn dependencies(State(state): State<AppState>) -> Response {
    let failed = check_dependencies(&state.feeds, &state.pdp).await;
    let checks: Checks =
        ["cosmos", "pdp"].into_iter().map(|d| (d, if failed.contains(&d) { "unavailable" } else { "ok" })).collect();
    if failed.is_empty() {
        return axum::Json(Dependencies { status: "ok", checks }).into_response();
    }
    problem_with_checks(
        "https://altinn.no/events/problems/dependency-unavailable",
        "Dependency unavailable",
        format!("Unavailable: {}.", failed.join(", ")),
        checks,
    )
}

/// Calls Cosmos DB and the PDP once each; the ones that failed. Sets
/// `dependency_up{dependency}` (every instance also runs this every 30 s,
/// so that the metric and its alert need no caller).
pub async fn check_dependencies(feeds: &crate::feeds::FeedStore, pdp: &crate::authz::Pdp) -> Vec<&'static str> {
    let (cosmos, ping) = tokio::join!(feeds.ping(), pdp.ping());
    let pdp_breaker_open = pdp.circuit_open();
    let pdp = ping;
    let mut failed = Vec::new();
    if let Err(e) = cosmos {
        tracing::warn!(error.chain = %error_chain(&e), "dependency check: cosmos unreachable");
        failed.push("cosmos");
    }
    if let Err(e) = pdp {
        tracing::warn!(error.chain = %error_chain(&e), "dependency check: PDP unreachable");
        failed.push("pdp");
    }
    for d in ["cosmos", "pdp"] {
        metrics::gauge!("dependency_up", "dependency" => d).set(if failed.contains(&d) { 0.0 } else { 1.0 });
    }
    // The breaker sets it when it opens and when a call succeeds again; an
    // instance without reads would otherwise report it open for ever.
    metrics::gauge!("pdp_circuit_open").set(if pdp_breaker_open { 1.0 } else { 0.0 });
    failed
}

pub(super) fn not_ready(detail: String, waiting: &[&'static str]) -> Response {
    let checks = waiting.iter().map(|d| (*d, "unavailable")).collect();
    problem_with_checks("https://altinn.no/events/problems/not-ready", "Not ready", detail, checks)
}

fn problem_with_checks(kind: &str, title: &str, detail: String, checks: Checks) -> Response {
    let body = NotReady { kind, title, status: 503, detail, checks };
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(PROBLEM_JSON));
    resp
}

#[utoipa::path(
    get, path = METRICS, tag = "Health", operation_id = "metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The Prometheus text format.", body = String, content_type = "text/plain")),
)]
pub(super) async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], telemetry::prometheus().render())
}
