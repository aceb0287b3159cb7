//! Appends with group commit. Each feed has at most one writer task in a
//! process; concurrent appends to that feed queue up behind it and are
//! stored together: the next n sequence numbers of the segment, as one
//! document create (n = 1) or one transactional batch of n creates. The
//! container's unique key on `seq` makes a sequence number a lock: across
//! processes, the writer whose create lands first owns it, the other one
//! gets 409, re-reads the segment's length and retries. A writer only ever
//! creates `seq` n + 1 after it has seen n stored, so feeds stay gapless.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_data_cosmos::options::ItemWriteOptions;
use azure_data_cosmos::TransactionalBatch;
use tokio::sync::{mpsc, oneshot};

use super::docs::{EventDoc, EventRecord, FeedId, doc_id};
use super::notify::Notifier;
use super::segment::{Counters, Head, Segments};
use super::{FeedError, charge};

/// A transactional batch holds at most 100 operations.
const MAX_EVENTS_PER_BATCH: usize = 100;
/// And at most 2 MB; leave room for the envelope.
const MAX_BATCH_BYTES: usize = 1_900_000;
/// A feed's writer task ends after this long without appends.
const IDLE: Duration = Duration::from_secs(30);

struct Pending {
    record: Arc<EventRecord>,
    /// Also look for the event in the previous segment (publisher-chosen ids).
    dedupe: bool,
    /// The sequence number, and this event's share of the batch's RU charge.
    reply: oneshot::Sender<Result<(u64, f64), FeedError>>,
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

/// What one write attempt did.
enum Outcome {
    /// Every event of the chunk is stored; the RU charge.
    Stored(f64),
    /// The chunk's operation at this index answered 409; nothing is stored.
    Conflict(usize),
}

pub struct Writer {
    seg: Segments,
    /// How long one append keeps retrying transient failures before giving
    /// up (`cosmos.append_retry_deadline_ms`).
    retry_deadline: Duration,
    notifier: Arc<Notifier>,
    feeds: Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
}

impl Writer {
    pub fn new(seg: Segments, retry_deadline: Duration, notifier: Arc<Notifier>) -> Arc<Self> {
        Arc::new(Self { seg, retry_deadline, notifier, feeds: Mutex::new(HashMap::new()) })
    }

    /// Appends one event to `feed`; returns its sequence number. An event
    /// whose id is already in the feed's current (or, with `dedupe`,
    /// previous) segment is not appended again: its existing position is
    /// returned.
    pub async fn append(
        self: &Arc<Self>,
        feed: &FeedId,
        record: Arc<EventRecord>,
        dedupe: bool,
    ) -> Result<(u64, f64), FeedError> {
        let (reply, rx) = oneshot::channel();
        let pending = Pending { record, dedupe, reply };
        {
            let mut feeds = self.feeds.lock().expect("writer map lock");
            let key = feed.key();
            let unsent = match feeds.get(&key) {
                Some(tx) => tx.send(pending).err().map(|e| e.0),
                None => Some(pending),
            };
            if let Some(pending) = unsent {
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(pending);
                feeds.insert(key, tx);
                tokio::spawn(self.clone().run(feed.clone(), rx));
            }
        }
        rx.await.map_err(|_| FeedError::WriterGone)?
    }

