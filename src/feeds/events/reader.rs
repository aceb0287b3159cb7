//! Reading feeds: one partition-keyed, `seq`-ordered query per segment,
//! with the filters as SQL predicates (`filter_sql.rs`).

use std::num::NonZeroU32;
use std::time::Instant;

use azure_data_cosmos::options::{MaxItemCountHint, QueryOptions};
use azure_data_cosmos::{FeedScope, Query};
use futures::StreamExt;

use super::FeedStore;
use super::docs::{EventDoc, EventRecord, FeedId, STORED_FIELDS, SegmentKey, StoredDoc, event_doc_id};
use super::filter_sql::filter_sql;
use super::segment::Segments;
pub use crate::domain::Filters;
use crate::feeds::{StoreError, charge};

/// Newest segments that `locate` searches one by one before it falls back
/// to one query over all of them.
const LOCATE_SEGMENTS: u64 = 8;
/// Newest segments where a deliverer looks for the newest event it pushed
/// (after a restore, once per subscription): a hot feed's cut segments
/// hold 16 events each, so 64 of them are about a thousand events.
const RECENT_PUSH_SEGMENTS: u64 = 64;
/// Segments a restarted import searches back for what it stored before
/// (`FeedStore::stored_origins`).
const STORED_ORIGIN_SEGMENTS: u64 = 1024;
/// What passing the unused numbers after a seal costs a read's scan budget,
/// in positions (see `ReadPage::skip_to`).
const SEGMENT_CHARGE: u64 = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub record: EventRecord,
}

#[derive(Debug, Clone)]
pub struct ReadPage {
    pub events: Vec<StoredEvent>,
    /// The position after the last event scanned (returned or filtered out).
    pub next: u64,
    /// The scan reached the end of the feed as it was when read.
    pub at_end: bool,
    /// Positions the scan passed that a seal closed (a segment's numbers
    /// after its seal, never used): not counted in the scan budget.
    pub skipped: u64,
    pub round_trips: u32,
    pub request_charge: f64,
}

async fn read(
    seg: &Segments,
    feed: &FeedId,
    from: u64,
    filters: &Filters,
    limit: usize,
    scan_budget: u64,
) -> Result<ReadPage, StoreError> {
    let s = seg.size();
    let (filter_sql, filter_params) = filter_sql(filters);
    let mut page =
        ReadPage { events: Vec::new(), next: from, at_end: false, skipped: 0, round_trips: 0, request_charge: 0.0 };
    let scan_budget = scan_budget.max(1);
    if from / s >= u64::MAX / s - 1 {
        // A position at the end of the number range: nothing is there.
        page.at_end = true;
        return Ok(page);
    }
    while page.events.len() < limit && page.scanned(from) < scan_budget {
        let k = page.next / s;
        // Where this step's scan must stop: the budget counts positions
        // scanned, not the unused numbers of sealed segments.
        let budget_end = page.next.saturating_add(scan_budget - page.scanned(from));
        let want = limit - page.events.len();
        let step = if filter_sql.is_empty() {
            unfiltered_step(seg, feed, k, want, limit, budget_end, &mut page).await?
        } else {
            filtered_step(seg, feed, k, (&filter_sql, &filter_params), want, budget_end, &mut page).await?
        };
        if let Flow::Done = step {
            break;
        }
    }
    Ok(page)
}

impl ReadPage {
    /// The positions from `from` to `next` that the scan covered: those
    /// a seal closed are not counted.
    pub fn scanned(&self, from: u64) -> u64 {
        (self.next - from).saturating_sub(self.skipped)
    }

    /// Moves the scan to `to`, past numbers a seal closed. The numbers are
    /// not scanned, but each segment passed costs its round trips: the
    /// budget is charged [`SEGMENT_CHARGE`] for the skip, so that a
    /// filtered read through a hot feed's cut segments visits about
    /// `budget / (16 + SEGMENT_CHARGE)` of them, not `budget / 17`.
    fn skip_to(&mut self, to: u64) {
        let tail = to.saturating_sub(self.next);
        self.skipped += tail - tail.min(SEGMENT_CHARGE);
        self.next = self.next.max(to);
    }
}

/// What [`read`] does after a step in one segment: go on, or answer.
enum Flow {
    Next,
    Done,
}

