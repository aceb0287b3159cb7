//! The Altinn PDP client. Every decision that is not an explicit, readable
//! Permit is a deny: a PDP failure never lets an event through.
//!
//! Platform-client layer: the use cases ask an [`Authorizer`]; [`Pdp`] is
//! the real one (XACML JSON over the shared platform HTTP client).

pub mod request;
pub mod xacml;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::StatusCode;

pub use request::{Action, Caller};

use crate::domain::EventRecord;
use crate::feeds::Clock;
use crate::platform::PlatformService;
use crate::register::PartyRegister;
use std::sync::Arc;

use xacml::{XacmlResponse, XacmlRoot};

#[derive(Debug, thiserror::Error)]
pub enum PdpError {
    #[error("PDP request failed")]
    Transport(#[source] reqwest::Error),
    #[error("PDP answered {0}")]
    Status(StatusCode),
    #[error("PDP answer unreadable")]
    Body(#[source] reqwest::Error),
    #[error("PDP circuit open after repeated failures")]
    CircuitOpen,
    #[error("looking up subjects in Register")]
    Register(#[source] crate::register::RegisterError),
    #[error("too many PDP requests in flight from this instance")]
    Busy,
}

impl PdpError {
    fn retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Status(s) => s.is_server_error() || *s == StatusCode::TOO_MANY_REQUESTS,
            Self::Body(_) | Self::CircuitOpen | Self::Register(_) | Self::Busy => false,
        }
    }
}

/// Consecutive failures that open the circuit (for `pdp.circuit_open_seconds`).
const BREAKER_THRESHOLD: u32 = 5;
/// Retries after the first attempt, for transport errors and 5xx/429.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(200)];

/// Open for `open_for` after `BREAKER_THRESHOLD` failures in a row; then
/// the next call is a probe (one failure opens it again, an answer closes
/// it). Its time is the store's clock once the service has one
/// ([`Pdp::measure_by`]), so that tests can move it; the system's before.
struct Breaker {
    failures: AtomicU32,
    /// Until when it is open, in milliseconds of the clock.
    open_until: Mutex<Option<u64>>,
    open_for: Duration,
    clock: OnceLock<Clock>,
    system: Clock,
}

impl Breaker {
    fn new(open_for: Duration) -> Self {
        Self {
            failures: AtomicU32::default(),
            open_until: Mutex::default(),
            open_for,
            clock: OnceLock::new(),
            system: Clock::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.get().unwrap_or(&self.system).now_ms()
    }

    fn is_open(&self) -> bool {
        let open = self.open_until.lock().expect("breaker lock");
        open.is_some_and(|until| self.now_ms() < until)
    }

    fn record(&self, ok: bool) {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            if self.open_until.lock().expect("breaker lock").take().is_some() {
                metrics::gauge!("pdp_circuit_open").set(0.0);
            }
        } else if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= BREAKER_THRESHOLD {
            let open_for = u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX);
            *self.open_until.lock().expect("breaker lock") = Some(self.now_ms().saturating_add(open_for));
            metrics::counter!("pdp_circuit_opened_total").increment(1);
            // 1 from opening until the next answer from the PDP.
            metrics::gauge!("pdp_circuit_open").set(1.0);
        }
    }
}

/// Decides whether a caller may do `action` on each of `events`.
pub trait Authorizer: Send + Sync {
    /// One decision per event, in order. Any failure is an error, never a
    /// permit.
    fn authorize<'a>(
        &'a self,
        caller: Caller<'a>,
        action: Action,
        events: &'a [&'a EventRecord],
    ) -> BoxFuture<'a, Result<Vec<bool>, PdpError>>;
}

pub struct Pdp {
    service: PlatformService,
    /// Resolves persons named as event subjects: the PDP takes their party,
    /// not their national identity number.
    register: Arc<dyn PartyRegister>,
    breaker: Breaker,
}

impl Authorizer for Pdp {
    fn authorize<'a>(
        &'a self,
        caller: Caller<'a>,
        action: Action,
        events: &'a [&'a EventRecord],
    ) -> BoxFuture<'a, Result<Vec<bool>, PdpError>> {
        Box::pin(self.decide_events(caller, action, events))
    }
}

