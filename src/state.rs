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
    /// Permits for long-polling requests.
    pub waiters: Arc<tokio::sync::Semaphore>,
    /// Turns true when the instance shuts down: long polls answer at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}
