//! The Altinn PDP client. Every decision that is not an explicit, readable
//! Permit is a deny: a PDP failure never lets an event through.

pub mod xacml;

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use xacml::{XacmlResponse, XacmlRoot};

#[derive(Debug, thiserror::Error)]
pub enum PdpError {
    #[error("PDP request failed")]
    Transport(#[source] reqwest::Error),
    #[error("PDP answered {0}")]
    Status(StatusCode),
    #[error("PDP answer unreadable")]
    Body(#[source] reqwest::Error),
}

pub struct Pdp {
    http: reqwest::Client,
    url: Url,
    subscription_key: Option<SecretString>,
}

impl Pdp {
    pub fn new(url: Url, subscription_key: Option<SecretString>, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()?;
        Ok(Self { http, url, subscription_key })
    }

    pub async fn decide(&self, request: &XacmlRoot) -> Result<XacmlResponse, PdpError> {
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

    async fn post(&self, request: &XacmlRoot) -> Result<reqwest::Response, PdpError> {
        let mut req = self.http.post(self.url.clone()).json(request);
        if let Some(key) = &self.subscription_key {
            // Keys mounted from files often end in a newline.
            req = req.header("Ocp-Apim-Subscription-Key", key.expose_secret().trim());
        }
        req.send().await.map_err(PdpError::Transport)
    }

    /// Readiness: the PDP answers a decision request for no resources
    /// without a transport error or a 5xx.
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
