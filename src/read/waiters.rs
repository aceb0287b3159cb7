//! Long-polling requests of one instance: at most `max` hold a slot at a
//! time; those that found nothing and wait for an append are parked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Waiters {
    slots: Arc<Semaphore>,
    max: usize,
    parked: Arc<AtomicUsize>,
}

/// A held slot; released when dropped (the request answered or cancelled).
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("query_waiters").decrement(1.0);
    }
}

/// A parked request; counted until dropped.
pub struct Parked {
    parked: Arc<AtomicUsize>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Waiters {
    pub fn new(max: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(max)), max, parked: Arc::default() }
    }

    /// A slot, or `None` when all are taken.
    pub fn hold(&self) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        metrics::gauge!("query_waiters").increment(1.0);
        Some(Slot { _permit: permit })
    }

    /// Counts a request as parked until the guard is dropped.
    pub fn park(&self) -> Parked {
        self.parked.fetch_add(1, Ordering::SeqCst);
        Parked { parked: self.parked.clone() }
    }

    /// Requests holding a slot.
    pub fn holding(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }

    /// Requests that read the feed, found nothing, and wait for an append.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::SeqCst)
    }
}
