//! The feed store on Cosmos DB (design: `docs/storage.md`).
//!
//! Every event is appended to two feeds, its resource feed and its subject
//! feed. A feed is a dense, gapless sequence cut into segments of at most
//! `segment_size` events; segment `k` of feed `F` is the logical partition
//! `"{F}|{k}"`, holding a head document (the segment's marker) and the event
//! documents, whose `seq` is unique in the partition.
//!
//! Storage layer: the only module that uses the Cosmos SDK; no Cosmos type
//! leaves it. It imports domain types and configuration only.

pub mod changes;
mod cosmos;
pub mod delivery;
pub mod docs;
#[cfg(feature = "dev")]
pub mod emulator;
#[cfg(feature = "dev")]
pub use emulator::EmulatorAccount;

/// A build without feature `dev` has no in-process emulator: there is no
/// account to pass, and `cosmos.auth = emulator` is refused.
#[cfg(not(feature = "dev"))]
#[derive(Debug, Clone)]
pub enum EmulatorAccount {}
pub mod import;
pub mod notify;
mod reader;
mod repairer;
mod segment;
mod shared_reads;
pub mod subscriptions;
mod writer;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

pub use cosmos::{Cosmos, CosmosError};
pub use docs::SegmentKey;
pub use reader::{ReadPage, StoredEvent};
pub use repairer::{RepairReport, Repairer};
pub use segment::{Clock, FeedStats};
pub use writer::IdSource;

use crate::config::CosmosConfig;
use crate::domain::{EventRecord, FeedId, Filters};

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("cosmos {operation}")]
    Cosmos {
        operation: &'static str,
        #[source]
        source: azure_data_cosmos::CosmosError,
    },
    #[error("a Cosmos response had no ETag")]
    MissingEtag,
    #[error("a segment head disappeared")]
    HeadVanished,
    #[error("the feed writer stopped")]
    WriterGone,
    #[error("retries exhausted")]
    Exhausted,
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("refused: {0}")]
    Rejected(String),
    #[error("event id {id} is already used by another source in this feed")]
    IdTaken { id: String },
    #[error("the feed's append queue is full")]
    Overloaded,
}

impl FeedError {
    pub(crate) fn cosmos(operation: &'static str) -> impl FnOnce(azure_data_cosmos::CosmosError) -> Self {
        move |source| {
            let status = source.status();
            let status = if status.is_transport_generated_503() {
                "transport".to_owned()
            } else {
                u16::from(status).to_string()
            };
            metrics::counter!("cosmos_request_errors_total", "operation" => operation, "status" => status).increment(1);
            Self::Cosmos { operation, source }
        }
    }

    /// Whether the caller's input caused it (4xx), as opposed to the store.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::IdTaken { .. } | Self::Rejected(_))
    }
}

/// The RU charge a response reports.
pub(crate) fn charge(headers: &azure_data_cosmos::models::ResponseHeaders) -> Option<f64> {
    headers.request_charge().map(|c| f64::from(*c))
}

/// Records one Cosmos round trip: latency and request charge per kind.
pub(crate) fn observe(kind: &'static str, started: Instant, charge: Option<f64>) {
    metrics::histogram!("cosmos_request_duration_seconds", "operation" => kind).record(started.elapsed().as_secs_f64());
    metrics::counter!("cosmos_requests_total", "operation" => kind).increment(1);
    if let Some(ru) = charge {
        metrics::histogram!("cosmos_request_charge_ru", "operation" => kind).record(ru);
    }
    crate::telemetry::cosmos_request(kind, started.elapsed(), charge);
}

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
}

impl FeedStore {
    /// Connects to the configured account and container (creating them when
    /// `cosmos.provision` is set). `emulator`: the shared in-process account
    /// to use when `cosmos.auth = emulator` (a fresh one when `None`).
    pub async fn connect(config: &CosmosConfig, emulator: Option<EmulatorAccount>) -> Result<Self, CosmosError> {
        Ok(Self::new(Cosmos::connect(config, emulator).await?))
    }

    /// Cheap reachability check: reads the container's properties.
    pub async fn ping(&self) -> Result<(), CosmosError> {
        self.cosmos.ping().await
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
        let layout = segment::Layout { size: cosmos.config.segment_size, close_after };
        let seg = segment::Segments { container: cosmos.container.clone(), layout, clock, counters: Arc::default() };
        let notifier = Arc::new(notify::Notifier::default());
        let deadline = std::time::Duration::from_millis(cosmos.config.append_retry_deadline_ms);
        let writer = writer::Writer::new(seg.clone(), deadline, notifier.clone(), cosmos.config.max_queued_appends);
        Self { cosmos, writer, seg, notifier, shared_reads: Arc::default() }
    }

