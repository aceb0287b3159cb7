//! Segment heads: reading them, finding a feed's current segment, opening
//! the next one. Shared by the writer and the reader.

use azure_data_cosmos::ContainerClient;
use azure_data_cosmos::options::ItemWriteOptions;

use super::docs::{FeedId, HEAD_ID, HeadDoc};
use super::{FeedError, charge, observe};

/// A segment head as last read: its count and the ETag that guards it.
#[derive(Debug, Clone)]
pub struct Head {
    pub segment: u64,
    pub count: u64,
    pub etag: String,
}

/// Reads the head of segment `k`; `None` when the segment does not exist.
pub async fn read_head(container: &ContainerClient, feed: &FeedId, k: u64) -> Result<Option<Head>, FeedError> {
    let started = std::time::Instant::now();
    match container.read_item(feed.pk(k), HEAD_ID, None).await {
        Ok(resp) => {
            observe("read_head", started, charge(resp.headers()));
            let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(FeedError::MissingEtag)?;
            let doc: HeadDoc = resp.into_model().map_err(FeedError::cosmos("decode head"))?;
            Ok(Some(Head { segment: k, count: doc.count, etag }))
        }
        Err(e) if e.status().is_not_found() => {
            observe("read_head", started, None);
            Ok(None)
        }
        Err(e) => Err(FeedError::Cosmos { operation: "read head", source: e }),
    }
}

/// Creates the head of segment `k` (count 0); an existing one is read.
pub async fn open_segment(container: &ContainerClient, feed: &FeedId, k: u64) -> Result<Head, FeedError> {
    let started = std::time::Instant::now();
    let doc = HeadDoc::new(feed.pk(k), 0);
    match container.create_item(feed.pk(k), HEAD_ID, &doc, None::<ItemWriteOptions>).await {
        Ok(resp) => {
            observe("create_head", started, charge(resp.headers()));
            let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(FeedError::MissingEtag)?;
            Ok(Head { segment: k, count: 0, etag })
        }
        Err(e) if e.status().is_conflict() => read_head(container, feed, k).await?.ok_or(FeedError::HeadVanished),
        Err(e) => Err(FeedError::Cosmos { operation: "create head", source: e }),
    }
}

/// The newest existing segment of a feed (its head), or `None` for a feed
/// with no segment yet. Exponential probing, then binary search: O(log k)
/// point reads for a feed with k segments.
pub async fn newest_head(container: &ContainerClient, feed: &FeedId) -> Result<Option<Head>, FeedError> {
    let Some(first) = read_head(container, feed, 0).await? else { return Ok(None) };
    let mut lo = first; // exists
    let mut step = 1;
    let hi = loop {
        let probe = lo.segment + step;
        match read_head(container, feed, probe).await? {
            Some(h) => {
                lo = h;
                step *= 2;
            }
            None => break probe,
        }
    };
    // Segments are opened in order, so existence is a prefix: search (lo, hi).
    let (mut lo, mut hi) = (lo, hi);
    while hi - lo.segment > 1 {
        let mid = lo.segment + (hi - lo.segment) / 2;
        match read_head(container, feed, mid).await? {
            Some(h) => lo = h,
            None => hi = mid,
        }
    }
    Ok(Some(lo))
}
