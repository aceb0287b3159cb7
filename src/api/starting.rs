//! Serving before the service is wired: a pod answers its probes from the
//! moment it listens, and only becomes ready once Cosmos DB was reached.
//!
//! Until then `/health/live` (and `/health`) answer as they do after
//! (200 while every background task runs), `/health/ready`
//! answers 503 naming what is missing, `/metrics` works, dev mode's local
//! platform works (it needs nothing), and every other request gets the
//! service's own 503 problem with `Retry-After`. Once the app is set, every
//! request goes to it.

use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use tower::ServiceExt;

use super::error::problem_response;
use super::routes::{HEALTH, LIVE, METRICS, READY};
use crate::telemetry::Liveness;

/// Seconds a client is told to wait before it tries again.
const RETRY_AFTER_SECONDS: u32 = 5;

/// The app, once wired, and what it waits for until then.
pub struct Gate {
    app: OnceLock<Router>,
    waiting: Mutex<Vec<&'static str>>,
    liveness: Liveness,
}

impl Gate {
    /// A closed gate; its liveness probe reads `liveness`.
    pub fn new(liveness: Liveness) -> Self {
        Self { app: OnceLock::new(), waiting: Mutex::default(), liveness }
    }

    /// Says that `dependency` is not reached yet (named by `/health/ready`;
    /// why is logged, not shown to whoever asks).
    pub fn waiting_for(&self, dependency: &'static str) {
        let mut waiting = self.waiting.lock().expect("gate lock");
        if !waiting.contains(&dependency) {
            waiting.push(dependency);
        }
    }

    /// From now on every request goes to `app`.
    pub fn open(&self, app: Router) {
        let _ = self.app.set(app);
        self.waiting.lock().expect("gate lock").clear();
    }

    pub fn is_open(&self) -> bool {
        self.app.get().is_some()
    }
}

/// The router a pod serves from its start: `early` (dev mode's platform)
/// and the probes until the gate opens, the app after.
pub fn router(gate: Arc<Gate>, early: Router) -> Router {
    let before = Router::new()
        .route(HEALTH, get(live))
        .route(LIVE, get(live))
        .route(READY, get(not_ready))
        .route(METRICS, get(super::health::metrics))
        .with_state(gate.clone())
        .merge(early)
        .fallback(starting);
    Router::new().fallback(forward).with_state((gate, before))
}

async fn forward(State((gate, before)): State<(Arc<Gate>, Router)>, request: Request) -> Response {
    let to = gate.app.get().cloned().unwrap_or(before);
    match to.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn live(State(gate): State<Arc<Gate>>) -> Response {
    super::health::live_answer(&gate.liveness)
}

async fn not_ready(State(gate): State<Arc<Gate>>) -> Response {
    let waiting = gate.waiting.lock().expect("gate lock").clone();
    let names = if waiting.is_empty() { vec!["the rest of the wiring"] } else { waiting.clone() };
    super::health::not_ready(format!("Starting; not reached yet: {}.", names.join(", ")), &waiting)
}

async fn starting() -> Response {
    let mut resp = problem_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "https://altinn.no/events/problems/starting",
        "Starting",
        Some("The service is starting and has not reached its storage yet; try again shortly."),
    );
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    resp
}
