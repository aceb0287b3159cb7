//! Pushing to consumers' webhooks: signed (Standard Webhooks, `signing.rs`),
//! and safe for the service to send. Platform-client layer.
//!
//! Invariants it keeps (unless `webhooks.allow_private_endpoints`, dev
//! mode's default):
//! - only `https` endpoints;
//! - never to a loopback, private, link-local (the instance metadata
//!   service), unique-local, shared (100.64/10), multicast or unspecified
//!   address, nor Azure's platform address 168.63.129.16: checked when a
//!   subscription is created and again at each connection (the resolver
//!   drops such addresses, so DNS that changes after the check gains
//!   nothing);
//! - no redirects are followed; each push has a timeout; at most
//!   `max_response_bytes` of an answer are read.

pub mod signing;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use secrecy::SecretString;
use url::Url;

/// Settings of the sender.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub allow_private_endpoints: bool,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("The endpoint must be an absolute URL with the https scheme.")]
    NotHttps,
    #[error("The endpoint's host {0} could not be resolved.")]
    Unresolved(String),
    #[error(
        "The endpoint {host} resolves to {address}, a loopback, private or otherwise internal address; events are pushed only to public addresses."
    )]
    NotPublic { host: String, address: IpAddr },
}

/// Whether the service may push to `ip` (public addresses only).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
                || v4.octets() == [168, 63, 129, 16])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
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
}

impl Sender {
    pub fn new(settings: SenderSettings) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent("altinn-events");
        if !settings.allow_private_endpoints {
            builder = builder.dns_resolver(PublicOnly);
        }
        Ok(Self { http: builder.build()?, settings })
    }

    pub fn allows_http(&self) -> bool {
        self.settings.allow_private_endpoints
    }

    /// Checks an endpoint before a subscription to it is created: scheme,
    /// and (unless private endpoints are allowed) that every address it
    /// resolves to is public.
    pub async fn check_endpoint(&self, url: &Url) -> Result<(), EndpointError> {
        if self.settings.allow_private_endpoints {
            return Ok(());
        }
        if url.scheme() != "https" {
            return Err(EndpointError::NotHttps);
        }
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), url.port_or_known_default().unwrap_or(443)))
                .await
                .map_err(|_| EndpointError::Unresolved(host.clone()))?
                .map(|a| a.ip())
                .collect(),
        };
        if addresses.is_empty() {
            return Err(EndpointError::Unresolved(host));
        }
        match addresses.into_iter().find(|ip| !is_public(*ip)) {
            Some(address) => Err(EndpointError::NotPublic { host, address }),
            None => Ok(()),
        }
    }

    /// POSTs `body` (JSON) to `url`, signed with `secrets` as message `id`.
    pub async fn push(&self, url: &Url, id: &str, body: &[u8], secrets: &[SecretString]) -> PushOutcome {
        let started = Instant::now();
        if !self.settings.allow_private_endpoints {
            // A literal address never reaches the resolver: check it here.
            let literal = url.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok());
            if url.scheme() != "https" || literal.is_some_and(|ip: IpAddr| !is_public(ip)) {
                return PushOutcome {
                    status: None,
                    latency: started.elapsed(),
                    error: Some("the endpoint is not a public https address".into()),
                };
            }
        }
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

    #[test]
    fn only_public_addresses() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "168.63.129.16",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["51.120.0.1", "8.8.8.8", "2a01:4f8::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn internal_endpoints_are_refused_before_anything_is_sent() {
        let sender = Sender::new(SenderSettings {
            allow_private_endpoints: false,
            timeout: Duration::from_secs(1),
            max_response_bytes: 1024,
        })
        .unwrap();
        for url in
            ["https://127.0.0.1:9/hook", "https://[::1]/hook", "https://169.254.169.254/latest", "https://localhost/x"]
        {
            let url = Url::parse(url).unwrap();
            assert!(sender.check_endpoint(&url).await.is_err(), "{url}");
            assert!(!sender.push(&url, "m", b"{}", &[]).await.delivered(), "{url}");
        }
        let http = Url::parse("http://example.com/hook").unwrap();
        assert!(matches!(sender.check_endpoint(&http).await, Err(EndpointError::NotHttps)));
    }
}
