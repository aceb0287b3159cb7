//! Reading feeds: one partition-keyed, `seq`-ordered query per segment,
//! filters as SQL predicates with parameters (values are bound, never
//! written into the SQL text; pattern syntax is escaped here, and only
//! here).

use std::num::NonZeroU32;
use std::time::Instant;

use azure_data_cosmos::options::{MaxItemCountHint, QueryOptions};
use azure_data_cosmos::{FeedScope, Query};
use futures::StreamExt;

use super::docs::{EventDoc, EventRecord, FeedId, STORED_FIELDS, SegmentKey, StoredDoc, event_doc_id};
use super::segment::Segments;
use super::{FeedError, charge};
use crate::domain::FieldMatch;
pub use crate::domain::Filters;

/// Newest segments that `locate` searches one by one before it falls back
/// to one query over all of them.
const LOCATE_SEGMENTS: u64 = 8;

/// ` AND ...` predicates and their parameters.
pub(crate) fn filter_sql(f: &Filters) -> (String, Vec<(String, serde_json::Value)>) {
    let mut sql = String::new();
    let mut params: Vec<(String, serde_json::Value)> = Vec::new();
    let bind = |name: &str, value: serde_json::Value, params: &mut Vec<_>| {
        params.push((format!("@{name}"), value));
        format!("@{name}")
    };
    if let Some(t) = &f.from_time {
        sql.push_str(&format!(" AND c.time >= {}", bind("from", t.clone().into(), &mut params)));
    }
    if let Some(t) = &f.to_time {
        sql.push_str(&format!(" AND c.time <= {}", bind("to", t.clone().into(), &mut params)));
    }
    // Altinn matches types and sources like SQL ILIKE: case-insensitive, `%`
    // any run of characters, `_` one character; several values are
    // alternatives.
    for (field, values, name) in [("type", &f.types, "t"), ("source", &f.sources, "src")] {
        if values.is_empty() {
            continue;
        }
        let parts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let p = bind(&format!("{name}{i}"), ilike_pattern(v).into(), &mut params);
                format!("LOWER(c.{field}) LIKE {p} ESCAPE '!'")
            })
            .collect();
        sql.push_str(&format!(" AND ({})", parts.join(" OR ")));
    }
    // A subscription's matches: plain values, so every wildcard in them is
    // escaped; compared in lower case, as the patterns above.
    for (i, m) in f.matches.iter().enumerate() {
        let (field, pattern) = match m {
            FieldMatch::TypeEquals(t) => ("type", like_literal(t)),
            FieldMatch::SourceStartsWith(s) => ("source", format!("{}%", like_literal(s))),
        };
        let p = bind(&format!("m{i}"), pattern.into(), &mut params);
        sql.push_str(&format!(" AND LOWER(c.{field}) LIKE {p} ESCAPE '!'"));
    }
    if let Some(s) = &f.subject {
        sql.push_str(&format!(" AND c.subject = {}", bind("subject", s.clone().into(), &mut params)));
    }
    if let Some(s) = &f.alternative_subject {
        sql.push_str(&format!(" AND c.alternativesubject = {}", bind("alt", s.clone().into(), &mut params)));
    }
    if let Some(s) = &f.resource {
        sql.push_str(&format!(" AND c.resource = {}", bind("res", s.clone().into(), &mut params)));
    }
    if let Some(s) = &f.resource_prefix {
        sql.push_str(&format!(" AND STARTSWITH(c.resource, {})", bind("resprefix", s.clone().into(), &mut params)));
    }
    if let Some(n) = f.imported_after {
        let p = bind("aseq", n.into(), &mut params);
        sql.push_str(&format!(" AND (NOT IS_DEFINED(c.aseq) OR c.aseq > {p})"));
    }
    if let Some(s) = &f.resource_instance {
        sql.push_str(&format!(" AND c.resourceinstance = {}", bind("ri", s.clone().into(), &mut params)));
    }
    (sql, params)
}

