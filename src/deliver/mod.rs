//! Push delivery: every validated subscription's events are POSTed to its
//! endpoint, one CloudEvent per request, signed, in feed order, at least
//! once, and never dropped within the feeds' retention. A background worker
//! (started by `lib.rs` with the shutdown signal) of two parts: the
//! coordinator (`coordinator.rs`: which instance delivers which
//! subscriptions, through bucket leases) and one deliverer per subscription
//! held (`deliverer.rs`: the read-and-push loop, with `deliverer/push.rs`,
//! a page's pushes, and `deliverer/checkpoint.rs`, what it stores). What
//! they decide without I/O is apart, and tested without a store: the retry
//! schedule and the disable (`retry.rs`), the attempts kept
//! (`history.rs`), a push's body and `webhook-id` (`message.rs`), and a
//! subscription's filters as typed matches (`filters.rs`; the store turns
//! them into its query).
//!
//! Invariants it keeps (each part says how):
//! - **In order, from the feed.** A subscription follows one feed (its
//!   subject's when it has a subject filter, else its resource's) from a
//!   checkpoint, through the same authorized read as the query endpoints
//!   (`read::FeedReader`: the PDP decides for the subscription's consumer,
//!   `read` for app events, `subscribe` for generic ones). A failing event
//!   holds back the ones after it, in that subscription only.
//! - **Never dropped.** The checkpoint moves only past events that were
//!   answered 2xx (or not permitted, or filtered away). A failing push is
//!   retried on `delivery.retry_schedule_seconds` (Altinn's); when that runs
//!   out the subscription is `disabled` with the reason, and `enable`
//!   resumes it from its checkpoint. Checkpoints are stored in batches (at
//!   most `flush_ms` apart, and at every change of status): a crash can
//!   repeat the last few pushes, never skip one.
//! - **One deliverer per subscription across instances.** Subscriptions are
//!   divided into buckets (`id % buckets`); an instance delivers the
//!   subscriptions of the buckets it holds a lease on (renewed every third
//!   of `lease_seconds`; an instance that dies loses them when they expire,
//!   and another takes them; one that stops releases them). Instances share
//!   the buckets fairly by the count of live instances.
//! - **Woken by appends, not polling.** A deliverer waits on its feed:
//!   appends through this instance wake it at once, appends elsewhere
//!   through the change feed, which each instance follows once. Idle
//!   subscriptions cost no Cosmos request each.
//! - **Bounded, and fair between consumers**: a push takes its consumer's,
//!   its endpoint host's and the instance's push slots
//!   (`webhooks/slots.rs`: `max_pushes_per_consumer`,
//!   `max_pushes_per_host`, `max_concurrent_pushes`), so endpoints that never
//!   answer hold up only their own consumer's pushes; one page (`page_size`
//!   events) in memory per deliverer.
//! - **Tells a consumer nothing of what it may not see.** A push's
//!   `webhook-id` names the event, not its position (`message.rs`). How far
//!   behind a subscription is shows as the time of the oldest permitted
//!   event not yet delivered (`oldest_pending`), never as a count of the
//!   feed's events. Metrics carry no subscription label: lag is reported per
//!   instance (the largest, and how many subscriptions lag).
//! - **One clock.** The time of day (retries due, leases and presences,
//!   signing secrets, attempts and how long they are kept) is read only from
//!   the feed store's [`Clock`](crate::feeds::Clock), which tests move (a
//!   move wakes a deliverer waiting for a retry, so that it is due at
//!   once); only waits and intervals (flushes, hand-over) are measured with
//!   monotonic timers.

mod coordinator;
mod deliverer;
mod filters;
mod history;
mod message;
mod retry;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

pub use self::message::{body_for, message_id};
use crate::feeds::FeedStore;
use crate::feeds::coordination::LeaseStore;
use crate::feeds::subscriptions::DeliveryStore;
use crate::feeds::subscriptions::SubscriptionStore;
use crate::read::FeedReader;
use crate::webhooks::Sender;

/// How often the per-instance lag gauges are computed.
const LAG_REPORT: Duration = Duration::from_secs(5);

/// Settings of delivery.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub buckets: u64,
    pub lease: Duration,
    /// Waits after the 1st, 2nd, ... failed push of an event.
    pub retry: Vec<Duration>,
    pub page_size: usize,
    /// Checkpoints are stored at most this far apart while delivering.
    pub flush_every: Duration,
}

/// What a deliverer is told by the coordinator, the change feed and this
/// instance's own changes.
#[derive(Default)]
struct Signals {
    wake: Notify,
    /// Its subscription changed: read it again.
    subscription: AtomicBool,
    /// Its delivery state was changed by the owner (enable, replay).
    state: AtomicBool,
    /// The ETag of the subscription as the deliverer last read it (the
    /// change feed's echo of a change it already knows wakes nothing).
    known: Mutex<Option<String>>,
}

