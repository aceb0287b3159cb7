//! The event feeds: every event appended to two feeds, its resource feed
//! and its subject feed, each an ordered, gapless sequence (nothing is ever
//! missing between two positions) cut into segments of `segment_size`
//! numbers; segment `k` of feed `F` is the logical partition `"{F}|{k}"`,
//! holding a head document (the segment's marker) and the event documents,
//! whose `seq` is unique in the partition and dense within it. A seal
//! closes a segment early (an old one, or a hot feed's: `writer.rs`); the
//! numbers after it are never used.
//!
//! Here: [`FeedStore`] (append, read, locate), its writer (one queue and one
//! writing task per feed, `writer.rs`), the reads (`reader.rs`), the shared
//! pages of long-polls (`shared_reads.rs`), the wake-ups of watchers
//! (`notify.rs`), and the repairer, which finishes publishes that stopped
//! between their two appends (`repairer.rs`).

pub mod docs;
mod filter_sql;
mod generation;
pub mod notify;
mod reader;
mod repairer;
mod segment;
mod shared_reads;
mod writer;

use std::collections::HashSet;
use std::sync::Arc;

pub use docs::SegmentKey;
pub use reader::{ReadPage, StoredEvent};
pub use repairer::{RepairReport, Repairer};
pub use segment::{Clock, FeedStats};
pub use writer::IdSource;

use super::{Cosmos, EmulatorAccount, StoreError};
use crate::config::CosmosConfig;
use crate::domain::{EventRecord, FeedId};

/// For each feed, the Altinn numbers of the events it holds already.
pub type StoredOrigins = std::collections::HashMap<FeedId, HashSet<u64>>;

/// Positions of a published event in its two feeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Appended {
    pub resource_seq: u64,
    pub subject_seq: Option<u64>,
    /// This event's share of the RU charge of the batches that stored it
    /// (0 for an idempotent retry).
    pub request_charge: f64,
}

#[derive(Clone)]
pub struct FeedStore {
    cosmos: Cosmos,
    writer: Arc<writer::Writer>,
    seg: segment::Segments,
    notifier: Arc<notify::Notifier>,
    shared_reads: Arc<shared_reads::SharedReads>,
    generation: generation::Known,
    /// The ring that seals the webhook secrets stored with subscriptions
    /// (empty until the service sets it: nothing is sealed without a key).
    webhook_secrets: Arc<crate::secrets::Sealer>,
}

impl FeedStore {
    /// Connects to the configured account and container (creating them when
    /// `cosmos.provision` is set). `emulator`: the shared in-process account
    /// to use when `cosmos.auth = emulator` (a fresh one when `None`), and
    /// reads the store's generation.
    ///
    /// Refuses a store whose events container still holds subscriptions
    /// (from before the subscriptions container): serving it would show no
    /// subscription and push nothing. `altinn-events move-subscriptions`
    /// moves them ([`Self::connect_to_move`]).
    pub async fn connect(config: &CosmosConfig, emulator: Option<EmulatorAccount>) -> Result<Self, StoreError> {
        let store = Self::connect_to_move(config, emulator).await?;
        if store.cosmos.subscriptions_left_in_events().await? {
            return Err(StoreError::Config(format!(
                "the events container {} still holds subscriptions: move them to {} first (`altinn-events \
                 move-subscriptions`, docs/deploy.md \"Upgrading\")",
                config.container, config.subscriptions_container
            )));
        }
        Ok(store)
    }

    /// Connects whatever the events container holds (for the move).
    pub async fn connect_to_move(config: &CosmosConfig, emulator: Option<EmulatorAccount>) -> Result<Self, StoreError> {
        let store = Self::new(Cosmos::connect(config, emulator).await?);
        store.refresh_generation().await?;
        Ok(store)
    }

