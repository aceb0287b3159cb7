//! What push delivery keeps in Cosmos DB, beside the feeds:
//! - per subscription, its delivery state (`pk = "delivery|{id}"`, one
//!   document): checkpoint, status, recent attempts; changes guarded by
//!   ETag;
//! - the buckets that divide subscriptions among instances
//!   (`pk = "delivery-buckets"`, one lease document per bucket, `seq` = the
//!   bucket number): an instance delivers the subscriptions of the buckets
//!   it holds a live lease on;
//! - each instance's presence (`pk = "delivery-instances"`, one document
//!   per instance), so that instances can share the buckets fairly.
//!
//! States and leases do not expire by the container's TTL (a state goes
//! with its subscription); the presence of an instance that crashed does,
//! a day after it was last renewed.

use std::time::Instant;

use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
use azure_data_cosmos::{ContainerClient, FeedScope, Query};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::subscriptions::Changed;
use super::{FeedError, charge, observe};
use crate::domain::subscription::DeliveryState;

const BUCKETS_PK: &str = "delivery-buckets";
const INSTANCES_PK: &str = "delivery-instances";
/// A presence that was not renewed for a day is removed by Cosmos DB.
const PRESENCE_TTL_SECONDS: i64 = 24 * 3600;
const STATE_ID: &str = "delivery";