    pub fn cosmos(&self) -> &Cosmos {
        &self.cosmos
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
    pub async fn append(&self, record: EventRecord, ids: IdSource) -> Result<Appended, FeedError> {
        let record = Arc::new(record);
        let resource = FeedId::Resource(record.resource.clone());
        let subject = FeedId::Subject(record.subject.clone());
        // Shed here, before anything is stored; once the first feed has the
        // event, the second waits for room.
        let (resource_seq, mut request_charge) =
            self.writer.append(&resource, record.clone(), ids, writer::WhenFull::Shed).await?;
        // An event without a subject has no subject feed.
        let subject_seq = if record.subject.is_empty() {
            None
        } else {
            let (seq, charge) = self.writer.append(&subject, record, ids, writer::WhenFull::Wait).await?;
            request_charge += charge;
            Some(seq)
        };
        Ok(Appended { resource_seq, subject_seq, request_charge })
    }

    /// Appends several events, in order, to both their feeds. Like any
    /// publish, those beyond a feed's `cosmos.max_queued_appends` are
    /// refused (`FeedError::Overloaded`).
    pub async fn append_all(&self, records: Vec<EventRecord>, ids: IdSource) -> Vec<Result<Appended, FeedError>> {
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
    ) -> Vec<futures::future::BoxFuture<'static, Result<(), FeedError>>> {
        let mut outcomes: Vec<futures::future::BoxFuture<'static, Result<(), FeedError>>> =
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
                queued.push(self.writer.enqueue(&feed, record.clone(), ids, writer::WhenFull::Wait).await);
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

    /// The Altinn numbers (`origin`) of the events in `from..=to` that
    /// `feed` holds, from its two newest segments (where a killed import's
    /// last appends are).
    pub async fn stored_origins(&self, feed: &FeedId, from: u64, to: u64) -> Result<HashSet<u64>, FeedError> {
        reader::stored_origins(&self.seg, feed, from, to).await
    }

    /// Appends to one feed only (the repairer, and tests that stop a
    /// publisher between its two appends).
    pub async fn append_to(&self, feed: &FeedId, record: EventRecord, ids: IdSource) -> Result<u64, FeedError> {
        self.writer.append(feed, Arc::new(record), ids, writer::WhenFull::Wait).await.map(|(seq, _)| seq)
    }

    /// Events of `feed` from position `from` (the number of events before
    /// them), filtered, at most `limit`, scanning at most `scan_budget`
    /// positions. `next` is the position after the last event scanned.
    /// `shared`: the page of the same read begun after every append the
    /// reader was told of may answer it (see `shared_reads.rs`); otherwise
    /// the read is its own, and sees every append that returned before it.
    pub async fn read(
        &self,
        feed: &FeedId,
        from: u64,
        filters: &Filters,
        limit: usize,
        scan_budget: u64,
        shared: bool,
    ) -> Result<ReadPage, FeedError> {
        if !shared {
            return reader::read(&self.seg, feed, from, filters, limit, scan_budget).await;
        }
        let key = (feed.key(), from, format!("{filters:?}"), limit, scan_budget);
        let version = self.notifier.version(feed);
        self.shared_reads.read(key, version, || reader::read(&self.seg, feed, from, filters, limit, scan_budget)).await
    }

    /// The position of the first event of `feed` registered at or after
    /// `time` (fixed-width UTC): where a `from` query without `after` starts.
    pub async fn position_at_time(&self, feed: &FeedId, time: &str) -> Result<u64, FeedError> {
        reader::position_at_time(&self.seg, feed, time).await
    }

    /// The position of `record` (its id and source) in `feed`, when one of
    /// the feed's newest segments holds it.
    pub async fn position_of(&self, feed: &FeedId, record: &EventRecord) -> Result<Option<u64>, FeedError> {
        reader::position_of(&self.seg, feed, record).await
    }

    /// The position just after the newest event with id `event_id` in
    /// `feed`; `None` when the feed does not hold one.
    pub async fn locate(&self, feed: &FeedId, event_id: &str) -> Result<Option<u64>, FeedError> {
        reader::locate(&self.seg, feed, event_id).await
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

    /// Where delivery of an imported subscription following `feed` starts
    /// at the cut-over `through` (Altinn Events pushed what it numbered up
    /// to it): the first event Altinn did not push.
    pub async fn first_not_pushed_by_altinn(&self, feed: &FeedId, through: u64) -> Result<u64, FeedError> {
        reader::first_not_pushed_by_altinn(&self.seg, feed, through).await
    }

    /// The number of events in `feed` (the position after its newest event).
    pub async fn len(&self, feed: &FeedId) -> Result<u64, FeedError> {
        let s = self.seg.size();
        Ok(self.seg.newest(feed).await?.map_or(0, |h| h.end(s)))
    }
}

#[cfg(feature = "dev")]
impl FeedStore {
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
    ) -> Result<f64, FeedError> {
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
            .map_err(FeedError::cosmos("baseline create"))?;
        Ok(charge(resp.headers()).unwrap_or(0.0))
    }
}
