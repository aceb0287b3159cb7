//! Long-polling requests of one instance: at most `max` hold a slot at a
//! time, and at most `per_holder` of them for one caller (its fair share:
//! one caller cannot take every slot). Those that found nothing and wait
//! for an append are counted as parked, now and in all (so that a test can
//! tell whether a request waited without timing it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Waiters {
    slots: Arc<Semaphore>,
    max: usize,
    per_holder: usize,
    holders: Arc<Mutex<HashMap<String, usize>>>,
    parked: Arc<AtomicUsize>,
    parks: AtomicU64,
}

/// Why a long-poll gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoSlot {
    #[error("every long-polling slot of this instance is taken")]
    Full,
    #[error("the caller holds its share of long-polling slots")]
    ShareUsed,
}

/// A held slot; released when dropped (the request answered or cancelled).
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    holder: String,
    holders: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("query_waiters").decrement(1.0);
        let mut holders = self.holders.lock().expect("waiters lock");
        if let Some(n) = holders.get_mut(&self.holder) {
            *n -= 1;
            if *n == 0 {
                holders.remove(&self.holder);
            }
        }
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
    pub fn new(max: usize, per_holder: usize) -> Self {
        // For the "waiters near the cap" alert: query_waiters / this.
        metrics::gauge!("query_waiters_limit").set(max as f64);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_holder: per_holder.max(1),
            holders: Arc::default(),
            parked: Arc::default(),
            parks: AtomicU64::default(),
        }
    }

    /// A slot for `holder` (who asks: a user, an organisation, an instance
    /// key), unless every slot or the holder's share is taken.
    pub fn hold(&self, holder: &str) -> Result<Slot, NoSlot> {
        let mut holders = self.holders.lock().expect("waiters lock");
        let held = holders.get(holder).copied().unwrap_or(0);
        if held >= self.per_holder {
            return Err(NoSlot::ShareUsed);
        }
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| NoSlot::Full)?;
        holders.insert(holder.to_owned(), held + 1);
        metrics::gauge!("query_waiters").increment(1.0);
        Ok(Slot { _permit: permit, holder: holder.to_owned(), holders: self.holders.clone() })
    }

    /// Counts a request as parked until the guard is dropped.
    pub fn park(&self) -> Parked {
        self.parked.fetch_add(1, Ordering::SeqCst);
        self.parks.fetch_add(1, Ordering::SeqCst);
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

    /// How often a request parked since the start (a request parks again
    /// each time it is woken by an append it may not see).
    pub fn parks(&self) -> u64 {
        self.parks.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_gets_its_share_others_the_rest() {
        let w = Waiters::new(3, 2);
        let a1 = w.hold("a").unwrap();
        let _a2 = w.hold("a").unwrap();
        assert_eq!(w.hold("a").err(), Some(NoSlot::ShareUsed));
        let b1 = w.hold("b").unwrap();
        assert_eq!(w.hold("c").err(), Some(NoSlot::Full));
        drop(a1);
        assert!(w.hold("a").is_ok(), "a released one");
        drop(b1);
        assert_eq!(w.holding(), 1, "only a2 is still held");
    }
}
