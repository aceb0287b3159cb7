//! The documents of a feed segment partition (`pk = "{feed}|{segment}"`):
//! one head (the segment's marker, written once when the segment opens) and
//! the events with their `seq`, which a unique key keeps unique in the
//! partition.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::domain::{EventRecord, FeedId};

pub const HEAD_ID: &str = "head";
/// The id of a segment's seal (see [`EventDoc::seal`]).
pub const SEAL_ID: &str = "seal";

/// Where a feed's segments live: segment `k` of feed `F` is the logical
/// partition `"{F}|{k}"`.
pub trait SegmentKey {
    /// The partition key of segment `k`.
    fn pk(&self, segment: u64) -> String;
}

impl SegmentKey for FeedId {
    fn pk(&self, segment: u64) -> String {
        format!("{}|{segment}", self.key())
    }
}

/// The id of an event's document: `(id, source)` identifies a CloudEvent, so
/// two events with one id from two sources are two documents in a segment,
/// and the same event again meets its own document. The event id stays
/// readable; the source is a 64-bit digest.
pub fn event_doc_id(event_id: &str, source: &str) -> String {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(source.as_bytes());
    let mut id = doc_id(event_id);
    id.reserve(17);
    id.push('~');
    for b in &digest[..8] {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 0xf)] as char);
    }
    id
}

/// Cosmos ids may not contain `/`, `\`, `?` or `#`; event ids may. Those
/// (and `%`) are percent-encoded, which keeps ids readable and reversible.
pub fn doc_id(event_id: &str) -> String {
    let mut out = String::with_capacity(event_id.len());
    for c in event_id.chars() {
        match c {
            '/' | '\\' | '?' | '#' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    // The head and the seal own these ids in every segment.
    if out == HEAD_ID {
        return "%68ead".to_owned();
    }
    if out == SEAL_ID {
        return "%73eal".to_owned();
    }
    out
}

/// A segment's marker: the segment exists. Created once, when the segment
/// opens, and never changed; appends do not touch it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadDoc {
    pub id: String,
    pub pk: String,
    /// When the segment opened (Cosmos sets `_ts`, in Unix seconds): its
    /// events are younger.
    #[serde(rename = "_ts", skip_serializing)]
    pub opened: i64,
    /// Heads never expire, so a feed's segments are known after their
    /// events' TTL.
    pub ttl: i64,
}

impl HeadDoc {
    pub fn new(pk: String) -> Self {
        Self { id: HEAD_ID.to_owned(), pk, opened: 0, ttl: -1 }
    }
}

/// An event document in a segment partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventDoc {
    /// `event_doc_id(event id, source)`.
    pub id: String,
    pub pk: String,
    pub seq: u64,
    /// The event id as published.
    pub eid: String,
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
    pub ev: Value,
    /// The event's sequence number in Altinn Events, when it was imported
    /// from there (an imported subscription's deliverer leaves out what
    /// Altinn pushed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aseq: Option<u64>,
    /// A seal, not an event: see [`EventDoc::seal`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
    /// Seals never expire (events take the container's TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

/// What a feed query reads of a document ([`STORED_FIELDS`]): the event's
/// record, built by the query from the stored fields, or a segment's seal.
/// Not the document's id and partition key, nor the system properties
/// Cosmos DB adds (`_rid`, `_self`, `_etag`, ...), which a page has no use
/// for and which the SDK would otherwise decode for every event.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredDoc {
    pub seq: u64,
    #[serde(default)]
    pub sealed: bool,
    pub record: EventRecord,
}

/// The projection that reads a [`StoredDoc`]: the record's fields under
/// [`EventRecord`]'s names (an undefined one is left out, as serde's
/// defaults expect).
pub const STORED_FIELDS: &str = "c.seq, c.sealed, {\"id\": c.eid, \"source\": c.source, \"subject\": c.subject, \"resource\": c.resource, \"type\": c.type, \"time\": c.time, \"alternativesubject\": c.alternativesubject, \"resourceinstance\": c.resourceinstance, \"cloud_event\": c.ev} AS record";

/// An event document as it is written: [`EventDoc`]'s fields borrowed from
/// the record, so that a write neither copies the event's tree nor works
/// out its id again.
#[derive(Debug, Serialize)]
pub struct NewEventDoc<'a> {
    pub id: &'a str,
    pub pk: &'a str,
    pub seq: u64,
    pub eid: &'a str,
    pub source: &'a str,
    pub subject: &'a str,
    pub resource: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternativesubject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resourceinstance: Option<&'a str>,
    pub ev: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aseq: Option<u64>,
}

