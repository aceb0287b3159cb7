//! Pushing to consumers' webhooks: signed (Standard Webhooks, `signing.rs`),
//! fair between consumers (`slots.rs`), and safe for the service to send.
//! Platform-client layer.
//!
//! Invariants it keeps (unless `webhooks.allow_private_endpoints`, dev
//! mode's default):
//! - only `https` endpoints, on a port of `webhooks.allowed_ports`;
//! - only public addresses (`address.rs`): checked when a subscription is
//!   created and again at each connection (the resolver drops other
//!   addresses, so DNS that changes after the check gains nothing); a
//!   refusal names neither the host's addresses nor which rule refused, so
//!   it cannot be used to map internal names;
//! - never through a proxy (`HTTPS_PROXY` and the like are ignored: a
//!   proxy would connect where the address check cannot see);
//! - no redirects are followed; each push has a timeout; at most
//!   `max_response_bytes` of an answer are read;
//! - every push, validations included, holds a consumer's, a host's and
//!   the instance's slot while it runs (`slots.rs`).

mod address;
pub mod signing;
mod slots;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use secrecy::SecretString;
use url::Url;

pub use address::is_public;
pub use slots::{PushSlots, SlotLimits};

/// Settings of the sender.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub allow_private_endpoints: bool,
    /// Ports endpoints may use (unless private endpoints are allowed).
    pub allowed_ports: Vec<u16>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub slots: SlotLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("The endpoint must be an absolute URL with the https scheme.")]
    NotHttps,
    #[error("The endpoint's port is not allowed: events are pushed to port {0} only.")]
    Port(String),
    /// Unresolvable, or resolving to an address that is not public: one
    /// answer, naming nothing the caller did not send.
    #[error(
        "The endpoint's host must resolve to public addresses only: events are pushed only to public https endpoints."
    )]
    NotPublic,
}

/// A resolver that gives only public addresses (the system resolver's
/// answer, filtered): a host that resolves to internal addresses only
/// cannot be connected to.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The outcome of one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// The HTTP status, when the endpoint answered.
    pub status: Option<u16>,
    pub latency: Duration,
    /// What went wrong (a non-2xx status with the start of its body, or the
    /// transport error); `None` on a 2xx.
    pub error: Option<String>,
}

impl PushOutcome {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

/// Pushes signed JSON to endpoints, within the rules above.
pub struct Sender {
    http: reqwest::Client,
    settings: SenderSettings,
    slots: PushSlots,
}

/// `host:port` of an endpoint: whose slots a push to it takes.
pub fn host_key(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or_default().to_ascii_lowercase(), url.port_or_known_default().unwrap_or(0))
}

