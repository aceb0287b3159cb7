//! Appends with group commit. Each feed has at most one writer task in a
//! process; concurrent appends to that feed queue up behind it and are
//! committed together: one transactional batch per segment partition that
//! replaces the head (`If-Match` its ETag, count += n) and creates the n
//! event documents with the next n sequence numbers. Across processes the
//! head's ETag serializes the batches; the loser re-reads and retries.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_data_cosmos::options::{BatchReplaceOptions, Precondition};
use azure_data_cosmos::{ContainerClient, TransactionalBatch};
use tokio::sync::{mpsc, oneshot};

use super::docs::{EventDoc, EventRecord, FeedId, HEAD_ID, HeadDoc, doc_id};
use super::notify::Notifier;
use super::segment::{Head, newest_head, open_segment};
use super::{FeedError, charge, observe};

/// A transactional batch holds at most 100 operations: the head and 99 events.
const MAX_EVENTS_PER_BATCH: usize = 99;
/// And at most 2 MB; leave room for the envelope.
const MAX_BATCH_BYTES: usize = 1_900_000;
/// How long one append keeps retrying transient failures before giving up.
const RETRY_DEADLINE: Duration = Duration::from_secs(30);
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

pub struct Writer {
    container: ContainerClient,
    segment_size: u64,
    notifier: Arc<Notifier>,
    feeds: Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
}

