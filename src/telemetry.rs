//! Logs, traces and Prometheus metrics: the subscriber, the recorder, and
//! how an error is written to the log. (The per-request span and HTTP
//! metrics are the HTTP layer's: `api/observe.rs`.)
//!
//! Traces: every span is an OpenTelemetry span. A request continues the
//! caller's trace (W3C `traceparent`), calls to the PDP, Register and OIDC
//! carry it on ([`inject_trace`]), and Cosmos writes are spans of the
//! publishes they store. Spans are exported over OTLP/HTTP (JSON) when
//! `telemetry.otlp_endpoint` is set.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use url::Url;

use crate::config::LogFormat;

mod json_log;
mod liveness;

pub use liveness::Liveness;

/// `a: b: c` for an error and its sources: how errors are logged.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// The tracer provider, so that spans can be flushed at shutdown.
#[must_use = "call shutdown() so that the last spans are exported"]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports what is buffered now (tests; shutdown).
    pub async fn flush(&self) {
        let provider = self.provider.clone();
        // The batch processor blocks its caller until its thread has
        // exported, and the export runs on this runtime: not on a worker.
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    }

    pub async fn shutdown(self) {
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// Installs the global subscriber (call once, from `main`, inside the
/// runtime): logs in `format` to stdout, filtered by `filter` (or
/// `RUST_LOG`), and OpenTelemetry spans, exported to `otlp_endpoint` when
/// given.
pub fn init_tracing(format: LogFormat, filter: &str, otlp_endpoint: Option<&Url>) -> anyhow::Result<Traces> {
    init_tracing_to(format, filter, otlp_endpoint, std::io::stdout)
}

/// [`init_tracing`], with the logs written to `writer`.
pub fn init_tracing_to<W>(
    format: LogFormat,
    filter: &str,
    otlp_endpoint: Option<&Url>,
    writer: W,
) -> anyhow::Result<Traces>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer;
    let provider = tracer_provider(otlp_endpoint)?;
    // The service's own spans are traced whatever the log filter says, so
    // that trace context is passed on and exported with logs at `warn`.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("altinn-events"))
        .with_filter(EnvFilter::new("altinn_events=info"));
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let registry = tracing_subscriber::registry().with(otel);
    // Every line carries the spans it is in: the request's id and trace id.
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(json_log::JsonMembers)
                    .event_format(json_log::JsonLines::default())
                    .with_writer(writer)
                    .with_filter(filter()),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().compact().with_writer(writer).with_filter(filter()))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("tracing already initialised: {e}");
    }
    Ok(Traces { provider })
}

/// A provider that gives every span an OpenTelemetry context, and exports
/// them over OTLP/HTTP JSON when an endpoint is given.
pub fn tracer_provider(otlp_endpoint: Option<&Url>) -> anyhow::Result<SdkTracerProvider> {
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("altinn-events").build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let base = endpoint.as_str().trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
            .with_endpoint(url)
            .with_http_client(OtlpClient::new()?)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// OTLP export over the service's own reqwest. The batch processor polls
/// exports from its own thread; the request runs on the runtime.
#[derive(Debug)]
struct OtlpClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl OtlpClient {
    fn new() -> anyhow::Result<Self> {
        // Below the provider's 5 s shutdown wait, so the last batch is sent
        // (or given up) before the process ends.
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(4)).build()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("OTLP export needs the tokio runtime: init tracing inside it"))?;
        Ok(Self { http, runtime })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let req = self.http.request(parts.method, url).headers(parts.headers).body(body);
        let sent = self.runtime.spawn(async move {
            let resp = req.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut resp = http::Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }
}

/// The W3C trace context of an incoming request: the request's span
/// continues it (a missing or malformed `traceparent` starts a new trace).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of `span` (32 hex digits), when it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// `req` with the current span's `traceparent` (and `tracestate`), so the
/// PDP, Register and OIDC calls are part of the request's trace.
pub fn inject_trace(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let mut headers = http::HeaderMap::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
    req.headers(headers)
}

/// A Cosmos DB request's diagnostics (operation, latency, RU charge when it
/// succeeded), as an event of the current span's trace.
pub fn cosmos_request(operation: &'static str, latency: std::time::Duration, charge: Option<f64>) {
    use opentelemetry::KeyValue;
    let mut attributes = vec![
        KeyValue::new("db.operation.name", operation),
        KeyValue::new("db.system.name", "azure.cosmosdb"),
        KeyValue::new("duration_ms", latency.as_secs_f64() * 1000.0),
    ];
    if let Some(ru) = charge {
        attributes.push(KeyValue::new("azure.cosmosdb.operation.request_charge", ru));
    }
    tracing::Span::current().add_event("cosmos.request", attributes);
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
        register_at_start();
        handle
    })
}

/// Counters (with their fixed label values) that dashboards and alerts
/// read before anything has happened: registered at 0 when the recorder
/// is installed, so that they are on `/metrics` from the first scrape and
/// `rate()` has a first sample. Counters labelled by what happens (an
/// operation, a route, a status) appear with their first value.
const COUNTERS_AT_START: &[(&str, &[(&str, &str)])] = &[
    ("publishes_shed_total", &[]),
    ("feed_appends_shed_total", &[]),
    ("query_events_denied_total", &[]),
    ("http_connections_refused_total", &[]),
    ("http_connections_timed_out_total", &[]),
    ("feed_seq_conflicts_total", &[]),
    ("feed_segments_sealed_total", &[]),
    ("feed_hot_segments_cut_total", &[]),
    ("feed_reads_shared_total", &[]),
    ("feed_repaired_events_total", &[]),
    ("feed_repair_skipped_total", &[]),
    ("delivery_reanchored_total", &[]),
    ("pdp_circuit_opened_total", &[]),
    ("auth_jwks_fetches_total", &[]),
    ("startup_connect_failures_total", &[("dependency", "cosmos")]),
    ("deliveries_total", &[("outcome", "delivered")]),
    ("deliveries_total", &[("outcome", "failed")]),
    ("delivery_pdp_unavailable_total", &[]),
    ("subscriptions_created_total", &[]),
    ("subscriptions_deleted_total", &[]),
    ("subscriptions_disabled_total", &[]),
    ("subscription_secrets_unreadable_total", &[]),
    ("subscription_validations_total", &[("outcome", "validated")]),
    ("subscription_validations_total", &[("outcome", "failed")]),
    ("secrets_reloads_total", &[("outcome", "applied")]),
    ("secrets_reloads_total", &[("outcome", "failed")]),
];

/// Gauges whose value at start is 0 by what they count (none open, none
/// held, none waiting); registered without being moved. Gauges that are
/// measured (`dependency_up`, `feed_repair_last_success_timestamp_seconds`,
/// the delivery lag) appear with their first measurement.
const GAUGES_AT_START: &[&str] = &[
    "http_connections_open",
    "query_waiters",
    "pdp_circuit_open",
    "delivery_buckets_held",
    "delivery_subscriptions_running",
];

fn register_at_start() {
    for (name, labels) in COUNTERS_AT_START {
        let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
        metrics::counter!(*name, labels).increment(0);
    }
    for name in GAUGES_AT_START {
        metrics::gauge!(*name).increment(0.0);
    }
}
