//! The containers' change feeds, followed once by each instance from the
//! moment it starts: what other instances appended (to wake long-polls and
//! push deliverers here), and which subscriptions and delivery states
//! changed. One reader per instance (one request per physical partition
//! range per round), whatever the number of feeds, waiters or
//! subscriptions: every `Polling::busy` while rounds find changes, and
//! backing off (doubling the wait) to `Polling::idle` while they find none,
//! so that a quiet deployment does not pay pods x partitions x 4 requests a
//! second. The price: the first change after a quiet spell is seen here up
//! to `idle` after it was made (changes made through this instance wake its
//! watchers at once, without the change feed).

use std::time::Duration;

/// Failed reads in a row after which the change feed is read from now on.
const RESTART_AFTER_FAILURES: u32 = 5;

use azure_data_cosmos::options::ChangeFeedStartFrom;
use serde_json::Value;
use tokio::sync::watch;

use crate::domain::FeedId;
use crate::feeds::cosmos::ChangeRound;
use crate::feeds::{FeedStore, StoreError};

/// How often the change feed is read: every `busy` after a round that
/// found changes; after each round that found none the wait doubles, up to
/// `idle` (at least `busy`).
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub busy: Duration,
    pub idle: Duration,
}

impl Polling {
    /// The wait before the next round, after one that `found` changes (or
    /// not) and a wait of `last`.
    fn next(&self, last: Duration, found: bool) -> Duration {
        if found { self.busy } else { (last * 2).clamp(self.busy, self.idle.max(self.busy)) }
    }
}

/// One change another instance (or this one) made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An event was appended to this feed.
    Appended(FeedId),
    /// A subscription was created, changed or deleted (its id, the ETag).
    Subscription(u64, String),
    /// A subscription's delivery state was written (its id, the ETag).
    Delivery(u64, String),
    /// The change feed could not be followed and starts again from now:
    /// changes in between may be missed (watchers should look again).
    Missed,
    /// A delivery bucket's lease was taken, renewed or released by this
    /// instance (an empty owner: released).
    Lease { owner: String },
}

/// What a changed document says, if anything delivery or waiters care about.
fn change_of(doc: &Value) -> Option<Change> {
    let pk = doc.get("pk")?.as_str()?;
    let etag = || doc.get("_etag").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(rest) = pk.strip_prefix("delivery|") {
        return Some(Change::Delivery(rest.parse().ok()?, etag()));
    }
    if pk == "subscriptions" {
        return Some(Change::Subscription(doc.get("seq")?.as_u64()?, etag()));
    }
    if pk == "delivery-buckets" {
        let expired = doc.get("expiresMs").and_then(Value::as_u64) == Some(0);
        let owner = if expired { "" } else { doc.get("owner").and_then(Value::as_str).unwrap_or_default() };
        return Some(Change::Lease { owner: owner.to_owned() });
    }
    if doc.get("seq").is_none() || doc.get("sealed").is_some() {
        return None;
    }
    let (feed, _segment) = pk.rsplit_once('|')?;
    if let Some(resource) = feed.strip_prefix("r:") {
        Some(Change::Appended(FeedId::Resource(resource.to_owned())))
    } else {
        feed.strip_prefix("s:").map(|subject| Change::Appended(FeedId::Subject(subject.to_owned())))
    }
}

/// What one read of a change feed found.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Activity (anything but leases).
    found: bool,
    /// It started from now.
    fresh: bool,
}

/// One container's change feed as followed: where the next read starts.
struct Followed {
    container: azure_data_cosmos::ContainerClient,
    /// What its reads are counted as.
    operation: &'static str,
    continuation: Option<String>,
    failures: u32,
}

impl Followed {
    fn new(container: &azure_data_cosmos::ContainerClient, operation: &'static str) -> Self {
        Self { container: container.clone(), operation, continuation: None, failures: 0 }
    }

    /// Forgets the position: the next read starts from now.
    fn reset(&mut self) {
        self.continuation = None;
        self.failures = 0;
    }

    /// Reads what is new: whether it found activity, and whether it read
    /// from now (the first read, or after giving up a continuation: what
    /// changed before may have been missed); `None` when the read failed.
    async fn read(&mut self, store: &FeedStore, sink: &(impl Fn(Change) + Send + Sync)) -> Option<Round> {
        let fresh = self.continuation.is_none();
        match read_round(store, &self.container, self.operation, self.continuation.clone(), sink).await {
            Ok((next, found)) => {
                self.continuation = Some(next);
                self.failures = 0;
                Some(Round { found, fresh })
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), failures = self.failures, "reading the change feed failed");
                // A continuation that keeps failing (the container changed
                // under it) is given up: start again from now (which wakes
                // everyone once it works).
                if self.failures >= RESTART_AFTER_FAILURES && self.continuation.is_some() {
                    self.reset();
                }
                None
            }
        }
    }
}