    async fn run(self: Arc<Self>, feed: FeedId, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let mut tail: Option<Head> = None;
        loop {
            let first = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(_) => {
                    // Leave only when nothing is queued; appends enqueue under
                    // the same lock, so none can be stranded.
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
            self.commit(&feed, &mut tail, items).await;
        }
    }

    async fn commit(&self, feed: &FeedId, tail: &mut Option<Head>, pendings: Vec<Pending>) {
        let mut queue: VecDeque<Item> = pendings
            .into_iter()
            .map(|pending| {
                let doc_id = doc_id(&pending.record.id);
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
                let bytes = serde_json::to_vec(&r.cloud_event).map(|v| v.len()).unwrap_or(0) + repeated + 1024;
                Item { pending, doc_id, bytes, maybe_in: BTreeSet::new(), previous_checked_for: None }
            })
            .collect();
        let deadline = Instant::now() + self.retry_deadline;
        let mut backoff = Duration::from_millis(5);
        let mut last_error: Option<FeedError> = None;
        while !queue.is_empty() {
            if Instant::now() > deadline {
                let err = last_error.take().unwrap_or(FeedError::Exhausted);
                let msg = err.to_string();
                for item in queue.drain(..) {
                    let _ = item.pending.reply.send(Err(FeedError::Transient(msg.clone())));
                }
                return;
            }
            match self.step(feed, tail, &mut queue).await {
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

    /// One attempt: make sure the tail is known and the segment has room,
    /// settle items that may already be stored, then store the next chunk
    /// at the next sequence numbers: one create, or one batch of creates.
    async fn step(&self, feed: &FeedId, tail: &mut Option<Head>, queue: &mut VecDeque<Item>) -> Result<(), FeedError> {
        let s = self.seg.size();
        let h = match tail.take() {
            Some(h) => h,
            None => match self.seg.newest(feed).await? {
                Some(h) => h,
                None => self.seg.open(feed, 0).await?,
            },
        };
        if h.count >= s {
            *tail = Some(self.seg.open(feed, h.segment + 1).await?);
            return Ok(());
        }
        // A segment open for `close_after` is sealed before anything else
        // is stored, so that none is still written when its first events
        // expire.
        let h = match h.opened {
            None if self.seg.layout.close_after.is_some() => {
                let opened = self.seg.opened(feed, h.segment).await?.ok_or(FeedError::HeadVanished)?;
                h.with_opened(opened)
            }
            _ => h,
        };
        if h.opened.is_some_and(|o| self.seg.closed_for_writers(o)) {
            *tail = Some(self.seal(feed, h).await?);
            return Ok(());
        }
        // Items that may already be stored elsewhere: look before writing twice.
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
            let dedupe_in = h.segment.checked_sub(1).filter(|p| {
                item.pending.dedupe && item.previous_checked_for != Some(h.segment) && !item.maybe_in.contains(p)
            });
            if found.is_none()
                && let Some(k) = dedupe_in
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
        if queue.is_empty() {
            *tail = Some(h);
            return Ok(());
        }
        // The chunk this attempt stores.
        let room = usize::try_from(s - h.count).unwrap_or(usize::MAX);
        let mut n = 0;
        let mut bytes = 0;
        for item in queue.iter() {
            if n == room || n == MAX_EVENTS_PER_BATCH || (n > 0 && bytes + item.bytes > MAX_BATCH_BYTES) {
                break;
            }
            bytes += item.bytes;
            n += 1;
        }
        let pk = feed.pk(h.segment);
        let base = h.end(s);
        // From the moment a write is sent it may commit, even when its answer
        // is lost: a retry must look for these events before writing them.
        for item in queue.iter_mut().take(n) {
            item.maybe_in.insert(h.segment);
        }
        let started = Instant::now();
        let outcome = if n == 1 {
            let doc = EventDoc::new(&queue[0].pending.record, pk.clone(), base);
            match self.seg.container.create_item(pk, &doc.id, &doc, None::<ItemWriteOptions>).await {
                Ok(resp) => {
                    let charge = charge(resp.headers());
                    self.seg.observe("append_create", started, charge);
                    Outcome::Stored(charge.unwrap_or(0.0))
                }
                Err(e) if e.status().is_conflict() => {
                    self.seg.observe("append_create", started, None);
                    Outcome::Conflict(0)
                }
                Err(e) => {
                    self.seg.observe("append_create", started, None);
                    let status = u16::from(e.status().status_code());
                    if matches!(status, 400 | 413) {
                        // The document itself is refused: retrying cannot help.
                        let item = queue.pop_front().expect("a chunk of one");
                        let _ = item
                            .pending
                            .reply
                            .send(Err(FeedError::Rejected(format!("event document refused with {status}"))));
                        *tail = Some(h);
                        return Ok(());
                    }
                    return Err(FeedError::Cosmos { operation: "append", source: e });
                }
            }
        } else {
            let mut batch = TransactionalBatch::new(pk.clone());
            for (i, item) in queue.iter().take(n).enumerate() {
                let doc = EventDoc::new(&item.pending.record, pk.clone(), base + i as u64);
                batch = batch.create_item(doc).map_err(FeedError::cosmos("build batch"))?;
            }
            let resp = match self.seg.container.execute_transactional_batch(batch, None).await {
                Ok(resp) => resp,
                Err(e) => {
                    self.seg.observe("append_batch", started, None);
                    return Err(FeedError::Cosmos { operation: "append batch", source: e });
                }
            };
            let charge = charge(resp.headers());
            self.seg.observe("append_batch", started, charge);
            let model = resp.into_model().map_err(FeedError::cosmos("decode batch response"))?;
            let results = model.results();
            if results.iter().all(|r| r.is_success()) {
                Outcome::Stored(charge.unwrap_or(0.0))
            } else {
                // Rolled back: find the operation that failed (the others say 424).
                match results.iter().position(|r| !r.is_success() && r.status_code() != 424) {
                    Some(op) if results[op].status_code() == 409 => Outcome::Conflict(op),
                    Some(op) => {
                        let status = results[op].status_code();
                        // As for a single create: only a refusal of the
                        // document itself is the caller's; anything else
                        // (429, 449, 5xx, a full partition) is retried.
                        if !matches!(status, 400 | 413) {
                            return Err(FeedError::Transient(format!("batch operation answered {status}")));
                        }
                        let item = queue.remove(op).expect("op index maps to a queued item");
                        let _ = item
                            .pending
                            .reply
                            .send(Err(FeedError::Rejected(format!("event document refused with {status}"))));
                        *tail = Some(h);
                        return Ok(());
                    }
                    None => return Err(FeedError::Transient("batch failed without a failing operation".into())),
                }
            }
        };
        match outcome {
            Outcome::Stored(charge) => {
                let share = charge / n as f64;
                metrics::histogram!("feed_batch_events").record(n as f64);
                for (i, item) in queue.drain(..n).enumerate() {
                    let _ = item.pending.reply.send(Ok((base + i as u64, share)));
                }
                *tail = Some(Head { count: h.count + n as u64, ..h });
                self.notifier.notify(feed);
            }
            Outcome::Conflict(op) => {
                // Either that event is in this segment already (stored
                // earlier, or by this very write when the SDK retried it after
                // losing the first answer), or another writer took the
                // sequence number: the event's own id says which.
                // Look before taking the item off the queue: a failed read
                // must leave it queued for the retry.
                match self.read_event(feed, h.segment, &queue[op].doc_id).await? {
                    Some(doc) => {
                        let item = queue.remove(op).expect("op index maps to a queued item");
                        // Its position is taken by itself when it is `base + op`.
                        *tail = if doc.seq == base + op as u64 && op == 0 {
                            Some(Head { count: h.count + 1, ..h })
                        } else if doc.seq >= base {
                            None
                        } else {
                            Some(h)
                        };
                        settle_existing(item, &doc);
                        // It may have been stored by this very write: wake readers.
                        self.notifier.notify(feed);
                    }
                    None => {
                        metrics::counter!("feed_seq_conflicts_total").increment(1);
                        Counters::bump(&self.seg.counters.seq_conflicts);
                        *tail = Some(self.length_past(feed, h).await?);
                    }
                }
            }
        }
        Ok(())
    }

    /// Seals segment `h.segment` at its next free number: after that, no
    /// writer can store an event in it (the number is taken), and readers
    /// count it as full. An empty segment is sealed too (at its first
    /// number), so that a writer that still thinks it young cannot start it
    /// behind the back of readers that have moved on.
    async fn seal(&self, feed: &FeedId, h: Head) -> Result<Head, FeedError> {
        let s = self.seg.size();
        let pk = feed.pk(h.segment);
        let doc = EventDoc::seal(pk.clone(), h.end(s), crate::domain::server_time());
        let started = Instant::now();
        match self.seg.container.create_item(pk, &doc.id, &doc, None::<ItemWriteOptions>).await {
            Ok(resp) => {
                self.seg.observe("seal", started, charge(resp.headers()));
                metrics::counter!("feed_segments_sealed_total").increment(1);
                Counters::bump(&self.seg.counters.segments_sealed);
                Ok(Head { count: s, ..h })
            }
            Err(e) if e.status().is_conflict() => {
                // Sealed by another writer, or an event took the number:
                // the length says which.
                self.seg.observe("seal", started, None);
                self.length_past(feed, h).await
            }
            Err(e) => {
                self.seg.observe("seal", started, None);
                Err(FeedError::Cosmos { operation: "seal", source: e })
            }
        }
    }

    /// The segment's length after its next number (`h.count`) was found
    /// taken. When the length does not show that yet (a lagging read; or an
    /// expired event not yet purged), a transient error: the caller backs
    /// off before the next look instead of spinning.
    async fn length_past(&self, feed: &FeedId, h: Head) -> Result<Head, FeedError> {
        match self.seg.read_head(feed, h.segment).await? {
            Some(f) if f.count > h.count => Ok(Head { opened: f.opened.or(h.opened), ..f }),
            _ => Err(FeedError::Transient("sequence number taken; length not moved yet".into())),
        }
    }

    async fn read_event(&self, feed: &FeedId, k: u64, id: &str) -> Result<Option<EventDoc>, FeedError> {
        let started = Instant::now();
        match self.seg.container.read_item(feed.pk(k), id, None).await {
            Ok(resp) => {
                self.seg.observe("read_event", started, charge(resp.headers()));
                Ok(Some(resp.into_model().map_err(FeedError::cosmos("decode event"))?))
            }
            Err(e) if e.status().is_not_found() => {
                self.seg.observe("read_event", started, None);
                Ok(None)
            }
            Err(e) => {
                self.seg.observe("read_event", started, None);
                Err(FeedError::Cosmos { operation: "read event", source: e })
            }
        }
    }
}

/// The event is already stored: the same event (same source) is an
/// idempotent success at its existing position; another event with the same
/// id is refused.
fn settle_existing(item: Item, doc: &EventDoc) {
    let result = if doc.source == item.pending.record.source {
        Ok((doc.seq, 0.0))
    } else {
        Err(FeedError::IdTaken { id: item.pending.record.id.clone() })
    };
    let _ = item.pending.reply.send(result);
}
