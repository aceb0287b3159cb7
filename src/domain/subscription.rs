//! Subscriptions as Altinn's clients know them: what a creation asks for,
//! the stored subscription and its delivery state, consumers, and the parts
//! of Altinn's creation rules that need nothing but the request. The JSON
//! the API takes and answers is `api/subscriptions.rs`'s.

use serde::{Deserialize, Serialize};

use super::Principal;
use super::cloud_event::{AppSource, RESOURCE_PREFIX};

/// What a creation of a subscription asks for (`POST
/// /events/api/v1/subscriptions`), before the creation rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// Where the events are pushed: an absolute `https` URL (in dev mode
    /// also `http`).
    pub end_point: Option<String>,
    pub source_filter: Option<String>,
    pub resource_filter: Option<String>,
    pub subject_filter: Option<String>,
    pub alternative_subject_filter: Option<String>,
    pub type_filter: Option<String>,
    pub include_subunits: bool,
}

/// What a subscription follows: its filters, after the creation rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_filter: Option<String>,
    pub resource_filter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative_subject_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_filter: Option<String>,
    #[serde(default)]
    pub include_subunits: bool,
}

impl SubscriptionFilters {
    /// The feed these filters follow: the subject's when there is a subject
    /// filter, else the resource's.
    pub fn feed(&self) -> super::FeedId {
        match &self.subject_filter {
            Some(subject) => super::FeedId::Subject(subject.clone()),
            None => super::FeedId::Resource(self.resource_filter.clone()),
        }
    }
}

/// How far validation of a subscription's endpoint has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationStatus {
    /// The validation event is being pushed (or will be, on the schedule).
    Validating,
    /// The endpoint answered the validation event with a 2xx.
    Active,
    /// Validation failed on every attempt of the schedule; `validate` runs it again.
    Failing,
}

/// Where validation of the endpoint stands, and what happened last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    pub status: ValidationStatus,
    /// Attempts of the current round (0 when none has run).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (Unix ms); `None` when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<u64>,
    /// An instance working on it until then (Unix ms): others leave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_until_ms: Option<u64>,
}

/// A signing secret, and until when it still signs (a rotated one, 24 h).
#[derive(Clone)]
pub struct SigningSecret {
    pub value: secrecy::SecretString,
    pub expires_ms: Option<u64>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret").field("expires_ms", &self.expires_ms).finish_non_exhaustive()
    }
}

/// A stored subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: u64,
    pub end_point: Endpoint,
    pub filters: SubscriptionFilters,
    pub consumer: String,
    pub created_by: String,
    pub created: String,
    pub validation: Validation,
    pub secrets: Vec<SigningSecret>,
    /// Who created it, as the token said: the PDP decides for it. `None`
    /// for a subscription imported from Altinn Events, which has no token:
    /// the PDP decides for its consumer's name, as Altinn does.
    pub caller: Option<Principal>,
    /// The position in its feed it was created at: events from there on are
    /// pushed (once it is validated).
    pub starts_at: u64,
    /// Imported from Altinn Events (`altinn-events import`).
    pub imported: Option<Imported>,
}

/// What an imported subscription keeps of its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    /// Altinn Events pushed this subscription's events up to this sequence
    /// number (the cut-over point): events imported with a number up to it
    /// are not pushed again, every other event is. `None` until the
    /// operator sets the cut-over: nothing is pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_through: Option<u64>,
    /// A digest of the Altinn row it was imported from: a later import sees
    /// at once whether the row changed.
    #[serde(default)]
    pub row_digest: String,
}

/// Where a subscription's events are pushed: parsed once, when it is made
/// or read from the store, and shown back as it was written (an imported
/// subscription keeps Altinn's text, which URL parsing might normalise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    text: String,
    url: url::Url,
}

impl Endpoint {
    /// `text` when it is an absolute URL.
    pub fn parse(text: &str) -> Result<Self, url::ParseError> {
        Ok(Self { url: url::Url::parse(text)?, text: text.to_owned() })
    }

