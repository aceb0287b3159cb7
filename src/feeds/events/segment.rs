//! Segments: how many events one holds, finding a feed's newest one, opening
//! the next one. Shared by the writer and the reader through one
//! [`Segments`] handle (the container, the layout, the store's clock and
//! counters).
//!
//! A segment exists once its head (a marker that never changes) exists.
//! Its length is read from its events: they are gapless (a writer creates
//! `seq` n + 1 only once n is stored), so the highest `seq` in the segment
//! says how many there are. A sealed segment (see `EventDoc::seal`) is
//! complete: it counts as full.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use azure_data_cosmos::options::ItemWriteOptions;
use azure_data_cosmos::{ContainerClient, FeedScope, Query};
use futures::StreamExt;
use tokio::sync::watch;

use super::docs::{FeedId, HEAD_ID, HeadDoc, SegmentKey};
use crate::feeds::{StoreError, charge, observe};

/// A segment as last read: the number of positions it has used (`size`
/// once sealed), and when it opened when that was read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub segment: u64,
    pub count: u64,
    /// Positions that hold a document (its events, and its seal): `count`,
    /// except in a sealed segment, whose positions after its seal are
    /// never used, and in an empty one that counts as full.
    pub taken: u64,
    /// Unix seconds.
    pub opened: Option<i64>,
}

/// How segments are laid out: their size, and after how many seconds a
/// writer seals a segment (`None`: never; the events do not expire).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub size: u64,
    pub close_after: Option<i64>,
    /// When a feed's writer cuts its segments short: see [`HotCut`].
    pub hot: Option<HotCut>,
}

/// A hot feed's segments are cut short: a writer that took at least
/// `events_per_second` publishes of its feed in the last second seals the
/// feed's segment once it holds `segment_events` events, and goes on in the
/// next one, another logical partition. Its writes then move from partition
/// to partition instead of meeting one physical partition's share of the
/// container's RU/s (`docs/capacity.md`, "One feed's ceiling"). Readers
/// need not know: a seal already tells them a segment is complete.
#[derive(Debug, Clone, Copy)]
pub struct HotCut {
    pub events_per_second: u64,
    pub segment_events: u64,
}

impl Head {
    /// The position after the segment's used numbers.
    pub fn end(&self, size: u64) -> u64 {
        self.segment * size + self.count
    }

    /// The position after the segment's last document: [`Self::end`],
    /// except for a sealed segment, whose numbers after its seal are never
    /// used (a reader skips them without scanning them).
    pub fn docs_end(&self, size: u64) -> u64 {
        if self.count == size && self.taken > 0 { self.segment * size + self.taken } else { self.end(size) }
    }

    pub fn with_opened(self, opened: i64) -> Self {
        Self { opened: Some(opened), ..self }
    }
}

/// The store's idea of the current time, in Unix seconds: the system clock,
/// moved by an offset that tests set to make time pass without sleeping.
/// Segment ages compare it with the server's `_ts`; the repairer's lease
/// and delivery (retries, bucket leases, attempts) read it too, so one
/// clock drives every worker of a store.
///
/// A worker that sleeps until a time of this clock (a retry due, a
/// validation attempt due) also wakes when the clock is moved
/// ([`Clock::moves`]), so that moving it makes that time come. Nothing
/// moves it in production: there the signal never fires.
#[derive(Debug, Clone)]
pub struct Clock {
    offset: Arc<AtomicI64>,
    /// How often the clock was moved: a signal for the workers that wait.
    moved: Arc<watch::Sender<u64>>,
}

impl Default for Clock {
    fn default() -> Self {
        Self { offset: Arc::default(), moved: Arc::new(watch::channel(0).0) }
    }
}

impl Clock {
    pub fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp() + self.offset.load(Ordering::Relaxed)
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        u64::try_from(now + i128::from(self.offset.load(Ordering::Relaxed)) * 1000).unwrap_or(0)
    }

    /// The time, as a date (an attempt's time, an event's age).
    pub fn now_utc(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::seconds(self.offset.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every store sharing it) forward, and wakes the
    /// workers waiting for a time of it.
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::Relaxed);
        self.moved.send_modify(|n| *n += 1);
    }

    /// Tells of every later move of this clock: `changed()` returns when the
    /// clock was moved since the receiver was made or last saw a move. A
    /// worker takes it before it reads the time it computes a wait from,
    /// and ends the wait when it fires.
    pub fn moves(&self) -> watch::Receiver<u64> {
        self.moved.subscribe()
    }
}

