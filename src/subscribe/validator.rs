//! The validator: pushes the validation event to new and re-validated
//! subscriptions' endpoints, and retries on `webhooks.validation_retry_seconds`.
//! A background worker of the subscriptions use case (started by `lib.rs`).
//!
//! Invariants it keeps:
//! - **Concurrent, and fair between consumers.** Attempts run side by side,
//!   at most `max_concurrent_validations` per instance and
//!   `max_validations_per_consumer` of one consumer; an attempt of a
//!   consumer at its share is left unclaimed until one of its own ends. So
//!   endpoints that accept a connection and never answer delay only their
//!   own consumer's validations (each push also takes the consumer's, the
//!   host's and the instance's push slots, `webhooks/slots.rs`).
//! - **One attempt at a time per subscription, across instances.** An
//!   attempt is claimed on the subscription (ETag-guarded) for `CLAIM_MS`;
//!   a claim that runs out (its instance died) is taken by any validator,
//!   which looks for such every `webhooks.validation_sweep_seconds` (30).
//! - **The outcome is stored on the subscription**, ETag-guarded: a
//!   subscription changed meanwhile (re-validated, rotated, deleted) keeps
//!   its new state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Subscriptions;
use crate::domain::subscription::ValidationStatus;
use crate::feeds::Changed;
use crate::feeds::StoreError;
use crate::feeds::subscriptions::Stored;

/// How long an instance has to finish a validation attempt it claimed.
const CLAIM_MS: u64 = 120_000;

/// What an attempt task reports: its consumer, and when the subscription's
/// next attempt is due (if it failed and the schedule goes on).
type Finished = (String, Result<Option<u64>, StoreError>);

/// Attempts running in this instance, by consumer.
#[derive(Default)]
struct Running {
    by_consumer: HashMap<String, usize>,
    total: usize,
}

impl Subscriptions {
    /// Looks for due validations now (a subscription changed, perhaps on
    /// another instance).
    pub fn wake_validator(&self) {
        self.wake.notify_one();
    }

    /// Validates subscriptions until `stop`: at once when one is created or
    /// re-validated here, when a retry is due, when an attempt ends (its
    /// consumer may have more waiting), and every `validation_sweep` (30 s)
    /// for attempts that other instances left (a claim that ran out). Attempts still running
    /// at the stop are dropped: their claims run out and another instance
    /// makes them.
    pub async fn run_validator(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut running = Running::default();
        // At once at start: what is due (or was left by an instance that
        // stopped) is not left waiting for a sweep.
        let mut next_due: Option<u64> = Some(0);
        // A move of the store's clock (tests move it) may make an attempt due.
        let mut clock = self.feeds.clock().moves();
        let sweep = self.settings.validation_sweep;
        loop {
            let wait =
                next_due.map_or(sweep, |due| Duration::from_millis(due.saturating_sub(self.now_ms())).min(sweep));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                Ok(()) = clock.changed() => {}
                Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(finished) = finished {
                        next_due = earliest(next_due, self.finished(&mut running, finished));
                    }
                    // Others that ended meanwhile, in one go.
                    while let Some(Ok(finished)) = tasks.try_join_next() {
                        next_due = earliest(next_due, self.finished(&mut running, finished));
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            // A wake-up (a change anywhere) must not forget a retry this
            // instance already has in the diary.
            let known = next_due.filter(|due| *due > self.now_ms());
            next_due = match self.start_due(&mut running, &mut tasks).await {
                Ok(()) => known,
                Err(e) => {
                    tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "validating subscriptions failed");
                    earliest(known, Some(self.now_ms() + 1000))
                }
            };
        }
    }

    /// Counts an attempt as ended; when its subscription's next one is due.
    fn finished(&self, running: &mut Running, (consumer, outcome): Finished) -> Option<u64> {
        running.total = running.total.saturating_sub(1);
        if let Some(n) = running.by_consumer.get_mut(&consumer) {
            *n -= 1;
            if *n == 0 {
                running.by_consumer.remove(&consumer);
            }
        }
        match outcome {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "storing a validation failed");
                Some(self.now_ms() + 1000)
            }
        }
    }

    /// Claims and starts every due attempt that fits the limits; the rest
    /// stay unclaimed (an attempt that ends wakes the validator again).
    async fn start_due(
        self: &Arc<Self>,
        running: &mut Running,
        tasks: &mut JoinSet<Finished>,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let (max_total, max_per_consumer) =
            (self.settings.max_concurrent_validations, self.settings.max_validations_per_consumer);
        for stored in self.store.due_validations(now).await? {
            if running.total >= max_total {
                break;
            }
            let consumer = stored.subscription.consumer.clone();
            if running.by_consumer.get(&consumer).is_some_and(|n| *n >= max_per_consumer) {
                continue;
            }
            // Claim it, so that no other instance pushes it at the same time.
            let mut claimed = stored.subscription.clone();
            claimed.validation.claimed_until_ms = Some(now + CLAIM_MS);
            let Changed::Done(stored) = self.store.replace(&stored, claimed).await? else { continue };
            running.total += 1;
            *running.by_consumer.entry(consumer.clone()).or_default() += 1;
            let this = self.clone();
            tasks.spawn(async move { (consumer, this.attempt(stored).await) });
        }
        Ok(())
    }

    /// One validation push and its outcome, stored; when the next is due.
    async fn attempt(&self, stored: Stored) -> Result<Option<u64>, StoreError> {
        let s = &stored.subscription;
        let id = uuid::Uuid::new_v4().to_string();
        let base = self.settings.platform_base.as_str().trim_end_matches('/');
        let event = json!({"specversion": "1.0", "id": id, "type": "platform.events.validatesubscription",
            "source": format!("{base}/events/api/v1/subscriptions/{}", s.id)});
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let outcome =
            self.sender.push(&s.consumer, s.end_point.url(), &id, &body, &s.active_secrets(self.now_ms())).await;
        let mut next = s.clone();
        next.validation.claimed_until_ms = None;
        next.validation.attempts += 1;
        let due = if outcome.delivered() {
            metrics::counter!("subscription_validations_total", "outcome" => "validated").increment(1);
            next.validation.status = ValidationStatus::Active;
            next.validation.last_error = None;
            next.validation.next_attempt_ms = None;
            None
        } else {
            metrics::counter!("subscription_validations_total", "outcome" => "failed").increment(1);
            next.validation.last_error = outcome.error.clone();
            let wait = self.settings.validation_retry.get(next.validation.attempts as usize - 1);
            match wait {
                Some(wait) => {
                    let due = self.now_ms() + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    next.validation.next_attempt_ms = Some(due);
                    Some(due)
                }
                None => {
                    next.validation.status = ValidationStatus::Failing;
                    next.validation.next_attempt_ms = None;
                    None
                }
            }
        };
        // Deleted or changed meanwhile (re-validated, rotated): its new
        // state rules; nothing to store.
        if let Changed::Done(_) = self.store.replace(&stored, next).await? {
            (self.changed)(stored.subscription.id);
        }
        Ok(due)
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