    /// The URL pushes go to.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The text as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<url::Url> for Endpoint {
    fn from(url: url::Url) -> Self {
        Self { text: url.to_string(), url }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Subscription {
    /// App events (the PDP's `read`) or a generic resource's (`subscribe`):
    /// Altinn's rule, from the resource it follows (the creation rules give
    /// every app subscription its app's resource, `urn:altinn:resource:app_{org}_{app}`).
    pub fn kind(&self) -> Kind {
        match app_of_resource(&self.filters.resource_filter) {
            Some((org, app)) => Kind::App { org, app },
            None => Kind::Generic,
        }
    }

    /// The feed it follows (`SubscriptionFilters::feed`).
    pub fn feed(&self) -> super::FeedId {
        self.filters.feed()
    }

    /// What makes two subscriptions the same (Altinn: the same consumer,
    /// endpoint and filters): creating it again returns the existing one.
    pub fn identity(consumer: &str, end_point: &str, filters: &SubscriptionFilters) -> String {
        let filters = serde_json::to_string(filters).unwrap_or_default();
        format!("{consumer}\n{end_point}\n{filters}")
    }

    /// The secrets that sign a push made at `now_ms`.
    pub fn active_secrets(&self, now_ms: u64) -> Vec<secrecy::SecretString> {
        self.secrets.iter().filter(|s| s.expires_ms.is_none_or(|e| e > now_ms)).map(|s| s.value.clone()).collect()
    }
}

/// Where pushing a subscription's events stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Everything up to the checkpoint is delivered (or not permitted).
    Active,
    /// The event at the checkpoint failed; it is retried on the schedule,
    /// later events wait.
    Failing,
    /// The schedule ran out; `enable` resumes from the checkpoint.
    Disabled,
}

fn first_attempt() -> u32 {
    1
}

fn is_first_attempt(n: &u32) -> bool {
    *n <= 1
}

/// One push attempt, for the owner to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    pub time: String,
    pub event_id: String,
    /// The event's type (absent in attempts stored before it was kept).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Which attempt at this event it was (1: the first; stored only from
    /// the second on, to keep delivery states small).
    #[serde(default = "first_attempt", skip_serializing_if = "is_first_attempt")]
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The delivery of one subscription: how far it got and how it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryState {
    /// The position in the feed up to which every event is delivered or
    /// was not permitted.
    pub checkpoint: u64,
    /// Bumped by the owner's `enable` and `replay`: a deliverer that sees it
    /// change starts again from the stored checkpoint.
    pub generation: u64,
    /// The store's generation the checkpoint is a position of
    /// (`feeds/events/generation.rs`); 0 in states stored before there were
    /// generations.
    #[serde(default)]
    pub store_generation: u32,
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed attempts of the event at the checkpoint.
    #[serde(default)]
    pub failures: u32,
    /// When the next attempt is due (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_ms: Option<u64>,
    /// Recent attempts, oldest first (at most 100, at most 7 days old).
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
    /// The `time` of the oldest event the consumer is permitted and has yet
    /// to get (the one being pushed or retried), as the deliverer last
    /// stored it; `None` when it had caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending: Option<String>,
}

impl DeliveryState {
    /// At `checkpoint`, a position of the store's `store_generation`.
    pub fn starting_in(checkpoint: u64, store_generation: u32) -> Self {
        Self { store_generation, ..Self::starting_at(checkpoint) }
    }

    pub fn starting_at(checkpoint: u64) -> Self {
        Self {
            checkpoint,
            generation: 0,
            store_generation: 0,
            status: DeliveryStatus::Active,
            last_error: None,
            failures: 0,
            next_retry_ms: None,
            attempts: Vec::new(),
            oldest_pending: None,
        }
    }
}

/// Whom a subscription belongs to, as Altinn writes it: `/org/{org}` for a
/// service owner, `/organisation/{orgno}`, `/user/{id}`,
/// `/systemuser/{uuid}`.
pub fn consumer_of(principal: &Principal) -> String {
    use super::Subject;
    match &principal.subject {
        Subject::Org { org: Some(org), .. } => format!("/org/{org}"),
        Subject::Org { org: None, org_number } => format!("/organisation/{org_number}"),
        Subject::User { user_id, .. } => format!("/user/{user_id}"),
        Subject::SystemUser { id, .. } => format!("/systemuser/{id}"),
    }
}

/// Altinn's creation texts (400 unless noted).
pub mod texts {
    pub const ENDPOINT: &str = "Missing or invalid endpoint to push events towards";
    pub const SOURCE_URL: &str = "SourceFilter must be an absolute URL with the https scheme.";
    pub const RESOURCE_URN: &str = "Resource filter must be a valid urn";
    pub const SUBJECT_REQUIRED: &str = "A valid subject to the authenticated identity is required";
    pub const APP_ID: &str = "A valid app id is required in source filter {environment}/{org}/{app}";
    pub const INCOMPATIBLE: &str = "Provided resource filter and source filter are not compatible";
    pub const RESOURCE_REQUIRED: &str = "Resource filter is required.";
    pub const SOURCE_UNSUPPORTED: &str = "Source filter is not supported for subscriptions on this resource.";
    pub const ALTERNATIVE_SUBJECT_UNSUPPORTED: &str =
        "AlternativeSubject filter is not supported for subscriptions on this resource.";
    pub const SUBUNITS: &str = "IncludeSubunits requires a subject filter.";
}

/// A URL with the `https` scheme (or, where allowed, `http`), absolute.
pub fn absolute_url(value: &str, allow_http: bool) -> Option<url::Url> {
    let url = url::Url::parse(value.trim()).ok()?;
    let scheme_ok = url.scheme() == "https" || (allow_http && url.scheme() == "http");
    (scheme_ok && url.host_str().is_some_and(|h| !h.is_empty())).then_some(url)
}

/// Whether a URN is one: `urn:{nid}:{nss}`.
pub fn is_urn(value: &str) -> bool {
    let mut parts = value.splitn(3, ':');
    matches!((parts.next(), parts.next(), parts.next()), (Some(u), Some(nid), Some(nss))
        if u.eq_ignore_ascii_case("urn") && !nid.is_empty() && !nss.is_empty() && !value.chars().any(char::is_whitespace))
}

/// The kind of a subscription, by Altinn's rule: an app's events when the
/// resource is an app's (`urn:altinn:resource:app_...`) or the source is in
/// an apps domain; otherwise a generic resource's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `org`, `app`.
    App {
        org: String,
        app: String,
    },
    Generic,
}

