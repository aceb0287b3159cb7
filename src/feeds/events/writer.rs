//! Appends with group commit. Each feed has at most one writer task in a
//! process; concurrent appends to that feed queue up behind it and are
//! stored together: the next n sequence numbers of the segment, as one
//! document create (n = 1) or one transactional batch of n creates. The
//! container's unique key on `seq` makes a sequence number a lock: across
//! processes, the writer whose create lands first owns it, the other one
//! gets 409, re-reads the segment's length and retries. A writer only ever
//! creates `seq` n + 1 after it has seen n stored, so feeds stay gapless.
//! A seal takes a segment's next number the same way and closes it: a hot
//! feed's writer seals its segment every `cosmos.hot_segment_events`
//! events, so that its writes move from partition to partition.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_data_cosmos::TransactionalBatch;
use azure_data_cosmos::options::ItemWriteOptions;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::docs::{EventDoc, EventRecord, FeedId, NewEventDoc, SegmentKey, event_doc_id};
use super::notify::Notifier;
use super::segment::{Counters, Head, Segments};
use crate::feeds::{StoreError, charge};

/// A transactional batch holds at most 100 operations.
const MAX_EVENTS_PER_BATCH: usize = 100;
/// And at most 2 MB; leave room for the envelope.
const MAX_BATCH_BYTES: usize = 1_900_000;
/// A feed's writer task ends after this long without appends.
const IDLE: Duration = Duration::from_secs(30);

struct Pending {
    record: Arc<EventRecord>,
    ids: IdSource,
    /// The time of the store's clock (ms) by which the append is answered:
    /// its publish's one deadline. `None`: the writer's default from when
    /// it takes the append up (the importer, the repairer).
    deadline_ms: Option<u64>,
    reply: oneshot::Sender<Result<Stored, StoreError>>,
    /// The span of the append (the publish request): the write that stores
    /// the event is part of its trace.
    span: tracing::Span,
}

struct Item {
    pending: Pending,
    doc_id: String,
    bytes: usize,
    /// Segments where an attempt ended ambiguously (it may have committed).
    maybe_in: BTreeSet<u64>,
    /// The segment whose predecessor was last checked (dedupe).
    previous_checked_for: Option<u64>,
}

/// Where a chunk can be stored.
enum Room {
    /// In this segment.
    Here(Head),
    /// Not here: the segment was full or old; this is the feed's new tail.
    Moved(Head),
}

/// Why a writer seals a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sealing {
    /// Open for `close_after`: its first events expire before long.
    Old,
    /// Its feed is hot, and the segment holds the events a hot feed's does.
    Hot,
}

/// What one write of a chunk did.
enum Written {
    /// Every event of the chunk is stored; the RU charge.
    Stored(f64),
    /// The chunk's operation at this index answered 409; nothing is stored.
    Conflict(usize),
    /// Cosmos refused the document of the operation at this index (400 or
    /// 413); nothing is stored.
    Refused { op: usize, status: u16 },
}

/// Where an append's event is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub seq: u64,
    /// This event's share of the RU charge of the write that stored it.
    pub charge: f64,
    /// It was in the feed already: stored by an earlier append of it.
    pub repeat: bool,
}

/// Who chose an event's id, which says where a repeat of it can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// The server (a fresh UUID per publish): a repeat is only ever a retry
    /// of this very append, in the segment it was written to.
    Server,
    /// The publisher (`POST /events`): a repeat can come later, so the
    /// previous segment is searched too.
    Publisher,
}

/// Publishes a feed's writer took per second: counted in windows of one
/// second, the current one and the one before.
struct Rate {
    window: Instant,
    this: u64,
    last: u64,
}

impl Rate {
    fn new(now: Instant) -> Self {
        Self { window: now, this: 0, last: 0 }
    }

    fn add(&mut self, n: u64, now: Instant) {
        let second = Duration::from_secs(1);
        let elapsed = now.saturating_duration_since(self.window);
        if elapsed >= second * 2 {
            (self.window, self.this, self.last) = (now, 0, 0);
        } else if elapsed >= second {
            (self.window, self.last, self.this) = (self.window + second, self.this, 0);
        }
        self.this += n;
    }

    /// The higher of the last full second's and the current second's count.
    fn per_second(&self) -> u64 {
        self.this.max(self.last)
    }
}

