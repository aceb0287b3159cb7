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

    /// How many events the subscription is behind its feed, for the
    /// instance's lag gauges (never a gauge of its own).
    pub(super) async fn report_lag(&self) {
        if let Ok(length) = self.delivery.feeds.len(&self.feed).await {
            let lag = length.saturating_sub(self.position);
            self.delivery.lags.lock().expect("lags lock").insert(self.subscription.id, lag);
        }
    }
}
