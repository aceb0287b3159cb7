//! Push delivery: every validated subscription's events are POSTed to its
//! endpoint, one CloudEvent per request, signed, in feed order, at least
//! once, and never dropped within the feeds' retention. A background worker
//! (started by `lib.rs` with the shutdown signal).
//!
//! Invariants it keeps:
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
//! - **One clock.** The time of day (retries due, leases and presences,
//!   signing secrets, attempts and how long they are kept) is read only
//!   from the feed store's [`Clock`](crate::feeds::Clock), which tests
//!   move; only waits and intervals (flushes, hand-over) are measured with
//!   monotonic timers.
//! - **Tells a consumer nothing of what it may not see.** A push's
//!   `webhook-id` is `{subscription}-{generation}-{digest of the event's
//!   source and id}`: the same for every retry of an event, new for each
//!   replay, and no count of the events between two pushes. How far behind
//!   a subscription is shows as the time of the oldest permitted event not
//!   yet delivered (`oldest_pending`), never as a count of the feed's
//!   events. Metrics carry no subscription label: lag is reported per
//!   instance (the largest, and how many subscriptions lag).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use url::Url;

use crate::authz::{Action, Caller};
use crate::domain::subscription::{DeliveryAttempt, DeliveryState, DeliveryStatus, Subscription, ValidationStatus};
use crate::domain::{FeedId, FieldMatch, Filters};
use crate::feeds::FeedStore;
use crate::feeds::changes::Change;
use crate::feeds::delivery::{BucketLease, DeliveryStore};
use crate::feeds::subscriptions::{Changed, SubscriptionStore};
use crate::read::{FeedQuery, FeedReader, Page, Paging, ReadError, Start};
use crate::webhooks::{PushOutcome, Sender};

/// How often the per-instance lag gauges are computed.
const LAG_REPORT: Duration = Duration::from_secs(5);

/// How many attempts a delivery state keeps, and for how long.
const KEPT_ATTEMPTS: usize = 100;
const KEEP_ATTEMPTS_MS: u64 = 7 * 24 * 3600 * 1000;

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

