//! What one push's outcome does to a subscription's delivery: the retry
//! schedule and the disable, as a pure function of the state before the
//! push, what the endpoint answered, the schedule and the time.
//!
//! Invariants it keeps:
//! - **A 2xx resets**: the subscription is `active` again, with no
//!   failures, no error and no retry due; the checkpoint moves past the
//!   event (the deliverer does that).
//! - **Every failure counts alike** (no answer in time, a refused
//!   connection, any non-2xx status, 4xx and 410 included): the n-th
//!   failure of the event at the checkpoint makes it `failing`, due again
//!   the n-th wait of the schedule after `now` (not after the last due
//!   time), with what the endpoint answered as its error.
//! - **Disabled, never dropped**: the failure after the last wait of the
//!   schedule disables the subscription with the reason ("disabled after n
//!   failed attempts: ..."), and no retry is due; the event stays at the
//!   checkpoint for `enable`.
//! - **No I/O, no clock**: the caller passes `now` (the store's clock)
//!   and stores, counts and logs what it decides.

use std::time::Duration;

use crate::domain::subscription::{DeliveryState, DeliveryStatus};
use crate::webhooks::PushOutcome;

/// Where a subscription's delivery stands after a push: the fields of its
/// [`DeliveryState`] that a push changes, and what else follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: DeliveryStatus,
    /// Failed attempts of the event at the checkpoint.
    pub failures: u32,
    pub last_error: Option<String>,
    /// When the event is tried again (Unix ms), if it is.
    pub next_retry_ms: Option<u64>,
    pub next: Next,
}

/// What follows from a push besides the new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The endpoint answered 2xx: the checkpoint moves past the event.
    /// `recovered`: it was failing or disabled before, which its owner
    /// should see at once (the state is stored now, not at the next flush).
    Delivered { recovered: bool },
    /// The event is tried again at `next_retry_ms`; later events wait.
    Retry,
    /// The schedule ran out: nothing more is pushed until `enable`.
    Disabled,
}

/// The state after a push of the event at the checkpoint with `outcome`,
/// made at `now_ms`, when the `n`-th failure of an event waits
/// `schedule[n - 1]`.
pub fn after_push(state: &DeliveryState, outcome: &PushOutcome, schedule: &[Duration], now_ms: u64) -> Decision {
    if outcome.delivered() {
        return Decision {
            status: DeliveryStatus::Active,
            failures: 0,
            last_error: None,
            next_retry_ms: None,
            next: Next::Delivered { recovered: state.status != DeliveryStatus::Active },
        };
    }
    let failures = state.failures.saturating_add(1);
    match schedule.get(failures as usize - 1) {
        Some(wait) => Decision {
            status: DeliveryStatus::Failing,
            failures,
            last_error: outcome.error.clone(),
            next_retry_ms: Some(now_ms.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))),
            next: Next::Retry,
        },
        None => {
            let reason = outcome.error.clone().unwrap_or_default();
            Decision {
                status: DeliveryStatus::Disabled,
                failures,
                last_error: Some(format!("disabled after {failures} failed attempts: {reason}")),
                next_retry_ms: None,
                next: Next::Disabled,
            }
        }
    }
}