impl<'a> NewEventDoc<'a> {
    /// `id`: `event_doc_id(&record.id, &record.source)`.
    pub fn new(record: &'a EventRecord, id: &'a str, pk: &'a str, seq: u64) -> Self {
        Self {
            id,
            pk,
            seq,
            eid: &record.id,
            source: &record.source,
            subject: &record.subject,
            resource: &record.resource,
            event_type: &record.event_type,
            time: &record.time,
            alternativesubject: record.alternativesubject.as_deref(),
            resourceinstance: record.resourceinstance.as_deref(),
            ev: &record.cloud_event,
            aseq: record.origin,
        }
    }
}

impl EventDoc {
    /// A segment's seal: it takes the segment's next free `seq`, so that no
    /// writer stores an event after it (the unique key refuses the number),
    /// and it tells every reader that the segment is complete. Writers seal
    /// a segment that has been open for `cosmos.segment_close_seconds`, so
    /// that none is still being written when its first events expire.
    /// Readers skip it. Its `time` is when it was written, which keeps a
    /// segment's last `time` the latest of the segment.
    pub fn seal(pk: String, seq: u64, time: String) -> Self {
        Self {
            id: SEAL_ID.to_owned(),
            pk,
            seq,
            eid: String::new(),
            source: String::new(),
            subject: String::new(),
            resource: String::new(),
            event_type: String::new(),
            time,
            alternativesubject: None,
            resourceinstance: None,
            ev: Value::Null,
            aseq: None,
            sealed: true,
            ttl: Some(-1),
        }
    }

    pub fn into_record(self) -> EventRecord {
        EventRecord {
            id: self.eid,
            source: self.source,
            subject: self.subject,
            resource: self.resource,
            event_type: self.event_type,
            time: self.time,
            alternativesubject: self.alternativesubject,
            resourceinstance: self.resourceinstance,
            cloud_event: self.ev,
            origin: self.aseq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_ids_escape_what_cosmos_forbids_and_nothing_else() {
        assert_eq!(doc_id("3f0b1c2d-aaaa"), "3f0b1c2d-aaaa");
        assert_eq!(doc_id("a/b\\c?d#e%f"), "a%2Fb%5Cc%3Fd%23e%25f");
        assert_ne!(doc_id("a/b"), doc_id("a%2Fb"), "escaping is injective");
        assert_ne!(doc_id("head"), HEAD_ID, "an event called head is not the head");
        assert_ne!(doc_id("seal"), SEAL_ID, "an event called seal is not the seal");
        assert_ne!(doc_id("head"), doc_id("%68ead"));
    }

    #[test]
    fn one_id_from_two_sources_is_two_documents() {
        assert_ne!(event_doc_id("e1", "urn:a"), event_doc_id("e1", "urn:b"));
        assert_eq!(event_doc_id("e1", "urn:a"), event_doc_id("e1", "urn:a"));
        assert!(event_doc_id("a/b", "urn:a").starts_with("a%2Fb~"));
    }

    #[test]
    fn a_written_document_reads_back_as_the_event_document() {
        let record = EventRecord {
            id: "e/1".into(),
            source: "urn:a".into(),
            subject: "/party/1".into(),
            resource: "urn:altinn:resource:r".into(),
            event_type: "t".into(),
            time: "2026-01-01T00:00:00Z".into(),
            alternativesubject: None,
            resourceinstance: Some("1/x".into()),
            cloud_event: serde_json::json!({"id": "e/1", "data": {"a": [1, 2]}}),
            origin: None,
        };
        let id = event_doc_id(&record.id, &record.source);
        let written = serde_json::to_value(NewEventDoc::new(&record, &id, "pk", 7)).unwrap();
        // The stored document, as EventDoc writes one for an event (no
        // `sealed`, no `ttl`, no absent optional field).
        let stored = serde_json::json!({"id": id, "pk": "pk", "seq": 7, "eid": "e/1", "source": "urn:a",
            "subject": "/party/1", "resource": "urn:altinn:resource:r", "type": "t", "time": "2026-01-01T00:00:00Z",
            "resourceinstance": "1/x", "ev": {"id": "e/1", "data": {"a": [1, 2]}}});
        assert_eq!(written, stored);
        let read: EventDoc = serde_json::from_value(written).unwrap();
        assert_eq!(serde_json::to_value(read).unwrap(), stored);
    }

    #[test]
    fn partition_keys_keep_the_feeds_apart() {
        assert_eq!(FeedId::Resource("urn:altinn:resource:x".into()).pk(3), "r:urn:altinn:resource:x|3");
        assert_eq!(FeedId::Subject("/party/1337".into()).pk(0), "s:/party/1337|0");
    }
}
