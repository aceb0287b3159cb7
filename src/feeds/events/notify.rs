//! Wake-ups for waiting readers (long-polls) and push deliverers. Within a
//! process, the writer notifies a feed the moment a write commits. Across
//! processes, each instance follows the container's change feed once
//! ([`super::changes::follow`]) and notifies the feeds it reports appends
//! to: a cost per instance (one change-feed read per physical partition per
//! poll), whatever the number of watched feeds or waiters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::watch;

use super::docs::FeedId;

/// Watched feeds kept before the first pruning of unwatched ones.
const MIN_PRUNE_AT: usize = 256;

pub struct Notifier {
    /// Watched feeds. Their value is the count of all notifications of
    /// every feed when this one was last notified (or began to be watched):
    /// it only grows, even when a feed's watchers go and come back.
    watched: Mutex<HashMap<String, watch::Sender<u64>>>,
    notified: AtomicU64,
    /// The size of `watched` at which unwatched feeds are forgotten next.
    prune_at: AtomicUsize,
}

impl Default for Notifier {
    fn default() -> Self {
        Self { watched: Mutex::default(), notified: AtomicU64::new(0), prune_at: AtomicUsize::new(MIN_PRUNE_AT) }
    }
}

impl Notifier {
    /// Called by the writer after a commit to `feed`, and for appends the
    /// change feed reports.
    pub fn notify(&self, feed: &FeedId) {
        let key = feed.key();
        // The count first: whoever is woken below reads with it (see
        // `version`).
        let mut watched = self.watched.lock().expect("notifier lock");
        let count = self.notified.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(tx) = watched.get(&key) {
            if tx.is_closed() {
                watched.remove(&key);
            } else {
                tx.send_replace(count);
            }
        }
    }

    /// Wakes every watcher (the change feed may have missed appends).
    pub fn notify_all(&self) {
        let mut watched = self.watched.lock().expect("notifier lock");
        let count = self.notified.fetch_add(1, Ordering::SeqCst) + 1;
        watched.retain(|_, tx| !tx.is_closed());
        for tx in watched.values() {
            tx.send_replace(count);
        }
    }

    /// Where `feed` stands in the count of notifications (see `watched`);
    /// `None` when nobody watches it. A read that begins after this value
    /// was taken sees every append notified up to it.
    pub fn version(&self, feed: &FeedId) -> Option<u64> {
        let watched = self.watched.lock().expect("notifier lock");
        watched.get(&feed.key()).filter(|tx| !tx.is_closed()).map(|tx| *tx.borrow())
    }

    /// Whether any feed is watched now (and forgets the feeds nobody watches
    /// any more).
    pub fn is_watched(&self) -> bool {
        let mut watched = self.watched.lock().expect("notifier lock");
        watched.retain(|_, tx| !tx.is_closed());
        !watched.is_empty()
    }

    /// A receiver that changes whenever `feed` is notified. A watcher reads
    /// the feed after subscribing, so an append between its last read and
    /// the subscription is not missed.
    pub fn subscribe(&self, feed: &FeedId) -> watch::Receiver<u64> {
        let mut watched = self.watched.lock().expect("notifier lock");
        if let Some(tx) = watched.get(&feed.key())
            && !tx.is_closed()
        {
            return tx.subscribe();
        }
        // Forget the feeds nobody watches any more (an entry is otherwise
        // dropped only when its feed is notified), at most once per doubling.
        if watched.len() >= self.prune_at.load(Ordering::Relaxed) {
            watched.retain(|_, tx| !tx.is_closed());
            self.prune_at.store((watched.len() * 2).max(MIN_PRUNE_AT), Ordering::Relaxed);
        }
        let (tx, rx) = watch::channel(self.notified.load(Ordering::SeqCst));
        watched.insert(feed.key(), tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_of_a_feed_are_woken_by_its_appends_and_by_a_missed_round() {
        let n = Notifier::default();
        let a = FeedId::Subject("/party/1".into());
        let b = FeedId::Subject("/party/2".into());
        let mut rx_a = n.subscribe(&a);
        let rx_b = n.subscribe(&b);
        n.notify(&a);
        assert!(rx_a.has_changed().unwrap());
        assert!(!rx_b.has_changed().unwrap(), "another feed's append wakes nobody here");
        rx_a.borrow_and_update();
        n.notify_all();
        assert!(rx_a.has_changed().unwrap() && rx_b.has_changed().unwrap());
        let before = n.version(&a).unwrap();
        drop((rx_a, rx_b));
        assert_eq!(n.version(&a), None, "nobody watches it any more");
        let again = n.subscribe(&a);
        assert!(n.version(&a).unwrap() >= before, "the count only grows");
        assert!(n.is_watched());
        drop(again);
        assert!(!n.is_watched(), "a feed nobody watches is forgotten");
        // Many feeds watched once and left: the map does not keep them all.
        for i in 0..10_000 {
            drop(n.subscribe(&FeedId::Subject(format!("/party/{i}"))));
        }
        assert!(n.watched.lock().unwrap().len() <= 2 * MIN_PRUNE_AT);
    }
}
