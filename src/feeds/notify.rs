//! Wake-ups for long-polling readers. Within a process, the writer bumps a
//! feed's version the moment a write commits. Across processes, one poller
//! task per watched feed reads the length of the feed's newest segment every
//! interval and bumps the version when it moved: one query per feed per
//! interval (plus one read when that segment is full or empty), shared by
//! every waiter of that feed. Feeds nobody waits on cost nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::FeedStore;
use super::docs::FeedId;

#[derive(Default)]
pub struct Notifier {
    feeds: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Notifier {
    /// Called by the writer after a commit to `feed`.
    pub fn notify(&self, feed: &FeedId) {
        let feeds = self.feeds.lock().expect("notifier lock");
        if let Some(tx) = feeds.get(&feed.key()) {
            tx.send_modify(|v| *v += 1);
        }
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
                    tx.send_modify(|v| *v += 1);
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
