//! Segments: how many events one holds, finding a feed's newest one, opening
//! the next one. Shared by the writer and the reader.
//!
//! A segment exists once its head (a marker that never changes) exists.
//! Its length is read from its events: they are gapless (a writer creates
//! `seq` n + 1 only once n is stored), so the highest `seq` in the segment
//! says how many there are. A sealed segment (see `EventDoc::seal`) is
//! complete: it counts as full.

use std::time::Instant;

use azure_data_cosmos::options::ItemWriteOptions;
use azure_data_cosmos::{ContainerClient, FeedScope, Query};
use futures::StreamExt;

use super::docs::{FeedId, HEAD_ID, HeadDoc};
use super::{FeedError, charge, observe};

/// A segment as last read: the number of positions it has used (`size`
/// once sealed), and when it opened when that was read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub segment: u64,
    pub count: u64,
    /// Unix seconds.
    pub opened: Option<i64>,
}

/// How segments are laid out: their size, and after how many seconds a
/// writer seals a segment (`None`: never; the events do not expire).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub size: u64,
    pub close_after: Option<i64>,
}

impl Head {
    /// The position after the segment's used numbers.
    pub fn end(&self, size: u64) -> u64 {
        self.segment * size + self.count
    }

    pub fn with_opened(self, opened: i64) -> Self {
        Self { opened: Some(opened), ..self }
    }
}

impl Layout {
    /// Whether writers must no longer store events in a segment opened at
    /// `opened`.
    pub fn closed_for_writers(&self, opened: i64) -> bool {
        self.close_after.is_some_and(|w| now() - opened > w)
    }

    /// Whether an empty segment opened at `opened` is complete for readers:
    /// later than writers stop using it, by a margin for clocks.
    fn closed_for_readers(&self, opened: i64) -> bool {
        self.close_after.is_some_and(|w| now() - opened > w + w.min(3600))
    }
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Reads the marker of segment `k`; `None` when the segment does not exist.
async fn read_marker(container: &ContainerClient, feed: &FeedId, k: u64) -> Result<Option<HeadDoc>, FeedError> {
    let started = Instant::now();
    match container.read_item(feed.pk(k), HEAD_ID, None).await {
        Ok(resp) => {
            observe("read_head", started, charge(resp.headers()));
            Ok(Some(resp.into_model().map_err(FeedError::cosmos("decode head"))?))
        }
        Err(e) if e.status().is_not_found() => {
            observe("read_head", started, None);
            Ok(None)
        }
        Err(e) => Err(FeedError::Cosmos { operation: "read head", source: e }),
    }
}

/// The first value a partition-scoped query returns, if any: one round trip
/// (recorded as `operation`).
pub(crate) async fn first_value<T: serde::de::DeserializeOwned + Send + 'static>(
    container: &ContainerClient,
    pk: String,
    q: Query,
    operation: &'static str,
) -> Result<Option<T>, FeedError> {
    let started = Instant::now();
    let mut pages = container
        .query_items::<T>(q, FeedScope::partition(pk), None)
        .await
        .map_err(FeedError::cosmos("query feed"))?
        .into_pages();
    while let Some(p) = pages.next().await {
        let p = p.map_err(FeedError::cosmos("query feed"))?;
        observe(operation, started, charge(p.headers()));
        if let Some(v) = p.into_items().into_iter().next() {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

#[derive(serde::Deserialize)]
struct Last {
    seq: u64,
    #[serde(default)]
    sealed: bool,
}

/// The highest `seq` stored in segment `k`, and whether it is the seal: one
/// query.
async fn last_seq(container: &ContainerClient, feed: &FeedId, k: u64, s: u64) -> Result<Option<Last>, FeedError> {
    let q = Query::from("SELECT TOP 1 c.seq, c.sealed FROM c WHERE c.seq >= @first ORDER BY c.seq DESC")
        .with_parameter("@first", k * s)
        .map_err(FeedError::cosmos("bind"))?;
    first_value(container, feed.pk(k), q, "segment_length").await
}

/// The length of segment `k` as stored now; `None` when the segment does
/// not exist. One query when it holds events; a sealed segment counts as
/// full. An empty segment (never written, or its events expired) counts as
/// full once writers no longer use it, so that readers move past it.
pub async fn read_head(
    container: &ContainerClient,
    layout: Layout,
    feed: &FeedId,
    k: u64,
) -> Result<Option<Head>, FeedError> {
    let s = layout.size;
    if let Some(last) = last_seq(container, feed, k, s).await? {
        let count = if last.sealed { s } else { (last.seq + 1 - k * s).min(s) };
        return Ok(Some(Head { segment: k, count, opened: None }));
    }
    let Some(marker) = read_marker(container, feed, k).await? else { return Ok(None) };
    let count = if layout.closed_for_readers(marker.opened) { s } else { 0 };
    Ok(Some(Head { segment: k, count, opened: Some(marker.opened) }))
}

/// When segment `k` opened (its head's `_ts`); `None` when it does not exist.
pub async fn opened(container: &ContainerClient, feed: &FeedId, k: u64) -> Result<Option<i64>, FeedError> {
    Ok(read_marker(container, feed, k).await?.map(|m| m.opened))
}

/// Opens segment `k` (creates its head); when it is open already, reads it.
pub async fn open_segment(
    container: &ContainerClient,
    layout: Layout,
    feed: &FeedId,
    k: u64,
) -> Result<Head, FeedError> {
    let started = Instant::now();
    let doc = HeadDoc::new(feed.pk(k));
    match container.create_item(feed.pk(k), HEAD_ID, &doc, None::<ItemWriteOptions>).await {
        Ok(resp) => {
            observe("create_head", started, charge(resp.headers()));
            Ok(Head { segment: k, count: 0, opened: Some(now()) })
        }
        Err(e) if e.status().is_conflict() => {
            read_head(container, layout, feed, k).await?.ok_or(FeedError::HeadVanished)
        }
        Err(e) => Err(FeedError::Cosmos { operation: "create head", source: e }),
    }
}

/// The newest existing segment of a feed, or `None` for a feed with no
/// segment yet. Exponential probing of heads, then binary search: O(log k)
/// point reads for a feed with k segments, then one query for its length.
pub async fn newest_head(
    container: &ContainerClient,
    layout: Layout,
    feed: &FeedId,
) -> Result<Option<Head>, FeedError> {
    let Some(first) = read_marker(container, feed, 0).await? else { return Ok(None) };
    let (mut lo, mut lo_opened) = (0, first.opened); // exists
    let mut step = 1;
    let hi = loop {
        let probe = lo + step;
        match read_marker(container, feed, probe).await? {
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
        match read_marker(container, feed, mid).await? {
            Some(m) => (lo, lo_opened) = (mid, m.opened),
            None => hi = mid,
        }
    }
    Ok(read_head(container, layout, feed, lo).await?.map(|h| Head { opened: Some(lo_opened), ..h }))
}