    /// Cheap reachability check (a point read, 1 RU), which also takes the
    /// store's generation as it is now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.refresh_generation().await.map(|_| ())
    }

    pub fn new(cosmos: Cosmos) -> Self {
        Self::with_clock(cosmos, Clock::default())
    }

    /// A store whose segment ages are measured by `clock` (tests move it
    /// forward instead of sleeping).
    pub fn with_clock(cosmos: Cosmos, clock: Clock) -> Self {
        // Segments are sealed after half the events' TTL (configurable),
        // long before their first events expire.
        let close_after = match cosmos.config.segment_close_seconds {
            Some(s) => Some(i64::try_from(s).unwrap_or(i64::MAX)),
            None => cosmos.ttl_seconds.map(|t| i64::from(t) / 2),
        };
        let hot = (cosmos.config.hot_feed_events_per_second > 0 && cosmos.config.hot_segment_events > 0).then_some(
            segment::HotCut {
                events_per_second: cosmos.config.hot_feed_events_per_second,
                segment_events: cosmos.config.hot_segment_events,
            },
        );
        let layout = segment::Layout { size: cosmos.config.segment_size, close_after, hot };
        let seg = segment::Segments { container: cosmos.container.clone(), layout, clock, counters: Arc::default() };
        let notifier = Arc::new(notify::Notifier::default());
        let deadlines = writer::Deadlines {
            append_ms: cosmos.config.publish_deadline_ms,
            attempt_ms: cosmos.config.operation_timeout_ms,
        };
        let writer = writer::Writer::new(seg.clone(), deadlines, notifier.clone(), cosmos.config.max_queued_appends);
        Self {
            cosmos,
            writer,
            seg,
            notifier,
            shared_reads: Arc::default(),
            generation: Default::default(),
            // Empty until the service sets the ring: nothing is sealed
            // without a key (`SubscriptionStore` refuses to store then).
            webhook_secrets: Arc::new(crate::secrets::Sealer::new(
                crate::secrets::WEBHOOK_SECRET_DOMAIN,
                &crate::secrets::KeyRing::default(),
            )),
        }
    }

    pub fn cosmos(&self) -> &Cosmos {
        &self.cosmos
    }

    /// The ring that seals the webhook secrets of the subscriptions in this
    /// store (shared by its clones; `replace` it with the configured ring).
    pub fn webhook_secrets(&self) -> &Arc<crate::secrets::Sealer> {
        &self.webhook_secrets
    }

    pub fn segment_size(&self) -> u64 {
        self.seg.size()
    }

    /// After how many seconds writers seal a segment (`None`: never).
    pub fn segment_close_seconds(&self) -> Option<i64> {
        self.seg.layout.close_after
    }

    /// The clock segment ages are measured by.
    pub fn clock(&self) -> &Clock {
        &self.seg.clock
    }

    /// What this store (and its clones) did so far.
    pub fn stats(&self) -> FeedStats {
        self.seg.counters.snapshot()
    }

    /// Appends an event to its resource feed, then its subject feed. Both
    /// appends are idempotent by event id; for publisher-chosen ids they
    /// also look one segment back.
    pub async fn append(&self, record: EventRecord, ids: IdSource) -> Result<Appended, StoreError> {
        let record = Arc::new(record);
        let resource = FeedId::Resource(record.resource.clone());
        let subject = FeedId::Subject(record.subject.clone());
        // One deadline for both appends (`cosmos.publish_deadline_ms`).
        let deadline = Some(self.seg.clock.now_ms() + self.cosmos.config.publish_deadline_ms);
        // Shed here, before anything is stored; once the first feed has the
        // event, the second waits for room.
        let first = self.writer.append(&resource, record.clone(), ids, writer::WhenFull::Shed, deadline).await?;
        let mut request_charge = first.charge;
        // An event without a subject has no subject feed.
        let subject_seq = if record.subject.is_empty() {
            None
        } else {
            // A publisher's retry of an event stored before: its subject
            // feed may have moved on by more than the writer looks back
            // (a hot feed's segments are cut short), so look for the copy
            // there first (the repairer completes a missing one anyway).
            // A failed look (a transient error) leaves it to the writer,
            // which looks in the segment written and the one before, and
            // retries until the publish's deadline.
            let copy = if first.repeat && ids == IdSource::Publisher {
                self.position_of(&subject, &record).await.unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "looking for a retried event's subject copy failed; appending through the writer");
                    None
                })
            } else {
                None
            };
            match copy {
                Some(seq) => Some(seq),
                None => {
                    let second = self.writer.append(&subject, record, ids, writer::WhenFull::Wait, deadline).await?;
                    request_charge += second.charge;
                    Some(second.seq)
                }
            }
        };
        Ok(Appended { resource_seq: first.seq, subject_seq, request_charge })
    }

    /// Appends several events, in order, to both their feeds. Like any
    /// publish, those beyond a feed's `cosmos.max_queued_appends` are
    /// refused (`StoreError::Overloaded`).
    pub async fn append_all(&self, records: Vec<EventRecord>, ids: IdSource) -> Vec<Result<Appended, StoreError>> {
        futures::future::join_all(records.into_iter().map(|r| self.append(r, ids))).await
    }

    /// Queues `records` to both their feeds, each feed getting them in the
    /// order given (the importer, which keeps Altinn's order), and returns
    /// once every append is queued: the futures give each event's outcome
    /// (more can be queued behind them meanwhile, in order). Every append is
    /// queued before any is awaited, since waiting for an event's first
    /// feed before queueing its second would let a later event of another
    /// first feed overtake it in a shared second feed. An append that
    /// `stored` says is done already (a run before was killed after it) is
    /// left out; `ids` says where a repeat can be otherwise. A full queue
    /// is waited for, not shed.
    pub async fn enqueue_in_order(
        &self,
        records: Vec<EventRecord>,
        ids: IdSource,
        stored: &StoredOrigins,
    ) -> Vec<futures::future::BoxFuture<'static, Result<(), StoreError>>> {
        let mut outcomes: Vec<futures::future::BoxFuture<'static, Result<(), StoreError>>> =
            Vec::with_capacity(records.len());
        for record in records {
            let record = Arc::new(record);
            let mut feeds = vec![FeedId::Resource(record.resource.clone())];
            if !record.subject.is_empty() {
                feeds.push(FeedId::Subject(record.subject.clone()));
            }
            let mut queued = Vec::with_capacity(2);
            for feed in feeds {
                if record.origin.is_some_and(|o| stored.get(&feed).is_some_and(|done| done.contains(&o))) {
                    continue;
                }
                queued.push(self.writer.enqueue(&feed, record.clone(), ids, writer::WhenFull::Wait, None).await);
            }
            outcomes.push(Box::pin(async move {
                for append in queued {
                    append?.await?;
                }
                Ok(())
            }));
        }
        outcomes
    }

    /// Appends to one feed only (the repairer, and tests that stop a
    /// publisher between its two appends).
    pub async fn append_to(&self, feed: &FeedId, record: EventRecord, ids: IdSource) -> Result<u64, StoreError> {
        self.writer.append(feed, Arc::new(record), ids, writer::WhenFull::Wait, None).await.map(|s| s.seq)
    }

    /// A receiver that changes when `feed` gets an event appended through
    /// this store, or one that the change feed reports from elsewhere (see
    /// [`changes::follow`], which every instance runs once).
    pub fn watch_appends(&self, feed: &FeedId) -> tokio::sync::watch::Receiver<u64> {
        self.notifier.subscribe(feed)
    }

    /// Wakes the watchers of `feed` (an append seen on the change feed).
    pub fn notify_appended(&self, feed: &FeedId) {
        self.notifier.notify(feed);
    }

    /// Whether anything in this instance watches a feed now.
    pub fn is_watched(&self) -> bool {
        self.notifier.is_watched()
    }

    /// Wakes every watcher (the change feed may have missed appends).
    pub fn notify_all_watchers(&self) {
        self.notifier.notify_all();
    }

    /// The position after the newest event of `feed`: its number of events
    /// when no segment of it was sealed early (the numbers after a seal are
    /// never used, so otherwise it is more).
    pub async fn len(&self, feed: &FeedId) -> Result<u64, StoreError> {
        let s = self.seg.size();
        Ok(self.seg.newest(feed).await?.map_or(0, |h| h.end(s)))
    }
}