/// A step of an unfiltered read in segment `k`: the events are gapless, so
/// the page itself says how far it got (one round trip, unless the segment
/// looks short).
async fn unfiltered_step(
    seg: &Segments,
    feed: &FeedId,
    k: u64,
    want: usize,
    limit: usize,
    budget_end: u64,
    page: &mut ReadPage,
) -> Result<Flow, StoreError> {
    let s = seg.size();
    let segment_end_if_full = (k + 1) * s;
    // Nothing filtered: the events are gapless, so the page itself
    // says how far it got. One round trip.
    let docs = query(seg, feed.pk(k), page.next, None, "", &[], want, page).await?;
    let got = docs.len();
    let sealed = docs.last().is_some_and(|d| d.sealed);
    if let Some(last) = docs.last() {
        page.next = last.seq + 1;
    }
    page.events.extend(events_of(docs));
    if sealed {
        // The seal is a segment's last document: go on at the next.
        page.skip_to(segment_end_if_full);
        if page.events.len() == limit {
            return Ok(Flow::Done);
        }
        return Ok(Flow::Next);
    }
    if page.events.len() == limit {
        return Ok(Flow::Done);
    }
    if got > 0 && page.next == segment_end_if_full {
        return Ok(Flow::Next);
    }
    if got == 0 {
        // Nothing from here in this segment: the end of the feed, or
        // events removed by TTL. The segment's length says which (a
        // sealed segment counts as full, and so does an empty one
        // older than writers use segments); it is read before the
        // second look, and the events below it are gapless, so
        // whatever the second look does not find below it is gone,
        // not merely late.
        let head = seg.read_head(feed, k).await?;
        page.round_trips += 1;
        if let Some(head) = head {
            let end = head.docs_end(s);
            if page.next < end {
                let docs = query(seg, feed.pk(k), page.next, Some(end), "", &[], want, page).await?;
                if let Some(last) = docs.last() {
                    page.next = last.seq + 1;
                    page.events.extend(events_of(docs));
                    return Ok(Flow::Next);
                }
                // Expired: skip them (within the scan budget).
                page.next = end.min(budget_end);
                if page.next < end {
                    return Ok(Flow::Done);
                }
            }
            if head.count == s && page.next >= end {
                page.skip_to(segment_end_if_full);
                return Ok(Flow::Next);
            }
        }
    }
    page.at_end = true;
    Ok(Flow::Done)
}

/// A step of a filtered read in segment `k`: the segment's length says how
/// far a short result has scanned.
async fn filtered_step(
    seg: &Segments,
    feed: &FeedId,
    k: u64,
    (filter_sql, filter_params): (&str, &[(String, serde_json::Value)]),
    want: usize,
    budget_end: u64,
    page: &mut ReadPage,
) -> Result<Flow, StoreError> {
    let s = seg.size();
    let segment_end_if_full = (k + 1) * s;
    // Filtered: the segment's length says how far a short result has scanned.
    let head = seg.read_head(feed, k).await?;
    page.round_trips += 1;
    let Some(head) = head else {
        page.at_end = true;
        return Ok(Flow::Done);
    };
    let docs_end = head.docs_end(s);
    let end = docs_end.min(budget_end);
    if page.next < end {
        let docs = query(seg, feed.pk(k), page.next, Some(end), filter_sql, filter_params, want, page).await?;
        let full = docs.len() == want;
        let last = docs.last().map(|d| d.seq);
        page.events.extend(events_of(docs));
        if full {
            page.next = last.expect("a full page has a last event") + 1;
            return Ok(Flow::Done);
        }
        page.next = end;
    }
    if head.count < s && page.next >= docs_end {
        page.at_end = true;
        return Ok(Flow::Done);
    }
    if page.next >= docs_end {
        page.skip_to(segment_end_if_full);
    }
    Ok(Flow::Next)
}

/// The events among `docs` (a segment's seal is not one).
fn events_of(docs: Vec<StoredDoc>) -> impl Iterator<Item = StoredEvent> {
    docs.into_iter().filter(|d| !d.sealed).map(|doc| StoredEvent { seq: doc.seq, record: doc.record })
}