/// One running deliverer, as the coordinator sees it.
/// How far behind its feed a subscription whose endpoint answers is, as
/// seen after its last full page (zero at the feed's end, and while its
/// endpoint fails: that is the endpoint's lag, not delivery's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Lag {
    /// Feed positions between its position and the feed's end (an upper
    /// bound of the events: a hot feed's cut segments leave numbers unused).
    pub events: u64,
    /// The age of the newest event it was pushed (the oldest it is yet to
    /// get is younger, but not by much while it is behind).
    pub seconds: u64,
}

struct Running {
    signals: Arc<Signals>,
    stop: watch::Sender<bool>,
}

impl Running {
    fn changed(&self, subscription: bool, state: bool) {
        if subscription {
            self.signals.subscription.store(true, Ordering::SeqCst);
        }
        if state {
            self.signals.state.store(true, Ordering::SeqCst);
        }
        self.signals.wake.notify_one();
    }
}

/// The push worker of one instance: its coordinator's state and what its
/// deliverers share.
pub struct Delivery {
    feeds: FeedStore,
    subscriptions: SubscriptionStore,
    states: DeliveryStore,
    leases: LeaseStore,
    reader: Arc<FeedReader>,
    sender: Arc<Sender>,
    settings: DeliverySettings,
    instance: String,
    running: Mutex<HashMap<u64, Running>>,
    /// Events each running deliverer's subscription was last seen behind
    /// its feed (reported as per-instance gauges, never per subscription).
    lags: Mutex<HashMap<u64, Lag>>,
    /// Buckets this instance holds a live lease on, and until when.
    held: Mutex<HashMap<u64, u64>>,
    /// The ETag of each state this instance wrote last (its own change-feed
    /// echo wakes nobody).
    written: Mutex<HashMap<u64, String>>,
    /// Subscriptions may have come or gone: start or stop deliverers.
    wake_start: Notify,
    /// Another instance took or released a bucket: share them again.
    wake_balance: Notify,
}

impl Delivery {
    pub fn new(feeds: FeedStore, reader: Arc<FeedReader>, sender: Arc<Sender>, settings: DeliverySettings) -> Self {
        Self {
            subscriptions: SubscriptionStore::new(&feeds),
            states: DeliveryStore::new(&feeds),
            leases: LeaseStore::new(&feeds),
            feeds,
            reader,
            sender,
            settings,
            instance: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            running: Mutex::default(),
            lags: Mutex::default(),
            held: Mutex::default(),
            written: Mutex::default(),
            wake_start: Notify::new(),
            wake_balance: Notify::new(),
        }
    }

    /// Follows the change feed and coordinates deliverers until `stop`; then
    /// stops them, waits until each has finished its push and stored its
    /// checkpoint, and only then lets the buckets go (so that the next
    /// holder starts from there). The deliverers are tasks of this future:
    /// dropping it (a crash, or a grace period that ran out) ends them with
    /// it, and their buckets pass on when the leases expire.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let report = async {
            loop {
                tokio::time::sleep(LAG_REPORT).await;
                self.report_lags();
            }
        };
        tokio::select! {
            () = self.coordinate(stop, &mut tasks) => {}
            () = report => {}
        }
        let stopping: Vec<Running> = self.running.lock().expect("deliverers lock").drain().map(|(_, r)| r).collect();
        for running in &stopping {
            let _ = running.stop.send(true);
        }
        while tasks.join_next().await.is_some() {}
        self.release_all().await;
        self.leases.absent(&self.instance).await;
    }

    /// Unix milliseconds by the store's clock: every time of day delivery
    /// reads.
    fn now_ms(&self) -> u64 {
        self.feeds.clock().now_ms()
    }

    /// The lag gauges of this instance: the most events any subscription it
    /// delivers is behind its feed, and how many are behind at all.
    fn report_lags(&self) {
        let lags = self.lags.lock().expect("lags lock");
        let max_events = lags.values().map(|l| l.events).max().unwrap_or(0);
        let max_seconds = lags.values().map(|l| l.seconds).max().unwrap_or(0);
        metrics::gauge!("delivery_lag_events_max").set(max_events as f64);
        metrics::gauge!("delivery_lag_seconds_max").set(max_seconds as f64);
        metrics::gauge!("delivery_subscriptions_lagging").set(lags.values().filter(|l| l.events > 0).count() as f64);
    }

    /// The running deliverers' ids (for tests and the coordinator's metrics).
    pub fn running(&self) -> HashSet<u64> {
        self.running.lock().expect("deliverers lock").keys().copied().collect()
    }
}