fn state_pk(subscription: u64) -> String {
    format!("delivery|{subscription}")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateDoc {
    id: String,
    pk: String,
    #[serde(flatten)]
    state: DeliveryState,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseDoc {
    id: String,
    pk: String,
    seq: u64,
    owner: String,
    expires_ms: u64,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresenceDoc {
    id: String,
    pk: String,
    /// `seq` is unique per partition (see `cosmos.rs`): one per instance,
    /// from its id.
    seq: u64,
    expires_ms: u64,
    ttl: i64,
}

/// A bucket's lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketLease {
    pub bucket: u64,
    pub owner: String,
    pub expires_ms: u64,
    etag: String,
}

/// Delivery's documents.
#[derive(Clone)]
pub struct DeliveryStore {
    container: ContainerClient,
}

impl DeliveryStore {
    pub fn new(store: &super::FeedStore) -> Self {
        Self { container: store.cosmos().container.clone() }
    }

    /// A subscription's delivery state and its ETag.
    pub async fn state(&self, subscription: u64) -> Result<Option<(DeliveryState, String)>, FeedError> {
        let started = Instant::now();
        match self.container.read_item(state_pk(subscription), STATE_ID, None).await {
            Ok(resp) => {
                observe("delivery_read", started, charge(resp.headers()));
                let doc: StateDoc = resp.into_model().map_err(FeedError::cosmos("decode delivery state"))?;
                Ok(Some((doc.state, doc.etag.ok_or(FeedError::MissingEtag)?)))
            }
            Err(e) if e.status().is_not_found() => Ok(None),
            Err(e) => Err(FeedError::cosmos("read delivery state")(e)),
        }
    }

    /// The state, made with `initial` when there is none yet.
    pub async fn state_or(
        &self,
        subscription: u64,
        initial: DeliveryState,
    ) -> Result<(DeliveryState, String), FeedError> {
        for _ in 0..5 {
            if let Some(found) = self.state(subscription).await? {
                return Ok(found);
            }
            let doc = StateDoc {
                id: STATE_ID.into(),
                pk: state_pk(subscription),
                state: initial.clone(),
                ttl: -1,
                etag: None,
            };
            let started = Instant::now();
            match self.container.create_item(state_pk(subscription), STATE_ID, &doc, None::<ItemWriteOptions>).await {
                Ok(resp) => {
                    observe("delivery_write", started, charge(resp.headers()));
                    let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(FeedError::MissingEtag)?;
                    return Ok((initial, etag));
                }
                Err(e) if e.status().is_conflict() => continue,
                Err(e) => return Err(FeedError::cosmos("create delivery state")(e)),
            }
        }
        Err(FeedError::Transient("the delivery state kept changing".into()))
    }

    /// Writes a subscription's state, unless it changed since `etag`.
    pub async fn write(
        &self,
        subscription: u64,
        state: &DeliveryState,
        etag: &str,
    ) -> Result<Changed<String>, FeedError> {
        let doc =
            StateDoc { id: STATE_ID.into(), pk: state_pk(subscription), state: state.clone(), ttl: -1, etag: None };
        let options = ItemWriteOptions::default().with_precondition(Precondition::IfMatch(etag.to_owned().into()));
        let started = Instant::now();
        match self.container.replace_item(state_pk(subscription), STATE_ID, &doc, Some(options)).await {
            Ok(resp) => {
                observe("delivery_write", started, charge(resp.headers()));
                Ok(Changed::Done(resp.headers().etag().map(|e| e.to_string()).ok_or(FeedError::MissingEtag)?))
            }
            Err(e)
                if e.status().is_not_found()
                    || e.status().status_code() == azure_core::http::StatusCode::PreconditionFailed =>
            {
                Ok(Changed::Stale)
            }
            Err(e) => Err(FeedError::cosmos("write delivery state")(e)),
        }
    }

    /// Every bucket lease that exists.
    pub async fn leases(&self) -> Result<Vec<BucketLease>, FeedError> {
        let started = Instant::now();
        let mut pages = self
            .container
            .query_items::<LeaseDoc>(
                Query::from("SELECT * FROM c WHERE c.seq >= 0"),
                FeedScope::partition(BUCKETS_PK),
                None,
            )
            .await
            .map_err(FeedError::cosmos("query bucket leases"))?
            .into_pages();
        let mut leases = Vec::new();
        while let Some(p) = pages.next().await {
            let p = p.map_err(FeedError::cosmos("query bucket leases"))?;
            observe("bucket_leases", started, charge(p.headers()));
            for doc in p.into_items() {
                if let Some(etag) = doc.etag {
                    leases.push(BucketLease { bucket: doc.seq, owner: doc.owner, expires_ms: doc.expires_ms, etag });
                }
            }
        }
        Ok(leases)
    }

    /// Takes (or renews) bucket `bucket` for `owner` until `expires_ms`:
    /// `current` is the lease as read (`None`: none exists). `false` when
    /// another instance changed it first.
    pub async fn take(
        &self,
        bucket: u64,
        current: Option<&BucketLease>,
        owner: &str,
        expires_ms: u64,
    ) -> Result<Option<BucketLease>, FeedError> {
        let id = format!("bucket-{bucket}");
        let doc = LeaseDoc {
            id: id.clone(),
            pk: BUCKETS_PK.into(),
            seq: bucket,
            owner: owner.into(),
            expires_ms,
            ttl: -1,
            etag: None,
        };
        let started = Instant::now();
        let written = match current {
            Some(lease) => {
                let options =
                    ItemWriteOptions::default().with_precondition(Precondition::IfMatch(lease.etag.clone().into()));
                self.container.replace_item(BUCKETS_PK, &id, &doc, Some(options)).await
            }
            None => self.container.create_item(BUCKETS_PK, &id, &doc, None::<ItemWriteOptions>).await,
        };
        match written {
            Ok(resp) => {
                observe("bucket_lease", started, charge(resp.headers()));
                let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(FeedError::MissingEtag)?;
                Ok(Some(BucketLease { bucket, owner: owner.into(), expires_ms, etag }))
            }
            Err(e)
                if e.status().is_conflict()
                    || e.status().is_not_found()
                    || e.status().status_code() == azure_core::http::StatusCode::PreconditionFailed =>
            {
                Ok(None)
            }
            Err(e) => Err(FeedError::cosmos("write bucket lease")(e)),
        }
    }

    /// Says that instance `owner` is alive until `expires_ms`.
    pub async fn present(&self, owner: &str, expires_ms: u64) -> Result<(), FeedError> {
        let digest = sha2::Sha256::digest(owner.as_bytes());
        let seq = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 12;
        let doc = PresenceDoc { id: owner.into(), pk: INSTANCES_PK.into(), seq, expires_ms, ttl: PRESENCE_TTL_SECONDS };
        let started = Instant::now();
        let resp = self
            .container
            .upsert_item(INSTANCES_PK, owner, &doc, None::<ItemWriteOptions>)
            .await
            .map_err(FeedError::cosmos("write presence"))?;
        observe("instance_presence", started, charge(resp.headers()));
        Ok(())
    }

    /// Instances alive at `now_ms` (one partition; instances are few).
    pub async fn instances(&self, now_ms: u64) -> Result<usize, FeedError> {
        Ok(self.presences(now_ms).await?.len())
    }

    /// When each live instance's presence expires (unless it is renewed).
    pub async fn presences(&self, now_ms: u64) -> Result<Vec<u64>, FeedError> {
        let q = Query::from("SELECT VALUE c.expiresMs FROM c");
        let started = Instant::now();
        let mut pages = self
            .container
            .query_items::<u64>(q, FeedScope::partition(INSTANCES_PK), None)
            .await
            .map_err(FeedError::cosmos("query instances"))?
            .into_pages();
        let mut alive = Vec::new();
        while let Some(p) = pages.next().await {
            let p = p.map_err(FeedError::cosmos("query instances"))?;
            observe("instances", started, charge(p.headers()));
            alive.extend(p.items().iter().copied().filter(|e| *e > now_ms));
        }
        Ok(alive)
    }

    /// Removes this instance's presence (it stops).
    pub async fn absent(&self, owner: &str) {
        let _ = self.container.delete_item(INSTANCES_PK, owner, None).await;
    }

    /// Removes a subscription's delivery state (the subscription is gone).
    pub async fn remove(&self, subscription: u64) -> Result<(), FeedError> {
        match self.container.delete_item(state_pk(subscription), STATE_ID, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status().is_not_found() => Ok(()),
            Err(e) => Err(FeedError::cosmos("remove delivery state")(e)),
        }
    }
}
