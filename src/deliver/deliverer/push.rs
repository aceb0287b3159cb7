//! Pushing a page of events: one at a time, in feed order, and what each
//! answer does to the deliverer's position and state.
//!
//! Invariants it keeps:
//! - **One push in flight per subscription**, in feed order; the next page
//!   may be read meanwhile (the read need not wait, the pushes do).
//! - **The position moves past an event only on a 2xx**; a failure leaves
//!   it at the event, counted on the retry schedule (`retry.rs`), and ends
//!   the page. A change the deliverer was told of (deleted, disabled,
//!   replayed) ends the page before the next push.
//! - **Every attempt is kept** for the owner (`history.rs`), timed by the
//!   store's clock; a status change (a recovery, a retry, a disable) is
//!   stored before the deliverer goes on.
//! - **Metrics carry no subscription label.**

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::{Deliverer, Step};
use crate::deliver::retry::{self, Next};
use crate::deliver::{history, message};
use crate::read::Page;

impl Deliverer {
    /// Pushes the page's events in order until one fails or something
    /// changed; then moves the position and stores it when due.
    pub(super) async fn push_page(&mut self, page: &Page) -> Step {
        let full = page.events.len() >= self.delivery.settings.page_size;
        if full {
            // More are likely: read the next page while these are pushed
            // (one push at a time keeps the order; the read need not wait).
            self.prefetched = Some((page.next, tokio::spawn(self.page_reader(page.next))));
        }
        let mut all_delivered = true;
        for (event, position) in page.events.iter().zip(&page.positions) {
            if self.stopped() {
                return Step::End;
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
                self.clear_lag();
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
        Step::Go
    }

    /// Pushes one event; `true` when the endpoint answered 2xx.
    async fn push(&mut self, event: &Value, position: u64) -> bool {
        let message = message::message_id(self.subscription.id, self.state.generation, event);
        let secrets = self.subscription.active_secrets(self.delivery.now_ms());
        let url = self.subscription.end_point.url();
        let body = message::body_for(url, event);
        let outcome = self.delivery.sender.push(&self.subscription.consumer, url, &message, &body, &secrets).await;
        metrics::histogram!("delivery_push_duration_seconds").record(outcome.latency.as_secs_f64());
        let now = self.delivery.feeds.clock().now_utc();
        self.unsaved = true;
        let id = event.get("id").and_then(Value::as_str).unwrap_or_default();
        let attempt = history::next_attempt(&self.state.attempts, id);
        history::record(
            &mut self.state.attempts,
            history::attempt(crate::domain::cloud_event::format_time(now), event, attempt, &outcome),
        );
        let decision = retry::after_push(&self.state, &outcome, &self.delivery.settings.retry, self.delivery.now_ms());
        decision.apply(&mut self.state);
        match decision.next {
            Next::Delivered { recovered } => {
                metrics::counter!("deliveries_total", "outcome" => "delivered").increment(1);
                if let Some(published) = event
                    .get("time")
                    .and_then(Value::as_str)
                    .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
                {
                    metrics::histogram!("delivery_latency_seconds").record((now - published).as_seconds_f64().max(0.0));
                }
                self.position = position + 1;
                if recovered {
                    self.flush().await;
                }
                true
            }
            Next::Retry | Next::Disabled => {
                metrics::counter!("deliveries_total", "outcome" => "failed").increment(1);
                self.position = position;
                if decision.next == Next::Disabled {
                    metrics::counter!("subscriptions_disabled_total").increment(1);
                    tracing::warn!(subscription = self.subscription.id, "subscription disabled: retries exhausted");
                }
                false
            }
        }
    }
}
