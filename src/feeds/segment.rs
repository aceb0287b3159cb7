//! Segments: how many events one holds, finding a feed's newest one, opening
//! the next one. Shared by the writer and the reader.
//!
//! A segment exists once its head (a marker that never changes) exists.
//! Its length is read from its events: they are gapless (a writer creates
//! `seq` n + 1 only once n is stored), so the highest `seq` in the segment
//! says how many there are.

use std::time::Instant;

use azure_data_cosmos::options::ItemWriteOptions;
use azure_data_cosmos::{ContainerClient, FeedScope, Query};
use futures::StreamExt;

use super::docs::{FeedId, HEAD_ID, HeadDoc};
use super::{FeedError, charge, observe};

/// A segment as last read: the number of events it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub segment: u64,
    pub count: u64,
}

/// How segments are laid out: their size, and the TTL of their events
/// (`<= 0`: events never expire).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub size: u64,
    pub ttl_seconds: i64,
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

/// The highest `seq` stored in segment `k`: one query.
async fn last_seq(container: &ContainerClient, feed: &FeedId, k: u64, s: u64) -> Result<Option<u64>, FeedError> {
    let q = Query::from("SELECT TOP 1 VALUE c.seq FROM c WHERE c.seq >= @first ORDER BY c.seq DESC")
        .with_parameter("@first", k * s)
        .map_err(FeedError::cosmos("bind"))?;
    first_value(container, feed.pk(k), q, "segment_length").await
}

/// The length of segment `k` as stored now; `None` when the segment does
/// not exist. One query when it holds events. An empty segment whose head
/// is older than the events' TTL lost its events to it and counts as full,
/// so that neither a writer nor a reader uses its positions again.
pub async fn read_head(
    container: &ContainerClient,
    layout: Layout,
    feed: &FeedId,
    k: u64,
) -> Result<Option<Head>, FeedError> {
    let s = layout.size;
    if let Some(last) = last_seq(container, feed, k, s).await? {
        return Ok(Some(Head { segment: k, count: (last + 1 - k * s).min(s) }));
    }
    let Some(marker) = read_marker(container, feed, k).await? else { return Ok(None) };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expired = layout.ttl_seconds > 0 && now - marker.opened > layout.ttl_seconds;
    Ok(Some(Head { segment: k, count: if expired { s } else { 0 } }))
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
            Ok(Head { segment: k, count: 0 })
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
    if read_marker(container, feed, 0).await?.is_none() {
        return Ok(None);
    }
    let mut lo = 0; // exists
    let mut step = 1;
    let hi = loop {
        let probe = lo + step;
        if read_marker(container, feed, probe).await?.is_some() {
            lo = probe;
            step *= 2;
        } else {
            break probe;
        }
    };
    // Segments are opened in order, so existence is a prefix: search (lo, hi).
    let (mut lo, mut hi) = (lo, hi);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if read_marker(container, feed, mid).await?.is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    read_head(container, layout, feed, lo).await
}