/// Follows the change feeds until `stop`, handing every change to `sink`
/// (appends also wake this store's watchers): the events container's, for
/// appends, and with `subscriptions` the subscriptions container's as well,
/// for subscriptions, delivery states and leases (an instance that pushes:
/// its deliverers and validator). A failed read is retried from the same
/// place; nothing read is handed over twice.
///
/// With `always` false (no deliverers here) it reads the events container
/// only while something in this instance watches a feed (a long-poll), so
/// that an instance nobody waits on makes no request for it.
///
/// Whenever a feed is read from "now" (at start, after it was idle, or
/// after giving up a continuation), changes made before that point and
/// after a watcher's last read would never be reported: so once the first
/// read from the new point has succeeded, every watcher is woken to read
/// again, and `sink` is told `Missed`.
pub async fn follow(
    store: FeedStore,
    polling: Polling,
    sink: impl Fn(Change) + Send + Sync,
    always: bool,
    subscriptions: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = Followed::new(&store.cosmos().container, "change_feed");
    let mut subscriptions =
        subscriptions.then(|| Followed::new(&store.cosmos().subscriptions, "change_feed_subscriptions"));
    let mut wait = polling.busy;
    loop {
        let events_idle = !always && !store.is_watched();
        if events_idle {
            // No position to keep; the next start is from "now".
            events.reset();
        }
        if events_idle && subscriptions.is_none() {
            wait = polling.busy;
        } else {
            let mut rounds = Vec::with_capacity(2);
            if !events_idle {
                rounds.push(events.read(&store, &sink).await);
            }
            if let Some(subscriptions) = &mut subscriptions {
                rounds.push(subscriptions.read(&store, &sink).await);
            }
            // Once, whichever feed started from now: every watcher reads
            // again, and the sink hears that changes may have been missed.
            if rounds.iter().flatten().any(|r| r.fresh) {
                store.notify_all_watchers();
                sink(Change::Missed);
            }
            wait = if rounds.iter().all(Option::is_some) {
                polling.next(wait, rounds.iter().flatten().any(|r| r.found))
            } else {
                polling.busy
            };
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Reads what is new in `container` since `continuation`; the continuation
/// after it, and whether it found activity (anything but leases).
async fn read_round(
    store: &FeedStore,
    container: &azure_data_cosmos::ContainerClient,
    operation: &'static str,
    continuation: Option<String>,
    sink: &(impl Fn(Change) + Send + Sync),
) -> Result<(String, bool), StoreError> {
    let mut round = ChangeRound::open(container, ChangeFeedStartFrom::Now, continuation, 500, Some(operation)).await?;
    let mut found = false;
    while let Some(docs) = round.next().await? {
        for doc in &docs {
            if let Some(change) = change_of(doc) {
                // Activity: appends, subscriptions and delivery states (not
                // the lease renewals every deployment makes all the time).
                found |= !matches!(change, Change::Lease { .. });
                if let Change::Appended(feed) = &change {
                    store.notify_appended(feed);
                }
                sink(change);
            }
        }
    }
    Ok((round.continuation()?, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_wait_doubles_while_nothing_changes_and_is_short_again_on_a_change() {
        let ms = Duration::from_millis;
        let polling = Polling { busy: ms(250), idle: ms(2000) };
        let waits: Vec<_> = std::iter::successors(Some(ms(250)), |w| Some(polling.next(*w, false))).take(6).collect();
        assert_eq!(waits, [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]);
        assert_eq!(polling.next(ms(2000), true), ms(250));
        // An idle wait shorter than the busy one is the busy one.
        let polling = Polling { busy: ms(60_000), idle: ms(2000) };
        assert_eq!(polling.next(ms(60_000), false), ms(60_000));
    }

    #[test]
    fn documents_say_what_changed() {
        let event = json!({"pk": "s:/party/1337|3", "seq": 12, "id": "e"});
        assert_eq!(change_of(&event), Some(Change::Appended(FeedId::Subject("/party/1337".into()))));
        let event = json!({"pk": "r:urn:altinn:resource:x|0", "seq": 0});
        assert_eq!(change_of(&event), Some(Change::Appended(FeedId::Resource("urn:altinn:resource:x".into()))));
        assert_eq!(change_of(&json!({"pk": "r:urn:x|0", "id": "head"})), None, "a segment head");
        assert_eq!(change_of(&json!({"pk": "r:urn:x|0", "seq": 4, "sealed": true})), None, "a seal");
        assert_eq!(
            change_of(&json!({"pk": "subscriptions", "seq": 7, "_etag": "\"e0\""})),
            Some(Change::Subscription(7, "\"e0\"".into()))
        );
        assert_eq!(
            change_of(&json!({"pk": "delivery|7", "_etag": "\"e1\""})),
            Some(Change::Delivery(7, "\"e1\"".into()))
        );
        assert_eq!(change_of(&json!({"pk": "lease|repairer"})), None);
        let lease = json!({"pk": "delivery-buckets", "seq": 3, "owner": "a", "expiresMs": 99});
        assert_eq!(change_of(&lease), Some(Change::Lease { owner: "a".into() }));
        let released = json!({"pk": "delivery-buckets", "seq": 3, "owner": "a", "expiresMs": 0});
        assert_eq!(change_of(&released), Some(Change::Lease { owner: String::new() }));
    }
}
