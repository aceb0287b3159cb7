//! CloudEvents 1.0 (JSON) as this service accepts them: the fields it needs
//! are checked, everything else (data, extension attributes) is kept as given.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use super::event::EventRecord;

pub const RESOURCE_PREFIX: &str = "urn:altinn:resource:";
/// Longest accepted event id (Cosmos document ids are at most 255 bytes,
/// and escaping may grow an id).
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted attribute (in bytes; an extension attribute's value in
/// characters).
pub const MAX_FIELD_LEN: usize = 1024;

/// Fixed width, microseconds, UTC: string order is time order.
const TIME_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

pub fn server_time() -> String {
    format_time(OffsetDateTime::now_utc())
}

/// A UTC time in the fixed-width form stored with events.
pub fn format_time(t: OffsetDateTime) -> String {
    t.format(TIME_FORMAT).expect("UTC timestamps format")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CloudEventError {
    #[error("Missing parameter values: source, subject and type cannot be null")]
    MissingAppFields,
    #[error("The CloudEvent must be a JSON object.")]
    NotAnObject,
    #[error("'specversion' must be \"1.0\".")]
    SpecVersion,
    #[error("'{0}' is required.")]
    Missing(&'static str),
    #[error("'{0}' must be a string.")]
    NotAString(&'static str),
    #[error("'{field}' is longer than {max} characters.")]
    TooLong { field: &'static str, max: usize },
    #[error("'source' must be an absolute URI.")]
    SourceNotUri,
    #[error("The 'resource' must begin with `urn:altinn:resource:`")]
    Resource,
    #[error("'{0}' must not contain control characters.")]
    ControlCharacter(&'static str),
    #[error("The subject must be {expected}: the party of the instance in source.")]
    SubjectNotInstanceParty { expected: String },
    #[error(
        "The source names an instance that is not valid: expected .../instances/{{partyId}}/{{instanceGuid}}, a party number and a GUID."
    )]
    InstanceNotValid,
    #[error("Extension attribute names must consist of lower-case letters (a-z) and digits (0-9).")]
    ExtensionName,
    #[error("The extension attribute '{0}' must be a string, a number or a boolean.")]
    ExtensionValue(String),
}

/// The attributes this service knows (CloudEvents' own, Altinn's, and the
/// `contenttype` alias); every other member is an extension attribute.
const KNOWN_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "resource",
    "resourceinstance",
    "alternativesubject",
];

/// Extension attributes as CloudEvents defines them: names of lower-case
/// letters and digits, values a string, number or boolean (or null); a
/// string within the same bounds as the attributes this service reads (no
/// control characters, at most 1024 characters).
fn check_extensions(map: &Map<String, Value>) -> Result<(), CloudEventError> {
    for (name, value) in map.iter().filter(|(name, _)| !KNOWN_ATTRIBUTES.contains(&name.as_str())) {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(CloudEventError::ExtensionName);
        }
        match value {
            Value::String(s) if s.chars().count() > MAX_FIELD_LEN => {
                return Err(CloudEventError::TooLong { field: "extension attribute", max: MAX_FIELD_LEN });
            }
            Value::String(s) if s.chars().any(char::is_control) => {
                return Err(CloudEventError::ControlCharacter("extension attribute"));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {}
            Value::Array(_) | Value::Object(_) => return Err(CloudEventError::ExtensionValue(name.clone())),
        }
    }
    Ok(())
}

fn string(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, CloudEventError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_FIELD_LEN => {
            Err(CloudEventError::TooLong { field, max: MAX_FIELD_LEN })
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => Err(CloudEventError::ControlCharacter(field)),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CloudEventError::NotAString(field)),
    }
}

/// `https://{org}.apps.{host}/{org}/{app}/instances/{partyId}/{instanceGuid}`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSource {
    pub org: String,
    pub app: String,
    pub instance: Option<(u64, String)>,
    /// The path names an instance (`.../instances/...`) that does not parse
    /// as a party number and a GUID.
    pub malformed_instance: bool,
}

impl AppSource {
    pub fn parse(source: &str) -> Option<Self> {
        let url = url::Url::parse(source).ok()?;
        let mut parts = url.path_segments()?.filter(|s| !s.is_empty());
        let org = parts.next()?.to_owned();
        let app = parts.next()?.to_owned();
        let (instance, malformed_instance) = match (parts.next(), parts.next(), parts.next()) {
            (Some(segment), party, guid) if segment.eq_ignore_ascii_case("instances") => {
                let parsed = party.zip(guid).and_then(|(party, guid)| {
                    let number = party.bytes().all(|b| b.is_ascii_digit()).then(|| party.parse::<u64>().ok())??;
                    instance_id(party, guid).map(|_| (number, guid.to_owned()))
                });
                let malformed = parsed.is_none();
                (parsed, malformed)
            }
            _ => (None, false),
        };
        Some(Self { org, app, instance, malformed_instance })
    }

    pub fn resource(&self) -> String {
        format!("{RESOURCE_PREFIX}app_{}_{}", self.org, self.app)
    }
}

/// An instance id `{partyId}/{instanceGuid}` in its one spelling: the party
/// a number, the GUID lower case. `None` when either is not valid. Used for
/// what events store and for what instance access keys bind, so that they
/// always match.
pub fn instance_id(party: &str, guid: &str) -> Option<String> {
    let party: u64 = party.parse().ok()?;
    let valid = !guid.is_empty() && guid.len() <= 64 && guid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then(|| format!("{party}/{}", guid.to_ascii_lowercase()))
}

fn base(body: Value) -> Result<Map<String, Value>, CloudEventError> {
    let Value::Object(mut map) = body else { return Err(CloudEventError::NotAnObject) };
    // `contenttype` is Altinn's input alias of `datacontenttype`.
    if !map.contains_key("datacontenttype")
        && let Some(ct) = map.remove("contenttype")
    {
        map.insert("datacontenttype".into(), ct);
    }
    // Attributes kept as given must still be what CloudEvents says they
    // are: a reader's SDK fails on an object where a string belongs.
    string(&map, "datacontenttype")?;
    string(&map, "dataschema")?;
    check_extensions(&map)?;
    Ok(map)
}

fn check_source(source: &str) -> Result<(), CloudEventError> {
    match url::Url::parse(source) {
        Ok(u) if !u.cannot_be_a_base() || u.scheme() == "urn" => Ok(()),
        _ => Err(CloudEventError::SourceNotUri),
    }
}

/// An app event (`POST /app`): no id or time from the caller; the server
/// assigns `id`, `time`, `resource` and `resourceinstance`.
pub fn app_event(body: Value, id: String, time: String) -> Result<(EventRecord, AppSource), CloudEventError> {
    let mut map = base(body)?;
    let source = string(&map, "source")?;
    let subject = string(&map, "subject")?;
    let event_type = string(&map, "type")?;
    let spec = string(&map, "specversion")?;
    let (Some(source), Some(subject), Some(event_type), Some(spec)) = (source, subject, event_type, spec) else {
        return Err(CloudEventError::MissingAppFields);
    };
    if spec != "1.0" {
        return Err(CloudEventError::SpecVersion);
    }
    check_source(&source)?;
    let app = AppSource::parse(&source).ok_or(CloudEventError::SourceNotUri)?;
    if app.malformed_instance {
        return Err(CloudEventError::InstanceNotValid);
    }
    // The event goes to the feed of its subject and is authorized for the
    // party of its instance: they must be the same party.
    if let Some((party, _)) = &app.instance {
        let expected = format!("/party/{party}");
        if subject != expected {
            return Err(CloudEventError::SubjectNotInstanceParty { expected });
        }
    }
    let alternativesubject = string(&map, "alternativesubject")?;
    let resource = app.resource();
    let resourceinstance = app.instance.as_ref().and_then(|(p, g)| instance_id(&p.to_string(), g));
    map.insert("id".into(), Value::String(id.clone()));
    map.insert("time".into(), Value::String(time.clone()));
    map.insert("resource".into(), Value::String(resource.clone()));
    if let Some(ri) = &resourceinstance {
        map.insert("resourceinstance".into(), Value::String(ri.clone()));
    }
    let record = EventRecord {
        id,
        source,
        subject,
        resource,
        event_type,
        time,
        alternativesubject,
        resourceinstance,
        cloud_event: Value::Object(map),
        origin: None,
    };
    Ok((record, app))
}

/// A generic event (`POST /events`): the publisher gives `id` and
/// `resource`; the server sets `time`.
pub fn generic_event(body: Value, time: String) -> Result<EventRecord, CloudEventError> {
    let mut map = base(body)?;
    match string(&map, "specversion")? {
        Some(v) if v == "1.0" => {}
        Some(_) => return Err(CloudEventError::SpecVersion),
        None => return Err(CloudEventError::Missing("specversion")),
    }
    let id = string(&map, "id")?.ok_or(CloudEventError::Missing("id"))?;
    if id.chars().count() > MAX_ID_LEN {
        return Err(CloudEventError::TooLong { field: "id", max: MAX_ID_LEN });
    }
    let source = string(&map, "source")?.ok_or(CloudEventError::Missing("source"))?;
    check_source(&source)?;
    let event_type = string(&map, "type")?.ok_or(CloudEventError::Missing("type"))?;
    let resource = string(&map, "resource")?.ok_or(CloudEventError::Missing("resource"))?;
    if !resource.starts_with(RESOURCE_PREFIX) || resource.len() == RESOURCE_PREFIX.len() {
        return Err(CloudEventError::Resource);
    }
    let subject = string(&map, "subject")?.unwrap_or_default();
    let alternativesubject = string(&map, "alternativesubject")?;
    let resourceinstance = string(&map, "resourceinstance")?;
    map.insert("time".into(), Value::String(time.clone()));
    Ok(EventRecord {
        id,
        source,
        subject,
        resource,
        event_type,
        time,
        alternativesubject,
        resourceinstance,
        cloud_event: Value::Object(map),
        origin: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SRC: &str = "https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/6fb3f738-6800-4f29-9f3e-1c66862656cd";

    #[test]
    fn app_events_get_server_fields_and_keep_extensions() {
        let body = json!({"specversion": "1.0", "type": "app.instance.created", "source": SRC,
            "subject": "/party/1337", "contenttype": "application/json", "data": {"a": 1}, "myext": "kept"});
        let (rec, app) = app_event(body, "id-1".into(), "2026-11-27T10:00:00.000000Z".into()).unwrap();
        assert_eq!(app.org, "ttd");
        assert_eq!(rec.resource, "urn:altinn:resource:app_ttd_apps-test");
        assert_eq!(rec.resourceinstance.as_deref(), Some("1337/6fb3f738-6800-4f29-9f3e-1c66862656cd"));
        assert_eq!(rec.cloud_event["myext"], "kept");
        assert_eq!(rec.cloud_event["datacontenttype"], "application/json");
        assert_eq!(rec.cloud_event["id"], "id-1");
    }

    #[test]
    fn app_events_missing_fields_use_altinns_text() {
        for body in [
            json!({"specversion": "1.0", "type": "t", "source": SRC}),
            json!({"specversion": "1.0", "subject": "/party/1", "source": SRC}),
            json!({"type": "t", "subject": "/party/1", "source": SRC}),
            json!({"specversion": "1.0", "type": "t", "subject": "/party/1"}),
        ] {
            let err = app_event(body, "i".into(), "t".into()).unwrap_err();
            assert_eq!(err.to_string(), "Missing parameter values: source, subject and type cannot be null");
        }
    }

    #[test]
    fn control_characters_and_foreign_subjects_are_refused() {
        for (field, value) in [("type", "a\u{0}b"), ("subject", "/party/1337\n"), ("source", "https://x/\u{7f}")] {
            let mut body = json!({"specversion": "1.0", "type": "t", "source": SRC, "subject": "/party/1337"});
            body[field] = json!(value);
            let err = app_event(body, "i".into(), "t".into()).unwrap_err();
            assert_eq!(err, CloudEventError::ControlCharacter(field));
        }
        let body = json!({"specversion": "1.0", "type": "t", "source": SRC, "subject": "/party/1338"});
        let err = app_event(body, "i".into(), "t".into()).unwrap_err();
        assert_eq!(err.to_string(), "The subject must be /party/1337: the party of the instance in source.");
        let upper = SRC.to_ascii_uppercase().replace(
            "HTTPS://TTD.APPS.ALTINN.NO/TTD/APPS-TEST/INSTANCES",
            "https://ttd.apps.altinn.no/ttd/apps-test/instances",
        );
        let body = json!({"specversion": "1.0", "type": "t", "source": upper, "subject": "/party/1337"});
        let (rec, _) = app_event(body, "i".into(), "t".into()).unwrap();
        assert_eq!(rec.resourceinstance.as_deref(), Some("1337/6fb3f738-6800-4f29-9f3e-1c66862656cd"), "one spelling");
        assert_eq!(rec.source, upper, "the source is kept as published");
    }

    #[test]
    fn instances_that_do_not_parse_are_refused_not_skipped() {
        for party in ["-1", "18446744073709551616", "%31337", "+1337", "1337x", ""] {
            let source = format!(
                "https://ttd.apps.altinn.no/ttd/apps-test/instances/{party}/6fb3f738-6800-4f29-9f3e-1c66862656cd"
            );
            let body = json!({"specversion": "1.0", "type": "t", "source": source, "subject": "/party/1337"});
            assert_eq!(
                app_event(body, "i".into(), "t".into()).unwrap_err(),
                CloudEventError::InstanceNotValid,
                "{party}"
            );
        }
        for guid in ["not-a-guid!", "", "gggggggg"] {
            let source = format!("https://ttd.apps.altinn.no/ttd/apps-test/Instances/1337/{guid}");
            let body = json!({"specversion": "1.0", "type": "t", "source": source, "subject": "/party/1338"});
            assert_eq!(
                app_event(body, "i".into(), "t".into()).unwrap_err(),
                CloudEventError::InstanceNotValid,
                "{guid}"
            );
        }
        // No instance at all is still an app's event (the subject is the app's to say).
        let body = json!({"specversion": "1.0", "type": "t", "source": "https://ttd.apps.altinn.no/ttd/apps-test",
            "subject": "/party/1338"});
        assert!(app_event(body, "i".into(), "t".into()).is_ok());
    }

    #[test]
    fn extension_attributes_follow_the_cloudevents_rules() {
        let event = |name: &str, value: Value| {
            let mut body = json!({"specversion": "1.0", "id": "e1", "type": "t", "source": "urn:altinn:x",
                "resource": "urn:altinn:resource:ttd-estate-of-deceased"});
            body[name] = value;
            generic_event(body, "t".into())
        };
        assert!(event("myext1", json!("kept")).is_ok());
        assert!(event("count", json!(3)).is_ok());
        assert!(event("flag", json!(true)).is_ok());
        for name in ["my-ext", "MyExt", "ext\u{0}", "\u{0}", "\u{e6}xt", "with space"] {
            assert_eq!(event(name, json!("v")).unwrap_err(), CloudEventError::ExtensionName, "{name:?}");
        }
        assert_eq!(
            event("ext", json!("a\u{0}b")).unwrap_err(),
            CloudEventError::ControlCharacter("extension attribute")
        );
        assert!(matches!(event("ext", json!("x".repeat(1025))).unwrap_err(), CloudEventError::TooLong { .. }));
        assert!(matches!(event("ext", json!({"nested": 1})).unwrap_err(), CloudEventError::ExtensionValue(_)));
        let body = json!({"specversion": "1.0", "type": "t", "source": SRC, "subject": "/party/1337", "bad\u{0}": "v"});
        assert_eq!(app_event(body, "i".into(), "t".into()).unwrap_err(), CloudEventError::ExtensionName);
    }

    #[test]
    fn generic_events_need_a_resource_urn_and_bounded_id() {
        let ok = json!({"specversion": "1.0", "id": "e1", "type": "t", "source": "urn:altinn:x",
            "resource": "urn:altinn:resource:ttd-estate-of-deceased", "subject": "/party/1337"});
        assert!(generic_event(ok.clone(), "t".into()).is_ok());
        let mut bad = ok.clone();
        bad["resource"] = json!("ttd-estate-of-deceased");
        assert_eq!(generic_event(bad, "t".into()).unwrap_err(), CloudEventError::Resource);
        let mut long = ok.clone();
        long["id"] = json!("x".repeat(MAX_ID_LEN + 1));
        assert!(matches!(generic_event(long, "t".into()).unwrap_err(), CloudEventError::TooLong { .. }));
        let mut not_uri = ok;
        not_uri["source"] = json!("not a uri");
        assert_eq!(generic_event(not_uri, "t".into()).unwrap_err(), CloudEventError::SourceNotUri);
    }

    #[test]
    fn server_time_is_fixed_width_utc() {
        let t = server_time();
        assert_eq!(t.len(), "2026-11-27T10:00:00.000000Z".len(), "{t}");
        assert!(t.ends_with('Z'));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            let _ = AppSource::parse(&s);
            let _ = app_event(json!({"specversion": "1.0", "type": s.clone(), "source": s.clone(), "subject": s.clone()}), "i".into(), "t".into());
            let _ = generic_event(json!({"specversion": "1.0", "id": s.clone(), "type": "t", "source": s.clone(), "resource": s}), "t".into());
        }
    }
}
