//! One span per request, carrying the request id, the trace id (the
//! caller's `traceparent` continued), method, matched route, status and
//! latency; and HTTP metrics by route and status. Only the path
//! is recorded, never the query string, headers or cookies, so tokens and
//! national identity numbers stay out of the logs.
//!
//! Every label is one of a fixed set, whatever a client sends: the method
//! one of HTTP's (`other` for the rest), the route a route of the service
//! (`unmatched` for any other path), the status one the service answered.
//! So no request adds a series to `/metrics` that the next one would not.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, Response};
use axum::middleware::Next;
use tower_http::request_id::RequestId;
use tracing::Span;

/// The request id header: kept when plain, made otherwise, echoed on the
/// response, and in every log line of the request.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The method as a label: HTTP's methods by name, anything else `other`
/// (a client may send any token as a method, of any length).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

pub fn make_span(req: &Request<Body>) -> Span {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let request_id =
        req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-").to_owned();
    let span = tracing::info_span!(
        "request",
        request.id = %request_id,
        trace.id = tracing::field::Empty,
        http.method = method_label(req.method()),
        http.route = route.as_deref().unwrap_or("unmatched"),
        http.path = %req.uri().path(),
        http.status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    // The caller's W3C trace, continued; its id in every log line.
    crate::telemetry::continue_trace(&span, req.headers());
    if let Some(id) = crate::telemetry::trace_id(&span) {
        span.record("trace.id", id);
    }
    span
}

/// Records the status and latency on the request span, once each: the JSON
/// log lines append a recorded field to the span's (telemetry/json_log.rs),
/// so a field recorded twice would appear twice.
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
    let method = method_label(req.method());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [("method", method.to_owned()), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
    resp
}

/// A client's `x-request-id` is kept only when it is short and plain (at
/// most 64 characters of `[A-Za-z0-9._-]`); otherwise it is dropped and the
/// service makes a new one, so that nothing a client sends is echoed or
/// logged verbatim.
pub async fn plain_request_id(mut req: Request, next: Next) -> axum::response::Response {
    let plain = |v: &axum::http::HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 64 && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    };
    let headers = req.headers_mut();
    if headers.get_all(REQUEST_ID).iter().count() > 1 || headers.get(REQUEST_ID).is_some_and(|v| !plain(v)) {
        headers.remove(REQUEST_ID);
    }
    next.run(req).await
}