/// What one store did, counted per store (not process-wide), so that a test
/// or a benchmark reads its own store's numbers.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) seq_conflicts: AtomicU64,
    pub(crate) maybe_stored_lookups: AtomicU64,
    pub(crate) maybe_stored_found: AtomicU64,
    pub(crate) segments_sealed: AtomicU64,
    pub(crate) segments_cut: AtomicU64,
    pub(crate) request_charge_milli: AtomicU64,
    pub(crate) requests: AtomicU64,
}

/// A snapshot of a store's [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FeedStats {
    /// Creates that found their sequence number taken by another writer.
    pub seq_conflicts: u64,
    /// Reads, in a segment other than the one being written, for an event
    /// whose earlier write may have committed (its answer was lost).
    pub maybe_stored_lookups: u64,
    /// Of those, how many found the event stored.
    pub maybe_stored_found: u64,
    pub segments_sealed: u64,
    /// Of those, the ones a hot feed's writer cut short.
    pub segments_cut: u64,
    /// Request units charged to this store's Cosmos requests.
    pub request_charge: f64,
    /// Cosmos requests this store made (answered or not).
    pub requests: u64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> FeedStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FeedStats {
            seq_conflicts: get(&self.seq_conflicts),
            maybe_stored_lookups: get(&self.maybe_stored_lookups),
            maybe_stored_found: get(&self.maybe_stored_found),
            segments_sealed: get(&self.segments_sealed),
            segments_cut: get(&self.segments_cut),
            request_charge: get(&self.request_charge_milli) as f64 / 1000.0,
            requests: get(&self.requests),
        }
    }
}

/// The container and everything needed to work with a feed's segments.
#[derive(Clone)]
pub struct Segments {
    pub(crate) container: ContainerClient,
    pub(crate) layout: Layout,
    pub(crate) clock: Clock,
    pub(crate) counters: Arc<Counters>,
}

#[derive(serde::Deserialize)]
struct Last {
    seq: u64,
    #[serde(default)]
    sealed: bool,
}

impl Segments {
    pub fn size(&self) -> u64 {
        self.layout.size
    }

    /// Records one Cosmos round trip of this store: the process-wide
    /// metrics, and the store's own counters.
    pub(crate) fn observe(&self, kind: &'static str, started: Instant, charge: Option<f64>) {
        observe(kind, started, charge);
        Counters::bump(&self.counters.requests);
        if let Some(ru) = charge {
            self.counters.request_charge_milli.fetch_add((ru * 1000.0).round() as u64, Ordering::Relaxed);
        }
    }

    /// Whether writers must no longer store events in a segment opened at
    /// `opened`.
    pub fn closed_for_writers(&self, opened: i64) -> bool {
        self.layout.close_after.is_some_and(|w| self.clock.now() - opened > w)
    }

    /// Whether an empty segment opened at `opened` is complete for readers:
    /// later than writers stop using it, by a margin for clocks.
    fn closed_for_readers(&self, opened: i64) -> bool {
        self.layout.close_after.is_some_and(|w| self.clock.now() - opened > w + w.min(3600))
    }

    /// Reads the marker of segment `k`; `None` when the segment does not exist.
    async fn read_marker(&self, feed: &FeedId, k: u64) -> Result<Option<HeadDoc>, StoreError> {
        let started = Instant::now();
        match self.container.read_item(feed.pk(k), HEAD_ID, None).await {
            Ok(resp) => {
                self.observe("read_head", started, charge(resp.headers()));
                Ok(Some(resp.into_model().map_err(StoreError::cosmos("decode head"))?))
            }
            Err(e) if e.status().is_not_found() => {
                self.observe("read_head", started, None);
                Ok(None)
            }
            Err(e) => {
                self.observe("read_head", started, None);
                Err(StoreError::cosmos("read head")(e))
            }
        }
    }

