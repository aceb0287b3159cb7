//! The read use case: a page of a feed for a caller. Every query endpoint
//! (and anything else that needs authorized pages, such as push delivery)
//! calls [`FeedReader::read`]; it knows nothing of HTTP.
//!
//! Invariants it keeps:
//! - **Fail closed.** Every event of a page is authorized by the PDP (one
//!   multi-request per batch scanned) unless the query holds a capability
//!   that grants it already; a PDP failure is an error, never a page.
//! - **Filled pages.** A page holds up to `size` permitted events: while the
//!   PDP denies, it reads on in doubling batches, within a scan budget of
//!   `size` x `scan_budget_factor` events (at least 100).
//! - **`next` past everything scanned**, permitted or not, so a consumer
//!   never rescans and never misses.
//! - **Hidden is unknown.** An `after` event id that the reader may not see
//!   is treated as an id the feed does not hold (the read starts at the
//!   beginning), so a reader cannot probe for other parties' event ids.
//! - **Long-polling only at the head.** An empty page that reached the end
//!   of the feed waits up to `wait` for an append (in process at once,
//!   across instances by the feed store's poll); one that ran out of scan
//!   budget answers at once. Waiters are bounded and released when the
//!   request goes away or the service shuts down.

mod waiters;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

pub use waiters::{NoSlot, Waiters};

use crate::authz::{Action, Authorizer, Caller, PdpError};
use crate::domain::query::{After, MAX_SIZE, PartyParam};
use crate::domain::{FeedId, Filters};
use crate::feeds::{FeedStore, StoreError};
use crate::register::{PartyRef, PartyRegister, RegisterError};

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A position in the feed (`0`: the beginning).
    Position(u64),
    /// Just after this event (Altinn semantics: an unknown id reads from the
    /// beginning).
    AfterEvent(String),
    /// At the first event registered at or after this time (fixed-width UTC).
    Time(String),
}

/// Where a page starts, how many events it holds, how long it may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    pub start: Start,
    pub size: usize,
    pub wait: Duration,
}

impl Start {
    /// From the validated query parameters: `after` wins over `from`;
    /// neither means the beginning. A cursor's position is given by the
    /// caller, who opened it.
    pub fn new(after: Option<After>, from: Option<String>, cursor: impl FnOnce(&str) -> Option<u64>) -> Option<Self> {
        Some(match (after, from) {
            (Some(After::Beginning), _) => Start::Position(0),
            (Some(After::Cursor(c)), _) => Start::Position(cursor(&c)?),
            (Some(After::EventId(id)), _) => Start::AfterEvent(id),
            (None, Some(from)) => Start::Time(from),
            (None, None) => Start::Position(0),
        })
    }
}

/// One feed read on behalf of a caller.
#[derive(Debug, Clone)]
pub struct FeedQuery<'a> {
    pub feed: FeedId,
    pub filters: Filters,
    pub paging: Paging,
    /// Who the PDP decides for; `None` when the request holds a capability
    /// (an instance access key) that already grants the whole query.
    pub caller: Option<Caller<'a>>,
    pub action: Action,
    /// Whose share of long-polling slots a wait takes (the caller, or the
    /// capability).
    pub holder: String,
    /// May use the page of the same read that another reader began after
    /// every append this one was told of (`feeds/shared_reads.rs`):
    /// deliverers, which read when woken. A request's first reads never do:
    /// it must see every publish that returned before it, on any instance
    /// (a waiting request shares once an append has woken it).
    pub shared: bool,
}

