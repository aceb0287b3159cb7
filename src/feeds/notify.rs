//! Wake-ups for long-polling readers. Within a process, the writer bumps a
//! feed's version the moment a write commits. Across processes, one poller
//! task per watched feed reads the length of the feed's newest segment every
//! interval and bumps the version when it moved: one query per feed per
//! interval (plus one read when that segment is full or empty), shared by
//! every waiter of that feed. Feeds nobody waits on cost nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::FeedStore;
use super::docs::FeedId;

#[derive(Default)]
pub struct Notifier {
    /// Watched feeds with a head poller each (long-polls).
    feeds: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Watched feeds without one (push deliverers, woken by the change
    /// feed). Their value is the count of all notifications of every feed
    /// when this one was last notified (or began to be watched): it only
    /// grows, even when a feed's watchers go and come back.
    quiet: Mutex<HashMap<String, watch::Sender<u64>>>,
    notified: AtomicU64,
}

impl Notifier {
    /// Called by the writer after a commit to `feed`, and for appends the
    /// change feed reports.
    pub fn notify(&self, feed: &FeedId) {
        let key = feed.key();
        // The count first: whoever is woken below reads with it (see
        // `version`).
        {
            let mut quiet = self.quiet.lock().expect("notifier lock");
            let count = self.notified.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(tx) = quiet.get(&key) {
                if tx.is_closed() {
                    quiet.remove(&key);
                } else {
                    tx.send_replace(count);
                }
            }
        }
        if let Some(tx) = self.feeds.lock().expect("notifier lock").get(&key) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Where `feed` stands in the count of notifications (see `quiet`);
    /// `None` when it has no quiet watcher. A read that begins after this
    /// value was taken sees every append notified up to it.
    pub fn version(&self, feed: &FeedId) -> Option<u64> {
        let quiet = self.quiet.lock().expect("notifier lock");
        quiet.get(&feed.key()).filter(|tx| !tx.is_closed()).map(|tx| *tx.borrow())
    }

    /// A receiver that changes whenever `feed` is notified, without a head
    /// poller (for watchers that the change feed keeps informed).
    pub fn subscribe_quiet(&self, feed: &FeedId) -> watch::Receiver<u64> {
        let mut quiet = self.quiet.lock().expect("notifier lock");
        if let Some(tx) = quiet.get(&feed.key())
            && !tx.is_closed()
        {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(self.notified.load(Ordering::SeqCst));
        quiet.insert(feed.key(), tx);
        rx
    }

    /// A receiver that changes whenever `feed` may have new events. The
    /// first subscriber of a feed starts its head poller, which stops when
    /// the last one is gone.
    pub fn subscribe(
        self: &Arc<Self>,
        store: &FeedStore,
        feed: &FeedId,
        interval: Duration,
        known_len: u64,
    ) -> watch::Receiver<u64> {
        let mut feeds = self.feeds.lock().expect("notifier lock");
        if let Some(tx) = feeds.get(&feed.key())
            && !tx.is_closed()
        {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(0);
        feeds.insert(feed.key(), tx.clone());
        tokio::spawn(poll_head(self.clone(), store.clone(), feed.clone(), tx, interval, known_len));
        rx
    }
}

async fn poll_head(
    notifier: Arc<Notifier>,
    store: FeedStore,
    feed: FeedId,
    tx: watch::Sender<u64>,
    interval: Duration,
    known_len: u64,
) {
    // The first subscriber's view of the feed: an append made elsewhere
    // before the first poll still counts as a change.
    let mut last: Option<u64> = Some(known_len);
    let mut segment_hint = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tx.closed() => break,
        }
        match store.head_position(&feed, segment_hint).await {
            Ok((position, segment)) => {
                segment_hint = Some(segment);
                if last.is_some_and(|l| l != position) {
                    notifier.notify(&feed);
                }
                last = Some(position);
            }
            Err(e) => tracing::debug!(feed = %feed.log_label(), error = %e, "head poll failed"),
        }
    }
    let mut feeds = notifier.feeds.lock().expect("notifier lock");
    if feeds.get(&feed.key()).is_some_and(watch::Sender::is_closed) {
        feeds.remove(&feed.key());
    }
}