/// `{org}`, `{app}` of an app resource `urn:altinn:resource:app_{org}_{app}`.
pub fn app_of_resource(resource: &str) -> Option<(String, String)> {
    let rest = resource.strip_prefix(RESOURCE_PREFIX)?.strip_prefix("app_")?;
    let (org, app) = rest.split_once('_')?;
    (!org.is_empty() && !app.is_empty()).then(|| (org.to_owned(), app.to_owned()))
}

/// Whether `url`'s host is (in) one of the apps domains.
pub fn in_apps_domain(url: &url::Url, apps_domains: &[String]) -> bool {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    apps_domains.iter().any(|d| {
        let d = d.to_ascii_lowercase();
        host == d || host.ends_with(&format!(".{d}"))
    })
}

/// `{org}/{app}` of an app source filter (`https://{org}.apps.../{org}/{app}[/...]`).
pub fn app_of_source(source: &str) -> Option<(String, String)> {
    AppSource::parse(source).map(|a| (a.org, a.app))
}

#[cfg(test)]
impl SubscriptionFilters {
    /// A resource's feed and no other filter (tests).
    pub fn of_resource(resource: &str) -> Self {
        Self {
            source_filter: None,
            resource_filter: resource.into(),
            subject_filter: None,
            alternative_subject_filter: None,
            type_filter: None,
            include_subunits: false,
        }
    }
}

#[cfg(test)]
impl Subscription {
    /// An active subscription of `/org/ttd` to `https://example.com/hook`
    /// with these filters (tests).
    pub fn example(filters: SubscriptionFilters) -> Self {
        Self {
            id: 1,
            end_point: Endpoint::parse("https://example.com/hook").expect("a valid URL"),
            filters,
            consumer: "/org/ttd".into(),
            created_by: "/org/ttd".into(),
            created: "2026-01-01T00:00:00Z".into(),
            validation: Validation {
                status: ValidationStatus::Active,
                attempts: 1,
                last_error: None,
                next_attempt_ms: None,
                claimed_until_ms: None,
            },
            secrets: Vec::new(),
            caller: None,
            starts_at: 0,
            imported: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_urns_and_apps() {
        assert!(absolute_url("https://example.com/hook", false).is_some());
        assert!(absolute_url("http://example.com/hook", false).is_none());
        assert!(absolute_url("http://127.0.0.1:8080/hook", true).is_some());
        assert!(absolute_url("/relative", true).is_none());
        assert!(absolute_url("ftp://x/y", true).is_none());
        assert!(is_urn("urn:altinn:resource:ttd-estate"));
        assert!(!is_urn("urn:altinn"));
        assert!(!is_urn("altinn:resource:x"));
        assert_eq!(app_of_resource("urn:altinn:resource:app_ttd_apps-test"), Some(("ttd".into(), "apps-test".into())));
        assert_eq!(app_of_resource("urn:altinn:resource:ttd-estate"), None);
        let src = url::Url::parse("https://ttd.apps.altinn.no/ttd/apps-test").unwrap();
        assert!(in_apps_domain(&src, &["apps.altinn.no".into()]));
        assert!(!in_apps_domain(&src, &["apps.tt02.altinn.no".into()]));
        assert_eq!(app_of_source("https://ttd.apps.altinn.no/ttd/apps-test"), Some(("ttd".into(), "apps-test".into())));
    }

    #[test]
    fn an_endpoint_is_shown_as_written_and_pushed_to_as_parsed() {
        let e = Endpoint::parse("https://Example.COM:443/hook").unwrap();
        assert_eq!(e.as_str(), "https://Example.COM:443/hook");
        assert_eq!(e.url().as_str(), "https://example.com/hook");
        assert!(Endpoint::parse("/relative").is_err());
    }

    #[test]
    fn the_kind_follows_the_resource() {
        let mut s = Subscription::example(SubscriptionFilters::of_resource("urn:altinn:resource:app_ttd_apps-test"));
        assert_eq!(s.kind(), Kind::App { org: "ttd".into(), app: "apps-test".into() });
        s.filters = SubscriptionFilters::of_resource("urn:altinn:resource:ttd-estate");
        assert_eq!(s.kind(), Kind::Generic);
    }
}
