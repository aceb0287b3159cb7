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
    #[error("too many Register requests in flight from this instance")]
    Busy,
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

    /// The party UUIDs of persons by national identity number; persons
    /// Register does not know are left out. (Register's party query; at
    /// most 100 per request.)
    fn person_party_uuids<'a>(
        &'a self,
        ssns: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, String>, RegisterError>>;
}

/// One party of Register's party query (`fields=identifiers`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueriedParty {
    party_uuid: String,
    #[serde(default)]
    person_identifier: Option<String>,
}

#[derive(Deserialize)]
struct QueryAnswer {
    #[serde(default)]
    data: Vec<QueriedParty>,
}

/// Register takes at most this many identifiers per party query.
const QUERY_CHUNK: usize = 100;
const PERSON_URN: &str = "urn:altinn:person:identifier-no:";

/// Register's API: `lookup` is `v1/parties/lookup`, `query` is
/// `v2/internal/parties/query?fields=identifiers` (both under
/// `register.url`, `{platform}/register/api/` by default).
pub struct Register {
    lookup: PlatformService,
    query: PlatformService,
    cache: RwLock<HashMap<PartyRef, (u64, Instant)>>,
}

impl PartyRegister for Register {
    fn party_id<'a>(&'a self, party: &'a PartyRef) -> BoxFuture<'a, Result<u64, RegisterError>> {
        Box::pin(self.lookup(party))
    }

    fn person_party_uuids<'a>(
        &'a self,
        ssns: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, String>, RegisterError>> {
        Box::pin(self.query_persons(ssns))
    }
}

impl Register {
    pub fn new(lookup: PlatformService, query: PlatformService) -> Self {
        Self { lookup, query, cache: RwLock::default() }
    }

    async fn query_persons(&self, ssns: &[String]) -> Result<HashMap<String, String>, RegisterError> {
        let mut found = HashMap::new();
        for chunk in ssns.chunks(QUERY_CHUNK) {
            let urns: Vec<String> = chunk.iter().map(|n| format!("{PERSON_URN}{n}")).collect();
            let _slot = self.query.admit().await.ok_or(RegisterError::Busy)?;
            // Built without the request, so that no number is in an error.
            let resp = self
                .query
                .post_json(&json!({ "data": urns }))
                .send()
                .await
                .map_err(|e| RegisterError::Transport(e.without_url()))?;
            match resp.status() {
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => return Err(RegisterError::Status(s)),
                s if !s.is_success() => return Err(RegisterError::Refused(s)),
                _ => {}
            }
            let answer: QueryAnswer = resp.json().await.map_err(|e| RegisterError::Transport(e.without_url()))?;
            for party in answer.data {
                if let Some(ssn) = party.person_identifier {
                    found.insert(ssn, party.party_uuid);
                }
            }
        }
        Ok(found)
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
        let _slot = self.lookup.admit().await.ok_or(RegisterError::Busy)?;
        // The error is built without the request, so the number is not in it.
        let resp = self.lookup.post_json(&body).send().await.map_err(|e| RegisterError::Transport(e.without_url()))?;
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