impl Sender {
    pub fn new(settings: SenderSettings) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent("altinn-events");
        if !settings.allow_private_endpoints {
            builder = builder.dns_resolver(PublicOnly);
        }
        Ok(Self { http: builder.build()?, slots: PushSlots::new(settings.slots), settings })
    }

    /// The consumers and hosts this sender keeps slots for now.
    pub fn tracked_slots(&self) -> (usize, usize) {
        self.slots.tracked()
    }

    pub fn allows_http(&self) -> bool {
        self.settings.allow_private_endpoints
    }

    /// Checks an endpoint before a subscription to it is created: scheme,
    /// port, and (unless private endpoints are allowed) that every address
    /// it resolves to is public.
    pub async fn check_endpoint(&self, url: &Url) -> Result<(), EndpointError> {
        if self.settings.allow_private_endpoints {
            return Ok(());
        }
        self.check_scheme_and_port(url)?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), url.port_or_known_default().unwrap_or(443)))
                .await
                .map_err(|_| EndpointError::NotPublic)?
                .map(|a| a.ip())
                .collect(),
        };
        if addresses.is_empty() || addresses.into_iter().any(|ip| !is_public(ip)) {
            return Err(EndpointError::NotPublic);
        }
        Ok(())
    }

    fn check_scheme_and_port(&self, url: &Url) -> Result<(), EndpointError> {
        if url.scheme() != "https" {
            return Err(EndpointError::NotHttps);
        }
        let port = url.port_or_known_default().unwrap_or(0);
        if !self.settings.allowed_ports.contains(&port) {
            let allowed: Vec<String> = self.settings.allowed_ports.iter().map(u16::to_string).collect();
            return Err(EndpointError::Port(allowed.join(", ")));
        }
        Ok(())
    }

    /// POSTs `body` (JSON) to `url`, signed with `secrets` as message `id`,
    /// once `consumer` has a slot (its own, the endpoint host's and the
    /// instance's). The latency is the push's own, not the wait for a slot.
    pub async fn push(
        &self,
        consumer: &str,
        url: &Url,
        id: &str,
        body: &[u8],
        secrets: &[SecretString],
    ) -> PushOutcome {
        if !self.settings.allow_private_endpoints {
            // A literal address never reaches the resolver: check it here;
            // and the settings may have changed since the subscription was made.
            let literal = url.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok());
            if self.check_scheme_and_port(url).is_err() || literal.is_some_and(|ip: IpAddr| !is_public(ip)) {
                return PushOutcome {
                    status: None,
                    latency: Duration::ZERO,
                    error: Some("the endpoint is not a public https address on an allowed port".into()),
                };
            }
        }
        let _slots = self.slots.acquire(consumer, &host_key(url)).await;
        let started = Instant::now();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let signature = signing::signature_header(secrets, id, timestamp, body);
        let sent = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                let error = if e.is_timeout() {
                    "the endpoint did not answer in time".to_owned()
                } else if e.is_connect() {
                    "the endpoint could not be reached".to_owned()
                } else {
                    format!("the push failed: {}", e.without_url())
                };
                return PushOutcome { status: None, latency: started.elapsed(), error: Some(error) };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return PushOutcome { status: Some(status.as_u16()), latency: started.elapsed(), error: None };
        }
        // The start of the answer, for the subscription's owner to see.
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk);
            if body.len() >= self.settings.max_response_bytes {
                break;
            }
        }
        body.truncate(self.settings.max_response_bytes.min(200));
        let text: String = String::from_utf8_lossy(&body).chars().filter(|c| !c.is_control()).collect();
        let error = if status.is_redirection() {
            format!("the endpoint answered {} (redirects are not followed)", status.as_u16())
        } else if text.trim().is_empty() {
            format!("the endpoint answered {}", status.as_u16())
        } else {
            format!("the endpoint answered {}: {}", status.as_u16(), text.trim())
        };
        PushOutcome { status: Some(status.as_u16()), latency: started.elapsed(), error: Some(error) }
    }
}

/// A shared sender.
pub type SharedSender = Arc<Sender>;

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(allowed_ports: Vec<u16>) -> Sender {
        Sender::new(SenderSettings {
            allow_private_endpoints: false,
            allowed_ports,
            timeout: Duration::from_secs(1),
            max_response_bytes: 1024,
            slots: SlotLimits { total: 4, per_consumer: 2, per_host: 2 },
        })
        .unwrap()
    }

    #[tokio::test]
    async fn internal_endpoints_are_refused_before_anything_is_sent() {
        let sender = sender(vec![443, 9]);
        for url in [
            "https://127.0.0.1:9/hook",
            "https://[::1]/hook",
            "https://169.254.169.254/latest",
            "https://localhost/x",
            "https://[64:ff9b::a9fe:a9fe]/latest",
            "https://[::ffff:0:7f00:1]/x",
        ] {
            let url = Url::parse(url).unwrap();
            let refused = sender.check_endpoint(&url).await.unwrap_err();
            assert!(matches!(refused, EndpointError::NotPublic), "{url}: {refused}");
            let text = refused.to_string();
            assert!(!text.contains("127.") && !text.contains("localhost") && !text.contains("::"), "{text}");
            assert!(!sender.push("c", &url, "m", b"{}", &[]).await.delivered(), "{url}");
        }
        let http = Url::parse("http://example.com/hook").unwrap();
        assert!(matches!(sender.check_endpoint(&http).await, Err(EndpointError::NotHttps)));
    }

    #[tokio::test]
    async fn only_allowed_ports() {
        let sender = sender(vec![443]);
        // Refused for its port before any lookup (the name need not exist).
        let url = Url::parse("https://hooks.example.invalid:8443/x").unwrap();
        let refused = sender.check_endpoint(&url).await.unwrap_err();
        assert!(matches!(refused, EndpointError::Port(_)), "{refused}");
        assert_eq!(refused.to_string(), "The endpoint's port is not allowed: events are pushed to port 443 only.");
        let pushed = sender.push("c", &url, "m", b"{}", &[]).await;
        assert!(!pushed.delivered() && pushed.status.is_none());
    }
}
