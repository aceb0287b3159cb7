//! What every handler can reach.

use std::sync::Arc;

use crate::auth::{AccessTokenVerifier, TokenValidator};
use crate::authz::Pdp;
use crate::config::Config;
use crate::feeds::FeedStore;
use crate::register::Register;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub tokens: Arc<TokenValidator>,
    pub access_tokens: Arc<AccessTokenVerifier>,
    pub pdp: Arc<Pdp>,
    pub register: Arc<Register>,
    pub feeds: FeedStore,
    pub instance_keys: Arc<crate::auth::instance_key::InstanceKeys>,
    pub limiter: Arc<crate::api::rate_limit::RateLimiter>,
    /// Long-polling requests: slots, and how many are parked.
    pub waiters: Arc<Waiters>,
    /// Turns true when the instance shuts down: long polls answer at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Long-polling requests of this instance: at most `max` hold a slot; those
/// that found nothing and wait for an append are `parked`.
pub struct Waiters {
    pub slots: Arc<tokio::sync::Semaphore>,
    pub max: usize,
    pub parked: std::sync::atomic::AtomicUsize,
}

impl Waiters {
    pub fn new(max: usize) -> Self {
        Self { slots: Arc::new(tokio::sync::Semaphore::new(max)), max, parked: Default::default() }
    }

    /// Requests holding a slot.
    pub fn holding(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Requests that read the feed, found nothing, and wait for an append.
    pub fn parked(&self) -> usize {
        self.parked.load(std::sync::atomic::Ordering::SeqCst)
    }
}
