//! What one push of an event sends: its body and its `webhook-id`.
//!
//! Invariants it keeps:
//! - **Altinn's body**: the CloudEvent as JSON; a Slack incoming webhook
//!   (`hooks.slack.com`) gets `{"text": "<the event as JSON>"}`, as Altinn
//!   formats it there.
//! - **Tells a consumer nothing of what it may not see**: the `webhook-id`
//!   is `{subscription}-{generation}-{digest of the event's source and id}`:
//!   the same for every retry of an event, new for each replay (enable and
//!   replay start a new generation), and no position, so two ids say
//!   nothing of the events between them.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_id_names_the_event_not_its_position() {
        let event = json!({"id": "e1", "source": "https://ttd.apps/ttd/a", "time": "2026-01-01T00:00:00Z"});
        let id = message_id(7, 2, &event);
        let (prefix, hex) = id.rsplit_once('-').unwrap();
        assert_eq!(prefix, "7-2");
        assert_eq!(hex.len(), 24);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        // The same event (its time aside): the same id; a new generation, another.
        assert_eq!(message_id(7, 2, &json!({"id": "e1", "source": "https://ttd.apps/ttd/a"})), id);
        assert_ne!(message_id(7, 3, &event), id);
        // Source and id are kept apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            message_id(7, 2, &json!({"id": "c", "source": "ab"})),
            message_id(7, 2, &json!({"id": "bc", "source": "a"}))
        );
    }

    #[test]
    fn slack_gets_text_and_everyone_else_the_event() {
        let event = json!({"id": "e1", "type": "t"});
        let slack: Value =
            serde_json::from_slice(&body_for(&"https://hooks.slack.com/services/x".parse().unwrap(), &event)).unwrap();
        assert_eq!(slack, json!({"text": event.to_string()}));
        let other: Value =
            serde_json::from_slice(&body_for(&"https://example.com/hook".parse().unwrap(), &event)).unwrap();
        assert_eq!(other, event);
    }
}