#[allow(clippy::too_many_arguments)]
async fn query(
    seg: &Segments,
    pk: String,
    from: u64,
    before: Option<u64>,
    filter_sql: &str,
    filter_params: &[(String, serde_json::Value)],
    want: usize,
    page: &mut ReadPage,
) -> Result<Vec<StoredDoc>, StoreError> {
    let mut text = format!("SELECT TOP {want} {STORED_FIELDS} FROM c WHERE c.seq >= @pos");
    if before.is_some() {
        text.push_str(" AND c.seq < @end");
    }
    text.push_str(filter_sql);
    if !filter_sql.is_empty() {
        // A seal has a `time` and a `source` (empty): keep it out of filtered
        // pages, where it would take an event's place. Unfiltered reads see
        // it: it tells them the segment is complete.
        text.push_str(" AND NOT IS_DEFINED(c.sealed)");
    }
    text.push_str(" ORDER BY c.seq");
    let mut q = Query::from(text).with_parameter("@pos", from).map_err(StoreError::cosmos("bind"))?;
    if let Some(end) = before {
        q = q.with_parameter("@end", end).map_err(StoreError::cosmos("bind"))?;
    }
    for (name, value) in filter_params {
        q = q.with_parameter(name.clone(), value).map_err(StoreError::cosmos("bind"))?;
    }
    let hint = NonZeroU32::new(u32::try_from(want).unwrap_or(u32::MAX)).map(MaxItemCountHint::Limit);
    let mut options = QueryOptions::default();
    if let Some(hint) = hint {
        options = options.with_max_item_count(hint);
    }
    let started = Instant::now();
    let mut pages = seg
        .container
        .query_items::<StoredDoc>(q, FeedScope::partition(pk), Some(options))
        .await
        .map_err(StoreError::cosmos("query feed"))?
        .into_pages();
    let mut docs = Vec::new();
    while let Some(p) = pages.next().await {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                seg.observe("query_feed", started, None);
                return Err(StoreError::cosmos("query feed")(e));
            }
        };
        page.round_trips += 1;
        let charge = charge(p.headers());
        page.request_charge += charge.unwrap_or(0.0);
        seg.observe("query_feed", started, charge);
        docs.extend(p.into_items());
        if docs.len() >= want {
            break;
        }
    }
    docs.truncate(want);
    Ok(docs)
}

/// The highest position of `feed` whose document has `field` = `value`:
/// one query over all the feed's partitions (a cross-partition query; for
/// what the newest segments do not hold).
async fn newest_across(
    seg: &Segments,
    feed: &FeedId,
    field: &str,
    value: &str,
    operation: &'static str,
) -> Result<Option<u64>, StoreError> {
    let sql = format!("SELECT VALUE c.seq FROM c WHERE c.{field} = @value AND STARTSWITH(c.pk, @prefix)");
    let q = Query::from(sql)
        .with_parameter("@value", value)
        .map_err(StoreError::cosmos("bind"))?
        .with_parameter("@prefix", format!("{}|", feed.key()))
        .map_err(StoreError::cosmos("bind"))?;
    let started = Instant::now();
    let mut pages = seg
        .container
        .query_items::<u64>(q, FeedScope::full_container(), None)
        .await
        .map_err(StoreError::cosmos(operation))?
        .into_pages();
    let mut newest_seq = None;
    while let Some(p) = pages.next().await {
        let p = p.map_err(StoreError::cosmos(operation))?;
        seg.observe(operation, started, charge(p.headers()));
        newest_seq = p.items().iter().copied().chain(newest_seq).max();
    }
    Ok(newest_seq)
}

/// The position just after the newest event `query` finds in the newest
/// `segments` segments of `feed` (up to segment `newest`): one query per
/// segment, newest first.
async fn after_newest_in_recent(
    seg: &Segments,
    feed: &FeedId,
    newest: u64,
    segments: u64,
    query: impl Fn() -> Result<Query, StoreError>,
) -> Result<Option<u64>, StoreError> {
    for k in (newest.saturating_sub(segments - 1)..=newest).rev() {
        if let Some(seq) = seg.first_value::<u64>(feed.pk(k), query()?, "locate_event").await? {
            return Ok(Some(seq + 1));
        }
    }
    Ok(None)
}

