//! The store's generation: a number that changes whenever the feeds may
//! have lost their newest events, after a point-in-time restore or a
//! failover that lost acknowledged writes (docs/operations.md, "Recovery
//! point"). Positions past the surviving end are then handed out again, to
//! other events, so a position means something only within its generation:
//! cursors carry it, and one of another generation is refused
//! (`api/paging.rs`) rather than read from a place that now holds other
//! events.
//!
//! One document (`pk = "store"`, `id = "generation"`), absent until the
//! first bump (generation 0: every store starts there, and cursors sealed
//! before generations existed are of it). An operator bumps it with
//! `altinn-events bump-generation` after a restore or such a failover,
//! before traffic returns; each instance reads it at start and with its
//! dependency check (every 30 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::FeedStore;
use crate::feeds::cosmos::{read_versioned, write_versioned};
use crate::feeds::{Changed, StoreError};

const PK: &str = "store";
const ID: &str = "generation";
/// Not read yet.
const UNKNOWN: u64 = u64::MAX;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GenerationDoc {
    id: String,
    pk: String,
    generation: u32,
    /// Why and when it was last bumped (for the operator who reads it).
    reason: String,
    bumped_at: String,
    ttl: i64,
}

/// The generation as this instance last read it.
#[derive(Debug, Clone)]
pub(super) struct Known(Arc<AtomicU64>);

impl Default for Known {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(UNKNOWN)))
    }
}

impl FeedStore {
    /// The store's generation as last read (`None` before the first read).
    pub fn generation(&self) -> Option<u32> {
        let value = self.generation.0.load(Ordering::Acquire);
        (value != UNKNOWN).then_some(value as u32)
    }

    /// Reads the generation from the store (and keeps it).
    pub async fn refresh_generation(&self) -> Result<u32, StoreError> {
        let generation = self.read_generation().await?.map_or(0, |(doc, _)| doc.generation);
        let before = self.generation.0.swap(u64::from(generation), Ordering::AcqRel);
        if before != UNKNOWN && before != u64::from(generation) {
            tracing::warn!(before, generation, "the store's generation changed: cursors of the old one are refused");
        }
        metrics::gauge!("store_generation").set(f64::from(generation));
        Ok(generation)
    }

    async fn read_generation(&self) -> Result<Option<(GenerationDoc, String)>, StoreError> {
        read_versioned(&self.cosmos.container, PK, ID, "read generation").await
    }

    /// Starts the next generation (after a restore, or a failover that lost
    /// writes): the one it started. Instances take it within their next
    /// dependency check; restart them to take it at once.
    pub async fn bump_generation(&self, reason: &str) -> Result<u32, StoreError> {
        loop {
            let current = self.read_generation().await?;
            let generation = current.as_ref().map_or(0, |(doc, _)| doc.generation) + 1;
            let doc = GenerationDoc {
                id: ID.into(),
                pk: PK.into(),
                generation,
                reason: reason.to_owned(),
                bumped_at: crate::domain::server_time(),
                ttl: -1,
            };
            let etag = current.as_ref().map(|(_, etag)| etag.as_str());
            match write_versioned(&self.cosmos.container, PK, ID, &doc, etag, "bump generation").await? {
                Changed::Done(_) => {
                    self.generation.0.store(u64::from(generation), Ordering::Release);
                    return Ok(generation);
                }
                // Bumped by someone else meanwhile: once more, from theirs.
                Changed::Stale => {}
            }
        }
    }
}
