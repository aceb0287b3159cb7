//! Altinn Events' rows as this service's events and subscriptions.
//!
//! Invariants it keeps:
//! - **An event is kept as Altinn stored it**: every attribute of its
//!   CloudEvent (id, source, type, subject, alternativesubject, resource,
//!   resourceinstance, data, extensions) as in the row; only `time` is
//!   written in UTC, as Altinn's API shows it (with its own precision).
//! - **A row that cannot be an event here is skipped with its reason**
//!   (not JSON, a required attribute missing, a value too long or with
//!   control characters, too large): it never reaches a feed.
//! - **A subscription keeps its id, filters, consumer, creator, creation
//!   time and validated state**; it is pushed for its consumer's name (as
//!   Altinn pushes), and not before the cut-over.

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::altinn_db::{EventRow, SubscriptionRow};
use crate::domain::EventRecord;
use crate::domain::cloud_event::{MAX_ID_LEN, RESOURCE_PREFIX, format_time};
use crate::domain::subscription::{
    DeliveryStatus, Endpoint, Imported, SigningSecret, Subscription, SubscriptionFilters, Validation, ValidationStatus,
    app_of_source,
};

/// Longest value of an attribute the feeds index (as the publish API).
const MAX_FIELD_LEN: usize = 1024;

/// An event row as an event, or why it cannot be one.
pub fn event(row: &EventRow) -> Result<EventRecord, String> {
    let text =
        row.cloudevent.as_deref().ok_or_else(|| format!("larger than the import takes ({} bytes)", row.bytes))?;
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(text) else {
        return Err("not a JSON object".into());
    };
    let field = |name: &'static str, required: bool| -> Result<Option<String>, String> {
        match map.get(name) {
            None | Some(Value::Null) if required => Err(format!("no '{name}'")),
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() > if name == "id" { MAX_ID_LEN } else { MAX_FIELD_LEN } => {
                Err(format!("'{name}' is too long"))
            }
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                Err(format!("'{name}' has control characters"))
            }
            Some(Value::String(s)) if s.trim().is_empty() && required => Err(format!("'{name}' is empty")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("'{name}' is not a string")),
        }
    };
    let id = field("id", true)?.unwrap_or_default();
    let source = field("source", true)?.unwrap_or_default();
    let event_type = field("type", true)?.unwrap_or_default();
    field("specversion", true)?;
    let resource = field("resource", true)?.unwrap_or_default();
    if !resource.starts_with(RESOURCE_PREFIX) {
        return Err("'resource' is not urn:altinn:resource:...".into());
    }
    let subject = field("subject", false)?.unwrap_or_default();
    let alternativesubject = field("alternativesubject", false)?;
    let resourceinstance = field("resourceinstance", false)?;
    let time = match field("time", false)? {
        Some(time) => {
            let parsed =
                OffsetDateTime::parse(&time, &Rfc3339).map_err(|_| "'time' is not an RFC 3339 time".to_owned())?;
            let utc = parsed.to_offset(time::UtcOffset::UTC);
            if parsed.offset() != time::UtcOffset::UTC {
                map.insert("time".into(), Value::String(utc_as_altinn_shows(utc, &time)));
            }
            format_time(utc)
        }
        // Altinn adds no time to a generic event that has none: the
        // registration time stands in for it in time queries.
        None => {
            let us = row.registered_us.unwrap_or(0);
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
                .map(format_time)
                .map_err(|_| "no usable 'time' or registration time".to_owned())?
        }
    };
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
        origin: Some(row.sequenceno),
    })
}

/// `utc` written as CloudEvents' formatter writes a UTC time: `Z`, and the
/// fraction digits the original had.
fn utc_as_altinn_shows(utc: OffsetDateTime, original: &str) -> String {
    let digits =
        original.split_once('.').map_or(0, |(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count()).min(9);
    let (date, clock) = (utc.date(), utc.time());
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second()
    );
    if digits > 0 {
        let nanos = format!("{:09}", clock.nanosecond());
        out.push('.');
        out.push_str(&nanos[..digits]);
    }
    out.push('Z');
    out
}

/// A timestamp (Unix microseconds) as Altinn's API writes one
/// (ISO 8601 UTC, trailing zeros of the fraction left out).
pub fn altinn_time(us: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let full = format_time(t);
    match full.strip_suffix('Z').and_then(|f| f.split_once('.')) {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() { format!("{whole}Z") } else { format!("{whole}.{fraction}Z") }
        }
        None => full,
    }
}

