//! Altinn token validation with keys from the platform's OIDC discovery
//! document. Keys are cached; a token with an unknown `kid` triggers one
//! refetch, at most once per `min_refetch` interval, so a flood of forged
//! `kid`s cannot turn into a flood of JWKS requests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};
use url::Url;

use super::verified::Verified;
use super::{AuthError, principal_from_claims};
use crate::domain::Principal;

/// Altinn's OIDC discovery document, relative to the platform URL.
pub const DISCOVERY_PATH: &str = "authentication/api/v1/openid/.well-known/openid-configuration";

/// The keys a token may be checked with, and the issuer they belong to.
pub type KeysAndIssuer = (Vec<DecodingKey>, String);

/// Where token signing keys come from: the platform's OIDC discovery
/// document and its JWKS ([`OidcKeys`]).
pub trait SigningKeys: Send + Sync {
    /// The keys a token may be checked with (one for a known `kid`; all of
    /// them for a token without `kid`), and the issuer they belong to.
    fn keys_for<'a>(&'a self, kid: Option<&'a str>) -> BoxFuture<'a, Result<KeysAndIssuer, AuthError>>;
}

#[derive(Deserialize)]
struct Discovery {
    /// Required: tokens must name this issuer.
    issuer: String,
    jwks_uri: Url,
}

#[derive(Default)]
struct KeyState {
    issuer: String,
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    /// Last refetch caused by an unknown `kid` (not the first load).
    refetched_at: Option<Instant>,
    /// Last failed first load: retried at most every `FAILED_LOAD_RETRY`.
    failed_at: Option<Instant>,
}

/// Keys are re-read this often even when every `kid` is known, so a key
/// the platform withdrew stops being trusted.
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// A platform that could not be reached is not asked again per request.
const FAILED_LOAD_RETRY: Duration = Duration::from_secs(5);

pub struct OidcKeys {
    http: reqwest::Client,
    discovery_url: Url,
    timeout: Duration,
    min_refetch: Duration,
    state: RwLock<KeyState>,
    refetch: Mutex<()>,
}

impl SigningKeys for OidcKeys {
    fn keys_for<'a>(&'a self, kid: Option<&'a str>) -> BoxFuture<'a, Result<KeysAndIssuer, AuthError>> {
        Box::pin(self.find(kid))
    }
}

impl OidcKeys {
    pub fn new(http: reqwest::Client, discovery_url: Url, timeout: Duration, min_refetch: Duration) -> Self {
        Self { http, discovery_url, timeout, min_refetch, state: RwLock::default(), refetch: Mutex::new(()) }
    }

    async fn find(&self, kid: Option<&str>) -> Result<KeysAndIssuer, AuthError> {
        let stale = self.state.read().await.fetched_at.is_some_and(|t| t.elapsed() >= MAX_KEY_AGE);
        if stale {
            let _guard = self.refetch.lock().await;
            if self.state.read().await.fetched_at.is_some_and(|t| t.elapsed() >= MAX_KEY_AGE) {
                // On failure the old keys stay in use until the next try.
                if let Err(e) = self.fetch().await {
                    tracing::warn!(error = %e, "refreshing the OIDC signing keys failed");
                    // Try again in FAILED_LOAD_RETRY, not on every request.
                    let retry_at =
                        Instant::now().checked_sub(MAX_KEY_AGE - FAILED_LOAD_RETRY).unwrap_or_else(Instant::now);
                    self.state.write().await.fetched_at = Some(retry_at);
                }
            }
        }
        if let Some(found) = self.lookup(kid).await {
            return Ok(found);
        }
        let _guard = self.refetch.lock().await;
        // Another request may have refetched while this one waited.
        if let Some(found) = self.lookup(kid).await {
            return Ok(found);
        }
        let (first_load, due) = {
            let state = self.state.read().await;
            (state.fetched_at.is_none(), state.refetched_at.is_none_or(|t| t.elapsed() >= self.min_refetch))
        };
        if !first_load && !due {
            return Err(AuthError::invalid("unknown signing key"));
        }
        if first_load && self.state.read().await.failed_at.is_some_and(|t| t.elapsed() < FAILED_LOAD_RETRY) {
            return Err(AuthError::KeysUnavailable("the OIDC keys could not be loaded a moment ago".into()));
        }
        if !first_load {
            // Counted from the attempt, so a failing platform is not retried per request.
            self.state.write().await.refetched_at = Some(Instant::now());
        }
        if let Err(e) = self.fetch().await {
            if first_load {
                self.state.write().await.failed_at = Some(Instant::now());
            }
            return Err(e);
        }
        self.lookup(kid).await.ok_or_else(|| AuthError::invalid("unknown signing key"))
    }