/// An ILIKE pattern (PostgreSQL's, as Altinn uses it) as a Cosmos `LIKE`
/// pattern with escape character `!`, in lower case (the field is compared
/// in lower case): `%` and `_` stay wildcards, `\x` is a literal `x`, and
/// `[` (a character class in Cosmos) and `!` match themselves.
fn ilike_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars().flat_map(char::to_lowercase);
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(l @ ('%' | '_' | '[' | '!')) => {
                    out.push('!');
                    out.push(l);
                }
                Some(l) => out.push(l),
                None => out.push('\\'),
            },
            '[' | '!' => {
                out.push('!');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A plain value as a Cosmos `LIKE` pattern with escape character `!`
/// that matches it alone, in lower case: `%`, `_`, `[` and `!` are escaped.
fn like_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars().flat_map(char::to_lowercase) {
        if matches!(c, '%' | '_' | '[' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

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
    pub round_trips: u32,
    pub request_charge: f64,
}

pub(crate) async fn read(
    seg: &Segments,
    feed: &FeedId,
    from: u64,
    filters: &Filters,
    limit: usize,
    scan_budget: u64,
) -> Result<ReadPage, FeedError> {
    let s = seg.size();
    let (filter_sql, filter_params) = filter_sql(filters);
    let mut page = ReadPage { events: Vec::new(), next: from, at_end: false, round_trips: 0, request_charge: 0.0 };
    let budget_end = from.saturating_add(scan_budget.max(1));
    if budget_end == from || from / s >= u64::MAX / s - 1 {
        // A position at the end of the number range: nothing is there.
        page.at_end = true;
        return Ok(page);
    }
    while page.events.len() < limit && page.next < budget_end {
        let k = page.next / s;
        let segment_end_if_full = (k + 1) * s;
        let want = limit - page.events.len();
        if filter_sql.is_empty() {
            // Nothing filtered: the events are gapless, so the page itself
            // says how far it got. One round trip.
            let docs = query(seg, feed.pk(k), page.next, None, "", &[], want, &mut page).await?;
            let got = docs.len();
            let sealed = docs.last().is_some_and(|d| d.sealed);
            if let Some(last) = docs.last() {
                page.next = last.seq + 1;
            }
            page.events.extend(events_of(docs));
            if sealed {
                // The seal is a segment's last document: go on at the next.
                page.next = segment_end_if_full;
                if page.events.len() == limit {
                    break;
                }
                continue;
            }
            if page.events.len() == limit {
                break;
            }
            if got > 0 && page.next == segment_end_if_full {
                continue;
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
                    let end = head.end(s);
                    if page.next < end {
                        let docs = query(seg, feed.pk(k), page.next, Some(end), "", &[], want, &mut page).await?;
                        if let Some(last) = docs.last() {
                            page.next = last.seq + 1;
                            page.events.extend(events_of(docs));
                            continue;
                        }
                        // Expired: skip them (within the scan budget).
                        page.next = end.min(budget_end);
                        if page.next < end {
                            break;
                        }
                    }
                    if head.count == s && page.next == segment_end_if_full {
                        continue;
                    }
                }
            }
            page.at_end = true;
            break;
        }
        // Filtered: the segment's length says how far a short result has scanned.
        let head = seg.read_head(feed, k).await?;
        page.round_trips += 1;
        let Some(head) = head else {
            page.at_end = true;
            break;
        };
        let end = head.end(s).min(budget_end);
        if page.next < end {
            let docs =
                query(seg, feed.pk(k), page.next, Some(end), &filter_sql, &filter_params, want, &mut page).await?;
            let full = docs.len() == want;
            let last = docs.last().map(|d| d.seq);
            page.events.extend(events_of(docs));
            if full {
                page.next = last.expect("a full page has a last event") + 1;
                break;
            }
            page.next = end;
        }
        if head.count < s && page.next >= head.end(s) {
            page.at_end = true;
            break;
        }
        if page.next >= head.end(s) {
            page.next = segment_end_if_full;
        }
    }
    Ok(page)
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
) -> Result<Vec<StoredDoc>, FeedError> {
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
    let mut q = Query::from(text).with_parameter("@pos", from).map_err(FeedError::cosmos("bind"))?;
    if let Some(end) = before {
        q = q.with_parameter("@end", end).map_err(FeedError::cosmos("bind"))?;
    }
    for (name, value) in filter_params {
        q = q.with_parameter(name.clone(), value).map_err(FeedError::cosmos("bind"))?;
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
        .map_err(FeedError::cosmos("query feed"))?
        .into_pages();
    let mut docs = Vec::new();
    while let Some(p) = pages.next().await {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                seg.observe("query_feed", started, None);
                return Err(FeedError::cosmos("query feed")(e));
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

/// The position just after the newest event with id `event_id` in `feed`
/// (an id can come from several sources; Altinn's clients give the id
/// alone): one query per segment, newest segments first, then one query
/// over the feed's older partitions.
pub(crate) async fn locate(seg: &Segments, feed: &FeedId, event_id: &str) -> Result<Option<u64>, FeedError> {
    let Some(newest) = seg.newest(feed).await? else { return Ok(None) };
    let oldest_searched = newest.segment.saturating_sub(LOCATE_SEGMENTS - 1);
    for k in (oldest_searched..=newest.segment).rev() {
        let q = Query::from("SELECT TOP 1 VALUE c.seq FROM c WHERE c.eid = @id ORDER BY c.seq DESC")
            .with_parameter("@id", event_id)
            .map_err(FeedError::cosmos("bind"))?;
        if let Some(seq) = seg.first_value::<u64>(feed.pk(k), q, "locate_event").await? {
            return Ok(Some(seq + 1));
        }
    }
    if oldest_searched == 0 {
        return Ok(None);
    }
    // Older than that: one query over the feed's partitions.
    Ok(newest_across(seg, feed, "eid", event_id, "locate_query").await?.map(|seq| seq + 1))
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
) -> Result<Option<u64>, FeedError> {
    let sql = format!("SELECT VALUE c.seq FROM c WHERE c.{field} = @value AND STARTSWITH(c.pk, @prefix)");
    let q = Query::from(sql)
        .with_parameter("@value", value)
        .map_err(FeedError::cosmos("bind"))?
        .with_parameter("@prefix", format!("{}|", feed.key()))
        .map_err(FeedError::cosmos("bind"))?;
    let started = Instant::now();
    let mut pages = seg
        .container
        .query_items::<u64>(q, FeedScope::full_container(), None)
        .await
        .map_err(FeedError::cosmos(operation))?
        .into_pages();
    let mut newest_seq = None;
    while let Some(p) = pages.next().await {
        let p = p.map_err(FeedError::cosmos(operation))?;
        seg.observe(operation, started, charge(p.headers()));
        newest_seq = p.items().iter().copied().chain(newest_seq).max();
    }
    Ok(newest_seq)
}

/// The position of `record` (its id and source) in `feed`: point reads of
/// its document in the newest segments (where a copy just appended is),
/// then one query over the feed's older partitions.
pub(crate) async fn position_of(seg: &Segments, feed: &FeedId, record: &EventRecord) -> Result<Option<u64>, FeedError> {
    let id = event_doc_id(&record.id, &record.source);
    let Some(newest) = seg.newest(feed).await? else { return Ok(None) };
    // Where an append just made (or a repair) is: the newest segments.
    let recent = newest.segment.saturating_sub(LOCATE_SEGMENTS - 1);
    for k in (recent..=newest.segment).rev() {
        if let Some(seq) = seq_in(seg, feed, k, &id).await? {
            return Ok(Some(seq));
        }
    }
    if recent == 0 {
        return Ok(None);
    }
    // Older: the feed took more than those segments since (a hot feed, or
    // a repairer that runs late). One query over the feed's partitions.
    newest_across(seg, feed, "id", &id, "position_query").await
}

/// The position of the event document `id` in segment `k`, if it is there.
async fn seq_in(seg: &Segments, feed: &FeedId, k: u64, id: &str) -> Result<Option<u64>, FeedError> {
    let started = Instant::now();
    match seg.container.read_item(feed.pk(k), id, None).await {
        Ok(resp) => {
            seg.observe("read_event", started, charge(resp.headers()));
            let doc: EventDoc = resp.into_model().map_err(FeedError::cosmos("decode event"))?;
            Ok(Some(doc.seq))
        }
        Err(e) if e.status().is_not_found() => {
            seg.observe("read_event", started, None);
            Ok(None)
        }
        Err(e) => {
            seg.observe("read_event", started, None);
            Err(FeedError::cosmos("read event")(e))
        }
    }
}

/// The time of the last event of segment `k`; `None` when it has none.
async fn last_time(seg: &Segments, feed: &FeedId, k: u64) -> Result<Option<String>, FeedError> {
    let q = Query::from("SELECT TOP 1 VALUE c.time FROM c WHERE c.seq >= 0 ORDER BY c.seq DESC");
    seg.first_value(feed.pk(k), q, "query_feed").await
}

/// The position of the first event registered at or after `time`: a binary
/// search over the segments by their last event's time, then one query in
/// the segment found. `O(log k)` queries for a feed of `k` segments.
pub(crate) async fn position_at_time(seg: &Segments, feed: &FeedId, time: &str) -> Result<u64, FeedError> {
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
        .map_err(FeedError::cosmos("bind"))?;
    Ok(seg.first_value::<u64>(feed.pk(lo), q, "query_feed").await?.unwrap_or(lo * s))
}

/// The position of the first event of `feed` that Altinn Events did not
/// push before the cut-over `through`: one published here (no Altinn
/// number), or imported with a number above `through`; the feed's end
/// when there is none. Segments are searched from the oldest on, one query
/// each, until one holds such an event (an event published here before the
/// import began is found too; the cut-over is done once per feed).
pub(crate) async fn first_not_pushed_by_altinn(seg: &Segments, feed: &FeedId, through: u64) -> Result<u64, FeedError> {
    let Some(newest) = seg.newest(feed).await? else { return Ok(0) };
    for k in 0..=newest.segment {
        let q = Query::from(
            "SELECT TOP 1 VALUE c.seq FROM c WHERE c.seq >= 0 AND NOT IS_DEFINED(c.sealed) \
             AND (NOT IS_DEFINED(c.aseq) OR c.aseq > @through) ORDER BY c.seq",
        )
        .with_parameter("@through", through)
        .map_err(FeedError::cosmos("bind"))?;
        if let Some(seq) = seg.first_value::<u64>(feed.pk(k), q, "first_not_pushed").await? {
            return Ok(seq);
        }
    }
    Ok(newest.end(seg.size()))
}

/// The Altinn numbers in `from..=to` of the events the two newest
/// segments of `feed` hold.
pub(crate) async fn stored_origins(
    seg: &Segments,
    feed: &FeedId,
    from: u64,
    to: u64,
) -> Result<std::collections::HashSet<u64>, FeedError> {
    let mut found = std::collections::HashSet::new();
    let Some(newest) = seg.newest(feed).await? else { return Ok(found) };
    for k in newest.segment.saturating_sub(1)..=newest.segment {
        let q = Query::from("SELECT VALUE c.aseq FROM c WHERE c.aseq >= @from AND c.aseq <= @to")
            .with_parameter("@from", from)
            .map_err(FeedError::cosmos("bind"))?
            .with_parameter("@to", to)
            .map_err(FeedError::cosmos("bind"))?;
        found.extend(seg.all_values::<u64>(feed.pk(k), q, "stored_origins").await?);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ilike_patterns_keep_both_wildcards_and_fold_case() {
        assert_eq!(ilike_pattern("App.Instance.%"), "app.instance.%");
        assert_eq!(ilike_pattern("https://ttd.apps/ttd/apps_test/%"), "https://ttd.apps/ttd/apps_test/%");
        assert_eq!(ilike_pattern("a[b]!%"), "a![b]!!%");
        assert_eq!(ilike_pattern(r"100\%\_x\y\"), r"100!%!_xy\");
    }

    #[test]
    fn filters_become_parameterised_predicates() {
        let f = Filters {
            types: vec!["app.instance.created".into()],
            sources: vec!["https://x/%".into(), "exact".into()],
            from_time: Some("2026-01-01T00:00:00.000000Z".into()),
            ..Filters::default()
        };
        let (sql, params) = filter_sql(&f);
        assert_eq!(
            sql,
            " AND c.time >= @from AND (LOWER(c.type) LIKE @t0 ESCAPE '!') AND (LOWER(c.source) LIKE @src0 ESCAPE '!' OR LOWER(c.source) LIKE @src1 ESCAPE '!')"
        );
        assert_eq!(params.len(), 4);
        assert!(!sql.contains("https://"), "values never enter the SQL text");
    }

    #[test]
    fn plain_values_match_only_themselves() {
        assert_eq!(like_literal("App.Instance_Created"), "app.instance!_created");
        assert_eq!(like_literal(r"100%[a]!\x"), r"100!%![a]!!\x");
        assert_eq!(like_literal(""), "");
    }

    proptest::proptest! {
        /// A plain value matches as the ILIKE pattern that escapes each of
        /// its wildcards would (how subscriptions' filters were matched
        /// before they were typed).
        #[test]
        fn a_plain_value_is_the_ilike_pattern_that_escapes_it(value in "[a-zA-Z0-9%_!\\[\\]\\\\.:/ ÅæİẞΣ-]{0,24}") {
            let escaped = value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            proptest::prop_assert_eq!(like_literal(&value), ilike_pattern(&escaped));
        }
    }

    #[test]
    fn a_subscriptions_matches_are_bound_and_escaped() {
        let f = Filters {
            matches: vec![
                FieldMatch::TypeEquals("App.%".into()),
                FieldMatch::SourceStartsWith("https://ttd.apps/ttd/my_app".into()),
            ],
            resource: Some("urn:altinn:resource:app_ttd_my_app".into()),
            ..Filters::default()
        };
        let (sql, params) = filter_sql(&f);
        assert_eq!(
            sql,
            " AND LOWER(c.type) LIKE @m0 ESCAPE '!' AND LOWER(c.source) LIKE @m1 ESCAPE '!' AND c.resource = @res"
        );
        let values: Vec<(&str, &str)> = params.iter().map(|(n, v)| (n.as_str(), v.as_str().unwrap())).collect();
        assert_eq!(
            values,
            [
                ("@m0", "app.!%"),
                ("@m1", "https://ttd.apps/ttd/my!_app%"),
                ("@res", "urn:altinn:resource:app_ttd_my_app")
            ]
        );
    }
}
