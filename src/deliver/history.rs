//! The push attempts a subscription keeps for its owner to see
//! (`GET /{id}/deliveries`), in its delivery state.
//!
//! Invariants it keeps:
//! - **The newest [`KEPT_ATTEMPTS`]**, oldest first: a new attempt pushes
//!   the oldest out.
//! - **None older than [`KEEP_ATTEMPTS_MS`]** once the state is stored
//!   ([`forget_old`], by the store's clock); an attempt whose time does
//!   not parse is forgotten too.

use serde_json::Value;

use crate::domain::subscription::DeliveryAttempt;
use crate::webhooks::PushOutcome;

/// How many attempts a delivery state keeps, and for how long.
pub const KEPT_ATTEMPTS: usize = 100;
pub const KEEP_ATTEMPTS_MS: u64 = 7 * 24 * 3600 * 1000;

/// Attempt number `attempt` to push `event`, at `time`, that ended with
/// `outcome`.
pub fn attempt(time: String, event: &Value, attempt: u32, outcome: &PushOutcome) -> DeliveryAttempt {
    DeliveryAttempt {
        time,
        event_id: event.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        event_type: event.get("type").and_then(Value::as_str).map(str::to_owned),
        attempt,
        status: outcome.status,
        latency_ms: u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX),
        error: outcome.error.clone(),
    }
}

/// Which attempt at `event_id` the next push is: one more than the failed
/// attempts at it that end the history (a replay's push of an event
/// delivered before is its first; `enable`, which resets the failures to
/// retry at once, does not start the count again). As far as the kept
/// history goes.
pub fn next_attempt(attempts: &[DeliveryAttempt], event_id: &str) -> u32 {
    let failed = attempts
        .iter()
        .rev()
        .take_while(|a| a.event_id == event_id && !a.status.is_some_and(|s| (200..300).contains(&s)))
        .count();
    u32::try_from(failed).unwrap_or(u32::MAX).saturating_add(1)
}

/// Keeps `attempt`, and the newest before it up to [`KEPT_ATTEMPTS`].
pub fn record(attempts: &mut Vec<DeliveryAttempt>, attempt: DeliveryAttempt) {
    if attempts.len() >= KEPT_ATTEMPTS {
        let excess = attempts.len() + 1 - KEPT_ATTEMPTS;
        attempts.drain(..excess);
    }
    attempts.push(attempt);
}

/// Forgets the attempts made more than [`KEEP_ATTEMPTS_MS`] before `now_ms`.
pub fn forget_old(attempts: &mut Vec<DeliveryAttempt>, now_ms: u64) {
    let too_old = now_ms.saturating_sub(KEEP_ATTEMPTS_MS);
    attempts.retain(|a| {
        time::OffsetDateTime::parse(&a.time, &time::format_description::well_known::Rfc3339)
            .is_ok_and(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0) >= too_old)
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(time: &str, n: usize) -> DeliveryAttempt {
        DeliveryAttempt {
            time: time.into(),
            event_id: format!("e{n}"),
            event_type: None,
            attempt: 1,
            status: Some(200),
            latency_ms: 1,
            error: None,
        }
    }

    #[test]
    fn the_newest_attempts_are_kept() {
        let mut attempts = Vec::new();
        for n in 0..KEPT_ATTEMPTS + 5 {
            record(&mut attempts, at("2026-01-01T00:00:00Z", n));
        }
        assert_eq!(attempts.len(), KEPT_ATTEMPTS);
        assert_eq!(attempts[0].event_id, "e5");
        assert_eq!(attempts[KEPT_ATTEMPTS - 1].event_id, format!("e{}", KEPT_ATTEMPTS + 4));
    }

    #[test]
    fn attempts_older_than_a_week_and_unreadable_times_are_forgotten() {
        // 2026-01-08T00:00:00Z
        let now_ms = 1_767_830_400_000;
        let mut attempts = vec![
            at("2025-12-31T23:59:59.999Z", 0),
            at("2026-01-01T00:00:00Z", 1),
            at("2026-01-07T12:00:00.123456Z", 2),
            at("yesterday", 3),
        ];
        forget_old(&mut attempts, now_ms);
        let kept: Vec<&str> = attempts.iter().map(|a| a.event_id.as_str()).collect();
        assert_eq!(kept, ["e1", "e2"]);
    }

    #[test]
    fn an_attempt_says_what_the_endpoint_answered() {
        let outcome = PushOutcome {
            status: Some(503),
            latency: Duration::from_micros(1_500_900),
            error: Some("the endpoint answered 503: busy".into()),
        };
        let event = serde_json::json!({"id": "e9", "type": "app.instance.created"});
        let a = attempt("2026-01-01T00:00:00Z".into(), &event, 3, &outcome);
        assert_eq!(
            a,
            DeliveryAttempt {
                time: "2026-01-01T00:00:00Z".into(),
                event_id: "e9".into(),
                event_type: Some("app.instance.created".into()),
                attempt: 3,
                status: Some(503),
                latency_ms: 1500,
                error: Some("the endpoint answered 503: busy".into()),
            }
        );
    }

    #[test]
    fn attempts_at_an_event_are_counted_from_its_failures_that_end_the_history() {
        let at = |id: &str, status: u16| DeliveryAttempt {
            time: "2026-01-01T00:00:00Z".into(),
            event_id: id.into(),
            event_type: None,
            attempt: 1,
            status: Some(status),
            latency_ms: 1,
            error: None,
        };
        assert_eq!(next_attempt(&[], "a"), 1);
        // Two failures of b after a went through: b's third attempt.
        let history = [at("a", 200), at("b", 500), at("b", 503)];
        assert_eq!(next_attempt(&history, "b"), 3);
        // Another event, or b again after it went through (a replay): a first.
        assert_eq!(next_attempt(&history, "c"), 1);
        assert_eq!(next_attempt(&[at("b", 500), at("b", 200)], "b"), 1);
        // No answer at all is a failure too.
        let mut silent = at("b", 0);
        silent.status = None;
        assert_eq!(next_attempt(&[silent], "b"), 2);
    }
}