    async fn lookup(&self, kid: Option<&str>) -> Option<KeysAndIssuer> {
        let state = self.state.read().await;
        state.fetched_at?;
        let keys: Vec<DecodingKey> = match kid {
            Some(kid) => state.keys.get(kid).cloned().into_iter().collect(),
            None => state.keys.values().cloned().collect(),
        };
        (!keys.is_empty()).then(|| (keys, state.issuer.clone()))
    }

    /// A JSON document of the issuer (discovery, keys), in the caller's trace.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: reqwest::Url) -> Result<T, AuthError> {
        let unavailable = |e: reqwest::Error| AuthError::KeysUnavailable(Box::new(e));
        crate::telemetry::inject_trace(self.http.get(url).timeout(self.timeout))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }

    async fn fetch(&self) -> Result<(), AuthError> {
        let discovery: Discovery = self.get_json(self.discovery_url.clone()).await?;
        let set: JwkSet = self.get_json(discovery.jwks_uri).await?;
        let mut keys = HashMap::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    let kid = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
                    keys.insert(kid, key);
                }
                Err(e) => tracing::warn!(error = %e, "skipping unusable JWK"),
            }
        }
        tracing::info!(keys = keys.len(), "fetched OIDC signing keys");
        metrics::counter!("auth_jwks_fetches_total").increment(1);
        let mut state = self.state.write().await;
        let now = Instant::now();
        let refetched_at = state.refetched_at;
        *state = KeyState { issuer: discovery.issuer, keys, fetched_at: Some(now), refetched_at, failed_at: None };
        Ok(())
    }
}

pub struct TokenValidator {
    keys: std::sync::Arc<dyn SigningKeys>,
    leeway_seconds: u64,
    verified: Verified<Principal>,
}

impl TokenValidator {
    pub fn new(keys: std::sync::Arc<dyn SigningKeys>, leeway_seconds: u64) -> Self {
        Self { keys, leeway_seconds, verified: Verified::new(leeway_seconds) }
    }

    /// Validates an Altinn token: RS256 only, signature by a platform key,
    /// `exp` and `iss` (the discovery document's issuer) required, `nbf`
    /// checked.
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(principal) = self.verified.get(token) {
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::jwt)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let (keys, issuer) = self.keys.keys_for(header.kid.as_deref()).await?;
        let validation = rs256_validation(self.leeway_seconds, &issuer);
        let mut last_err = AuthError::invalid("no key");
        for key in &keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => {
                    let principal = principal_from_claims(&data.claims)?;
                    if let Some(exp) = data.claims.get("exp").and_then(Value::as_u64) {
                        self.verified.insert(token, exp, principal.clone());
                    }
                    return Ok(principal);
                }
                Err(e) => last_err = AuthError::jwt(e),
            }
        }
        Err(last_err)
    }
}

/// RS256 with `exp` and `iss` required and `iss` equal to `issuer`.
pub(crate) fn rs256_validation(leeway_seconds: u64, issuer: &str) -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.leeway = leeway_seconds;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "iss"]);
    v.set_issuer(&[issuer]);
    v
}
