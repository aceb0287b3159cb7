//! The deliverer of one subscription: the loop that reads its feed and
//! pushes (`push.rs`: a page's pushes; `checkpoint.rs`: what it stores).
//!
//! Invariants it keeps:
//! - **In order, one push at a time.** It reads its feed from its position
//!   through the authorized read (`read::FeedReader`, the subscription's
//!   consumer as the PDP's subject) and pushes the page's events one after
//!   the other; an event that fails stops the page, and it is tried again
//!   when the retry schedule says (`retry.rs`), before any later one.
//! - **The position moves only past what is done**: an event answered 2xx,
//!   or events the read passed over (not permitted, or filtered away).
//! - **Changes first.** Before each read and each push it takes in what
//!   it was told changed (a deleted subscription pushes nothing more and
//!   keeps nothing; new filters drop a page read with the old ones; the
//!   owner's enable or replay starts again from the stored state). It
//!   pushes nothing while the subscription is not validated, is disabled,
//!   or (imported from Altinn) waits for its cut-over, and nothing before
//!   its retry is due; and stops once its bucket is no longer held here.
//! - **Quiet costs nothing.** It waits on its feed's appends and its
//!   signals, with no timer while nothing is due; a PDP or store that
//!   cannot answer is not the endpoint's failure: nothing is pushed or
//!   counted, and the read is tried again in two seconds.

mod checkpoint;
mod push;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::filters::filters_of;
use super::{Delivery, Signals};
use crate::authz::{Action, Caller};
use crate::domain::subscription::{DeliveryState, DeliveryStatus, Kind, Subscription, ValidationStatus};
use crate::domain::{FeedId, Filters};
use crate::read::{FeedQuery, Page, Paging, ReadError, Start};

/// What one deliverer works with.
pub(super) struct Deliverer {
    delivery: Arc<Delivery>,
    subscription: Subscription,
    feed: FeedId,
    filters: Filters,
    signals: Arc<Signals>,
    stop: watch::Receiver<bool>,
    appends: watch::Receiver<u64>,
    /// Moves of the store's clock (tests move it): a retry may be due.
    clock: watch::Receiver<u64>,
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
    /// An append to its feed, a signal, a move of the clock, or the stop.
    Event,
    /// The time it waited for passed.
    Timeout,
}

/// What the push loop does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Go on with this round.
    Go,
    /// Start the next round (it waited, or something changed).
    Again,
    /// The deliverer ends.
    End,
}