/// A subscription row as an imported subscription (delivery waits for the
/// cut-over), with the delivery status it starts in; or why it cannot be.
pub fn subscription(
    row: &SubscriptionRow,
    apps_domains: &[String],
    secret: secrecy::SecretString,
) -> Result<(Subscription, DeliveryStatus, Option<String>), String> {
    let clean = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    for (name, value) in
        [("endpointurl", Some(&row.endpointurl)), ("consumer", Some(&row.consumer))].into_iter().chain([
            ("sourcefilter", row.sourcefilter.as_ref()),
            ("subjectfilter", row.subjectfilter.as_ref()),
            ("typefilter", row.typefilter.as_ref()),
            ("resourcefilter", row.resourcefilter.as_ref()),
        ])
    {
        if let Some(v) = value
            && (v.chars().count() > MAX_FIELD_LEN || v.chars().any(char::is_control))
        {
            return Err(format!("'{name}' is too long or has control characters"));
        }
    }
    let Ok(end_point) = Endpoint::parse(&row.endpointurl) else {
        return Err("'endpointurl' is not a URL".into());
    };
    let source = clean(&row.sourcefilter);
    let app_source = source.as_deref().and_then(|s| {
        let url = url::Url::parse(s).ok()?;
        crate::domain::subscription::in_apps_domain(&url, apps_domains).then(|| app_of_source(s)).flatten()
    });
    // Altinn derives the resource of an app subscription from its source
    // when it is made; rows from before that have none, and Altinn pushes
    // nothing to them: derived here too, and imported disabled.
    let (resource, derived) = match (clean(&row.resourcefilter), &app_source) {
        (Some(resource), _) => (resource, false),
        (None, Some((org, app))) => (format!("urn:altinn:resource:app_{org}_{app}"), true),
        (None, None) => return Err("no resource filter, and no app in the source filter".into()),
    };
    let filters = SubscriptionFilters {
        source_filter: source,
        resource_filter: resource,
        subject_filter: clean(&row.subjectfilter),
        alternative_subject_filter: None,
        type_filter: clean(&row.typefilter),
        include_subunits: row.includesubunits,
    };
    let validation = match row.validated {
        true => Validation {
            status: ValidationStatus::Active,
            attempts: 0,
            last_error: None,
            next_attempt_ms: None,
            claimed_until_ms: None,
        },
        false => Validation {
            status: ValidationStatus::Failing,
            attempts: 0,
            last_error: Some("not validated in Altinn Events; POST .../validate validates it here".into()),
            next_attempt_ms: None,
            claimed_until_ms: None,
        },
    };
    let (status, reason) = match derived {
        true => (
            DeliveryStatus::Disabled,
            Some("imported from Altinn Events, which pushed nothing to it (it had no resource filter); enable it to start".into()),
        ),
        false => (DeliveryStatus::Active, None),
    };
    let subscription = Subscription {
        id: row.id,
        end_point,
        filters,
        consumer: row.consumer.clone(),
        created_by: row.createdby.clone(),
        created: altinn_time(row.created_us),
        validation,
        secrets: vec![SigningSecret { value: secret, expires_ms: None }],
        caller: None,
        starts_at: 0,
        imported: Some(Imported { pushed_through: None, row_digest: digest(row) }),
    };
    Ok((subscription, status, reason))
}

