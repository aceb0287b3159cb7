//! The bodies the subscription endpoints take and answer: the JSON Altinn's
//! clients know (camelCase, nulls left out where Altinn leaves them out, an
//! integer `id`), made from the domain's subscription and its delivery
//! state, each with the schema the document shows. What the schemas cannot
//! say of a body (which members go together) `routes()` adds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::schema::dev;
use crate::domain::query::{After, parse_time};
use crate::domain::subscription::{
    self as domain, DeliveryState, DeliveryStatus, Subscription, SubscriptionFilters, ValidationStatus,
};

/// `POST /events/api/v1/subscriptions`, as Altinn's clients send it. An
/// app's events (`resourceFilter` `urn:altinn:resource:app_{org}_{app}`,
/// or a `sourceFilter` in an apps domain) need a `subjectFilter` unless
/// the caller is the app's owner; a generic resource's need
/// `resourceFilter` and take neither `sourceFilter` nor
/// `alternativeSubjectFilter`. Strings are at most 1024 characters, without
/// control characters.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(
    as = SubscriptionRequest,
    examples(json!({"endPoint": "https://example.com/events", "resourceFilter": dev::APP_RESOURCE}))
)]
pub(super) struct SubscriptionBody {
    /// Where the events are pushed: an absolute `https` URL (in dev mode
    /// also `http`). `endpoint` is accepted too.
    #[serde(alias = "endpoint")]
    #[schema(
        value_type = String,
        required = true,
        max_length = 1024,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9.-]+(:[0-9]{1,4})?([/?#][^\\s\\u0000-\\u001F\\u007F-\\u009F]*)?$",
        example = "https://example.com/events"
    )]
    pub(super) end_point: Option<String>,
    /// Events whose source begins with this absolute `https` URL (an app's:
    /// `https://{org}.apps.../{org}/{app}`). This or `resourceFilter` is
    /// required.
    #[schema(
        nullable = false,
        max_length = 1024,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]://[A-Za-z0-9.-]+([/?#][^\\s\\u0000-\\u001F\\u007F-\\u009F]*)?$"
    )]
    pub(super) source_filter: Option<String>,
    /// The resource, a URN (`urn:altinn:resource:...`).
    #[schema(
        nullable = false,
        max_length = 1024,
        pattern = "^[Uu][Rr][Nn]:[^:\\s\\u0000-\\u001F\\u007F-\\u009F]+:[^\\s\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    pub(super) resource_filter: Option<String>,
    /// Events about this subject (`/party/{id}`, ...).
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub(super) subject_filter: Option<String>,
    /// App events: `/person/{ssn}` or `/organisation/{orgno}`, which
    /// Register resolves to the subject's party.
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub(super) alternative_subject_filter: Option<String>,
    /// Events of this type.
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub(super) type_filter: Option<String>,
    /// Also the subject's subunits (needs `subjectFilter`).
    #[serde(default)]
    pub(super) include_subunits: bool,
}

impl From<SubscriptionBody> for domain::SubscriptionRequest {
    fn from(b: SubscriptionBody) -> Self {
        Self {
            end_point: b.end_point,
            source_filter: b.source_filter,
            resource_filter: b.resource_filter,
            subject_filter: b.subject_filter,
            alternative_subject_filter: b.alternative_subject_filter,
            type_filter: b.type_filter,
            include_subunits: b.include_subunits,
        }
    }
}

/// What a subscription follows: its filters, after the creation rules.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SubscriptionFilters)]
pub(super) struct FiltersView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) source_filter: Option<String>,
    pub(super) resource_filter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) subject_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) alternative_subject_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) type_filter: Option<String>,
    pub(super) include_subunits: bool,
}

impl From<&SubscriptionFilters> for FiltersView {
    fn from(f: &SubscriptionFilters) -> Self {
        Self {
            source_filter: f.source_filter.clone(),
            resource_filter: f.resource_filter.clone(),
            subject_filter: f.subject_filter.clone(),
            alternative_subject_filter: f.alternative_subject_filter.clone(),
            type_filter: f.type_filter.clone(),
            include_subunits: f.include_subunits,
        }
    }
}

/// A subscription as its owner sees it (`GET /subscriptions/{id}`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SubscriptionView {
    pub(super) id: u64,
    pub(super) end_point: String,
    #[serde(flatten)]
    pub(super) filters: FiltersView,
    pub(super) consumer: String,
    pub(super) created_by: String,
    pub(super) created: String,
    pub(super) validated: bool,
    /// Ours: `validating` or (validation) `failing` until validated; then
    /// how delivery stands: `active`, `failing`, `disabled`.
    #[schema(value_type = String, pattern = "^(validating|failing|active|disabled)$")]
    pub(super) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) last_error: Option<String>,
    /// Ours: the checkpoint (a cursor of the feed), the oldest event not
    /// delivered yet, failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) delivery: Option<DeliveryView>,
}