/// How many of the queued events the next write takes: up to `room`, a
/// batch's 100 operations and about 2 MB.
fn chunk_len(queue: &VecDeque<Item>, room: usize) -> usize {
    let mut n = 0;
    let mut bytes = 0;
    for item in queue {
        if n == room || n == MAX_EVENTS_PER_BATCH || (n > 0 && bytes + item.bytes > MAX_BATCH_BYTES) {
            break;
        }
        bytes += item.bytes;
        n += 1;
    }
    n
}

pub struct Writer {
    seg: Segments,
    deadlines: Deadlines,
    notifier: Arc<Notifier>,
    /// Appends queued per feed at most (`cosmos.max_queued_appends`).
    max_queued: usize,
    feeds: Mutex<HashMap<String, mpsc::Sender<Pending>>>,
}

/// How long an append may take (`cosmos.publish_deadline_ms`), and how long
/// one attempt can (`cosmos.operation_timeout_ms`: the SDK's end-to-end
/// timeout, its 429 retries included). An attempt is started only when it
/// ends before the deadline of every append it could store, so an append is
/// answered by its deadline.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub append_ms: u64,
    pub attempt_ms: u64,
}

/// What an append does when its feed's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuses it (`StoreError::Overloaded`): nothing was written yet, the
    /// caller can be told to come back.
    Shed,
    /// Waits for room: the append completes something already begun (the
    /// second feed of a publish, a repair).
    Wait,
}

impl Writer {
    pub fn new(seg: Segments, deadlines: Deadlines, notifier: Arc<Notifier>, max_queued: usize) -> Arc<Self> {
        Arc::new(Self { seg, deadlines, notifier, max_queued: max_queued.max(1), feeds: Mutex::new(HashMap::new()) })
    }

    /// Appends one event to `feed`; returns its sequence number. An event
    /// whose id is already in the feed's current (or, for publisher ids,
    /// previous) segment is not appended again: its existing position is
    /// returned. Answered by `deadline_ms` (of the store's clock) at the
    /// latest, stored or not.
    pub async fn append(
        self: &Arc<Self>,
        feed: &FeedId,
        record: Arc<EventRecord>,
        ids: IdSource,
        when_full: WhenFull,
        deadline_ms: Option<u64>,
    ) -> Result<Stored, StoreError> {
        self.enqueue(feed, record, ids, when_full, deadline_ms).await?.await
    }

