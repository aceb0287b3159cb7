//! The import's progress in Cosmos DB (`pk = "import"`, one document):
//! how far `altinn-events import` has come through Altinn Events' tables,
//! so that an import killed at any moment continues where it stood.
//!
//! Invariants it keeps:
//! - **Written only after what it records is stored**: the importer writes
//!   progress after every event up to `events_through` is in both its feeds,
//!   so a restart imports nothing twice (appends are idempotent anyway) and
//!   skips nothing.
//! - **One importer at a time**: every write is guarded by the document's
//!   ETag; a second importer's write answers `Stale` and it stops.
//! - Never expires (`ttl: -1`).

use std::time::Instant;

use azure_data_cosmos::ContainerClient;
use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
use serde::{Deserialize, Serialize};

use super::{Changed, FeedStore, StoreError, charge, observe};

const PK: &str = "import";
const ID: &str = "progress";

/// A run of sequence numbers that had no row when the rows after it were
/// imported (a rolled-back insert, or a transaction not committed yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    pub from: u64,
    pub to: u64,
    /// When it was first seen (Unix ms): gaps are looked at again for a
    /// while, then forgotten.
    pub seen_ms: u64,
}

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// `sequenceno` of an event, or the id of a subscription.
    pub row: u64,
    pub table: String,
    pub reason: String,
}

/// How far the import has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Every event row up to this `sequenceno` is imported (or skipped, or
    /// a gap being watched).
    pub events_through: u64,
    /// The highest `sequenceno` an import began to append (saved before
    /// the appends): a run killed meanwhile may have stored rows up to it,
    /// so the next run looks for them before appending them again.
    #[serde(default)]
    pub appending_through: u64,
    pub gaps: Vec<Gap>,
    /// Events imported (stored, or found stored by an earlier run).
    pub events: u64,
    /// Event rows skipped in all, and the first of them (at most
    /// `KEPT_SKIPPED`).
    pub skipped_count: u64,
    pub skipped: Vec<Skipped>,
    /// Subscription rows skipped at the last comparison with Altinn's (at
    /// most `KEPT_SKIPPED`).
    #[serde(default)]
    pub skipped_subscriptions: Vec<Skipped>,
    /// Altinn Events pushed up to this `sequenceno`; imported subscriptions
    /// are pushed from there (set once, by `--cut-over`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_over: Option<u64>,
}

/// How many skipped rows the progress lists (all are counted).
pub const KEPT_SKIPPED: usize = 1000;

impl Progress {
    pub fn skip(&mut self, row: u64, table: &str, reason: String) {
        self.skipped_count += 1;
        if self.skipped.len() < KEPT_SKIPPED {
            self.skipped.push(Skipped { row, table: table.to_owned(), reason });
        }
    }

    pub fn skip_subscription(&mut self, id: u64, reason: String) {
        if self.skipped_subscriptions.len() < KEPT_SKIPPED {
            self.skipped_subscriptions.push(Skipped { row: id, table: "events.subscription".into(), reason });
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ProgressDoc {
    id: String,
    pk: String,
    #[serde(flatten)]
    progress: Progress,
    ttl: i64,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
}

/// The stored progress and what guards a change of it.
#[derive(Debug, Clone)]
pub struct StoredProgress {
    pub progress: Progress,
    etag: Option<String>,
}

#[derive(Clone)]
pub struct ImportStore {
    container: ContainerClient,
}

impl ImportStore {
    pub fn new(store: &FeedStore) -> Self {
        Self { container: store.cosmos().container.clone() }
    }

    /// The progress so far (empty before the first import).
    pub async fn load(&self) -> Result<StoredProgress, StoreError> {
        let started = Instant::now();
        match self.container.read_item(PK, ID, None).await {
            Ok(resp) => {
                observe("import_progress_read", started, charge(resp.headers()));
                let doc: ProgressDoc = resp.into_model().map_err(StoreError::cosmos("decode import progress"))?;
                Ok(StoredProgress { progress: doc.progress, etag: doc.etag })
            }
            Err(e) if e.status().is_not_found() => Ok(StoredProgress { progress: Progress::default(), etag: None }),
            Err(e) => Err(StoreError::cosmos("read import progress")(e)),
        }
    }

    /// Stores `progress` over `stored`, unless another importer wrote
    /// since `stored` was read.
    pub async fn save(
        &self,
        stored: &StoredProgress,
        progress: Progress,
    ) -> Result<Changed<StoredProgress>, StoreError> {
        let doc = ProgressDoc { id: ID.to_owned(), pk: PK.to_owned(), progress, ttl: -1, etag: None };
        let started = Instant::now();
        let written = match &stored.etag {
            Some(etag) => {
                let options = ItemWriteOptions::default().with_precondition(Precondition::IfMatch(etag.clone().into()));
                self.container.replace_item(PK, ID, &doc, Some(options)).await
            }
            None => self.container.create_item(PK, ID, &doc, None::<ItemWriteOptions>).await,
        };
        match written {
            Ok(resp) => {
                observe("import_progress_write", started, charge(resp.headers()));
                let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(StoreError::MissingEtag)?;
                Ok(Changed::Done(StoredProgress { progress: doc.progress, etag: Some(etag) }))
            }
            Err(e)
                if e.status().is_conflict()
                    || e.status().is_not_found()
                    || e.status().status_code() == azure_core::http::StatusCode::PreconditionFailed =>
            {
                Ok(Changed::Stale)
            }
            Err(e) => Err(StoreError::cosmos("write import progress")(e)),
        }
    }
}
