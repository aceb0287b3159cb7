//! `altinn-events move-subscriptions`: moves what a store made before the
//! subscriptions container existed from the events container into it:
//! every document of the subscriptions partition (tombstones included, so
//! that ids are never reused) and each one's delivery state, as they are
//! (checkpoints, secrets sealed as they were). The delivery buckets' leases
//! are deleted there, not moved (the deliverers take new ones), and so are
//! the presences.
//!
//! Resumable and idempotent: everything is copied before anything is
//! deleted (a copy that exists already is left as it is), and the
//! subscriptions partition is deleted last; until it is empty the service
//! refuses to start (`FeedStore::connect`), so no instance serves a
//! half-moved store. Run it with every instance stopped: an old one would
//! go on writing where nothing is read any more.

use azure_data_cosmos::ContainerClient;
use azure_data_cosmos::options::ItemWriteOptions;
use serde_json::Value;

use super::PK;
use super::delivery::{STATE_ID, state_pk};
use crate::feeds::cosmos::partition_documents;
use crate::feeds::{FeedStore, StoreError};

/// What a move did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MoveReport {
    /// Subscription documents (tombstones included) copied.
    pub subscriptions: u64,
    /// Delivery states copied.
    pub delivery_states: u64,
    /// Documents found copied already (an earlier run's).
    pub copied_before: u64,
    /// Documents deleted from the events container.
    pub deleted: u64,
}

/// What a failed read of a partition to move is called in errors.
const READ: &str = "read a partition to move";

/// The partitions of the leases and presences in the events container.
const COORDINATION_PKS: [&str; 2] = ["delivery-buckets", "delivery-instances"];

/// Moves them (module docs).
pub async fn move_from_events_container(store: &FeedStore) -> Result<MoveReport, StoreError> {
    let config = &store.cosmos().config;
    if config.container == config.subscriptions_container {
        // Every copy would meet itself, and the deletes would remove them.
        return Err(StoreError::Config("cosmos.subscriptions_container must differ from cosmos.container".into()));
    }
    let (events, subscriptions) = (&store.cosmos().container, &store.cosmos().subscriptions);
    let mut report = MoveReport::default();
    let docs = partition_documents(events, PK, READ).await?;
    let mut states = Vec::new();
    for doc in &docs {
        if copy(subscriptions, PK, doc).await? {
            report.subscriptions += 1;
        } else {
            report.copied_before += 1;
        }
        let Some(seq) = doc.get("seq").and_then(Value::as_u64) else { continue };
        let pk = state_pk(seq);
        match events.read_item(pk.clone(), STATE_ID, None).await {
            Ok(resp) => {
                let state: Value = resp.into_model().map_err(StoreError::cosmos("decode delivery state"))?;
                if copy(subscriptions, &pk, &state).await? {
                    report.delivery_states += 1;
                } else {
                    report.copied_before += 1;
                }
                states.push(pk);
            }
            Err(e) if e.status().is_not_found() => {}
            Err(e) => return Err(StoreError::cosmos("read delivery state")(e)),
        }
    }
    // Everything is copied: delete, the subscriptions partition last.
    for pk in &states {
        report.deleted += u64::from(delete(events, pk, STATE_ID).await?);
    }
    for pk in COORDINATION_PKS {
        for doc in partition_documents(events, pk, READ).await? {
            if let Some(id) = doc.get("id").and_then(Value::as_str) {
                report.deleted += u64::from(delete(events, pk, id).await?);
            }
        }
    }
    for doc in &docs {
        if let Some(id) = doc.get("id").and_then(Value::as_str) {
            report.deleted += u64::from(delete(events, PK, id).await?);
        }
    }
    Ok(report)
}

/// Creates `doc` (without Cosmos DB's own properties) in `container`;
/// whether it was created (false: it was there already).
async fn copy(container: &ContainerClient, pk: &str, doc: &Value) -> Result<bool, StoreError> {
    let mut doc = doc.clone();
    let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(map) = doc.as_object_mut() {
        map.retain(|key, _| !key.starts_with('_'));
    }
    match container.create_item(pk.to_owned(), &id, &doc, None::<ItemWriteOptions>).await {
        Ok(_) => Ok(true),
        Err(e) if e.status().is_conflict() => Ok(false),
        Err(e) => Err(StoreError::cosmos("copy a document")(e)),
    }
}

/// Deletes one document; whether it was there.
async fn delete(container: &ContainerClient, pk: &str, id: &str) -> Result<bool, StoreError> {
    match container.delete_item(pk.to_owned(), id, None).await {
        Ok(_) => Ok(true),
        Err(e) if e.status().is_not_found() => Ok(false),
        Err(e) => Err(StoreError::cosmos("delete a moved document")(e)),
    }
}
