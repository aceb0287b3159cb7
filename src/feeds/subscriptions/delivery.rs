//! Each subscription's delivery state (`pk = "delivery|{id}"`, one
//! document): checkpoint, status, recent attempts.
//!
//! Invariants it keeps:
//! - **Changes are guarded** by the document's ETag (`Changed::Stale`:
//!   someone else wrote it since it was read).
//! - **A state goes with its subscription**: it does not expire by the
//!   container's TTL, and is removed when the subscription is deleted.

use std::time::Instant;

use azure_data_cosmos::ContainerClient;
use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
use serde::{Deserialize, Serialize};

use crate::domain::subscription::DeliveryState;
use crate::feeds::{Changed, FeedStore, StoreError, charge, observe};

pub(super) const STATE_ID: &str = "delivery";

pub(super) fn state_pk(subscription: u64) -> String {
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

/// Subscriptions' delivery states.
#[derive(Clone)]
pub struct DeliveryStore {
    container: ContainerClient,
}

impl DeliveryStore {
    pub fn new(store: &FeedStore) -> Self {
        Self { container: store.cosmos().subscriptions.clone() }
    }

    /// A subscription's delivery state and its ETag.
    pub async fn state(&self, subscription: u64) -> Result<Option<(DeliveryState, String)>, StoreError> {
        let started = Instant::now();
        match self.container.read_item(state_pk(subscription), STATE_ID, None).await {
            Ok(resp) => {
                observe("delivery_read", started, charge(resp.headers()));
                let doc: StateDoc = resp.into_model().map_err(StoreError::cosmos("decode delivery state"))?;
                Ok(Some((doc.state, doc.etag.ok_or(StoreError::MissingEtag)?)))
            }
            Err(e) if e.status().is_not_found() => Ok(None),
            Err(e) => Err(StoreError::cosmos("read delivery state")(e)),
        }
    }

    /// The state, made with `initial` when there is none yet.
    pub async fn state_or(
        &self,
        subscription: u64,
        initial: DeliveryState,
    ) -> Result<(DeliveryState, String), StoreError> {
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
                    let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(StoreError::MissingEtag)?;
                    return Ok((initial, etag));
                }
                Err(e) if e.status().is_conflict() => continue,
                Err(e) => return Err(StoreError::cosmos("create delivery state")(e)),
            }
        }
        Err(StoreError::Transient("the delivery state kept changing".into()))
    }

    /// Writes a subscription's state, unless it changed since `etag`.
    pub async fn write(
        &self,
        subscription: u64,
        state: &DeliveryState,
        etag: &str,
    ) -> Result<Changed<String>, StoreError> {
        let doc =
            StateDoc { id: STATE_ID.into(), pk: state_pk(subscription), state: state.clone(), ttl: -1, etag: None };
        let options = ItemWriteOptions::default().with_precondition(Precondition::IfMatch(etag.to_owned().into()));
        let started = Instant::now();
        match self.container.replace_item(state_pk(subscription), STATE_ID, &doc, Some(options)).await {
            Ok(resp) => {
                observe("delivery_write", started, charge(resp.headers()));
                Ok(Changed::Done(resp.headers().etag().map(|e| e.to_string()).ok_or(StoreError::MissingEtag)?))
            }
            Err(e)
                if e.status().is_not_found()
                    || e.status().status_code() == azure_core::http::StatusCode::PreconditionFailed =>
            {
                Ok(Changed::Stale)
            }
            Err(e) => Err(StoreError::cosmos("write delivery state")(e)),
        }
    }

    /// Removes a subscription's delivery state (the subscription is gone).
    pub async fn remove(&self, subscription: u64) -> Result<(), StoreError> {
        match self.container.delete_item(state_pk(subscription), STATE_ID, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status().is_not_found() => Ok(()),
            Err(e) => Err(StoreError::cosmos("remove delivery state")(e)),
        }
    }
}