pub struct Delivery {
    feeds: FeedStore,
    subscriptions: SubscriptionStore,
    store: DeliveryStore,
    reader: Arc<FeedReader>,
    sender: Arc<Sender>,
    settings: DeliverySettings,
    instance: String,
    running: Mutex<HashMap<u64, Running>>,
    /// Events each running deliverer's subscription was last seen behind
    /// its feed (reported as per-instance gauges, never per subscription).
    lags: Mutex<HashMap<u64, u64>>,
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
            store: DeliveryStore::new(&feeds),
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
        self.store.absent(&self.instance).await;
    }

    /// What the instance's change-feed follower reports (see
    /// [`crate::feeds::changes::follow`]), while this instance delivers.
    pub fn on_change(&self, change: Change) {
        match change {
            Change::Appended(_) => {} // the store woke the feed's watchers
            Change::Subscription(id, etag) => match self.running.lock().expect("deliverers lock").get(&id) {
                // Unless it is the change the deliverer already read.
                Some(r) if r.signals.known.lock().expect("known lock").as_deref() != Some(etag.as_str()) => {
                    r.changed(true, false);
                }
                Some(_) => {}
                // A new subscription of a bucket this instance holds.
                None if self.holds(id) => self.wake_start.notify_one(),
                None => {}
            },
            Change::Delivery(id, etag) => {
                let own = self.written.lock().expect("written lock").get(&id) == Some(&etag);
                if !own && let Some(r) = self.running.lock().expect("deliverers lock").get(&id) {
                    r.changed(false, true);
                }
            }
            // Another instance took or released a bucket (this one's own
            // renewals wake nobody).
            Change::Lease { owner } if owner != self.instance => self.wake_balance.notify_one(),
            Change::Lease { .. } => {}
            Change::Missed => self.resync(),
        }
    }

    /// Changes may have been missed: every deliverer reads its subscription,
    /// state and feed again.
    fn resync(&self) {
        for running in self.running.lock().expect("deliverers lock").values() {
            running.changed(true, true);
        }
        self.wake_balance.notify_one();
    }

    /// Tells the deliverer of subscription `id`, when it runs here, that
    /// its subscription or state changed.
    pub fn changed(&self, id: u64) {
        match self.running.lock().expect("deliverers lock").get(&id) {
            Some(r) => r.changed(true, true),
            None => self.wake_start.notify_one(),
        }
    }

    /// Unix milliseconds by the store's clock: every time of day delivery
    /// reads.
    fn now_ms(&self) -> u64 {
        self.feeds.clock().now_ms()
    }

    fn bucket_of(&self, id: u64) -> u64 {
        id % self.settings.buckets.max(1)
    }

    fn holds(&self, id: u64) -> bool {
        let bucket = self.bucket_of(id);
        let now = self.now_ms();
        self.held.lock().expect("held lock").get(&bucket).is_some_and(|until| *until > now)
    }

    /// Every third of the lease (and when another instance takes or lets
    /// go of a bucket): renew and share the buckets. Then, and when a
    /// subscription comes or goes: run the deliverers of the held buckets.
    async fn coordinate(self: &Arc<Self>, mut stop: watch::Receiver<bool>, tasks: &mut JoinSet<()>) {
        let mut leases: HashMap<u64, BucketLease> = HashMap::new();
        let mut next_balance = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_balance {
                // A failure is tried again soon (the leases this instance
                // holds last a whole lease; a failed round loses none).
                let again = match self.balance(&mut leases).await {
                    // Renew every third of the lease; look again as soon as
                    // a bucket this instance could take expires (a dead
                    // holder's buckets pass on one lease after its last
                    // renewal, not a balance round later).
                    Ok(Some(expires_ms)) => (self.settings.lease / 3)
                        .min(Duration::from_millis(expires_ms.saturating_sub(self.now_ms()) + 50)),
                    Ok(None) => self.settings.lease / 3,
                    Err(e) => {
                        tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "delivery coordination failed");
                        (self.settings.lease / 10).min(Duration::from_secs(1))
                    }
                };
                next_balance = tokio::time::Instant::now() + again;
            }
            // Reap the deliverers that ended.
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.start_and_stop(tasks).await {
                tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "listing subscriptions failed");
            }
            tokio::select! {
                () = tokio::time::sleep_until(next_balance) => {}
                () = self.wake_balance.notified() => next_balance = tokio::time::Instant::now(),
                () = self.wake_start.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Renews this instance's buckets, takes free or expired ones up to its
    /// fair share, and lets go of what is beyond it. Returns when the first
    /// lease of another instance expires (a live holder renews it long
    /// before; one that expires tells of a death, and of a new share), or a
    /// presence: the other instance's, which may outlive its leases.
    async fn balance(&self, mine: &mut HashMap<u64, BucketLease>) -> Result<Option<u64>, crate::feeds::FeedError> {
        let now = self.now_ms();
        let lease_ms = u64::try_from(self.settings.lease.as_millis()).unwrap_or(u64::MAX);
        self.store.present(&self.instance, now + lease_ms).await?;
        let presences = self.store.presences(now).await?;
        let instances = presences.len().max(1) as u64;
        let share = self.settings.buckets.div_ceil(instances) as usize;
        let all: HashMap<u64, BucketLease> = self.store.leases().await?.into_iter().map(|l| (l.bucket, l)).collect();
        mine.clear();
        let mut free = Vec::new();
        for bucket in 0..self.settings.buckets {
            match all.get(&bucket) {
                Some(l) if l.owner == self.instance && l.expires_ms > now => {
                    mine.insert(bucket, l.clone());
                }
                Some(l) if l.expires_ms > now => {}
                other => free.push((bucket, other.cloned())),
            }
        }
        // Beyond the share: hand the highest buckets over.
        let mut owned: Vec<u64> = mine.keys().copied().collect();
        owned.sort_unstable();
        for bucket in owned.iter().skip(share) {
            if let Some(lease) = mine.remove(bucket) {
                self.hand_over(*bucket, &lease).await?;
            }
        }
        // Renew the rest.
        for (bucket, lease) in mine.clone() {
            match self.store.take(bucket, Some(&lease), &self.instance, now + lease_ms).await? {
                Some(renewed) => {
                    mine.insert(bucket, renewed);
                }
                None => {
                    mine.remove(&bucket);
                }
            }
        }
        // Take free ones, starting at a place of this instance's own, so that
        // instances do not all race for the same bucket.
        let start = (self.instance.bytes().map(u64::from).sum::<u64>() as usize) % free.len().max(1);
        free.rotate_left(start);
        for (bucket, current) in free {
            if mine.len() >= share {
                break;
            }
            if let Some(taken) = self.store.take(bucket, current.as_ref(), &self.instance, now + lease_ms).await? {
                mine.insert(bucket, taken);
            }
        }
        *self.held.lock().expect("held lock") = mine.iter().map(|(b, l)| (*b, l.expires_ms)).collect();
        metrics::gauge!("delivery_buckets_held").set(mine.len() as f64);
        // A foreign lease or presence that expires changes what this
        // instance should hold (its own presence was just renewed, a whole
        // lease ahead; a dead instance's may outlive its leases).
        let own_presence = now + lease_ms;
        let next_expiry = all
            .values()
            .filter(|l| l.owner != self.instance && l.expires_ms > now)
            .map(|l| l.expires_ms)
            .chain(presences.iter().copied().filter(|e| *e < own_presence))
            .min();
        Ok(next_expiry)
    }

    /// Lets go of `bucket`: its deliverers stop and store their checkpoints
    /// first (while this instance still holds the lease), so the next holder
    /// starts where they ended and repeats nothing.
    async fn hand_over(&self, bucket: u64, lease: &BucketLease) -> Result<(), crate::feeds::FeedError> {
        self.held.lock().expect("held lock").remove(&bucket);
        let stopping: Vec<u64> = {
            let running = self.running.lock().expect("deliverers lock");
            running
                .iter()
                .filter(|(id, _)| self.bucket_of(**id) == bucket)
                .map(|(id, r)| {
                    let _ = r.stop.send(true);
                    *id
                })
                .collect()
        };
        let deadline = Instant::now() + self.settings.lease / 3;
        while Instant::now() < deadline {
            let busy = {
                let running = self.running.lock().expect("deliverers lock");
                stopping.iter().any(|id| running.get(id).is_some_and(|r| !r.stop.is_closed()))
            };
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.store.take(bucket, Some(lease), &self.instance, 0).await?;
        Ok(())
    }

    async fn release_all(&self) {
        let Ok(leases) = self.store.leases().await else { return };
        for lease in leases.iter().filter(|l| l.owner == self.instance) {
            let _ = self.store.take(lease.bucket, Some(lease), &self.instance, 0).await;
        }
        self.held.lock().expect("held lock").clear();
    }

    /// Runs a deliverer for each subscription of the held buckets, and no other.
    async fn start_and_stop(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> Result<(), crate::feeds::FeedError> {
        let wanted: HashSet<u64> = self.subscriptions.ids().await?.into_iter().filter(|id| self.holds(*id)).collect();
        let mut running = self.running.lock().expect("deliverers lock");
        running.retain(|id, r| {
            let keep = wanted.contains(id) && !r.stop.is_closed();
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
        for id in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let signals = Arc::new(Signals::default());
            let (stop, stopped) = watch::channel(false);
            running.insert(id, Running { signals: signals.clone(), stop });
            tasks.spawn(self.clone().deliver(id, signals, stopped));
        }
        metrics::gauge!("delivery_subscriptions_running").set(running.len() as f64);
        Ok(())
    }

    /// The lag gauges of this instance: the most events any subscription it
    /// delivers is behind its feed, and how many are behind at all.
    fn report_lags(&self) {
        let lags = self.lags.lock().expect("lags lock");
        metrics::gauge!("delivery_lag_events_max").set(lags.values().copied().max().unwrap_or(0) as f64);
        metrics::gauge!("delivery_subscriptions_lagging").set(lags.values().filter(|l| **l > 0).count() as f64);
    }

    /// The deliverer of one subscription.
    async fn deliver(self: Arc<Self>, id: u64, signals: Arc<Signals>, stop: watch::Receiver<bool>) {
        let mut deliverer = match Deliverer::start(self.clone(), id, signals, stop).await {
            Some(d) => d,
            None => return,
        };
        deliverer.run().await;
        deliverer.flush().await;
        self.lags.lock().expect("lags lock").remove(&id);
        let mut running = self.running.lock().expect("deliverers lock");
        if running.get(&id).is_some_and(|r| r.stop.is_closed() || *r.stop.borrow()) {
            running.remove(&id);
        }
    }
}

/// The `webhook-id` of a push of `event`: the subscription, the generation
/// (enable and replay start a new one), and a digest of the event's source
/// and id. The same for every retry of the event; not a position, so two
/// ids say nothing of the events between them.
pub fn message_id(subscription: u64, generation: u64, event: &Value) -> String {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default();
    let mut digest = Sha256::new();
    digest.update(field("source").as_bytes());
    digest.update([0]);
    digest.update(field("id").as_bytes());
    let hex: String = digest.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{subscription}-{generation}-{hex}")
}

/// The body of a push: the CloudEvent; Slack's incoming webhooks get it
/// as text, as Altinn sends it there.
pub fn body_for(end_point: &Url, event: &Value) -> Vec<u8> {
    let body = if end_point.host_str() == Some("hooks.slack.com") {
        json!({ "text": event.to_string() })
    } else {
        event.clone()
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// What one deliverer works with.
struct Deliverer {
    delivery: Arc<Delivery>,
    subscription: Subscription,
    feed: FeedId,
    filters: Filters,
    signals: Arc<Signals>,
    stop: watch::Receiver<bool>,
    appends: watch::Receiver<u64>,
    state: DeliveryState,
    etag: String,
    /// Delivered (or passed over) up to here, possibly not stored yet.
    position: u64,
    /// The `time` of the event being pushed or retried, while it is.
    pending: Option<String>,
    last_flush: Instant,
    /// The subscription was deleted.
    gone: bool,
    /// Pushes or a checkpoint not stored yet.
    unsaved: bool,
    /// The next page, read while this one is pushed: where it starts.
    prefetched: Option<(u64, tokio::task::JoinHandle<Result<Page, ReadError>>)>,
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        self.drop_prefetched();
    }
}

/// Why a deliverer's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woke {
    /// An append to its feed, a signal, or the stop.
    Event,
    /// The time it waited for passed.
    Timeout,
}

/// The filters of a subscription as a read of its feed applies them:
/// Altinn's matching as typed matches (the type equal, the source a prefix,
/// both ignoring case; the resource when the feed is a subject's). The
/// store turns them into its query.
fn filters_of(subscription: &Subscription) -> Filters {
    let f = &subscription.filters;
    let types = f.type_filter.iter().map(|t| FieldMatch::TypeEquals(t.clone()));
    let sources = f.source_filter.iter().map(|s| FieldMatch::SourceStartsWith(s.clone()));
    Filters {
        matches: types.chain(sources).collect(),
        resource: f.subject_filter.as_ref().map(|_| f.resource_filter.clone()),
        // Imported from Altinn: what Altinn pushed is not pushed again.
        imported_after: subscription.imported.as_ref().and_then(|i| i.pushed_through),
        ..Filters::default()
    }
}

impl Deliverer {
    /// Reads the subscription (`None` when it is gone, or on stop) and its
    /// delivery state (made when there is none yet), retrying failures.
    async fn start(
        delivery: Arc<Delivery>,
        id: u64,
        signals: Arc<Signals>,
        mut stop: watch::Receiver<bool>,
    ) -> Option<Self> {
        let mut subscription: Option<Subscription> = None;
        let (subscription, state, etag) = loop {
            let read = match &subscription {
                None => match delivery.subscriptions.get(id).await {
                    Ok(Some(stored)) => {
                        *signals.known.lock().expect("known lock") = Some(stored.etag().to_owned());
                        subscription = Some(stored.subscription);
                        Ok(())
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "reading a subscription failed");
                        Err(e)
                    }
                },
                Some(_) => Ok(()),
            };
            if let (Ok(()), Some(found)) = (read, &subscription) {
                match delivery.store.state_or(id, DeliveryState::starting_at(found.starts_at)).await {
                    Ok((state, etag)) => break (subscription.take().expect("read above"), state, etag),
                    Err(e) => {
                        tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "reading a delivery state failed")
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        };
        let feed = subscription.feed();
        let appends = delivery.feeds.watch_appends(&feed);
        Some(Self {
            filters: filters_of(&subscription),
            position: state.checkpoint,
            pending: state.oldest_pending.clone(),
            delivery,
            subscription,
            feed,
            signals,
            stop,
            appends,
            state,
            etag,
            last_flush: Instant::now(),
            gone: false,
            unsaved: false,
            prefetched: None,
        })
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow() || !self.delivery.holds(self.subscription.id)
    }

    /// Waits for an append to the feed, a signal, `until`, or the stop.
    async fn wait(&mut self, until: Option<Duration>) -> Woke {
        let limit = until.unwrap_or(Duration::from_secs(3600));
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = self.appends.changed() => Woke::Event,
            () = self.signals.wake.notified() => Woke::Event,
            () = tokio::time::sleep(limit) => Woke::Timeout,
            _ = stop.wait_for(|s| *s) => Woke::Event,
        }
    }

    /// Nothing to push: waits for the next thing to do, storing the
    /// checkpoint when `flush_every` has passed since it was last stored
    /// (so that a burst of events costs one write, not one per event).
    async fn idle(&mut self, until: Option<Duration>) {
        let started = Instant::now();
        let left = |until: Option<Duration>| until.map(|u| u.saturating_sub(started.elapsed()));
        loop {
            if !self.unsaved {
                self.wait(left(until)).await;
                return;
            }
            let since = self.last_flush.elapsed();
            if since >= self.delivery.settings.flush_every {
                self.flush().await;
                continue;
            }
            let flush_in = self.delivery.settings.flush_every - since;
            let wait = left(until).map_or(flush_in, |u| u.min(flush_in));
            if self.wait(Some(wait)).await == Woke::Event || left(until).is_some_and(|u| u.is_zero()) {
                return;
            }
        }
    }

    async fn run(&mut self) {
        let id = self.subscription.id;
        loop {
            if self.stopped() {
                return;
            }
            // The subscription as it is now (deleted, validated, re-keyed?)
            // and the owner's changes to its state: read when this instance
            // or the change feed said they changed. Never on a timer: an
            // idle subscription costs no request.
            if self.signals.subscription.swap(false, Ordering::SeqCst) {
                match self.delivery.subscriptions.get(id).await {
                    Ok(Some(current)) => {
                        *self.signals.known.lock().expect("known lock") = Some(current.etag().to_owned());
                        self.subscription = current.subscription;
                    }
                    Ok(None) => {
                        // Deleted: nothing more is pushed, nothing is kept.
                        self.gone = true;
                        let _ = self.delivery.store.remove(id).await;
                        return;
                    }
                    Err(_) => {
                        self.signals.subscription.store(true, Ordering::SeqCst);
                        self.wait(Some(Duration::from_secs(1))).await;
                        continue;
                    }
                }
                self.filters = filters_of(&self.subscription);
                // A page read with the old filters is not used.
                self.drop_prefetched();
            }
            if self.signals.state.swap(false, Ordering::SeqCst) && !self.adopt_owner_changes().await {
                self.signals.state.store(true, Ordering::SeqCst);
                self.wait(Some(Duration::from_secs(1))).await;
                continue;
            }
            // Imported from Altinn, it waits for the cut-over point: until
            // then Altinn pushes its events.
            let awaiting_cut_over = self.subscription.imported.as_ref().is_some_and(|i| i.pushed_through.is_none());
            if self.subscription.validation.status != ValidationStatus::Active
                || self.state.status == DeliveryStatus::Disabled
                || awaiting_cut_over
            {
                tracing::debug!(subscription = id, validation = ?self.subscription.validation.status,
                    delivery = ?self.state.status, "deliverer waits: not validated or disabled");
                self.flush().await;
                self.wait(None).await;
                continue;
            }
            if let Some(due) = self.state.next_retry_ms {
                let now = self.delivery.now_ms();
                if due > now {
                    self.flush().await;
                    self.wait(Some(Duration::from_millis(due - now))).await;
                    continue;
                }
            }
            // The page read while the last one was pushed, when it starts
            // here; else a read now.
            let read = match self.prefetched.take() {
                Some((from, task)) if from == self.position => match task.await {
                    Ok(read) => read,
                    Err(_) => self.read_page(self.position).await,
                },
                Some((_, task)) => {
                    task.abort();
                    self.read_page(self.position).await
                }
                None => self.read_page(self.position).await,
            };
            let page = match read {
                Ok(page) => {
                    tracing::debug!(
                        subscription = id,
                        from = self.position,
                        events = page.events.len(),
                        next = page.next,
                        "deliverer read"
                    );
                    page
                }
                Err(e) => {
                    // The PDP or the store is down: not the endpoint's
                    // failure; try again in a moment, nothing is counted.
                    if let ReadError::Authorization(_) = e {
                        metrics::counter!("delivery_pdp_unavailable_total").increment(1);
                    }
                    tracing::debug!(error = %e, subscription = id, "reading for delivery failed");
                    self.idle(Some(Duration::from_secs(2))).await;
                    continue;
                }
            };
            if page.events.is_empty() {
                if page.next != self.position {
                    // Past events that were filtered away or not permitted.
                    self.position = page.next;
                    self.unsaved = true;
                    continue;
                }
                // At the end of the feed.
                self.delivery.lags.lock().expect("lags lock").insert(id, 0);
                if self.pending.take().is_some() {
                    self.unsaved = true;
                }
                self.idle(None).await;
                continue;
            }
            let full = page.events.len() >= self.delivery.settings.page_size;
            if full {
                // More are likely: read the next page while these are pushed
                // (one push at a time keeps the order; the read need not wait).
                self.prefetched = Some((page.next, tokio::spawn(self.page_reader(page.next))));
            }
            let mut all_delivered = true;
            for (event, position) in page.events.iter().zip(&page.positions) {
                if self.stopped() {
                    return;
                }
                // Deleted, disabled or replayed meanwhile: read it again first.
                if self.signals.subscription.load(Ordering::SeqCst) || self.signals.state.load(Ordering::SeqCst) {
                    all_delivered = false;
                    break;
                }
                // The oldest event the consumer is yet to get, until it has it.
                self.pending = event.get("time").and_then(Value::as_str).map(str::to_owned);
                if !self.push(event, *position).await {
                    all_delivered = false;
                    break;
                }
            }
            if all_delivered && !full {
                // Caught up as far as this read went (a full page: more follow,
                // and the last one's time stands until the next is pushed).
                self.pending = None;
            }
            if all_delivered && self.position != page.next {
                self.position = page.next;
                self.unsaved = true;
            }
            if !all_delivered || self.last_flush.elapsed() >= self.delivery.settings.flush_every {
                self.flush().await;
                if full && all_delivered {
                    self.report_lag().await;
                }
            }
        }
    }

    /// A read of the feed from `from` for this subscription's consumer,
    /// through the same authorized read as the query endpoints.
    fn page_reader(&self, from: u64) -> impl Future<Output = Result<Page, ReadError>> + Send + 'static {
        let reader = self.delivery.reader.clone();
        let (feed, filters, subscription) = (self.feed.clone(), self.filters.clone(), self.subscription.clone());
        let action = if self.subscription.app { Action::Read } else { Action::Subscribe };
        let (size, holder) = (self.delivery.settings.page_size, format!("delivery:{}", self.subscription.id));
        async move {
            let query = FeedQuery {
                feed,
                filters,
                paging: Paging { start: Start::Position(from), size, wait: Duration::ZERO },
                caller: Some(Caller::of_subscription(&subscription)),
                action,
                holder,
                // Woken by an append (or at start): many deliverers of one
                // feed may share one read.
                shared: true,
            };
            reader.read(query).await
        }
    }

    fn drop_prefetched(&mut self) {
        if let Some((_, task)) = self.prefetched.take() {
            task.abort();
        }
    }

    async fn read_page(&self, from: u64) -> Result<Page, ReadError> {
        self.page_reader(from).await
    }

    /// Pushes one event; `true` when the endpoint answered 2xx.
    async fn push(&mut self, event: &Value, position: u64) -> bool {
        let message = message_id(self.subscription.id, self.state.generation, event);
        let secrets = self.subscription.active_secrets(self.delivery.now_ms());
        let outcome = match Url::parse(&self.subscription.end_point) {
            Ok(url) => {
                let body = body_for(&url, event);
                self.delivery.sender.push(&self.subscription.consumer, &url, &message, &body, &secrets).await
            }
            // Checked when it was made; counted as a failed push if not.
            Err(_) => {
                PushOutcome { status: None, latency: Duration::ZERO, error: Some("the endpoint is not a URL".into()) }
            }
        };
        metrics::histogram!("delivery_push_duration_seconds").record(outcome.latency.as_secs_f64());
        let now = self.delivery.feeds.clock().now_utc();
        let event_id = event.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        self.record(DeliveryAttempt {
            time: crate::domain::cloud_event::format_time(now),
            event_id,
            status: outcome.status,
            latency_ms: u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX),
            error: outcome.error.clone(),
        });
        if outcome.delivered() {
            metrics::counter!("deliveries_total", "outcome" => "delivered").increment(1);
            if let Some(published) = event
                .get("time")
                .and_then(Value::as_str)
                .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            {
                let latency = (now - published).as_seconds_f64();
                metrics::histogram!("delivery_latency_seconds").record(latency.max(0.0));
            }
            self.position = position + 1;
            self.unsaved = true;
            let recovered = self.state.status != DeliveryStatus::Active;
            self.state.status = DeliveryStatus::Active;
            self.state.failures = 0;
            self.state.last_error = None;
            self.state.next_retry_ms = None;
            if recovered {
                self.flush().await;
            }
            return true;
        }
        metrics::counter!("deliveries_total", "outcome" => "failed").increment(1);
        self.position = position;
        self.state.failures += 1;
        self.state.last_error = outcome.error;
        match self.delivery.settings.retry.get(self.state.failures as usize - 1) {
            Some(wait) => {
                self.state.status = DeliveryStatus::Failing;
                self.state.next_retry_ms =
                    Some(self.delivery.now_ms() + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
            }
            None => {
                self.state.status = DeliveryStatus::Disabled;
                self.state.next_retry_ms = None;
                let reason = self.state.last_error.clone().unwrap_or_default();
                self.state.last_error =
                    Some(format!("disabled after {} failed attempts: {reason}", self.state.failures));
                metrics::counter!("subscriptions_disabled_total").increment(1);
                tracing::warn!(subscription = self.subscription.id, "subscription disabled: retries exhausted");
            }
        }
        false
    }

    /// Keeps an attempt: the newest `KEPT_ATTEMPTS` (those older than
    /// `KEEP_ATTEMPTS_MS` go when the state is stored).
    fn record(&mut self, attempt: DeliveryAttempt) {
        self.unsaved = true;
        let attempts = &mut self.state.attempts;
        if attempts.len() >= KEPT_ATTEMPTS {
            let excess = attempts.len() + 1 - KEPT_ATTEMPTS;
            attempts.drain(..excess);
        }
        attempts.push(attempt);
    }

    fn forget_old_attempts(&mut self) {
        let too_old = self.delivery.now_ms().saturating_sub(KEEP_ATTEMPTS_MS);
        self.state.attempts.retain(|a| {
            time::OffsetDateTime::parse(&a.time, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0) >= too_old)
        });
    }

    /// The owner enabled or replayed it (a new generation): start again
    /// from the stored state. `false` when the state could not be read.
    async fn adopt_owner_changes(&mut self) -> bool {
        match self.delivery.store.state(self.subscription.id).await {
            Ok(Some((stored, etag))) if stored.generation != self.state.generation => {
                self.position = stored.checkpoint;
                self.pending = stored.oldest_pending.clone();
                self.state = stored;
                self.etag = etag;
                self.unsaved = false;
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// Stores the checkpoint and state, unless the owner changed them (then
    /// theirs wins, see `adopt_owner_changes`).
    async fn flush(&mut self) {
        if !self.unsaved || self.gone || (self.stopped() && !*self.stop.borrow()) {
            // Nothing new; or deleted; or the bucket went to another
            // instance (which delivers from the stored checkpoint on).
            return;
        }
        self.state.checkpoint = self.position;
        self.state.oldest_pending = self.pending.clone();
        self.forget_old_attempts();
        for _ in 0..3 {
            match self.delivery.store.write(self.subscription.id, &self.state, &self.etag).await {
                Ok(Changed::Done(etag)) => {
                    self.delivery.written.lock().expect("written lock").insert(self.subscription.id, etag.clone());
                    self.etag = etag;
                    self.last_flush = Instant::now();
                    self.unsaved = false;
                    return;
                }
                Ok(Changed::Stale) => match self.delivery.store.state(self.subscription.id).await {
                    // The owner enabled or replayed it (theirs wins), or
                    // another holder got further (never move it back).
                    Ok(Some((stored, etag)))
                        if stored.generation != self.state.generation || stored.checkpoint > self.position =>
                    {
                        self.position = stored.checkpoint;
                        self.pending = stored.oldest_pending.clone();
                        self.state = stored;
                        self.etag = etag;
                        self.unsaved = false;
                        return;
                    }
                    Ok(Some((_, etag))) => self.etag = etag,
                    _ => return,
                },
                Err(e) => {
                    tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "storing a checkpoint failed");
                    return;
                }
            }
        }
    }

    async fn report_lag(&self) {
        if let Ok(length) = self.delivery.feeds.len(&self.feed).await {
            let lag = length.saturating_sub(self.position);
            self.delivery.lags.lock().expect("lags lock").insert(self.subscription.id, lag);
        }
    }
}

/// The running deliverers' ids (for tests and the coordinator's metrics).
impl Delivery {
    pub fn running(&self) -> HashSet<u64> {
        self.running.lock().expect("deliverers lock").keys().copied().collect()
    }
}
