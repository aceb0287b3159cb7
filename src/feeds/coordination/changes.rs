//! The container's change feed, followed once by each instance from the
//! moment it starts: what other instances appended (to wake long-polls and
//! push deliverers here), and which subscriptions and delivery states
//! changed. One reader per instance, polled every `poll` (one request per
//! physical partition range per poll), whatever the number of feeds,
//! waiters or subscriptions.

use std::time::Duration;

/// Failed reads in a row after which the change feed is read from now on.
const RESTART_AFTER_FAILURES: u32 = 5;

use azure_data_cosmos::options::ChangeFeedStartFrom;
use serde_json::Value;
use tokio::sync::watch;

use crate::domain::FeedId;
use crate::feeds::cosmos::ChangeRound;
use crate::feeds::{FeedStore, StoreError};

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

/// Follows the change feed until `stop`, handing every change to `sink`
/// (appends also wake this store's watchers). A failed read is retried from
/// the same place; nothing read is handed over twice.
///
/// With `always` false (no deliverers here) it reads only while something
/// in this instance watches a feed (a long-poll), so that an instance nobody
/// waits on makes no request for it.
///
/// Whenever it starts from "now" (at start, after it was idle, or after
/// giving up a continuation), appends made before that point and after a
/// watcher's last read would never be reported: so once the first read from
/// the new point has succeeded, every watcher is woken to read again, and
/// `sink` is told `Missed`.
pub async fn follow(
    store: FeedStore,
    poll: Duration,
    sink: impl Fn(Change) + Send + Sync,
    always: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut continuation: Option<String> = None;
    let mut failures = 0;
    loop {
        if !always && !store.is_watched() {
            // Idle: no position to keep; the next start is from "now".
            continuation = None;
            failures = 0;
        } else {
            let fresh = continuation.is_none();
            match read_round(&store, continuation.clone(), &sink).await {
                Ok(next) => {
                    continuation = Some(next);
                    failures = 0;
                    if fresh {
                        store.notify_all_watchers();
                        sink(Change::Missed);
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), failures, "reading the change feed failed");
                    // A continuation that keeps failing (the container
                    // changed under it) is given up: start again from now
                    // (which wakes everyone once it works).
                    if failures >= RESTART_AFTER_FAILURES && continuation.is_some() {
                        continuation = None;
                        failures = 0;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Reads what is new since `continuation`; the continuation after it.
async fn read_round(
    store: &FeedStore,
    continuation: Option<String>,
    sink: &(impl Fn(Change) + Send + Sync),
) -> Result<String, StoreError> {
    let container = &store.cosmos().container;
    let mut round =
        ChangeRound::open(container, ChangeFeedStartFrom::Now, continuation, 500, Some("change_feed")).await?;
    while let Some(docs) = round.next().await? {
        for doc in &docs {
            if let Some(change) = change_of(doc) {
                if let Change::Appended(feed) = &change {
                    store.notify_appended(feed);
                }
                sink(change);
            }
        }
    }
    round.continuation()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