/// A page: the permitted events in feed order, their positions, and the
/// position after the last event scanned.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub events: Vec<Value>,
    pub positions: Vec<u64>,
    pub next: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the feed")]
    Storage(#[from] StoreError),
    #[error("authorizing the page")]
    Authorization(#[source] PdpError),
    #[error("no party has that organisation or identity number")]
    UnknownParty,
    #[error("Register refused the lookup")]
    PartyRefused(#[source] RegisterError),
    #[error("looking up the party")]
    Register(#[source] RegisterError),
    #[error("too many waiting requests")]
    TooManyWaiters(#[from] NoSlot),
}

/// Settings of the read use case.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// A page scans at most `size` x this many events (at least 100).
    pub scan_budget_factor: u64,
}

/// Event times come from the clocks of several instances: where a `from`
/// query starts, allow events registered this much out of order.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

pub struct FeedReader {
    feeds: FeedStore,
    pdp: Arc<dyn Authorizer>,
    register: Arc<dyn PartyRegister>,
    limits: ReadLimits,
    waiters: Arc<Waiters>,
    shutdown: watch::Receiver<bool>,
}

impl FeedReader {
    pub fn new(
        feeds: FeedStore,
        pdp: Arc<dyn Authorizer>,
        register: Arc<dyn PartyRegister>,
        limits: ReadLimits,
        waiters: Arc<Waiters>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self { feeds, pdp, register, limits, waiters, shutdown }
    }

    pub fn waiters(&self) -> &Arc<Waiters> {
        &self.waiters
    }

    /// The party a party query is about (Register resolves organisation and
    /// identity numbers).
    pub async fn party(&self, party: &PartyParam) -> Result<u64, ReadError> {
        let reference = match party {
            PartyParam::Party(id) => return Ok(*id),
            PartyParam::Unit(n) => PartyRef::OrgNo(n.clone()),
            PartyParam::Person(n) => PartyRef::Ssn(n.clone()),
        };
        self.register.party_id(&reference).await.map_err(|e| match e {
            RegisterError::NotFound => ReadError::UnknownParty,
            RegisterError::Refused(_) => ReadError::PartyRefused(e),
            other => ReadError::Register(other),
        })
    }

    /// Answers a query: a filled page at once, or, when the page is empty at
    /// the head of the feed and the caller asked to wait, the first page with
    /// permitted events that arrive within `wait` (an empty page with `next`
    /// when none do).
    pub async fn read(&self, q: FeedQuery<'_>) -> Result<Page, ReadError> {
        let start =
            visible_position(&self.feeds, self.pdp.as_ref(), &q.feed, &q.paging.start, q.caller, q.action, &q.filters)
                .await?
                .unwrap_or(0);
        let (events, next, at_end) = self.fill(&q, start, q.shared).await?;
        // Wait only at the end of the feed: an empty page that ran out of scan
        // budget answers at once, so the consumer moves on with `next`.
        if !events.is_empty() || q.paging.wait.is_zero() || !at_end {
            return Ok(page_of(events, next));
        }
        let _slot = self.waiters.hold(&q.holder)?;
        let mut changes = self.feeds.watch_appends(&q.feed);
        let mut shutdown = self.shutdown.clone();
        let deadline = tokio::time::Instant::now() + q.paging.wait;
        let mut pos = next;
        let mut woken = false;
        loop {
            // Read again after subscribing, so an append in between is not
            // missed. Only permitted events answer a waiting request: events
            // the caller may not see are scanned past (within the wait), so
            // that a wait tells nothing of them.
            let (events, next, at_end) = self.fill(&q, pos, q.shared || woken).await?;
            pos = next;
            if !events.is_empty() {
                return Ok(page_of(events, pos));
            }
            if tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
                break;
            }
            if !at_end {
                continue;
            }
            let _parked = self.waiters.park();
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break } else { woken = true },
                () = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        Ok(page_of(Vec::new(), pos))
    }

    /// Fills a page from `start`: read, authorize the batch, keep the
    /// permitted, continue until `size` are kept, the feed ends, or the scan
    /// budget is spent. Returns the events, the position after the last
    /// event scanned, and whether the scan reached the end of the feed.
    async fn fill(
        &self,
        q: &FeedQuery<'_>,
        start: u64,
        shared: bool,
    ) -> Result<(Vec<(u64, Value)>, u64, bool), ReadError> {
        let size = q.paging.size;
        let budget = (size as u64).saturating_mul(self.limits.scan_budget_factor).max(100);
        let mut kept = Vec::with_capacity(size);
        let mut pos = start;
        // How many events to read next: the first read asks for a page's worth;
        // while the PDP denies, each further read asks for twice as many, so a
        // mostly denied feed costs a few PDP requests per page, not one per event.
        let mut batch = size;
        // Positions scanned so far (the unused numbers of sealed segments
        // passed over are not: `ReadPage::scanned`).
        let mut spent = 0;
        loop {
            let page = self.feeds.read(&q.feed, pos, &q.filters, batch, budget - spent, shared).await?;
            spent += page.scanned(pos).min(budget - spent);
            metrics::histogram!("query_round_trips_per_read").record(f64::from(page.round_trips));
            let mut next = page.next;
            if !page.events.is_empty() {
                let records: Vec<_> = page.events.iter().map(|e| &e.record).collect();
                let permitted = match q.caller {
                    Some(caller) => {
                        self.pdp.authorize(caller, q.action, &records).await.map_err(ReadError::Authorization)?
                    }
                    None => vec![true; records.len()],
                };
                let denied = permitted.iter().filter(|p| !**p).count();
                metrics::counter!("query_events_denied_total").increment(denied as u64);
                for (event, ok) in page.events.into_iter().zip(permitted) {
                    if !ok || !belongs_to(&q.feed, &event.record) {
                        continue;
                    }
                    if kept.len() == size {
                        // Read past a full page: the next page starts at this
                        // permitted event; the denied ones before it are done.
                        next = event.seq;
                        break;
                    }
                    kept.push((event.seq, event.record.cloud_event));
                }
                if denied > 0 {
                    batch = (batch * 2).min(MAX_SIZE);
                }
            }
            // No progress without reaching the end cannot happen with a sound
            // feed; stop rather than spin.
            let stuck = next <= pos && !page.at_end;
            pos = next;
            if kept.len() >= size || page.at_end || spent >= budget || stuck {
                return Ok((kept, pos, page.at_end));
            }
        }
    }
}

fn page_of(kept: Vec<(u64, Value)>, next: u64) -> Page {
    let (positions, events) = kept.into_iter().unzip();
    Page { events, positions, next }
}

/// Whether an event may be shown in `feed`: an app event in a party's feed
/// only when its instance is that party's (the PDP decided about the
/// instance's party; events stored before publishing checked that the two
/// agree must not show one party's event in another's feed).
fn belongs_to(feed: &FeedId, record: &crate::domain::EventRecord) -> bool {
    let (FeedId::Subject(subject), Some(instance)) = (feed, &record.resourceinstance) else { return true };
    match (subject.strip_prefix("/party/"), instance.split_once('/')) {
        (Some(party), Some((instance_party, _))) if record.resource.starts_with("urn:altinn:resource:app_") => {
            party == instance_party
        }
        _ => true,
    }
}

/// Where `start` is in `feed` for a reader. An event id counts only when
/// the reader may see that event: the PDP permits it to `caller` (for
/// `action`), or, for a reader with a capability instead (`caller` is
/// `None`), it lies within what the capability grants (`grant`'s instance
/// and resource). Otherwise it is `None`, as for an id the feed does not
/// hold, so that no answer tells a hidden event from an unknown one.
pub async fn visible_position(
    feeds: &FeedStore,
    pdp: &dyn Authorizer,
    feed: &FeedId,
    start: &Start,
    caller: Option<Caller<'_>>,
    action: Action,
    grant: &Filters,
) -> Result<Option<u64>, ReadError> {
    let Start::AfterEvent(id) = start else { return Ok(position(feeds, feed, start).await?) };
    let Some(after) = feeds.locate(feed, id).await? else { return Ok(None) };
    let at = after - 1;
    let read = feeds.read(feed, at, &Filters::default(), 1, 1, false).await?;
    let Some(event) = read.events.into_iter().find(|e| e.seq == at) else { return Ok(None) };
    let visible = belongs_to(feed, &event.record)
        && match caller {
            Some(caller) => pdp
                .authorize(caller, action, &[&event.record])
                .await
                .map_err(ReadError::Authorization)?
                .first()
                .copied()
                .unwrap_or(false),
            None => {
                grant.resource_instance.as_ref().is_none_or(|i| event.record.resourceinstance.as_ref() == Some(i))
                    && grant.resource.as_ref().is_none_or(|r| &event.record.resource == r)
            }
        };
    Ok(visible.then_some(after))
}

/// Where `start` is in `feed`: `None` for an event id the feed does not
/// hold (a read starts at the beginning then, as Altinn's does). Says
/// nothing of who may see the event: readers use [`visible_position`].
async fn position(feeds: &FeedStore, feed: &FeedId, start: &Start) -> Result<Option<u64>, StoreError> {
    Ok(match start {
        Start::Position(p) => Some(*p),
        Start::AfterEvent(id) => feeds.locate(feed, id).await?,
        Start::Time(from) => Some(feeds.position_at_time(feed, &search_time(from)).await?),
    })
}

fn search_time(from: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(from, &Rfc3339).ok().and_then(|t| t.checked_sub(CLOCK_SKEW)) {
        Some(t) => crate::domain::cloud_event::format_time(t),
        // Starting at the beginning is always correct, only slower.
        None => String::new(),
    }
}