impl SubscriptionView {
    /// The view of `subscription` before its delivery is looked up: how
    /// validation of its endpoint stands.
    pub(super) fn of(subscription: &Subscription) -> Self {
        let validation = &subscription.validation;
        Self {
            id: subscription.id,
            end_point: subscription.end_point.to_string(),
            filters: (&subscription.filters).into(),
            consumer: subscription.consumer.clone(),
            created_by: subscription.created_by.clone(),
            created: subscription.created.clone(),
            validated: validation.status == ValidationStatus::Active,
            status: match validation.status {
                ValidationStatus::Validating => "validating",
                ValidationStatus::Active => "active",
                ValidationStatus::Failing => "failing",
            },
            last_error: validation.last_error.clone(),
            delivery: None,
        }
    }

    /// The view with how delivery stands: its status and last error (once
    /// validated), the checkpoint (a cursor of the feed) and the time of the
    /// oldest event it has yet to deliver.
    pub(super) fn with_delivery(subscription: &Subscription, delivery: &DeliveryState, checkpoint: String) -> Self {
        let mut view = Self::of(subscription);
        if view.validated {
            view.status = match delivery.status {
                DeliveryStatus::Active => "active",
                DeliveryStatus::Failing => "failing",
                DeliveryStatus::Disabled => "disabled",
            };
            view.last_error = delivery.last_error.clone();
        }
        view.delivery = Some(DeliveryView {
            checkpoint,
            oldest_pending: delivery.oldest_pending.clone(),
            failures: delivery.failures,
            next_retry: delivery.next_retry_ms.and_then(|ms| {
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .ok()
                    .map(crate::domain::cloud_event::format_time)
            }),
        });
        view
    }
}

/// How far delivery of a subscription has come, as its owner sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveryView {
    /// A cursor of the feed: everything before it is delivered (or was not
    /// permitted). `replay` takes it as `after`.
    pub(super) checkpoint: String,
    /// The `time` of the oldest event not delivered yet (it is being pushed
    /// or retried), or null when delivery had caught up; only events the
    /// consumer is permitted count. Stored at most `delivery.flush_ms`
    /// apart, so it may lag a second behind.
    pub(super) oldest_pending: Option<String>,
    /// Failed attempts of the event at the checkpoint.
    pub(super) failures: u32,
    /// When the next attempt is due, or null.
    pub(super) next_retry: Option<String>,
}

/// A subscription as created or rotated: the view and, once, its secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SubscriptionWithSecret {
    #[serde(flatten)]
    pub(super) subscription: SubscriptionView,
    /// The Standard Webhooks signing secret (`whsec_...`). Shown only here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) secret: Option<String>,
}

/// `GET /subscriptions`.
#[derive(Serialize, ToSchema)]
pub(super) struct SubscriptionList {
    pub(super) count: usize,
    pub(super) subscriptions: Vec<SubscriptionView>,
}

/// One push attempt, for the owner to see.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveryAttempt {
    pub(super) time: String,
    pub(super) event_id: String,
    /// The event's type (absent in attempts recorded before it was kept).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub(super) event_type: Option<String>,
    /// Which attempt at this event it was: 1 the first push, 2 the first
    /// retry, ...
    pub(super) attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status: Option<u16>,
    pub(super) latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

impl From<&domain::DeliveryAttempt> for DeliveryAttempt {
    fn from(a: &domain::DeliveryAttempt) -> Self {
        Self {
            time: a.time.clone(),
            event_id: a.event_id.clone(),
            event_type: a.event_type.clone(),
            attempt: a.attempt,
            status: a.status,
            latency_ms: a.latency_ms,
            error: a.error.clone(),
        }
    }
}

/// `GET /subscriptions/{id}/deliveries`: recent push attempts, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct DeliveryList {
    pub(super) count: usize,
    pub(super) deliveries: Vec<DeliveryAttempt>,
}

/// `POST .../subscriptions/{id}/replay`: where delivery continues, as a
/// feed read would start: exactly one of `after` (`0`, a cursor of the
/// subscription's feed or an event id) and `from` (a time with offset).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(examples(json!({"after": "0"})))]
pub(super) struct ReplayRequest {
    #[schema(nullable = false, pattern = "\\S")]
    pub(super) after: Option<String>,
    /// A time with offset, years 0000-9999 in UTC.
    #[schema(nullable = false, format = DateTime)]
    pub(super) from: Option<String>,
}

impl ReplayRequest {
    /// `after` and `from` checked: exactly one of them.
    pub(super) fn parse(&self) -> Result<(Option<After>, Option<String>), String> {
        let after = self.after.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let from = parse_time(self.from.as_deref().map(str::trim).filter(|s| !s.is_empty()), "from")?;
        match (after, from) {
            (Some(after), None) => Ok((Some(After::parse(after)), None)),
            (None, Some(from)) => Ok((None, Some(from))),
            _ => Err("Give either 'after' (0, a cursor or an event id) or 'from' (a time with timezone).".into()),
        }
    }
}