impl Pdp {
    /// `circuit_open_for`: how long the circuit stays open after
    /// `BREAKER_THRESHOLD` failures in a row (`pdp.circuit_open_seconds`).
    pub fn new(service: PlatformService, register: Arc<dyn PartyRegister>, circuit_open_for: Duration) -> Self {
        Self { service, register, breaker: Breaker::new(circuit_open_for) }
    }

    /// Measures the circuit breaker's open time by `clock` (the store's,
    /// which tests move) from now on; the first call counts.
    pub fn measure_by(&self, clock: Clock) {
        let _ = self.breaker.clock.set(clock);
    }

    /// One decision per event, in order: one multi-request for the batch
    /// (more only when an event id repeats in it, since the PDP's answers
    /// are matched to events by id). Persons named as subjects are looked up
    /// in Register first, in one call for the batch.
    async fn decide_events(
        &self,
        caller: Caller<'_>,
        action: Action,
        events: &[&EventRecord],
    ) -> Result<Vec<bool>, PdpError> {
        let mut decided = vec![false; events.len()];
        if events.is_empty() {
            return Ok(decided);
        }
        let ssns = request::person_subjects(events);
        let persons = if ssns.is_empty() {
            Default::default()
        } else {
            self.register.person_party_uuids(&ssns).await.map_err(PdpError::Register)?
        };
        let mut remaining: Vec<usize> = (0..events.len()).collect();
        while !remaining.is_empty() {
            let mut ids = std::collections::HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) =
                remaining.into_iter().partition(|&i| ids.insert(events[i].id.as_str()));
            let batch: Vec<&EventRecord> = round.iter().map(|&i| events[i]).collect();
            let request = request::multi_request(caller, action, &batch, &persons);
            let response = self.decide(&request).await?;
            for (i, ok) in round.into_iter().zip(request::decisions(&response, &batch, caller.auth_level())) {
                decided[i] = ok;
            }
            remaining = later;
        }
        Ok(decided)
    }

    /// Sends a request with bounded retries behind a circuit breaker.
    pub async fn decide(&self, request: &XacmlRoot) -> Result<XacmlResponse, PdpError> {
        if self.breaker.is_open() {
            return Err(PdpError::CircuitOpen);
        }
        let mut attempt = 0;
        loop {
            let result = self.decide_once(request).await;
            match &result {
                Err(e) if e.retryable() && attempt < RETRY_DELAYS.len() => {
                    tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                    attempt += 1;
                }
                // This instance's own overload says nothing of the PDP.
                Err(PdpError::Busy) => return result,
                _ => {
                    self.breaker.record(result.is_ok());
                    return result;
                }
            }
        }
    }

    async fn decide_once(&self, request: &XacmlRoot) -> Result<XacmlResponse, PdpError> {
        // One of this instance's PDP slots, for the request and its answer.
        let _slot = self.service.admit().await.ok_or(PdpError::Busy)?;
        let started = std::time::Instant::now();
        let result = self.post(request).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("pdp_request_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let resp = result?;
        if !resp.status().is_success() {
            return Err(PdpError::Status(resp.status()));
        }
        resp.json().await.map_err(PdpError::Body)
    }

    /// Not through the slots: readiness must not fail because this instance
    /// is busy.
    async fn post(&self, request: &XacmlRoot) -> Result<reqwest::Response, PdpError> {
        self.service.post_json(request).send().await.map_err(PdpError::Transport)
    }

    /// Readiness: the PDP answers a decision request for no resources
    /// without a transport error or a 5xx.
    /// Whether the circuit breaker refuses calls now.
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    pub async fn ping(&self) -> Result<(), PdpError> {
        let empty = XacmlRoot {
            request: xacml::XacmlRequest {
                return_policy_id_list: false,
                access_subject: vec![],
                action: vec![],
                resource: vec![],
                multi_requests: None,
            },
        };
        let resp = self.post(&empty).await?;
        if resp.status().is_server_error() {
            return Err(PdpError::Status(resp.status()));
        }
        Ok(())
    }
}