    /// The first value a partition-scoped query returns, if any: one round
    /// trip (recorded as `operation`).
    pub(crate) async fn first_value<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        pk: String,
        q: Query,
        operation: &'static str,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.values(pk, q, operation, Some(1)).await?.into_iter().next())
    }

    /// Every value a query of one partition answers.
    pub(crate) async fn all_values<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        pk: String,
        q: Query,
        operation: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.values(pk, q, operation, None).await
    }

    /// The values a query of one partition answers, page by page, until
    /// `enough` are in hand (all of them when `None`); every page is
    /// recorded as `operation`.
    async fn values<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        pk: String,
        q: Query,
        operation: &'static str,
        enough: Option<usize>,
    ) -> Result<Vec<T>, StoreError> {
        let started = Instant::now();
        let mut pages = self
            .container
            .query_items::<T>(q, FeedScope::partition(pk), None)
            .await
            .map_err(StoreError::cosmos("query feed"))?
            .into_pages();
        let mut values = Vec::new();
        while let Some(p) = pages.next().await {
            let p = match p {
                Ok(p) => p,
                Err(e) => {
                    self.observe(operation, started, None);
                    return Err(StoreError::cosmos("query feed")(e));
                }
            };
            self.observe(operation, started, charge(p.headers()));
            values.extend(p.into_items());
            if let Some(n) = enough.filter(|&n| values.len() >= n) {
                values.truncate(n);
                break;
            }
        }
        Ok(values)
    }

    /// The highest `seq` stored in segment `k`, and whether it is the seal:
    /// one query.
    async fn last_seq(&self, feed: &FeedId, k: u64) -> Result<Option<Last>, StoreError> {
        let q = Query::from("SELECT TOP 1 c.seq, c.sealed FROM c WHERE c.seq >= @first ORDER BY c.seq DESC")
            .with_parameter("@first", k * self.layout.size)
            .map_err(StoreError::cosmos("bind"))?;
        self.first_value(feed.pk(k), q, "segment_length").await
    }

    /// The length of segment `k` as stored now; `None` when the segment does
    /// not exist. One query when it holds events; a sealed segment counts as
    /// full. An empty segment (never written, or its events expired) counts
    /// as full once writers no longer use it, so that readers move past it.
    pub async fn read_head(&self, feed: &FeedId, k: u64) -> Result<Option<Head>, StoreError> {
        let s = self.layout.size;
        if let Some(last) = self.last_seq(feed, k).await? {
            let taken = (last.seq + 1 - k * s).min(s);
            let count = if last.sealed { s } else { taken };
            return Ok(Some(Head { segment: k, count, taken, opened: None }));
        }
        let Some(marker) = self.read_marker(feed, k).await? else { return Ok(None) };
        let count = if self.closed_for_readers(marker.opened) { s } else { 0 };
        Ok(Some(Head { segment: k, count, taken: 0, opened: Some(marker.opened) }))
    }

    /// When segment `k` opened (its head's `_ts`); `None` when it does not exist.
    pub async fn opened(&self, feed: &FeedId, k: u64) -> Result<Option<i64>, StoreError> {
        Ok(self.read_marker(feed, k).await?.map(|m| m.opened))
    }

    /// Opens segment `k` (creates its head); when it is open already, reads it.
    pub async fn open(&self, feed: &FeedId, k: u64) -> Result<Head, StoreError> {
        let started = Instant::now();
        let doc = HeadDoc::new(feed.pk(k));
        match self.container.create_item(feed.pk(k), HEAD_ID, &doc, None::<ItemWriteOptions>).await {
            Ok(resp) => {
                self.observe("create_head", started, charge(resp.headers()));
                Ok(Head { segment: k, count: 0, taken: 0, opened: Some(self.clock.now()) })
            }
            Err(e) if e.status().is_conflict() => {
                self.observe("create_head", started, None);
                self.read_head(feed, k).await?.ok_or(StoreError::HeadVanished)
            }
            Err(e) => {
                self.observe("create_head", started, None);
                Err(StoreError::cosmos("create head")(e))
            }
        }
    }

    /// The newest existing segment of a feed, or `None` for a feed with no
    /// segment yet. Exponential probing of heads, then binary search: O(log k)
    /// point reads for a feed with k segments, then one query for its length.
    pub async fn newest(&self, feed: &FeedId) -> Result<Option<Head>, StoreError> {
        let Some(first) = self.read_marker(feed, 0).await? else { return Ok(None) };
        let (mut lo, mut lo_opened) = (0, first.opened); // exists
        let mut step = 1;
        let hi = loop {
            let probe = lo + step;
            match self.read_marker(feed, probe).await? {
                Some(m) => {
                    (lo, lo_opened) = (probe, m.opened);
                    step *= 2;
                }
                None => break probe,
            }
        };
        // Segments are opened in order, so existence is a prefix: search (lo, hi).
        let mut hi = hi;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.read_marker(feed, mid).await? {
                Some(m) => (lo, lo_opened) = (mid, m.opened),
                None => hi = mid,
            }
        }
        Ok(self.read_head(feed, lo).await?.map(|h| Head { opened: Some(lo_opened), ..h }))
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[tokio::test]
    async fn a_move_of_the_clock_wakes_who_waits_for_it_and_nothing_else_does() {
        let clock = Clock::default();
        let mut moves = clock.moves();
        let before = clock.now_ms();
        assert!(!moves.has_changed().unwrap(), "not moved yet");
        clock.clone().advance(60);
        assert!(clock.now_ms() >= before + 60_000, "a clone moves the same clock");
        tokio::time::timeout(std::time::Duration::from_secs(5), moves.changed())
            .await
            .expect("the move wakes the waiter")
            .unwrap();
        assert!(!moves.has_changed().unwrap(), "one move, one wake");
    }
}
