//! A stored event and where it lives: the record the feed store appends,
//! the feeds it belongs to, and the filters a read keeps events by.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A CloudEvent: the tree a publish builds and stores, or, on the read path,
/// the JSON text Cosmos DB returned, passed through as text to the reader's
/// response or the push (no parse into a tree and serialisation back per
/// event; docs/performance.md). Writes to Cosmos DB always send the tree:
/// the SDK's binary encoding cannot carry raw JSON text.
#[derive(Clone)]
pub enum EventJson {
    Tree(Value),
    Text(Box<RawValue>),
}

impl EventJson {
    /// The event as a tree (parsed when it is text).
    pub fn to_value(&self) -> Value {
        match self {
            Self::Tree(v) => v.clone(),
            Self::Text(t) => serde_json::from_str(t.get()).unwrap_or(Value::Null),
        }
    }

    /// The event as a tree, for a write to Cosmos DB.
    pub fn as_tree(&self) -> Self {
        match self {
            Self::Tree(v) => Self::Tree(v.clone()),
            Self::Text(_) => Self::Tree(self.to_value()),
        }
    }

    /// The JSON text (written once when it is a tree).
    pub fn to_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Tree(v) => std::borrow::Cow::Owned(v.to_string()),
            Self::Text(t) => std::borrow::Cow::Borrowed(t.get()),
        }
    }
}

impl From<Value> for EventJson {
    fn from(value: Value) -> Self {
        Self::Tree(value)
    }
}

impl Serialize for EventJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Tree(v) => v.serialize(serializer),
            Self::Text(t) => t.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for EventJson {
    /// As text (the SDK's JSON and binary readers both give it).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::Text)
    }
}

impl PartialEq for EventJson {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Text(a), Self::Text(b)) => a.get() == b.get(),
            _ => self.to_value() == other.to_value(),
        }
    }
}

impl std::fmt::Debug for EventJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

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
    pub cloud_event: EventJson,
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
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_read_as_text_is_written_out_as_that_text() {
        let stored = r#"{"id":"e1","data":{"b":1,"a":[1,2]},"type":"t"}"#;
        let doc = format!(r#"{{"seq":3,"ev":{stored}}}"#);
        #[derive(Deserialize)]
        struct Doc {
            ev: EventJson,
        }
        let read: Doc = serde_json::from_str(&doc).unwrap();
        assert!(matches!(read.ev, EventJson::Text(_)), "read as text");
        assert_eq!(serde_json::to_string(&vec![read.ev.clone()]).unwrap(), format!("[{stored}]"), "passed through");
        let tree = EventJson::from(json!({"id": "e1", "type": "t", "data": {"a": [1, 2], "b": 1}}));
        assert_eq!(read.ev, tree, "text and tree of one event are equal");
        assert!(matches!(read.ev.as_tree(), EventJson::Tree(_)), "written to Cosmos DB as a tree");
        assert_eq!(read.ev.to_value()["data"]["b"], 1);
    }
}