impl Decision {
    /// Writes the decision into the state it was made from.
    pub fn apply(&self, state: &mut DeliveryState) {
        state.status = self.status;
        state.failures = self.failures;
        state.last_error = self.last_error.clone();
        state.next_retry_ms = self.next_retry_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Altinn's schedule, as `delivery.retry_schedule_seconds` has it by default.
    fn altinn() -> Vec<Duration> {
        [10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200, 43200].map(Duration::from_secs).to_vec()
    }

    const NOW: u64 = 1_790_000_000_000;

    fn ok() -> PushOutcome {
        PushOutcome { status: Some(200), latency: Duration::from_millis(12), error: None }
    }

    fn answered(status: u16) -> PushOutcome {
        PushOutcome {
            status: Some(status),
            latency: Duration::from_millis(30),
            error: Some(format!("the endpoint answered {status}: nope")),
        }
    }

    fn unanswered(error: &str) -> PushOutcome {
        PushOutcome { status: None, latency: Duration::from_secs(45), error: Some(error.to_owned()) }
    }

    /// Every kind of failure the sender reports.
    fn failures() -> Vec<PushOutcome> {
        vec![
            unanswered("the endpoint did not answer in time"),
            unanswered("the endpoint could not be reached"),
            unanswered("the endpoint is not a public https address on an allowed port"),
            answered(500),
            answered(503),
            answered(400),
            answered(404),
            answered(410),
            answered(302),
        ]
    }

    fn failing(failures: u32) -> DeliveryState {
        DeliveryState {
            status: DeliveryStatus::Failing,
            failures,
            last_error: Some("the endpoint answered 500: earlier".into()),
            next_retry_ms: Some(NOW - 5_000),
            ..DeliveryState::starting_at(7)
        }
    }

    #[test]
    fn a_2xx_resets_a_failing_subscription_and_says_it_recovered() {
        for outcome in [ok(), PushOutcome { status: Some(204), ..ok() }] {
            let d = after_push(&failing(4), &outcome, &altinn(), NOW);
            assert_eq!(
                d,
                Decision {
                    status: DeliveryStatus::Active,
                    failures: 0,
                    last_error: None,
                    next_retry_ms: None,
                    next: Next::Delivered { recovered: true },
                }
            );
        }
    }

    #[test]
    fn a_2xx_of_an_active_subscription_is_no_recovery() {
        let d = after_push(&DeliveryState::starting_at(0), &ok(), &altinn(), NOW);
        assert_eq!(d.next, Next::Delivered { recovered: false });
        assert_eq!((d.status, d.failures, d.next_retry_ms), (DeliveryStatus::Active, 0, None));
    }

    #[test]
    fn a_2xx_after_a_disable_recovers_too() {
        let disabled = DeliveryState { status: DeliveryStatus::Disabled, ..failing(12) };
        let d = after_push(&disabled, &ok(), &altinn(), NOW);
        assert_eq!(d.next, Next::Delivered { recovered: true });
        assert_eq!((d.status, d.failures, d.last_error), (DeliveryStatus::Active, 0, None));
    }

    #[test]
    fn every_kind_of_failure_waits_the_first_step_from_now_with_its_error() {
        for outcome in failures() {
            let d = after_push(&DeliveryState::starting_at(0), &outcome, &altinn(), NOW);
            assert_eq!(
                d,
                Decision {
                    status: DeliveryStatus::Failing,
                    failures: 1,
                    last_error: outcome.error.clone(),
                    next_retry_ms: Some(NOW + 10_000),
                    next: Next::Retry,
                },
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn the_nth_failure_waits_the_nth_step_of_the_schedule() {
        let schedule = altinn();
        for (before, wait) in schedule.iter().enumerate() {
            for outcome in failures() {
                let d = after_push(&failing(before as u32), &outcome, &schedule, NOW);
                assert_eq!(d.status, DeliveryStatus::Failing);
                assert_eq!(d.failures, before as u32 + 1);
                assert_eq!(d.next_retry_ms, Some(NOW + wait.as_millis() as u64), "failure {}", before + 1);
                assert_eq!(d.last_error, outcome.error, "the newest error replaces the last");
                assert_eq!(d.next, Next::Retry);
            }
        }
    }

    #[test]
    fn the_retry_is_due_from_now_not_from_the_last_due_time() {
        let mut state = failing(2);
        for (due, now) in [(NOW - 60_000, NOW), (NOW + 60_000, NOW), (0, NOW + 1)] {
            state.next_retry_ms = Some(due);
            let d = after_push(&state, &answered(503), &altinn(), now);
            assert_eq!(d.next_retry_ms, Some(now + 60_000));
        }
    }

    #[test]
    fn the_failure_after_the_last_step_disables_with_the_reason() {
        let schedule = altinn();
        for outcome in failures() {
            let d = after_push(&failing(schedule.len() as u32), &outcome, &schedule, NOW);
            let reason = outcome.error.clone().unwrap();
            assert_eq!(
                d,
                Decision {
                    status: DeliveryStatus::Disabled,
                    failures: 12,
                    last_error: Some(format!("disabled after 12 failed attempts: {reason}")),
                    next_retry_ms: None,
                    next: Next::Disabled,
                }
            );
        }
    }

    #[test]
    fn an_event_is_tried_once_per_step_plus_once() {
        let schedule = [Duration::from_secs(1), Duration::from_secs(2)];
        let mut state = DeliveryState::starting_at(0);
        let mut nexts = Vec::new();
        for _ in 0..3 {
            let d = after_push(&state, &answered(503), &schedule, NOW);
            d.apply(&mut state);
            nexts.push((d.next, d.next_retry_ms));
        }
        assert_eq!(nexts, [(Next::Retry, Some(NOW + 1000)), (Next::Retry, Some(NOW + 2000)), (Next::Disabled, None)]);
        assert_eq!(state.status, DeliveryStatus::Disabled);
        assert_eq!(
            state.last_error.as_deref(),
            Some("disabled after 3 failed attempts: the endpoint answered 503: nope")
        );
    }

    #[test]
    fn an_empty_schedule_disables_at_the_first_failure() {
        let d = after_push(&DeliveryState::starting_at(0), &answered(500), &[], NOW);
        assert_eq!((d.status, d.failures, d.next), (DeliveryStatus::Disabled, 1, Next::Disabled));
    }

    #[test]
    fn apply_changes_only_the_standing() {
        let mut state = DeliveryState { generation: 3, oldest_pending: Some("t".into()), ..failing(1) };
        let before = state.clone();
        after_push(&state, &answered(500), &altinn(), NOW).apply(&mut state);
        assert_eq!(
            state,
            DeliveryState {
                failures: 2,
                last_error: Some("the endpoint answered 500: nope".into()),
                next_retry_ms: Some(NOW + 30_000),
                ..before
            }
        );
    }
}
