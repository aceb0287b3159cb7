//! A stored event and where it lives: the record the feed store appends,
//! the feeds it belongs to, and the filters a read keeps events by (the
//! query endpoints' patterns, and a subscription's typed matches).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event to append: the full CloudEvent and the fields queries filter on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: String,
    pub source: String,
    pub subject: String,
    pub resource: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternativesubject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resourceinstance: Option<String>,
    /// The CloudEvent as published (with server-set fields).
    pub cloud_event: Value,
    /// Where it came from, when not from a publish here: its sequence
    /// number in Altinn Events (`altinn-events import`). Stored with the
    /// event, never shown.
    #[serde(default, skip_serializing)]
    pub origin: Option<u64>,
}

/// Which feed an event is appended to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeedId {
    /// `urn:altinn:resource:...`: serves the app owner and `/events` queries.
    Resource(String),
    /// `/party/1337`, ...: serves the party queries.
    Subject(String),
}

impl FeedId {
    /// The feed's name, unique among all feeds.
    pub fn key(&self) -> String {
        match self {
            Self::Resource(r) => format!("r:{r}"),
            Self::Subject(s) => format!("s:{s}"),
        }
    }

    /// For logs: the kind and a hash, never the key itself (a subject can
    /// be `/person/{national identity number}`).
    pub fn log_label(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.key().hash(&mut h);
        let kind = match self {
            Self::Resource(_) => "resource",
            Self::Subject(_) => "subject",
        };
        format!("{kind}#{:016x}", h.finish())
    }
}

impl std::fmt::Display for FeedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// What a read keeps; every field narrows. Times are fixed-width RFC 3339
/// UTC strings, so string order is time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub from_time: Option<String>,
    pub to_time: Option<String>,
    /// Any of these types, as SQL `ILIKE` patterns (case-insensitive, `%`
    /// any run of characters, `_` one character), as Altinn matches them.
    pub types: Vec<String>,
    /// Any of these sources, as `ILIKE` patterns too.
    pub sources: Vec<String>,
    pub subject: Option<String>,
    pub alternative_subject: Option<String>,
    pub resource_instance: Option<String>,
    /// Only events of this resource (a subject feed holds several).
    pub resource: Option<String>,
    /// Only events of resources that start with this (e.g. all app resources).
    pub resource_prefix: Option<String>,
    /// Leave out events imported from Altinn Events with a sequence number
    /// up to this (Altinn pushed those; an imported subscription's cut-over).
    pub imported_after: Option<u64>,
    /// Tests of plain values that every event kept passes (a subscription's
    /// filters, as Altinn matches them when it pushes).
    pub matches: Vec<FieldMatch>,
}

/// A test of one field of an event against a plain value: no character in
/// the value is a wildcard (the store escapes them when it turns the test
/// into its query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldMatch {
    /// The event's `type` is this, ignoring case (a `typeFilter`).
    TypeEquals(String),
    /// The event's `source` starts with this, ignoring case (a `sourceFilter`).
    SourceStartsWith(String),
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
