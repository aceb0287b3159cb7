//! What every handler can reach: the use cases, the token checkers, and
//! what the probes look at.

use std::sync::Arc;

use crate::auth::instance_key::InstanceKeys;
use crate::auth::{AccessTokenVerifier, TokenValidator};
use crate::authz::Pdp;
use crate::config::Config;
use crate::feeds::FeedStore;
use crate::publish::Publisher;
use crate::read::FeedReader;
use crate::subscribe::Subscriptions;
use crate::telemetry::Liveness;

use super::cursor::Cursors;
use super::rate_limit::RateLimiter;

/// Cloned for every layer a request passes (axum clones each route's
/// service per request): one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub config: Arc<Config>,
    pub tokens: Arc<TokenValidator>,
    pub access_tokens: Arc<AccessTokenVerifier>,
    pub reader: Arc<FeedReader>,
    pub publisher: Arc<Publisher>,
    pub subscriptions: Arc<Subscriptions>,
    pub instance_keys: Arc<InstanceKeys>,
    pub cursors: Arc<Cursors>,
    pub limiter: Arc<RateLimiter>,
    /// For the dependency check: the PDP and the store are reachable.
    pub pdp: Arc<Pdp>,
    pub feeds: FeedStore,
    /// Whether every background task still runs (the liveness probe).
    pub liveness: Liveness,
}
