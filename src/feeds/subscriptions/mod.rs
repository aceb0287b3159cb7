//! Subscriptions in Cosmos DB, in the subscriptions container (not the
//! events': the deliver pods write here and only read events), in one logical
//! partition (`pk = "subscriptions"`; a subscription is about 1 KB, so
//! millions fit in a partition's 20 GB).
//!
//! Invariants it keeps:
//! - **Integer ids, never reused.** A subscription's id is its `seq`, which
//!   the container's unique key keeps unique in the partition: a create
//!   takes the highest `seq` + 1 and, when another instance took it first
//!   (409), reads again. A deleted subscription leaves a tombstone with its
//!   `seq` (deleted and tombstoned in one transactional batch), so the
//!   highest `seq` never goes down.
//! - **One subscription per identity.** A subscription's document id is a
//!   digest of its consumer, endpoint and filters: the same subscription
//!   created twice, on any instance, meets its own document (409) and the
//!   existing one is returned.
//! - **Changes are guarded** by the document's ETag (412: someone else
//!   changed it; read again).
//! - **At most `limit` per consumer** (`create`): counted before a create,
//!   and again after it by rank, so racing creates cannot pass it.
//! - Subscription documents never expire (`ttl: -1`).
//! - **No webhook signing secret in plain text**: each is sealed with the
//!   `subscription_secrets` ring (XChaCha20-Poly1305, bound to its
//!   subscription's id) as `w1.{key id}.{nonce | ciphertext}`; a
//!   subscription whose secrets this ring cannot open is an error to read
//!   (never an absence: its delivery state stays, and no push goes out
//!   unsigned or signed wrongly) and is left out of lists. Documents written before sealing
//!   existed hold the secret itself and are sealed at their next change.
//!
//! Their delivery states are in `delivery.rs`.

mod delivery;
mod moved;

use std::time::Instant;

use azure_data_cosmos::options::{BatchDeleteOptions, ItemWriteOptions, Precondition};
use azure_data_cosmos::{ContainerClient, FeedScope, Query, TransactionalBatch};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Changed, FeedStore, StoreError, charge, observe};
use crate::domain::Principal;
pub use delivery::DeliveryStore;
pub use moved::{MoveReport, move_from_events_container};

use crate::domain::subscription::{
    Endpoint, Imported, Kind, SigningSecret, Subscription, SubscriptionFilters, Validation,
};

const PK: &str = crate::feeds::cosmos::SUBSCRIPTIONS_PK;
/// A sealed secret's prefix.
const SEALED: &str = "w1.";

#[cfg(test)]
fn secret_sealer() -> crate::secrets::Sealer {
    crate::secrets::Sealer::new(crate::secrets::WEBHOOK_SECRET_DOMAIN, &crate::secrets::KeyRing::default())
}

fn secret_aad(subscription: u64) -> Vec<u8> {
    format!("altinn-events/webhook-secret/v1|{subscription}").into_bytes()
}

fn seal_secret(
    sealer: &crate::secrets::Sealer,
    subscription: u64,
    secret: &SecretString,
) -> Result<String, StoreError> {
    sealer
        .seal_text(SEALED, secret.expose_secret().as_bytes(), &secret_aad(subscription))
        .ok_or_else(|| StoreError::Config("no subscription_secrets key to seal a webhook secret with".into()))
}

