//! Logs, request spans and Prometheus metrics.
//!
//! One span per request carries the request id, method, matched route, status
//! and latency. Only the path is recorded, never the query string, headers or
//! cookies, so tokens and national identity numbers stay out of the logs.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::Response;
use axum::middleware::Next;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::request_id::RequestId;
use tracing::Span;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber (call once, from `main`).
pub fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true))
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().compact()).try_init(),
    };
    if let Err(e) = result {
        eprintln!("tracing already initialised: {e}");
    }
}

/// The process-wide Prometheus recorder. Installed on first use so that
/// several apps in one test process share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            .expect("static buckets are valid");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by a test harness);
        // then metrics go there and /metrics renders this (empty) one.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub fn make_span(req: &Request<Body>) -> Span {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let request_id =
        req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-").to_owned();
    tracing::info_span!(
        "request",
        request.id = %request_id,
        http.method = %req.method(),
        http.route = route.as_deref().unwrap_or("unmatched"),
        http.path = %req.uri().path(),
        http.status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

pub fn on_response(resp: &Response<Body>, latency: Duration, span: &Span) {
    span.record("http.status", resp.status().as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1000.0);
    tracing::info!(parent: span, "response");
}

/// Counts requests and records their latency by matched route and status.
pub async fn record_http_metrics(req: Request, next: Next) -> axum::response::Response {
    let start = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    resp
}