impl Writer {
    pub fn new(container: ContainerClient, segment_size: u64, notifier: Arc<Notifier>) -> Arc<Self> {
        Arc::new(Self { container, segment_size, notifier, feeds: Mutex::new(HashMap::new()) })
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
        let mut head: Option<Head> = None;
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
            self.commit(&feed, &mut head, items).await;
        }
    }

    async fn commit(&self, feed: &FeedId, head: &mut Option<Head>, pendings: Vec<Pending>) {
        let mut queue: VecDeque<Item> = pendings
            .into_iter()
            .map(|pending| {
                let doc_id = doc_id(&pending.record.id);
                let bytes = serde_json::to_vec(&pending.record.cloud_event).map(|v| v.len()).unwrap_or(0) + 1024;
                Item { pending, doc_id, bytes, maybe_in: BTreeSet::new(), previous_checked_for: None }
            })
            .collect();
        let deadline = Instant::now() + RETRY_DEADLINE;
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
            match self.step(feed, head, &mut queue).await {
                Ok(()) => backoff = Duration::from_millis(5),
                Err(e) => {
                    tracing::debug!(feed = %feed.log_label(), error = %e, "append step failed; retrying");
                    *head = None;
                    last_error = Some(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// One attempt: make sure the head is known and has room, settle items
    /// that may already be stored, then commit one batch.
    async fn step(&self, feed: &FeedId, head: &mut Option<Head>, queue: &mut VecDeque<Item>) -> Result<(), FeedError> {
        let s = self.segment_size;
        let h = match head.take() {
            Some(h) => h,
            None => match newest_head(&self.container, feed).await? {
                Some(h) => h,
                None => open_segment(&self.container, feed, 0).await?,
            },
        };
        if h.count >= s {
            *head = Some(open_segment(&self.container, feed, h.segment + 1).await?);
            return Ok(());
        }
        // Items that may already be stored elsewhere: look before writing twice.
        let mut i = 0;
        while i < queue.len() {
            let item = &mut queue[i];
            let mut look: Vec<u64> = item.maybe_in.iter().copied().filter(|k| *k != h.segment).collect();
            if item.pending.dedupe && item.previous_checked_for != Some(h.segment) && h.segment > 0 {
                look.push(h.segment - 1);
            }
            let mut found = None;
            for k in look {
                if let Some(doc) = self.read_event(feed, k, &item.doc_id).await? {
                    found = Some(doc);
                    break;
                }
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
            *head = Some(h);
            return Ok(());
        }
        // The chunk this batch commits.
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
        let base = h.segment * s + h.count;
        let mut batch = TransactionalBatch::new(pk.clone())
            .replace_item(
                HEAD_ID,
                HeadDoc::new(pk.clone(), h.count + n as u64),
                Some(BatchReplaceOptions::default().with_precondition(Precondition::IfMatch(h.etag.clone().into()))),
            )
            .map_err(FeedError::cosmos("build batch"))?;
        for (i, item) in queue.iter().take(n).enumerate() {
            let doc = EventDoc::new(&item.pending.record, pk.clone(), base + i as u64);
            batch = batch.create_item(doc).map_err(FeedError::cosmos("build batch"))?;
        }
        let started = Instant::now();
        let result = self.container.execute_transactional_batch(batch, None).await;
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                // The batch may or may not have committed.
                observe("append_batch", started, None);
                for item in queue.iter_mut().take(n) {
                    item.maybe_in.insert(h.segment);
                }
                return Err(FeedError::Cosmos { operation: "append batch", source: e });
            }
        };
        let charge = charge(resp.headers());
        observe("append_batch", started, charge);
        let share = charge.unwrap_or(0.0) / n as f64;
        // From here on the batch may have committed: if reading its answer
        // fails, the retry must look for these events before writing them.
        for item in queue.iter_mut().take(n) {
            item.maybe_in.insert(h.segment);
        }
        let model = resp.into_model().map_err(FeedError::cosmos("decode batch response"))?;
        let results = model.results();
        if results.iter().all(|r| r.is_success()) {
            let etag = results.first().and_then(|r| r.etag()).ok_or(FeedError::MissingEtag)?.to_owned();
            metrics::histogram!("feed_batch_events").record(n as f64);
            for (i, item) in queue.drain(..n).enumerate() {
                let _ = item.pending.reply.send(Ok((base + i as u64, share)));
            }
            *head = Some(Head { segment: h.segment, count: h.count + n as u64, etag });
            self.notifier.notify(feed);
            return Ok(());
        }
        // Rolled back: find the operation that failed (the others say 424).
        let failed = results.iter().position(|r| !r.is_success() && r.status_code() != 424);
        match failed {
            Some(0) => {
                // 412: the head moved. Usually another writer; but the SDK
                // may have retried this very batch after losing the answer
                // to a first attempt that committed. So these events may be
                // stored here: look before writing them to another segment.
                metrics::counter!("feed_head_conflicts_total").increment(1);
                for item in queue.iter_mut().take(n) {
                    item.maybe_in.insert(h.segment);
                }
                Ok(())
            }
            Some(op) if results[op].status_code() == 409 => {
                // That event id is already in this segment.
                let item = queue.remove(op - 1).expect("op index maps to a queued item");
                *head = Some(h.clone());
                match self.read_event(feed, h.segment, &item.doc_id).await? {
                    Some(doc) => settle_existing(item, &doc),
                    None => queue.push_front(item),
                }
                Ok(())
            }
            Some(op) => {
                let status = results[op].status_code();
                if status == 429 || status >= 500 || status == 408 {
                    return Err(FeedError::Transient(format!("batch operation answered {status}")));
                }
                let item = queue.remove(op - 1).expect("op index maps to a queued item");
                let _ =
                    item.pending.reply.send(Err(FeedError::Rejected(format!("event document refused with {status}"))));
                *head = Some(h);
                Ok(())
            }
            None => Err(FeedError::Transient("batch failed without a failing operation".into())),
        }
    }

    async fn read_event(&self, feed: &FeedId, k: u64, id: &str) -> Result<Option<EventDoc>, FeedError> {
        let started = Instant::now();
        match self.container.read_item(feed.pk(k), id, None).await {
            Ok(resp) => {
                observe("read_event", started, charge(resp.headers()));
                Ok(Some(resp.into_model().map_err(FeedError::cosmos("decode event"))?))
            }
            Err(e) if e.status().is_not_found() => Ok(None),
            Err(e) => Err(FeedError::Cosmos { operation: "read event", source: e }),
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