/// The secret a stored value holds: opened when sealed, as it is when it
/// predates sealing; `None` when this ring cannot open it.
fn open_secret(sealer: &crate::secrets::Sealer, subscription: u64, stored: String) -> Option<SecretString> {
    if !stored.starts_with(SEALED) {
        return Some(SecretString::from(stored));
    }
    let plain = sealer.open_text(SEALED, &stored, &secret_aad(subscription))?;
    String::from_utf8(plain).ok().map(SecretString::from)
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSecret {
    value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionDoc {
    id: String,
    pk: String,
    seq: u64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filters: Option<SubscriptionFilters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consumer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    validation: Option<Validation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<StoredSecret>,
    /// When a validation attempt is due (Unix ms): what the validators query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    caller: Option<Principal>,
    #[serde(default)]
    app: bool,
    #[serde(default)]
    starts_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imported: Option<Imported>,
    /// On an imported subscription: what queries find it by (indexed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imported_row: Option<String>,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

const KIND_SUBSCRIPTION: &str = "subscription";
const KIND_TOMBSTONE: &str = "tombstone";

/// A subscription as read, with what guards a change of it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subscription: Subscription,
    doc_id: String,
    etag: String,
}

impl Stored {
    /// The ETag the subscription was read with (the change feed reports it).
    pub fn etag(&self) -> &str {
        &self.etag
    }
}

/// What storing an imported subscription did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutImported {
    Created,
    Updated,
    Unchanged,
    /// A subscription made here has (or had) that id.
    IdTaken,
}

/// What a create did.
#[derive(Debug, Clone)]
pub enum Creation {
    Created(Subscription),
    /// The same subscription (consumer, endpoint, filters) exists: this one.
    Existing(Subscription),
    /// The consumer holds as many subscriptions as it may.
    LimitReached,
}

fn doc_id_for(identity: &str) -> String {
    let digest = Sha256::digest(identity.as_bytes());
    format!("s-{}", digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>())
}

fn to_doc(doc_id: &str, s: &Subscription, sealer: &crate::secrets::Sealer) -> Result<SubscriptionDoc, StoreError> {
    let secrets = s
        .secrets
        .iter()
        .map(|x| Ok(StoredSecret { value: seal_secret(sealer, s.id, &x.value)?, expires_ms: x.expires_ms }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(SubscriptionDoc {
        id: doc_id.to_owned(),
        pk: PK.to_owned(),
        seq: s.id,
        kind: KIND_SUBSCRIPTION.to_owned(),
        end_point: Some(s.end_point.as_str().to_owned()),
        filters: Some(s.filters.clone()),
        consumer: Some(s.consumer.clone()),
        created_by: Some(s.created_by.clone()),
        created: Some(s.created.clone()),
        validation: Some(s.validation.clone()),
        secrets,
        due_ms: s.validation.next_attempt_ms,
        caller: s.caller.clone(),
        // Read by older instances during a rolling deploy; derived here.
        app: matches!(s.kind(), Kind::App { .. }),
        starts_at: s.starts_at,
        imported: s.imported.clone(),
        imported_row: s.imported.as_ref().map(|i| i.row_digest.clone()),
        ttl: -1,
        etag: None,
    })
}

/// The subscription a document holds (`None`: a tombstone, or a document
/// that is no subscription). A subscription whose secrets the ring cannot
/// open is an error, not an absence: it must not look deleted (its
/// delivery state would be dropped) nor be pushed unsigned.
fn from_doc(mut doc: SubscriptionDoc, sealer: &crate::secrets::Sealer) -> Result<Option<Stored>, StoreError> {
    if doc.kind != KIND_SUBSCRIPTION {
        return Ok(None);
    }
    let mut secrets = Vec::with_capacity(doc.secrets.len());
    for x in std::mem::take(&mut doc.secrets) {
        let Some(value) = open_secret(sealer, doc.seq, x.value) else {
            tracing::error!(
                subscription = doc.seq,
                "a webhook secret of the subscription does not open with the subscription_secrets ring (a key was removed too soon?)"
            );
            metrics::counter!("subscription_secrets_unreadable_total").increment(1);
            return Err(StoreError::Config(format!(
                "the webhook secret of subscription {} does not open with the subscription_secrets ring",
                doc.seq
            )));
        };
        secrets.push(SigningSecret { value, expires_ms: x.expires_ms });
    }
    Ok(assemble(doc, secrets))
}

/// The subscription of a document whose secrets are open; `None` when a
/// member a subscription needs is missing.
fn assemble(doc: SubscriptionDoc, secrets: Vec<SigningSecret>) -> Option<Stored> {
    let subscription = Subscription {
        id: doc.seq,
        // Checked when it was made: a stored endpoint that is no URL is no
        // subscription (as a document without its filters is none).
        end_point: Endpoint::parse(&doc.end_point?).ok()?,
        filters: doc.filters?,
        consumer: doc.consumer?,
        created_by: doc.created_by?,
        created: doc.created?,
        validation: doc.validation?,
        secrets,
        // Only an imported subscription has no token to decide for.
        caller: match (doc.caller, &doc.imported) {
            (Some(caller), _) => Some(caller),
            (None, Some(_)) => None,
            (None, None) => return None,
        },
        starts_at: doc.starts_at,
        imported: doc.imported,
    };
    Some(Stored { subscription, doc_id: doc.id, etag: doc.etag? })
}

/// The subscriptions of the service.
#[derive(Clone)]
pub struct SubscriptionStore {
    container: ContainerClient,
    sealer: std::sync::Arc<crate::secrets::Sealer>,
}

impl SubscriptionStore {
    /// The subscriptions in `store`'s container, their webhook secrets
    /// sealed with `store`'s ring (`FeedStore::webhook_secrets`).
    pub fn new(store: &FeedStore) -> Self {
        Self { container: store.cosmos().subscriptions.clone(), sealer: store.webhook_secrets().clone() }
    }

    fn read_doc_of(&self, doc: SubscriptionDoc) -> Result<Option<Stored>, StoreError> {
        from_doc(doc, &self.sealer)
    }

    fn doc_of(&self, doc_id: &str, s: &Subscription) -> Result<SubscriptionDoc, StoreError> {
        to_doc(doc_id, s, &self.sealer)
    }

    async fn query(&self, q: Query, operation: &'static str) -> Result<Vec<SubscriptionDoc>, StoreError> {
        let started = Instant::now();
        let mut pages = self
            .container
            .query_items::<SubscriptionDoc>(q, FeedScope::partition(PK), None)
            .await
            .map_err(StoreError::cosmos("query subscriptions"))?
            .into_pages();
        let mut docs = Vec::new();
        while let Some(p) = pages.next().await {
            let p = p.map_err(StoreError::cosmos("query subscriptions"))?;
            observe(operation, started, charge(p.headers()));
            docs.extend(p.into_items());
        }
        Ok(docs)
    }

    async fn highest_id(&self) -> Result<u64, StoreError> {
        let q = Query::from("SELECT TOP 1 * FROM c WHERE c.seq >= 0 ORDER BY c.seq DESC");
        Ok(self.query(q, "subscription_max").await?.first().map_or(0, |d| d.seq))
    }

    async fn read_doc(&self, doc_id: &str) -> Result<Option<SubscriptionDoc>, StoreError> {
        let started = Instant::now();
        match self.container.read_item(PK, doc_id, None).await {
            Ok(resp) => {
                observe("subscription_read", started, charge(resp.headers()));
                Ok(Some(resp.into_model().map_err(StoreError::cosmos("decode subscription"))?))
            }
            Err(e) if e.status().is_not_found() => Ok(None),
            Err(e) => Err(StoreError::cosmos("read subscription")(e)),
        }
    }

    /// Stores a new subscription made by `make` from its id, unless the same
    /// subscription (`identity`) exists: then that one. At most `limit`
    /// subscriptions of its consumer are kept: a consumer that holds them
    /// already gets `LimitReached`, and so does one whose concurrent creates
    /// went past the limit (each new subscription counts those of its
    /// consumer with lower ids, and removes itself when they are `limit`
    /// already: of racing creates, the lowest ids stay).
    pub async fn create(
        &self,
        identity: &str,
        consumer: &str,
        limit: usize,
        make: impl Fn(u64) -> Subscription,
    ) -> Result<Creation, StoreError> {
        let doc_id = doc_id_for(identity);
        for _ in 0..50 {
            if let Some(existing) = self.read_doc(&doc_id).await?.map(|d| self.read_doc_of(d)).transpose()?.flatten() {
                return Ok(Creation::Existing(existing.subscription));
            }
            if self.ids_of(consumer).await?.len() >= limit {
                return Ok(Creation::LimitReached);
            }
            let subscription = make(self.highest_id().await? + 1);
            let started = Instant::now();
            match self
                .container
                .create_item(PK, &doc_id, &self.doc_of(&doc_id, &subscription)?, None::<ItemWriteOptions>)
                .await
            {
                Ok(resp) => {
                    observe("subscription_create", started, charge(resp.headers()));
                    let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(StoreError::MissingEtag)?;
                    let before = self.ids_of(consumer).await?.into_iter().filter(|id| *id < subscription.id).count();
                    if before >= limit {
                        let stored = Stored { subscription, doc_id: doc_id.clone(), etag };
                        self.delete(&stored).await?;
                        return Ok(Creation::LimitReached);
                    }
                    return Ok(Creation::Created(subscription));
                }
                // Its own identity (the same subscription, created just now
                // elsewhere: returned above) or its id, taken by another.
                Err(e) if e.status().is_conflict() => continue,
                Err(e) => return Err(StoreError::cosmos("create subscription")(e)),
            }
        }
        Err(StoreError::Transient("subscription ids kept being taken".into()))
    }

    /// The ids of a consumer's subscriptions.
    async fn ids_of(&self, consumer: &str) -> Result<Vec<u64>, StoreError> {
        let q = Query::from("SELECT VALUE c.seq FROM c WHERE c.consumer = @consumer AND c.kind = @kind")
            .with_parameter("@consumer", consumer)
            .map_err(StoreError::cosmos("bind"))?
            .with_parameter("@kind", KIND_SUBSCRIPTION)
            .map_err(StoreError::cosmos("bind"))?;
        self.values(q, "subscription_count").await
    }

    /// Stores a subscription imported from Altinn Events under its own id,
    /// or brings the one imported before up to date with it (`merge` makes
    /// the stored version from the one there and the import's). An id a
    /// subscription made here holds (or held) is not taken.
    pub async fn put_imported(
        &self,
        subscription: &Subscription,
        merge: impl Fn(&Subscription, &Subscription) -> Subscription,
    ) -> Result<PutImported, StoreError> {
        let doc_id = format!("imported-{}", subscription.id);
        for _ in 0..10 {
            match self.read_doc(&doc_id).await?.map(|d| self.read_doc_of(d)).transpose()?.flatten() {
                Some(stored) => {
                    let digest = |s: &Subscription| s.imported.as_ref().map(|i| i.row_digest.clone());
                    if digest(&stored.subscription) == digest(subscription) {
                        return Ok(PutImported::Unchanged);
                    }
                    let next = merge(&stored.subscription, subscription);
                    if let Changed::Done(_) = self.replace(&stored, next).await? {
                        return Ok(PutImported::Updated);
                    }
                }
                None => {
                    let started = Instant::now();
                    match self
                        .container
                        .create_item(PK, &doc_id, &self.doc_of(&doc_id, subscription)?, None::<ItemWriteOptions>)
                        .await
                    {
                        Ok(resp) => {
                            observe("subscription_import", started, charge(resp.headers()));
                            return Ok(PutImported::Created);
                        }
                        // Created meanwhile (read again), or the id is taken.
                        Err(e) if e.status().is_conflict() => {
                            if self.read_doc(&doc_id).await?.is_none() {
                                return Ok(PutImported::IdTaken);
                            }
                        }
                        Err(e) => return Err(StoreError::cosmos("import subscription")(e)),
                    }
                }
            }
        }
        Err(StoreError::Transient("an imported subscription kept changing".into()))
    }

    /// The ids of the subscriptions imported from Altinn Events.
    pub async fn imported_ids(&self) -> Result<Vec<u64>, StoreError> {
        let q = Query::from("SELECT VALUE c.seq FROM c WHERE c.kind = @kind AND IS_DEFINED(c.importedRow)")
            .with_parameter("@kind", KIND_SUBSCRIPTION)
            .map_err(StoreError::cosmos("bind"))?;
        self.values(q, "subscription_imported_ids").await
    }

    /// The subscription with this id; `None` when there is none (or it was
    /// deleted).
    pub async fn get(&self, id: u64) -> Result<Option<Stored>, StoreError> {
        let q = Query::from("SELECT * FROM c WHERE c.seq = @id")
            .with_parameter("@id", id)
            .map_err(StoreError::cosmos("bind"))?;
        for doc in self.query(q, "subscription_get").await? {
            if let Some(stored) = self.read_doc_of(doc)? {
                return Ok(Some(stored));
            }
        }
        Ok(None)
    }

    /// The ids of every subscription (not their documents: 8 bytes each).
    pub async fn ids(&self) -> Result<Vec<u64>, StoreError> {
        let q = Query::from("SELECT VALUE c.seq FROM c WHERE c.kind = @kind")
            .with_parameter("@kind", KIND_SUBSCRIPTION)
            .map_err(StoreError::cosmos("bind"))?;
        self.values(q, "subscription_ids").await
    }

    async fn values(&self, q: Query, operation: &'static str) -> Result<Vec<u64>, StoreError> {
        let started = Instant::now();
        let mut pages = self
            .container
            .query_items::<u64>(q, FeedScope::partition(PK), None)
            .await
            .map_err(StoreError::cosmos("query subscription ids"))?
            .into_pages();
        let mut ids = Vec::new();
        while let Some(p) = pages.next().await {
            let p = p.map_err(StoreError::cosmos("query subscription ids"))?;
            observe(operation, started, charge(p.headers()));
            ids.extend(p.into_items());
        }
        Ok(ids)
    }

    /// A consumer's subscriptions, by id.
    pub async fn list(&self, consumer: &str) -> Result<Vec<Subscription>, StoreError> {
        let q = Query::from("SELECT * FROM c WHERE c.consumer = @consumer AND c.kind = @kind ORDER BY c.seq")
            .with_parameter("@consumer", consumer)
            .map_err(StoreError::cosmos("bind"))?
            .with_parameter("@kind", KIND_SUBSCRIPTION)
            .map_err(StoreError::cosmos("bind"))?;
        Ok(self
            .query(q, "subscription_list")
            .await?
            .into_iter()
            // One whose secrets do not open is left out of the list (and
            // logged); reading it alone is an error.
            .filter_map(|d| self.read_doc_of(d).ok().flatten())
            .map(|s| s.subscription)
            .collect())
    }

    /// Subscriptions whose validation attempt is due at `now_ms` and that no
    /// instance is working on.
    pub async fn due_validations(&self, now_ms: u64) -> Result<Vec<Stored>, StoreError> {
        let q = Query::from("SELECT * FROM c WHERE c.dueMs <= @now")
            .with_parameter("@now", now_ms)
            .map_err(StoreError::cosmos("bind"))?;
        let unclaimed = |s: &Stored| s.subscription.validation.claimed_until_ms.is_none_or(|until| until <= now_ms);
        Ok(self
            .query(q, "subscription_due")
            .await?
            .into_iter()
            // One whose secrets do not open cannot be validated: left out
            // (and logged), the others go on.
            .filter_map(|d| self.read_doc_of(d).ok().flatten())
            .filter(unclaimed)
            .collect())
    }

    /// Replaces `stored` with `subscription`, unless it changed meanwhile.
    pub async fn replace(&self, stored: &Stored, subscription: Subscription) -> Result<Changed<Stored>, StoreError> {
        let options = ItemWriteOptions::default().with_precondition(Precondition::IfMatch(stored.etag.clone().into()));
        let started = Instant::now();
        let doc = self.doc_of(&stored.doc_id, &subscription)?;
        match self.container.replace_item(PK, &stored.doc_id, &doc, Some(options)).await {
            Ok(resp) => {
                observe("subscription_replace", started, charge(resp.headers()));
                let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(StoreError::MissingEtag)?;
                Ok(Changed::Done(Stored { subscription, doc_id: stored.doc_id.clone(), etag }))
            }
            Err(e)
                if e.status().is_not_found()
                    || e.status().status_code() == azure_core::http::StatusCode::PreconditionFailed =>
            {
                Ok(Changed::Stale)
            }
            Err(e) => Err(StoreError::cosmos("replace subscription")(e)),
        }
    }

    /// Deletes `stored` and leaves its tombstone, in one batch, unless it
    /// changed meanwhile.
    pub async fn delete(&self, stored: &Stored) -> Result<Changed<()>, StoreError> {
        let tombstone = SubscriptionDoc {
            id: format!("deleted-{}", stored.subscription.id),
            pk: PK.to_owned(),
            seq: stored.subscription.id,
            kind: KIND_TOMBSTONE.to_owned(),
            end_point: None,
            filters: None,
            consumer: None,
            created_by: None,
            created: None,
            validation: None,
            secrets: Vec::new(),
            due_ms: None,
            caller: None,
            app: false,
            starts_at: 0,
            imported: None,
            imported_row: None,
            ttl: -1,
            etag: None,
        };
        let guard = BatchDeleteOptions::default().with_precondition(Precondition::IfMatch(stored.etag.clone().into()));
        let batch = TransactionalBatch::new(PK)
            .delete_item(stored.doc_id.clone(), Some(guard))
            .create_item(tombstone)
            .map_err(StoreError::cosmos("build batch"))?;
        let started = Instant::now();
        let resp = self
            .container
            .execute_transactional_batch(batch, None)
            .await
            .map_err(StoreError::cosmos("delete subscription"))?;
        observe("subscription_delete", started, charge(resp.headers()));
        let model = resp.into_model().map_err(StoreError::cosmos("decode batch response"))?;
        if model.results().iter().all(|r| r.is_success()) {
            return Ok(Changed::Done(()));
        }
        match model.results().iter().find(|r| !r.is_success() && r.status_code() != 424).map(|r| r.status_code()) {
            Some(404 | 412) => Ok(Changed::Stale),
            Some(status) => Err(StoreError::Transient(format!("deleting a subscription answered {status}"))),
            None => Err(StoreError::Transient("a batch failed without a failing operation".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::{open_secret, seal_secret, secret_sealer};
    use crate::secrets::KeyRing;

    #[test]
    fn a_sealed_secret_opens_for_its_subscription_only_and_a_secret_from_before_sealing_is_read_as_it_is() {
        let sealer = secret_sealer();
        let secret = SecretString::from("whsec_0123456789abcdef".to_owned());
        assert!(seal_secret(&sealer, 7, &secret).is_err(), "nothing is sealed (or stored in plain text) without a key");
        sealer.replace(&KeyRing::parse("w1:ring-secret-0123456789").unwrap());
        let sealed = seal_secret(&sealer, 7, &secret).unwrap();
        assert!(sealed.starts_with("w1.w1.") && !sealed.contains("whsec"), "{sealed}");
        assert_ne!(sealed, seal_secret(&sealer, 7, &secret).unwrap(), "a fresh nonce each time");
        let opened = open_secret(&sealer, 7, sealed.clone()).expect("opens");
        assert_eq!(opened.expose_secret(), "whsec_0123456789abcdef");
        assert!(open_secret(&sealer, 8, sealed.clone()).is_none(), "bound to its subscription");
        let legacy = open_secret(&sealer, 7, "whsec_plain".to_owned()).expect("a secret stored before sealing");
        assert_eq!(legacy.expose_secret(), "whsec_plain");
        sealer.replace(&KeyRing::parse("w2:another-secret-0123456789").unwrap());
        assert!(open_secret(&sealer, 7, sealed).is_none(), "a key that left the ring opens nothing");
    }
}