/// The position of the event document `id` in segment `k`, if it is there.
async fn seq_in(seg: &Segments, feed: &FeedId, k: u64, id: &str) -> Result<Option<u64>, StoreError> {
    let started = Instant::now();
    match seg.container.read_item(feed.pk(k), id, None).await {
        Ok(resp) => {
            seg.observe("read_event", started, charge(resp.headers()));
            let doc: EventDoc = resp.into_model().map_err(StoreError::cosmos("decode event"))?;
            Ok(Some(doc.seq))
        }
        Err(e) if e.status().is_not_found() => {
            seg.observe("read_event", started, None);
            Ok(None)
        }
        Err(e) => {
            seg.observe("read_event", started, None);
            Err(StoreError::cosmos("read event")(e))
        }
    }
}

/// The time of the last event of segment `k`; `None` when it has none.
async fn last_time(seg: &Segments, feed: &FeedId, k: u64) -> Result<Option<String>, StoreError> {
    let q = Query::from("SELECT TOP 1 VALUE c.time FROM c WHERE c.seq >= 0 ORDER BY c.seq DESC");
    seg.first_value(feed.pk(k), q, "query_feed").await
}

impl FeedStore {
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
    ) -> Result<ReadPage, StoreError> {
        if !shared {
            return read(&self.seg, feed, from, filters, limit, scan_budget).await;
        }
        let key = (feed.key(), from, format!("{filters:?}"), limit, scan_budget);
        let version = self.notifier.version(feed);
        self.shared_reads.read(key, version, || read(&self.seg, feed, from, filters, limit, scan_budget)).await
    }

    /// The position just after the newest event with id `event_id` in `feed`
    /// (an id can come from several sources; Altinn's clients give the id
    /// alone): one query per segment, newest segments first, then one query
    /// over the feed's older partitions.
    pub async fn locate(&self, feed: &FeedId, event_id: &str) -> Result<Option<u64>, StoreError> {
        let seg = &self.seg;
        let Some(newest) = seg.newest(feed).await? else { return Ok(None) };
        let query = || {
            Query::from("SELECT TOP 1 VALUE c.seq FROM c WHERE c.eid = @id ORDER BY c.seq DESC")
                .with_parameter("@id", event_id)
                .map_err(StoreError::cosmos("bind"))
        };
        if let Some(after) = after_newest_in_recent(seg, feed, newest.segment, LOCATE_SEGMENTS, query).await? {
            return Ok(Some(after));
        }
        if newest.segment < LOCATE_SEGMENTS {
            return Ok(None);
        }
        // Older than that: one query over the feed's partitions.
        Ok(newest_across(seg, feed, "eid", event_id, "locate_query").await?.map(|seq| seq + 1))
    }

    /// The position just after the newest event in `feed` whose id is one of
    /// `event_ids`, looked for in the newest `RECENT_PUSH_SEGMENTS` segments
    /// (where a deliverer's recent pushes are): one query per segment,
    /// newest first.
    pub async fn locate_newest_of(&self, feed: &FeedId, event_ids: &[String]) -> Result<Option<u64>, StoreError> {
        if event_ids.is_empty() {
            return Ok(None);
        }
        let seg = &self.seg;
        let Some(newest) = seg.newest(feed).await? else { return Ok(None) };
        let query = || {
            Query::from("SELECT TOP 1 VALUE c.seq FROM c WHERE ARRAY_CONTAINS(@ids, c.eid) ORDER BY c.seq DESC")
                .with_parameter("@ids", event_ids)
                .map_err(StoreError::cosmos("bind"))
        };
        after_newest_in_recent(seg, feed, newest.segment, RECENT_PUSH_SEGMENTS, query).await
    }

    /// The position of `record` (its id and source) in `feed`: point reads of
    /// its document in the newest segments (where a copy just appended is),
    /// then one query over the feed's older partitions.
    pub async fn position_of(&self, feed: &FeedId, record: &EventRecord) -> Result<Option<u64>, StoreError> {
        self.position_of_doc(feed, &event_doc_id(&record.id, &record.source)).await
    }

    /// The position of the event document `id` in `feed` (as
    /// [`Self::position_of`]).
    pub async fn position_of_doc(&self, feed: &FeedId, id: &str) -> Result<Option<u64>, StoreError> {
        let seg = &self.seg;
        let Some(newest) = seg.newest(feed).await? else { return Ok(None) };
        // Where an append just made (or a repair) is: the newest segments.
        let recent = newest.segment.saturating_sub(LOCATE_SEGMENTS - 1);
        for k in (recent..=newest.segment).rev() {
            if let Some(seq) = seq_in(seg, feed, k, id).await? {
                return Ok(Some(seq));
            }
        }
        if recent == 0 {
            return Ok(None);
        }
        // Older: the feed took more than those segments since (a hot feed, or
        // a repairer that runs late). One query over the feed's partitions.
        newest_across(seg, feed, "id", id, "position_query").await
    }

    /// The position of the first event registered at or after `time`: a binary
    /// search over the segments by their last event's time, then one query in
    /// the segment found. `O(log k)` queries for a feed of `k` segments.
    pub async fn position_at_time(&self, feed: &FeedId, time: &str) -> Result<u64, StoreError> {
        let seg = &self.seg;
        let s = seg.size();
        let Some(newest) = seg.newest(feed).await? else { return Ok(0) };
        let (mut lo, mut hi) = (0, newest.segment + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // A segment emptied by TTL counts as older than any time.
            match last_time(seg, feed, mid).await? {
                Some(t) if t.as_str() >= time => hi = mid,
                _ => lo = mid + 1,
            }
        }
        if lo > newest.segment {
            return Ok(newest.end(s));
        }
        let q = Query::from("SELECT TOP 1 VALUE c.seq FROM c WHERE c.seq >= 0 AND c.time >= @time ORDER BY c.seq")
            .with_parameter("@time", time)
            .map_err(StoreError::cosmos("bind"))?;
        Ok(seg.first_value::<u64>(feed.pk(lo), q, "query_feed").await?.unwrap_or(lo * s))
    }

    /// The position of the first event of `feed` that Altinn Events did not
    /// push before the cut-over `through`: one published here (no Altinn
    /// number), or imported with a number above `through`; the feed's end
    /// when there is none. Segments are searched from the oldest on, one query
    /// each, until one holds such an event (an event published here before the
    /// import began is found too; the cut-over is done once per feed).
    pub async fn first_not_pushed_by_altinn(&self, feed: &FeedId, through: u64) -> Result<u64, StoreError> {
        let seg = &self.seg;
        let Some(newest) = seg.newest(feed).await? else { return Ok(0) };
        for k in 0..=newest.segment {
            let q = Query::from(
                "SELECT TOP 1 VALUE c.seq FROM c WHERE c.seq >= 0 AND NOT IS_DEFINED(c.sealed) \
             AND (NOT IS_DEFINED(c.aseq) OR c.aseq > @through) ORDER BY c.seq",
            )
            .with_parameter("@through", through)
            .map_err(StoreError::cosmos("bind"))?;
            if let Some(seq) = seg.first_value::<u64>(feed.pk(k), q, "first_not_pushed").await? {
                return Ok(seq);
            }
        }
        Ok(newest.end(seg.size()))
    }

    /// The Altinn numbers in `from..=to` of the events `feed` holds, looked
    /// for from its newest segment back, until a segment whose newest
    /// imported event is older than `from` (the importer appends in Altinn's
    /// order, so the segments before it hold older ones only). Live
    /// publishes into the same feed during an import may have cut it into
    /// many small segments since; at most `STORED_ORIGIN_SEGMENTS` are
    /// searched (two queries each).
    pub async fn stored_origins(
        &self,
        feed: &FeedId,
        from: u64,
        to: u64,
    ) -> Result<std::collections::HashSet<u64>, StoreError> {
        let seg = &self.seg;
        let mut found = std::collections::HashSet::new();
        let Some(newest) = seg.newest(feed).await? else { return Ok(found) };
        let oldest = newest.segment.saturating_sub(STORED_ORIGIN_SEGMENTS - 1);
        for k in (oldest..=newest.segment).rev() {
            let q = Query::from("SELECT VALUE c.aseq FROM c WHERE c.aseq >= @from AND c.aseq <= @to")
                .with_parameter("@from", from)
                .map_err(StoreError::cosmos("bind"))?
                .with_parameter("@to", to)
                .map_err(StoreError::cosmos("bind"))?;
            found.extend(seg.all_values::<u64>(feed.pk(k), q, "stored_origins").await?);
            let q = Query::from("SELECT TOP 1 VALUE c.aseq FROM c WHERE IS_DEFINED(c.aseq) ORDER BY c.seq DESC");
            if seg.first_value::<u64>(feed.pk(k), q, "stored_origins").await?.is_some_and(|newest| newest < from) {
                break;
            }
        }
        Ok(found)
    }
}