    /// Queues an append behind those already queued for `feed` (waiting
    /// for room, or refusing, as `when_full` says); the future it returns
    /// gives the outcome. Appends queued one after another are stored in
    /// that order.
    pub async fn enqueue(
        self: &Arc<Self>,
        feed: &FeedId,
        record: Arc<EventRecord>,
        ids: IdSource,
        when_full: WhenFull,
        deadline_ms: Option<u64>,
    ) -> Result<impl std::future::Future<Output = Result<Stored, StoreError>> + use<>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let mut pending = Pending { record, ids, deadline_ms, reply, span: tracing::Span::current() };
        loop {
            let full = {
                let mut feeds = self.feeds.lock().expect("writer map lock");
                let key = feed.key();
                match feeds.get(&key) {
                    Some(tx) => match tx.try_send(pending) {
                        Ok(()) => None,
                        Err(mpsc::error::TrySendError::Full(p)) if when_full == WhenFull::Shed => {
                            drop(p);
                            metrics::counter!("feed_appends_shed_total").increment(1);
                            return Err(StoreError::Overloaded);
                        }
                        Err(mpsc::error::TrySendError::Full(p)) => Some((tx.clone(), p)),
                        Err(mpsc::error::TrySendError::Closed(p)) => {
                            self.spawn_writer(&mut feeds, feed, p);
                            None
                        }
                    },
                    None => {
                        self.spawn_writer(&mut feeds, feed, pending);
                        None
                    }
                }
            };
            let Some((tx, p)) = full else { break };
            // Wait for room outside the map's lock (until the deadline); if
            // the writer left meanwhile, start over.
            let room = match deadline_ms {
                Some(deadline) => {
                    let left = deadline.saturating_sub(self.seg.clock.now_ms());
                    tokio::time::timeout(Duration::from_millis(left), tx.send(p))
                        .await
                        .map_err(|_| StoreError::Transient("the publish's deadline passed in a full queue".into()))?
                }
                None => tx.send(p).await,
            };
            match room {
                Ok(()) => break,
                Err(mpsc::error::SendError(p)) => pending = p,
            }
        }
        Ok(async move { rx.await.map_err(|_| StoreError::WriterGone)? })
    }

    fn spawn_writer(
        self: &Arc<Self>,
        feeds: &mut HashMap<String, mpsc::Sender<Pending>>,
        feed: &FeedId,
        first: Pending,
    ) {
        let (tx, rx) = mpsc::channel(self.max_queued);
        if tx.try_send(first).is_err() {
            unreachable!("a new queue has room for one");
        }
        feeds.insert(feed.key(), tx);
        tokio::spawn(self.clone().run(feed.clone(), rx));
    }

    async fn run(self: Arc<Self>, feed: FeedId, mut rx: mpsc::Receiver<Pending>) {
        let mut tail: Option<Head> = None;
        let mut rate = Rate::new(Instant::now());
        loop {
            let first = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(_) => {
                    // Leave only when nothing is queued. Appends try to enqueue
                    // under the same lock; one that waits for room outside it
                    // and finds the queue closed starts over with a new
                    // writer, so none can be stranded.
                    let mut feeds = self.feeds.lock().expect("writer map lock");
                    match rx.try_recv() {
                        Ok(p) => p,
                        Err(_) => {
                            feeds.remove(&feed.key());
                            return;
                        }
                    }
                }
            };
            let mut items = vec![first];
            while items.len() < MAX_EVENTS_PER_BATCH * 4 {
                match rx.try_recv() {
                    Ok(p) => items.push(p),
                    Err(_) => break,
                }
            }
            // One write serves several publishes: it is a child of the
            // first one's span, and follows from the others'.
            let span = tracing::info_span!(
                parent: &items[0].span,
                "cosmos.append",
                feed = %feed.log_label(),
                events = items.len(),
            );
            for item in &items[1..] {
                span.follows_from(&item.span);
            }
            // Publishes count towards a feed's heat; the importer's and the
            // repairer's appends (no deadline) do not: history stays in
            // full segments, cheap to read.
            rate.add(items.iter().filter(|p| p.deadline_ms.is_some()).count() as u64, Instant::now());
            // Publisher-chosen ids are found again by a retry in the segment
            // written and the one before: a write that stores one is never
            // cut short (`FeedStore::append` looks further for a retry's
            // second feed).
            let cut = self
                .seg
                .layout
                .hot
                .filter(|hot| rate.per_second() >= hot.events_per_second && hot.segment_events < self.seg.size())
                .filter(|_| items.iter().all(|p| p.ids == IdSource::Server))
                .map(|hot| hot.segment_events);
            self.commit(&feed, &mut tail, items, cut).instrument(span).await;
        }
    }

    /// Stores `pendings` in order; `cut`: the feed is hot, its segments
    /// are sealed once they hold this many events.
    async fn commit(&self, feed: &FeedId, tail: &mut Option<Head>, pendings: Vec<Pending>, cut: Option<u64>) {
        let mut queue: VecDeque<Item> = pendings
            .into_iter()
            .map(|pending| {
                let doc_id = event_doc_id(&pending.record.id, &pending.record.source);
                // The stored document: the CloudEvent, and the fields queries
                // filter on repeated at the top level (their length is not
                // bounded apart from the event's), plus room for names.
                let r = &pending.record;
                let repeated = [&r.id, &r.id, &r.source, &r.subject, &r.resource, &r.event_type, &r.time]
                    .iter()
                    .map(|f| f.len())
                    .sum::<usize>()
                    + r.alternativesubject.as_ref().map_or(0, String::len)
                    + r.resourceinstance.as_ref().map_or(0, String::len);
                let bytes = json_len(&r.cloud_event) + repeated + 1024;
                Item { pending, doc_id, bytes, maybe_in: BTreeSet::new(), previous_checked_for: None }
            })
            .collect();
        let taken_up = self.seg.clock.now_ms();
        let mut backoff = Duration::from_millis(5);
        let mut last_error: Option<StoreError> = None;
        while !queue.is_empty() {
            // Answer what an attempt started now could not store by its
            // deadline (it may be stored already, ambiguously: the publish
            // answers 503 all the same, and the repairer completes its
            // other feed).
            let now = self.seg.clock.now_ms();
            let late = |item: &Item| {
                let deadline = item.pending.deadline_ms.unwrap_or(taken_up + self.deadlines.append_ms);
                now + self.deadlines.attempt_ms > deadline
            };
            if queue.iter().any(late) {
                let why = last_error.as_ref().map_or_else(|| "no attempt fitted".to_owned(), ToString::to_string);
                let (expired, kept): (VecDeque<Item>, VecDeque<Item>) = queue.drain(..).partition(late);
                for item in expired {
                    let error = format!("not stored by the publish's deadline ({why})");
                    let _ = item.pending.reply.send(Err(StoreError::Transient(error)));
                }
                queue = kept;
                continue;
            }
            match self.step(feed, tail, &mut queue, cut).await {
                Ok(()) => backoff = Duration::from_millis(5),
                Err(e) => {
                    tracing::debug!(feed = %feed.log_label(), error = %e, "append step failed; retrying");
                    *tail = None;
                    last_error = Some(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// One attempt: find a segment with room, settle items that may already
    /// be stored, then store the next chunk at the next sequence numbers
    /// (one create, or one batch of creates) and settle what that did.
    async fn step(
        &self,
        feed: &FeedId,
        tail: &mut Option<Head>,
        queue: &mut VecDeque<Item>,
        cut: Option<u64>,
    ) -> Result<(), StoreError> {
        let h = match self.segment_with_room(feed, tail.take(), cut).await? {
            Room::Here(h) => h,
            Room::Moved(next) => {
                *tail = Some(next);
                return Ok(());
            }
        };
        self.settle_maybe_stored(feed, h, queue).await?;
        if queue.is_empty() {
            *tail = Some(h);
            return Ok(());
        }
        let end = cut.unwrap_or(u64::MAX).min(self.seg.size());
        let n = chunk_len(queue, usize::try_from(end - h.count).unwrap_or(usize::MAX));
        // From the moment a write is sent it may commit, even when its answer
        // is lost: a retry must look for these events before writing them.
        for item in queue.iter_mut().take(n) {
            item.maybe_in.insert(h.segment);
        }
        *tail = match self.write_chunk(feed, h, queue, n).await? {
            Written::Stored(charge) => Some(self.stored(feed, h, queue, n, charge)),
            Written::Conflict(op) => self.conflict(feed, h, queue, op).await?,
            Written::Refused { op, status } => {
                // The document itself is refused: retrying cannot help.
                let item = queue.remove(op).expect("op index maps to a queued item");
                let _ =
                    item.pending.reply.send(Err(StoreError::Rejected(format!("event document refused with {status}"))));
                Some(h)
            }
        };
        Ok(())
    }

    /// The segment the next events go to: the known tail, or the feed's
    /// newest segment (opening the first). A full segment moves on to the
    /// next; one open for `close_after` is sealed first, so that none is
    /// still written when its first events expire; and so is one that holds
    /// `cut` events of a hot feed.
    async fn segment_with_room(&self, feed: &FeedId, tail: Option<Head>, cut: Option<u64>) -> Result<Room, StoreError> {
        let h = match tail {
            Some(h) => h,
            None => match self.seg.newest(feed).await? {
                Some(h) => h,
                None => self.seg.open(feed, 0).await?,
            },
        };
        if h.count >= self.seg.size() {
            return Ok(Room::Moved(self.seg.open(feed, h.segment + 1).await?));
        }
        if cut.is_some_and(|cut| h.count >= cut) {
            return Ok(Room::Moved(self.seal(feed, h, Sealing::Hot).await?));
        }
        let h = match h.opened {
            None if self.seg.layout.close_after.is_some() => {
                let opened = self.seg.opened(feed, h.segment).await?.ok_or(StoreError::HeadVanished)?;
                h.with_opened(opened)
            }
            _ => h,
        };
        if h.opened.is_some_and(|o| self.seg.closed_for_writers(o)) {
            return Ok(Room::Moved(self.seal(feed, h, Sealing::Old).await?));
        }
        Ok(Room::Here(h))
    }

    /// Items that may already be stored in another segment (an earlier
    /// write whose answer was lost; with publisher ids, a retry of an event
    /// stored in the previous segment): look before writing them twice.
    async fn settle_maybe_stored(&self, feed: &FeedId, h: Head, queue: &mut VecDeque<Item>) -> Result<(), StoreError> {
        let mut i = 0;
        while i < queue.len() {
            let item = &mut queue[i];
            let maybe: Vec<u64> = item.maybe_in.iter().copied().filter(|k| *k != h.segment).collect();
            let mut found = None;
            for k in maybe {
                Counters::bump(&self.seg.counters.maybe_stored_lookups);
                if let Some(doc) = self.read_event(feed, k, &item.doc_id).await? {
                    Counters::bump(&self.seg.counters.maybe_stored_found);
                    found = Some(doc);
                    break;
                }
            }
            let previous = h.segment.checked_sub(1).filter(|p| {
                item.pending.ids == IdSource::Publisher
                    && item.previous_checked_for != Some(h.segment)
                    && !item.maybe_in.contains(p)
            });
            if found.is_none()
                && let Some(k) = previous
            {
                found = self.read_event(feed, k, &item.doc_id).await?;
            }
            item.previous_checked_for = Some(h.segment);
            match found {
                Some(doc) => {
                    let item = queue.remove(i).expect("index in range");
                    settle_existing(item, &doc);
                }
                None => i += 1,
            }
        }
        Ok(())
    }

    /// Stores the first `n` queued events at the segment's next numbers.
    async fn write_chunk(
        &self,
        feed: &FeedId,
        h: Head,
        queue: &VecDeque<Item>,
        n: usize,
    ) -> Result<Written, StoreError> {
        let pk = feed.pk(h.segment);
        let base = h.end(self.seg.size());
        let started = Instant::now();
        if n == 1 {
            let item = &queue[0];
            let doc = NewEventDoc::new(&item.pending.record, &item.doc_id, &pk, base);
            return match self.seg.container.create_item(pk.clone(), doc.id, &doc, None::<ItemWriteOptions>).await {
                Ok(resp) => {
                    let charge = charge(resp.headers());
                    self.seg.observe("append_create", started, charge);
                    Ok(Written::Stored(charge.unwrap_or(0.0)))
                }
                Err(e) if e.status().is_conflict() => {
                    self.seg.observe("append_create", started, None);
                    Ok(Written::Conflict(0))
                }
                Err(e) => {
                    self.seg.observe("append_create", started, None);
                    match u16::from(e.status().status_code()) {
                        status @ (400 | 413) => Ok(Written::Refused { op: 0, status }),
                        _ => Err(StoreError::cosmos("append")(e)),
                    }
                }
            };
        }
        let mut batch = TransactionalBatch::new(pk.clone());
        for (i, item) in queue.iter().take(n).enumerate() {
            let doc = NewEventDoc::new(&item.pending.record, &item.doc_id, &pk, base + i as u64);
            batch = batch.create_item(doc).map_err(StoreError::cosmos("build batch"))?;
        }
        let resp = match self.seg.container.execute_transactional_batch(batch, None).await {
            Ok(resp) => resp,
            Err(e) => {
                self.seg.observe("append_batch", started, None);
                return Err(StoreError::cosmos("append batch")(e));
            }
        };
        let charge = charge(resp.headers());
        self.seg.observe("append_batch", started, charge);
        let model = resp.into_model().map_err(StoreError::cosmos("decode batch response"))?;
        let results = model.results();
        if results.iter().all(|r| r.is_success()) {
            return Ok(Written::Stored(charge.unwrap_or(0.0)));
        }
        // Rolled back: find the operation that failed (the others say 424).
        match results.iter().position(|r| !r.is_success() && r.status_code() != 424) {
            Some(op) if results[op].status_code() == 409 => Ok(Written::Conflict(op)),
            // As for a single create: only a refusal of the document itself
            // is the caller's; anything else (429, 449, 5xx, a full
            // partition) is retried.
            Some(op) => match results[op].status_code() {
                status @ (400 | 413) => Ok(Written::Refused { op, status }),
                status => Err(StoreError::Transient(format!("batch operation answered {status}"))),
            },
            None => Err(StoreError::Transient("batch failed without a failing operation".into())),
        }
    }

    /// The chunk is stored: answer its appends, wake readers; the new tail.
    fn stored(&self, feed: &FeedId, h: Head, queue: &mut VecDeque<Item>, n: usize, charge: f64) -> Head {
        let base = h.end(self.seg.size());
        let share = charge / n as f64;
        metrics::histogram!("feed_batch_events").record(n as f64);
        for (i, item) in queue.drain(..n).enumerate() {
            let _ = item.pending.reply.send(Ok(Stored { seq: base + i as u64, charge: share, repeat: false }));
        }
        self.notifier.notify(feed);
        Head { count: h.count + n as u64, taken: h.taken + n as u64, ..h }
    }

    /// The chunk's operation `op` answered 409, nothing of it is stored.
    /// Either that event is in this segment already (stored earlier, or by
    /// this very write when the SDK retried it after losing the first
    /// answer), or another writer took the sequence number: the event's own
    /// id says which. The new tail, `None` when it must be read again.
    async fn conflict(
        &self,
        feed: &FeedId,
        h: Head,
        queue: &mut VecDeque<Item>,
        op: usize,
    ) -> Result<Option<Head>, StoreError> {
        let base = h.end(self.seg.size());
        // Look before taking the item off the queue: a failed read must
        // leave it queued for the retry.
        match self.read_event(feed, h.segment, &queue[op].doc_id).await? {
            Some(doc) => {
                let item = queue.remove(op).expect("op index maps to a queued item");
                // Its position is taken by itself when it is `base + op`.
                let tail = if doc.seq == base + op as u64 && op == 0 {
                    Some(Head { count: h.count + 1, taken: h.taken + 1, ..h })
                } else if doc.seq >= base {
                    None
                } else {
                    Some(h)
                };
                settle_existing(item, &doc);
                // It may have been stored by this very write: wake readers.
                self.notifier.notify(feed);
                Ok(tail)
            }
            None => {
                metrics::counter!("feed_seq_conflicts_total").increment(1);
                Counters::bump(&self.seg.counters.seq_conflicts);
                Ok(Some(self.length_past(feed, h).await?))
            }
        }
    }

    /// Seals segment `h.segment` at its next free number: after that, no
    /// writer can store an event in it (the number is taken), and readers
    /// count it as full. An empty segment is sealed too (at its first
    /// number), so that a writer that still thinks it young cannot start it
    /// behind the back of readers that have moved on.
    async fn seal(&self, feed: &FeedId, h: Head, why: Sealing) -> Result<Head, StoreError> {
        let s = self.seg.size();
        let pk = feed.pk(h.segment);
        let doc = EventDoc::seal(pk.clone(), h.end(s), crate::domain::server_time());
        let started = Instant::now();
        match self.seg.container.create_item(pk, &doc.id, &doc, None::<ItemWriteOptions>).await {
            Ok(resp) => {
                self.seg.observe("seal", started, charge(resp.headers()));
                metrics::counter!("feed_segments_sealed_total").increment(1);
                Counters::bump(&self.seg.counters.segments_sealed);
                if why == Sealing::Hot {
                    metrics::counter!("feed_hot_segments_cut_total").increment(1);
                    Counters::bump(&self.seg.counters.segments_cut);
                }
                Ok(Head { count: s, taken: h.taken + 1, ..h })
            }
            Err(e) if e.status().is_conflict() => {
                // Sealed by another writer, or an event took the number:
                // the length says which.
                self.seg.observe("seal", started, None);
                self.length_past(feed, h).await
            }
            Err(e) => {
                self.seg.observe("seal", started, None);
                Err(StoreError::cosmos("seal")(e))
            }
        }
    }

    /// The segment's length after its next number (`h.count`) was found
    /// taken. When the length does not show that yet (a lagging read; or an
    /// expired event not yet purged), a transient error: the caller backs
    /// off before the next look instead of spinning.
    async fn length_past(&self, feed: &FeedId, h: Head) -> Result<Head, StoreError> {
        match self.seg.read_head(feed, h.segment).await? {
            Some(f) if f.count > h.count => Ok(Head { opened: f.opened.or(h.opened), ..f }),
            _ => Err(StoreError::Transient("sequence number taken; length not moved yet".into())),
        }
    }

    async fn read_event(&self, feed: &FeedId, k: u64, id: &str) -> Result<Option<EventDoc>, StoreError> {
        let started = Instant::now();
        match self.seg.container.read_item(feed.pk(k), id, None).await {
            Ok(resp) => {
                self.seg.observe("read_event", started, charge(resp.headers()));
                Ok(Some(resp.into_model().map_err(StoreError::cosmos("decode event"))?))
            }
            Err(e) if e.status().is_not_found() => {
                self.seg.observe("read_event", started, None);
                Ok(None)
            }
            Err(e) => {
                self.seg.observe("read_event", started, None);
                Err(StoreError::cosmos("read event")(e))
            }
        }
    }
}

/// The event is already stored: the same event (same source) is an
/// idempotent success at its existing position; another event with the same
/// id is refused.
/// The length of a value's JSON, counted as it is written, not kept.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn settle_existing(item: Item, doc: &EventDoc) {
    let result = if doc.source == item.pending.record.source {
        Ok(Stored { seq: doc.seq, charge: 0.0, repeat: true })
    } else {
        Err(StoreError::IdTaken { id: item.pending.record.id.clone() })
    };
    let _ = item.pending.reply.send(result);
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_len_is_the_length_of_the_json() {
        let v = serde_json::json!({"a": "æøå \" \n", "b": [1, 2.5, null, true], "c": {}});
        assert_eq!(super::json_len(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
