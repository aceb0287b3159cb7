//! Altinn Register: resolves organisation numbers and national identity
//! numbers to party ids, with a short cache. Lookups never log the number.
//! Platform-client layer: the use cases ask a [`PartyRegister`];
//! [`Register`] is the real one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::RwLock;

use crate::platform::PlatformService;

const CACHE_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("no party with that number")]
    NotFound,
    #[error("register request failed")]
    Transport(#[source] reqwest::Error),
    #[error("register answered {0}")]
    Status(StatusCode),
    #[error("register refused the lookup ({0})")]
    Refused(StatusCode),
}

/// What to look up. `Debug` never shows the number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PartyRef {
    OrgNo(String),
    Ssn(String),
}

impl std::fmt::Debug for PartyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OrgNo(_) => f.write_str("OrgNo(..)"),
            Self::Ssn(_) => f.write_str("Ssn(..)"),
        }
    }
}

#[derive(Deserialize)]
struct Party {
    #[serde(rename = "PartyId", alias = "partyId")]
    party_id: u64,
}

/// Finds the party of an organisation number or national identity number.
pub trait PartyRegister: Send + Sync {
    fn party_id<'a>(&'a self, party: &'a PartyRef) -> BoxFuture<'a, Result<u64, RegisterError>>;
}

pub struct Register {
    service: PlatformService,
    cache: RwLock<HashMap<PartyRef, (u64, Instant)>>,
}

impl PartyRegister for Register {
    fn party_id<'a>(&'a self, party: &'a PartyRef) -> BoxFuture<'a, Result<u64, RegisterError>> {
        Box::pin(self.lookup(party))
    }
}

impl Register {
    pub fn new(service: PlatformService) -> Self {
        Self { service, cache: RwLock::default() }
    }

    async fn lookup(&self, party: &PartyRef) -> Result<u64, RegisterError> {
        if let Some((id, at)) = self.cache.read().await.get(party)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(*id);
        }
        let body = match party {
            PartyRef::OrgNo(n) => json!({ "OrgNo": n }),
            PartyRef::Ssn(n) => json!({ "Ssn": n }),
        };
        // The error is built without the request, so the number is not in it.
        let resp = self.service.post_json(&body).send().await.map_err(|e| RegisterError::Transport(e.without_url()))?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Err(RegisterError::NotFound),
            s if s.is_client_error() => return Err(RegisterError::Refused(s)),
            s if !s.is_success() => return Err(RegisterError::Status(s)),
            _ => {}
        }
        let found: Party = resp.json().await.map_err(|e| RegisterError::Transport(e.without_url()))?;
        let mut cache = self.cache.write().await;
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
        }
        cache.insert(party.clone(), (found.party_id, Instant::now()));
        Ok(found.party_id)
    }
}
