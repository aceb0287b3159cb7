//! What a deliverer stores: its checkpoint and delivery state, and what it
//! takes from the store when the owner changed them.
//!
//! Invariants it keeps:
//! - **Stored in batches, never ahead of the pushes**: the checkpoint
//!   written is the position the deliverer reached (only past what is
//!   done), at most `flush_every` apart while it delivers, and at once at
//!   every change of status and when it stops or waits.
//! - **The owner wins**: a write is guarded by the state's ETag; when the
//!   owner enabled or replayed it meanwhile (a new generation), the stored
//!   state replaces the deliverer's, position included.
//! - **Never moved back**: when another holder stored a later checkpoint,
//!   the deliverer goes on from there.
//! - **Nothing stored by a deliverer that lost its bucket** (the next
//!   holder delivers from the stored checkpoint) or whose subscription is
//!   gone.
//! - **Attempts are kept for seven days at most** (`history.rs`), by the
//!   store's clock.

use std::time::Instant;

use crate::deliver::Lag;

use super::Deliverer;
use crate::deliver::history;
use crate::feeds::Changed;

impl Deliverer {
    /// The owner enabled or replayed it (a new generation): start again
    /// from the stored state. `false` when the state could not be read.
    pub(super) async fn adopt_owner_changes(&mut self) -> bool {
        match self.delivery.states.state(self.subscription.id).await {
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
    pub(super) async fn flush(&mut self) {
        if !self.unsaved || self.gone || (self.stopped() && !*self.stop.borrow()) {
            // Nothing new; or deleted; or the bucket went to another
            // instance (which delivers from the stored checkpoint on).
            return;
        }
        self.state.checkpoint = self.position;
        self.state.oldest_pending = self.pending.clone();
        history::forget_old(&mut self.state.attempts, self.delivery.now_ms());
        for _ in 0..3 {
            match self.delivery.states.write(self.subscription.id, &self.state, &self.etag).await {
                Ok(Changed::Done(etag)) => {
                    self.delivery.written.lock().expect("written lock").insert(self.subscription.id, etag.clone());
                    self.etag = etag;
                    self.last_flush = Instant::now();
                    self.unsaved = false;
                    return;
                }
                Ok(Changed::Stale) => match self.delivery.states.state(self.subscription.id).await {
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

    /// The store started another generation (`feeds/events/generation.rs`):
    /// positions past what survived a restore or a failover may now hold
    /// other events. Goes on after the newest event it delivered that the
    /// feed still holds (by id, among the attempts kept); when none is
    /// there, from the checkpoint or the feed's end, whichever is earlier
    /// (what was published since may then be missed: the operator bumps the
    /// generation before traffic returns, docs/operations.md). `false` when
    /// the feed could not be read (tried again on the next turn).
    pub(super) async fn follow_store_generation(&mut self) -> bool {
        let Some(current) = self.delivery.feeds.generation() else { return true };
        if current == self.state.store_generation {
            return true;
        }
        let delivered: Vec<String> = self
            .state
            .attempts
            .iter()
            .filter(|a| a.status.is_some_and(|s| (200..300).contains(&s)))
            .map(|a| a.event_id.clone())
            .collect();
        let found = match self.delivery.feeds.locate_newest_of(&self.feed, &delivered).await {
            Ok(found) => found,
            Err(_) => return false,
        };
        let position = match found {
            Some(after) => after,
            None => match self.delivery.feeds.len(&self.feed).await {
                Ok(length) => self.position.min(length),
                Err(_) => return false,
            },
        };
        tracing::warn!(
            subscription.id = self.subscription.id,
            from = self.position,
            to = position,
            store_generation = current,
            "the store's generation changed: delivery goes on after the last event delivered"
        );
        metrics::counter!("delivery_reanchored_total").increment(1);
        self.drop_prefetched();
        self.position = position;
        self.pending = None;
        self.state.store_generation = current;
        self.state.failures = 0;
        self.state.next_retry_ms = None;
        self.unsaved = true;
        true
    }

    /// How far the subscription is behind its feed, for the instance's lag
    /// gauges (never a gauge of its own): called after a full page was
    /// pushed, so `pending` is the time of the newest event pushed.
    pub(super) async fn report_lag(&self) {
        if let Ok(length) = self.delivery.feeds.len(&self.feed).await {
            let events = length.saturating_sub(self.position);
            let seconds = self
                .pending
                .as_deref()
                .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
                .map_or(0, |t| u64::try_from((self.delivery.feeds.clock().now_utc() - t).whole_seconds()).unwrap_or(0));
            let lag = if events > 0 { Lag { events, seconds } } else { Lag::default() };
            self.delivery.lags.lock().expect("lags lock").insert(self.subscription.id, lag);
        }
    }

    /// Takes the subscription out of the lag gauges while its endpoint fails.
    pub(super) fn clear_lag(&self) {
        self.delivery.lags.lock().expect("lags lock").insert(self.subscription.id, Lag::default());
    }
}
