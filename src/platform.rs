//! The Altinn platform services this service calls (PDP, Register, OIDC)
//! share one HTTP client (one connection pool) and one shape of settings:
//! a URL, an optional APIM subscription key, a timeout.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;
use url::Url;

use crate::config::PlatformServiceConfig;
use crate::secrets::SharedSecret;

/// Connections to platform services are set up within this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client every platform service client uses.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build()
}

/// One platform service endpoint: where, with which key, how long to wait.
pub struct PlatformService {
    http: reqwest::Client,
    url: Url,
    subscription_key: SharedSecret,
    timeout: Duration,
    /// Requests in flight, at most `max_concurrent_requests`.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl PlatformService {
    /// `default_url` is used when the settings name none.
    pub fn new(http: reqwest::Client, settings: &PlatformServiceConfig, default_url: Url) -> Self {
        Self {
            http,
            url: settings.url.clone().unwrap_or(default_url),
            subscription_key: SharedSecret::new(settings.subscription_key.clone()),
            timeout: Duration::from_millis(settings.timeout_ms),
            in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_requests.max(1))),
        }
    }

    /// Sends `key` (shared, so that a reload reaches every client of the
    /// service) instead of the settings' key.
    pub fn with_key(mut self, key: SharedSecret) -> Self {
        self.subscription_key = key;
        self
    }

    /// A slot for one request: waits at most the service's timeout for one
    /// of `max_concurrent_requests` (`None`: this instance has more in
    /// flight than the service should get from it; the caller fails closed).
    pub async fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slot = tokio::time::timeout(self.timeout, self.in_flight.clone().acquire_owned()).await;
        let admitted = slot.ok().and_then(Result::ok);
        if admitted.is_none() {
            metrics::counter!("platform_requests_shed_total", "service" => self.url.path().to_owned()).increment(1);
        }
        admitted
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// A JSON POST to the service, with its key and timeout.
    pub fn post_json<T: Serialize + ?Sized>(&self, body: &T) -> reqwest::RequestBuilder {
        let mut req = crate::telemetry::inject_trace(self.http.post(self.url.clone()).timeout(self.timeout).json(body));
        if let Some(key) = self.subscription_key.get() {
            // Keys mounted from files often end in a newline.
            req = req.header("Ocp-Apim-Subscription-Key", key.expose_secret().trim());
        }
        req
    }
}