impl Delivery {
    /// The deliverer of one subscription, as a task of the coordinator.
    pub(super) async fn deliver(self: Arc<Self>, id: u64, signals: Arc<Signals>, stop: watch::Receiver<bool>) {
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
                let new = DeliveryState::starting_in(found.starts_at, delivery.feeds.generation().unwrap_or_default());
                match delivery.states.state_or(id, new).await {
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
        let clock = delivery.feeds.clock().moves();
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
            clock,
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

    /// Waits for an append to the feed, a signal, `until`, a move of the
    /// store's clock (a retry computed from it may be due now), or the stop.
    async fn wait(&mut self, until: Option<Duration>) -> Woke {
        let limit = until.unwrap_or(Duration::from_secs(3600));
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = self.appends.changed() => Woke::Event,
            () = self.signals.wake.notified() => Woke::Event,
            Ok(()) = self.clock.changed() => Woke::Event,
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

    /// Reads and pushes until stopped, or the subscription is deleted.
    async fn run(&mut self) {
        loop {
            if self.stopped() {
                return;
            }
            match self.take_in_changes().await {
                Step::Go => {}
                Step::Again => continue,
                Step::End => return,
            }
            if !self.follow_store_generation().await {
                self.idle(Some(Duration::from_secs(1))).await;
                continue;
            }
            if self.held_back().await {
                continue;
            }
            let Some(page) = self.next_page().await else { continue };
            if self.push_page(&page).await == Step::End {
                return;
            }
        }
    }

    /// The subscription as it is now (deleted, validated, re-keyed?) and
    /// the owner's changes to its state: read when this instance or the
    /// change feed said they changed. Never on a timer: an idle
    /// subscription costs no request.
    async fn take_in_changes(&mut self) -> Step {
        let id = self.subscription.id;
        if self.signals.subscription.swap(false, Ordering::SeqCst) {
            match self.delivery.subscriptions.get(id).await {
                Ok(Some(current)) => {
                    *self.signals.known.lock().expect("known lock") = Some(current.etag().to_owned());
                    self.subscription = current.subscription;
                }
                Ok(None) => {
                    // Deleted: nothing more is pushed, nothing is kept.
                    self.gone = true;
                    let _ = self.delivery.states.remove(id).await;
                    return Step::End;
                }
                Err(_) => {
                    self.signals.subscription.store(true, Ordering::SeqCst);
                    self.wait(Some(Duration::from_secs(1))).await;
                    return Step::Again;
                }
            }
            self.filters = filters_of(&self.subscription);
            // A page read with the old filters is not used.
            self.drop_prefetched();
        }
        if self.signals.state.swap(false, Ordering::SeqCst) && !self.adopt_owner_changes().await {
            self.signals.state.store(true, Ordering::SeqCst);
            self.wait(Some(Duration::from_secs(1))).await;
            return Step::Again;
        }
        Step::Go
    }

    /// Waits (and `true`) when nothing may be pushed now: the subscription
    /// is not validated, is disabled, or waits for its cut-over; or its
    /// retry is not due yet.
    async fn held_back(&mut self) -> bool {
        // Imported from Altinn, it waits for the cut-over point: until
        // then Altinn pushes its events.
        let awaiting_cut_over = self.subscription.imported.as_ref().is_some_and(|i| i.pushed_through.is_none());
        if self.subscription.validation.status != ValidationStatus::Active
            || self.state.status == DeliveryStatus::Disabled
            || awaiting_cut_over
        {
            tracing::debug!(subscription = self.subscription.id, validation = ?self.subscription.validation.status,
                delivery = ?self.state.status, "deliverer waits: not validated or disabled");
            self.flush().await;
            self.wait(None).await;
            return true;
        }
        if let Some(due) = self.state.next_retry_ms {
            let now = self.delivery.now_ms();
            if due > now {
                self.flush().await;
                self.wait(Some(Duration::from_millis(due - now))).await;
                return true;
            }
        }
        false
    }

    /// The page at the position (the one read while the last was pushed,
    /// when it starts there; else a read now), or `None` when there is
    /// nothing to push now (it waited, or moved past what it may not push).
    async fn next_page(&mut self) -> Option<Page> {
        let id = self.subscription.id;
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
            Ok(page) => page,
            Err(e) => {
                // The PDP or the store is down: not the endpoint's
                // failure; try again in a moment, nothing is counted.
                if let ReadError::Authorization(_) = e {
                    metrics::counter!("delivery_pdp_unavailable_total").increment(1);
                }
                tracing::debug!(error = %e, subscription = id, "reading for delivery failed");
                self.idle(Some(Duration::from_secs(2))).await;
                return None;
            }
        };
        tracing::debug!(
            subscription = id,
            from = self.position,
            events = page.events.len(),
            next = page.next,
            "deliverer read"
        );
        if !page.events.is_empty() {
            return Some(page);
        }
        if page.next != self.position {
            // Past events that were filtered away or not permitted.
            self.position = page.next;
            self.unsaved = true;
            return None;
        }
        // At the end of the feed.
        self.delivery.lags.lock().expect("lags lock").insert(id, crate::deliver::Lag::default());
        if self.pending.take().is_some() {
            self.unsaved = true;
        }
        self.idle(None).await;
        None
    }

    /// A read of the feed from `from` for this subscription's consumer,
    /// through the same authorized read as the query endpoints.
    fn page_reader(&self, from: u64) -> impl Future<Output = Result<Page, ReadError>> + Send + 'static {
        let reader = self.delivery.reader.clone();
        let (feed, filters, subscription) = (self.feed.clone(), self.filters.clone(), self.subscription.clone());
        let action =
            if matches!(self.subscription.kind(), Kind::App { .. }) { Action::Read } else { Action::Subscribe };
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
}