#[cfg(feature = "dev")]
impl FeedStore {
    fn container_of(&self, at: crate::feeds::StoredIn) -> &azure_data_cosmos::ContainerClient {
        match at {
            crate::feeds::StoredIn::Events => &self.cosmos.container,
            crate::feeds::StoredIn::Subscriptions => &self.cosmos.subscriptions,
        }
    }

    /// Every document of logical partition `pk` of a container as it is
    /// stored (tests look at what is at rest: sealed secrets, nothing in
    /// plain text, what is where).
    pub async fn documents_at_rest(
        &self,
        at: crate::feeds::StoredIn,
        pk: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        crate::feeds::cosmos::partition_documents(self.container_of(at), pk, "documents at rest").await
    }

    /// Writes a document as it is (its `pk` and `id` in it) where an
    /// earlier version would have, or removes one (`doc` `None`): tests
    /// make the store of an older version this way.
    pub async fn put_at_rest(
        &self,
        at: crate::feeds::StoredIn,
        pk: &str,
        id: &str,
        doc: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let container = self.container_of(at);
        match doc {
            Some(doc) => {
                container.upsert_item(pk.to_owned(), id, doc, None).await.map_err(StoreError::cosmos("put at rest"))?;
            }
            None => {
                container.delete_item(pk.to_owned(), id, None).await.map_err(StoreError::cosmos("remove at rest"))?;
            }
        }
        Ok(())
    }

    /// Stores `cloud_event` (a CloudEvent as published) as one plain
    /// document with the raw SDK, the way a store without feeds would: the
    /// event's own fields plus `id`, `pk` (`baseline|{partition}`) and the
    /// `seq` that the container's unique key asks of every document. Returns
    /// the RU charge: the baseline that cost and throughput measurements
    /// compare appends to. None of the feed store's document building is
    /// used.
    pub async fn baseline_create(
        &self,
        cloud_event: &serde_json::Value,
        partition: &str,
        seq: u64,
    ) -> Result<f64, StoreError> {
        let pk = format!("baseline|{partition}");
        let mut doc = cloud_event.clone();
        let id = match doc.get("id").and_then(serde_json::Value::as_str) {
            Some(id) => id.replace(['/', '\\', '?', '#'], "_"),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if let Some(map) = doc.as_object_mut() {
            map.insert("id".into(), id.clone().into());
            map.insert("pk".into(), pk.clone().into());
            map.insert("seq".into(), seq.into());
        }
        let resp = self
            .cosmos
            .container
            .create_item(pk, &id, &doc, None)
            .await
            .map_err(StoreError::cosmos("baseline create"))?;
        Ok(super::charge(resp.headers()).unwrap_or(0.0))
    }
}
