//! The delivery buckets' leases and the instances' presences:
//! - the buckets that divide subscriptions among instances
//!   (`pk = "delivery-buckets"`, one lease document per bucket, `seq` = the
//!   bucket number): an instance delivers the subscriptions of the buckets
//!   it holds a live lease on;
//! - each instance's presence (`pk = "delivery-instances"`, one document
//!   per instance), so that instances can share the buckets fairly.
//!
//! Invariants it keeps:
//! - **A lease changes hands only through its ETag**: taking a lease
//!   another instance wrote since it was read fails (`None`).
//! - Leases do not expire by the container's TTL (an expired lease is
//!   taken over by its `expires_ms`); the presence of an instance that
//!   crashed does, a day after it was last renewed.

use std::time::Instant;

use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
use azure_data_cosmos::{ContainerClient, FeedScope, Query};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::feeds::{FeedStore, StoreError, charge, observe};

const BUCKETS_PK: &str = "delivery-buckets";
const INSTANCES_PK: &str = "delivery-instances";
/// A presence that was not renewed for a day is removed by Cosmos DB.
const PRESENCE_TTL_SECONDS: i64 = 24 * 3600;

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

/// The leases and presences of a deployment's instances.
#[derive(Clone)]
pub struct LeaseStore {
    container: ContainerClient,
}

impl LeaseStore {
    pub fn new(store: &FeedStore) -> Self {
        Self { container: store.cosmos().subscriptions.clone() }
    }

    /// Every bucket lease that exists.
    pub async fn leases(&self) -> Result<Vec<BucketLease>, StoreError> {
        let started = Instant::now();
        let mut pages = self
            .container
            .query_items::<LeaseDoc>(
                Query::from("SELECT * FROM c WHERE c.seq >= 0"),
                FeedScope::partition(BUCKETS_PK),
                None,
            )
            .await
            .map_err(StoreError::cosmos("query bucket leases"))?
            .into_pages();
        let mut leases = Vec::new();
        while let Some(p) = pages.next().await {
            let p = p.map_err(StoreError::cosmos("query bucket leases"))?;
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
    ) -> Result<Option<BucketLease>, StoreError> {
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
                let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(StoreError::MissingEtag)?;
                Ok(Some(BucketLease { bucket, owner: owner.into(), expires_ms, etag }))
            }
            Err(e)
                if e.status().is_conflict()
                    || e.status().is_not_found()
                    || e.status().status_code() == azure_core::http::StatusCode::PreconditionFailed =>
            {
                Ok(None)
            }
            Err(e) => Err(StoreError::cosmos("write bucket lease")(e)),
        }
    }

    /// Says that instance `owner` is alive until `expires_ms`.
    pub async fn present(&self, owner: &str, expires_ms: u64) -> Result<(), StoreError> {
        let digest = sha2::Sha256::digest(owner.as_bytes());
        let seq = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 12;
        let doc = PresenceDoc { id: owner.into(), pk: INSTANCES_PK.into(), seq, expires_ms, ttl: PRESENCE_TTL_SECONDS };
        let started = Instant::now();
        let resp = self
            .container
            .upsert_item(INSTANCES_PK, owner, &doc, None::<ItemWriteOptions>)
            .await
            .map_err(StoreError::cosmos("write presence"))?;
        observe("instance_presence", started, charge(resp.headers()));
        Ok(())
    }

    /// Instances alive at `now_ms` (one partition; instances are few).
    pub async fn instances(&self, now_ms: u64) -> Result<usize, StoreError> {
        Ok(self.presences(now_ms).await?.len())
    }

    /// When each live instance's presence expires (unless it is renewed).
    pub async fn presences(&self, now_ms: u64) -> Result<Vec<u64>, StoreError> {
        let q = Query::from("SELECT VALUE c.expiresMs FROM c");
        let started = Instant::now();
        let mut pages = self
            .container
            .query_items::<u64>(q, FeedScope::partition(INSTANCES_PK), None)
            .await
            .map_err(StoreError::cosmos("query instances"))?
            .into_pages();
        let mut alive = Vec::new();
        while let Some(p) = pages.next().await {
            let p = p.map_err(StoreError::cosmos("query instances"))?;
            observe("instances", started, charge(p.headers()));
            alive.extend(p.items().iter().copied().filter(|e| *e > now_ms));
        }
        Ok(alive)
    }

    /// Removes this instance's presence (it stops).
    pub async fn absent(&self, owner: &str) {
        let _ = self.container.delete_item(INSTANCES_PK, owner, None).await;
    }
}