/// A digest of everything of a row that an imported subscription shows.
fn digest(row: &SubscriptionRow) -> String {
    let mut h = Sha256::new();
    let parts = [
        Some(row.id.to_string()),
        row.resourcefilter.clone(),
        row.sourcefilter.clone(),
        row.subjectfilter.clone(),
        row.typefilter.clone(),
        Some(row.consumer.clone()),
        Some(row.endpointurl.clone()),
        Some(row.createdby.clone()),
        Some(row.validated.to_string()),
        Some(row.created_us.to_string()),
        Some(row.includesubunits.to_string()),
    ];
    for part in parts {
        match part {
            Some(p) => {
                h.update([1]);
                h.update(p.as_bytes());
            }
            None => h.update([0]),
        }
        h.update([0xff]);
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Keeps of an imported subscription what this service owns (its secrets,
/// the cut-over, a validation run here), and takes the rest from a newer
/// import of its row.
pub fn merge(stored: &Subscription, imported: &Subscription) -> Subscription {
    let mut next = imported.clone();
    next.secrets = stored.secrets.clone();
    if let (Some(next), Some(stored)) = (next.imported.as_mut(), stored.imported.as_ref()) {
        next.pushed_through = stored.pushed_through;
    }
    // Validated here (or being validated) stays so, unless Altinn has it
    // validated now.
    if stored.validation.status != ValidationStatus::Failing && imported.validation.status == ValidationStatus::Failing
    {
        next.validation = stored.validation.clone();
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    /// Every attribute but `time` is as stored.
    fn untouched(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
        a.iter().filter(|(k, _)| k.as_str() != "time").all(|(k, v)| b.get(k) == Some(v))
    }

    fn row(seq: u64, cloudevent: Value) -> EventRow {
        EventRow {
            sequenceno: seq,
            registered_us: Some(1_700_000_000_000_000),
            settled: true,
            recent: false,
            bytes: cloudevent.to_string().len(),
            cloudevent: Some(cloudevent.to_string()),
        }
    }

    #[test]
    fn an_app_event_is_kept_as_altinn_stored_it() {
        let stored = json!({"specversion": "1.0", "id": "3f5f4a6b-0000-4000-8000-000000000001",
            "source": "https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/6fb3f738-6800-4f29-9f3e-1c66862656cd",
            "type": "app.instance.created", "subject": "/party/1337", "time": "2026-09-01T10:00:00.1234567Z",
            "resource": "urn:altinn:resource:app_ttd_apps-test",
            "resourceinstance": "1337/6fb3f738-6800-4f29-9f3e-1c66862656cd", "myext": "x", "data": {"a": [1]}});
        let converted = event(&row(7, stored.clone())).unwrap();
        assert_eq!(converted.cloud_event, stored, "every attribute as stored");
        assert_eq!(converted.time, "2026-09-01T10:00:00.123456Z", "fixed width for time queries");
        assert_eq!(converted.origin, Some(7));
        assert_eq!(converted.resourceinstance.as_deref(), Some("1337/6fb3f738-6800-4f29-9f3e-1c66862656cd"));
    }

    #[test]
    fn a_time_with_an_offset_is_shown_in_utc_with_its_precision() {
        let stored = json!({"specversion": "1.0", "id": "e1", "source": "urn:x", "type": "t",
            "time": "2026-09-01T12:00:00.120+02:00", "resource": "urn:altinn:resource:ttd-estate"});
        let converted = event(&row(1, stored.clone())).unwrap();
        assert_eq!(converted.cloud_event["time"], "2026-09-01T10:00:00.120Z");
        assert_eq!(converted.time, "2026-09-01T10:00:00.120000Z");
        assert!(untouched(stored.as_object().unwrap(), converted.cloud_event.as_object().unwrap()));
        let no_time = json!({"specversion": "1.0", "id": "e2", "source": "urn:x", "type": "t",
            "resource": "urn:altinn:resource:ttd-estate"});
        let converted = event(&row(2, no_time.clone())).unwrap();
        assert!(converted.cloud_event.get("time").is_none(), "Altinn adds none");
        assert_eq!(converted.time, "2023-11-14T22:13:20.000000Z", "registered time for queries");
    }

    #[test]
    fn rows_that_cannot_be_events_say_why() {
        let base = json!({"specversion": "1.0", "id": "e1", "source": "urn:x", "type": "t",
            "resource": "urn:altinn:resource:r"});
        let mut cases = vec![];
        for (field, value) in
            [("id", json!(null)), ("type", json!(3)), ("resource", json!("r")), ("id", json!("x".repeat(129)))]
        {
            let mut e = base.clone();
            e[field] = value;
            cases.push(e);
        }
        let mut control = base.clone();
        control["subject"] = json!("/party/1\u{0}");
        cases.push(control);
        for case in cases {
            assert!(event(&row(1, case.clone())).is_err(), "{case}");
        }
        let mut not_json = row(1, base);
        not_json.cloudevent = Some("{nope".into());
        assert_eq!(event(&not_json).unwrap_err(), "not a JSON object");
        not_json.cloudevent = None;
        assert!(event(&not_json).unwrap_err().contains("larger"));
    }

    #[test]
    fn created_times_as_altinn_writes_them() {
        assert_eq!(altinn_time(1_700_000_000_123_400), "2023-11-14T22:13:20.1234Z");
        assert_eq!(altinn_time(1_700_000_000_000_000), "2023-11-14T22:13:20Z");
    }
}
