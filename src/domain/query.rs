//! Query parameters of the feed endpoints, parsed with Altinn's validation
//! texts. Keys are case-insensitive (as in Altinn's ASP.NET binding) and
//! `type` / `source` repeat.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const DEFAULT_SIZE: usize = 50;
pub const MAX_SIZE: usize = 1000;

/// Where a consumer continues: the beginning (`0`), the cursor of a `next`
/// link (opaque; opened by the HTTP edge, which holds the keys), or an event
/// id (what Altinn clients store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Beginning,
    Cursor(String),
    EventId(String),
}

/// How the cursors of `next` links begin (see `api/cursor.rs`).
pub const CURSOR_PREFIX: &str = "c1.";

impl After {
    pub fn parse(value: &str) -> Self {
        if value == "0" {
            Self::Beginning
        } else if value.starts_with(CURSOR_PREFIX) {
            Self::Cursor(value.to_owned())
        } else {
            Self::EventId(value.to_owned())
        }
    }
}

/// At most this many values of a repeated parameter (`type`, `source`).
pub const MAX_LIST_VALUES: usize = 30;
/// Longest accepted value of a query parameter that names an event field.
pub const MAX_VALUE_LEN: usize = 1024;

/// A repeated parameter, within the limits: bounded so that one request
/// cannot make an unbounded query (each value is one more predicate).
fn bounded_list(values: &[String], name: &str) -> Result<Vec<String>, String> {
    if values.len() > MAX_LIST_VALUES {
        return Err(format!("The '{name}' parameter takes at most {MAX_LIST_VALUES} values."));
    }
    if values.iter().any(|v| v.chars().count() > MAX_VALUE_LEN) {
        return Err(format!("A '{name}' value is longer than {MAX_VALUE_LEN} characters."));
    }
    Ok(values.to_vec())
}

/// A single parameter naming an event field, within the length limit.
fn bounded<'a>(value: Option<&'a str>, name: &str) -> Result<Option<&'a str>, String> {
    match value {
        Some(v) if v.chars().count() > MAX_VALUE_LEN => {
            Err(format!("The '{name}' parameter is longer than {MAX_VALUE_LEN} characters."))
        }
        other => Ok(other),
    }
}

/// The raw parameters of one request (query string, or the JSON body of
/// `POST /party`), before validation.
#[derive(Debug, Default, Clone)]
pub struct RawParams {
    pub after: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub party: Option<String>,
    pub unit: Option<String>,
    pub person: Option<String>,
    pub types: Vec<String>,
    pub sources: Vec<String>,
    pub size: Option<String>,
    pub resource: Option<String>,
    pub subject: Option<String>,
    pub alternative_subject: Option<String>,
    pub wait: Option<String>,
}

impl RawParams {
    /// From a query string: keys case-insensitive, `type`/`source` repeated.
    pub fn from_query(query: Option<&str>) -> Self {
        let mut p = Self::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let v = v.into_owned();
            match k.to_ascii_lowercase().as_str() {
                "after" => p.after = Some(v),
                "from" => p.from = Some(v),
                "to" => p.to = Some(v),
                "party" => p.party = Some(v),
                "unit" => p.unit = Some(v),
                // `eventType`: the architecture scenario's name for `type`.
                "type" | "eventtype" => p.types.push(v),
                "source" => p.sources.push(v),
                "size" => p.size = Some(v),
                "resource" => p.resource = Some(v),
                "subject" => p.subject = Some(v),
                "alternativesubject" => p.alternative_subject = Some(v),
                "wait" => p.wait = Some(v),
                _ => {}
            }
        }
        p
    }
}

fn blank_to_none(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A timestamp with an explicit offset, as fixed-width UTC.
pub fn parse_time(value: Option<&str>, name: &str) -> Result<Option<String>, String> {
    let Some(v) = value else { return Ok(None) };
    // An unencoded `+02:00` in a query string arrives as ` 02:00`.
    let parsed = OffsetDateTime::parse(v, &Rfc3339).or_else(|e| match v.contains(' ') {
        true => OffsetDateTime::parse(&v.replace(' ', "+"), &Rfc3339),
        false => Err(e),
    });
    // A time whose UTC form is outside years 0000-9999 is not one the
    // service can represent (or an event can have).
    let outside = || format!("The '{name}' parameter is outside the years 0000-9999 in UTC.");
    // RFC 3339 writes four-digit years: a longer or negative year does not
    // parse, and is named as the limit it breaks, not as a missing timezone.
    let text = || match year_beyond_four_digits(v) {
        true => outside(),
        false => format!("The '{name}' parameter must specify timezone. E.g. 2022-07-07T11:00:53.3917Z for UTC"),
    };
    let utc = parsed.map_err(|_| text())?.checked_to_offset(time::UtcOffset::UTC);
    match utc {
        Some(t) if (0..=9999).contains(&t.year()) => Ok(Some(crate::domain::cloud_event::format_time(t))),
        _ => Err(outside()),
    }
}

/// Whether `value` begins with a date whose year is not four digits: more
/// of them (`10000-01-01`, `+10000-01-01`) or a negative one (`-0001-01-01`).
fn year_beyond_four_digits(value: &str) -> bool {
    let unsigned = value.strip_prefix(['+', '-']).unwrap_or(value);
    let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    let date_follows = unsigned.as_bytes().get(digits) == Some(&b'-');
    date_follows && (digits > 4 || (digits == 4 && value.starts_with('-')))
}

pub fn parse_size(value: Option<&str>) -> Result<usize, String> {
    const MSG: &str = "The 'Size' parameter must be a number larger that 0.";
    match value {
        None => Ok(DEFAULT_SIZE),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n > 0 => Ok((n as u64).min(MAX_SIZE as u64) as usize),
            _ => Err(MSG.to_owned()),
        },
    }
}

/// `size` of `GET /events`, as Altinn reads it there: below 1 is the
/// default, above the maximum is the maximum; only a non-number is a 400.
pub fn parse_generic_size(value: Option<&str>) -> Result<usize, String> {
    match value.map(|v| v.trim().parse::<i64>()) {
        None => Ok(DEFAULT_SIZE),
        Some(Ok(n)) if n < 1 => Ok(DEFAULT_SIZE),
        Some(Ok(n)) => Ok((n as u64).min(MAX_SIZE as u64) as usize),
        Some(Err(_)) => Err("The 'Size' parameter must be a number larger that 0.".to_owned()),
    }
}

/// Longest long-poll, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 30;

/// `wait`: seconds to hold an empty page open, 0 to 30.
pub fn parse_wait(value: Option<&str>) -> Result<std::time::Duration, String> {
    match value {
        None => Ok(std::time::Duration::ZERO),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n <= MAX_WAIT_SECONDS => Ok(std::time::Duration::from_secs(n)),
            _ => Err(format!("The 'wait' parameter must be a number of seconds from 0 to {MAX_WAIT_SECONDS}.")),
        },
    }
}

/// Whose events a party query asks for, before Register resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartyParam {
    Party(u64),
    Unit(String),
    Person(String),
}

/// A validated app or party query.
#[derive(Debug, Clone)]
pub struct AppQuery {
    pub after: Option<After>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub party: Option<PartyParam>,
    pub types: Vec<String>,
    pub sources: Vec<String>,
    pub size: usize,
    pub wait: std::time::Duration,
}

/// Whether a query must name a party (`party`, `unit` or `person`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyRule {
    Optional,
    Required,
}

/// Validation shared by `GET /app/{org}/{app}`, `GET /app/party`, `POST /party`.
pub fn app_query(raw: &RawParams, party_rule: PartyRule) -> Result<AppQuery, String> {
    let after = blank_to_none(&raw.after).map(After::parse);
    let from = parse_time(blank_to_none(&raw.from), "From")?;
    let to = parse_time(blank_to_none(&raw.to), "To")?;
    if after.is_none() && from.is_none() {
        return Err("The 'From' or 'After' parameter must be defined.".into());
    }
    let size = parse_size(blank_to_none(&raw.size))?;
    let wait = parse_wait(blank_to_none(&raw.wait))?;
    let party = blank_to_none(&raw.party);
    let unit = blank_to_none(&raw.unit);
    let person = blank_to_none(&raw.person);
    if party.is_some() && person.is_some() {
        return Err("Only one of 'Party' or 'Person' can be defined.".into());
    }
    if party.is_some() && unit.is_some() {
        return Err("Only one of 'Party' or 'Unit' can be defined.".into());
    }
    if unit.is_some() && person.is_some() {
        return Err("Only one of 'Unit' or 'Person' can be defined.".into());
    }
    if let Some(u) = unit
        && (u.len() != 9 || !u.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("Value of 'Unit' needs to be exactly 9 digits.".into());
    }
    if let Some(n) = person
        && (n.len() != 11 || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("Value of 'Person' needs to be exactly 11 digits.".into());
    }
    let party = match (party, unit, person) {
        (Some(p), _, _) => {
            Some(PartyParam::Party(p.parse().map_err(|_| "The 'Party' parameter must be a party id.".to_owned())?))
        }
        (_, Some(u), _) => Some(PartyParam::Unit(u.to_owned())),
        (_, _, Some(n)) => Some(PartyParam::Person(n.to_owned())),
        _ => None,
    };
    if party_rule == PartyRule::Required && party.is_none() {
        return Err("Subject must be specified using either query params party or unit or header value person.".into());
    }
    let types = bounded_list(&raw.types, "type")?;
    let sources = bounded_list(&raw.sources, "source")?;
    Ok(AppQuery { after, from, to, party, types, sources, size, wait })
}

/// A validated `GET /events` query.
#[derive(Debug, Clone)]
pub struct GenericQuery {
    pub resource: String,
    pub after: After,
    pub subject: Option<String>,
    pub alternative_subject: Option<String>,
    pub types: Vec<String>,
    pub size: usize,
    pub wait: std::time::Duration,
}

pub fn generic_query(raw: &RawParams) -> Result<GenericQuery, String> {
    let resource = blank_to_none(&raw.resource).unwrap_or_default();
    if !resource.starts_with(crate::domain::cloud_event::RESOURCE_PREFIX) {
        return Err("The 'resource' parameter must begin with `urn:altinn:resource:`".into());
    }
    let resource = bounded(Some(resource), "resource")?.unwrap_or_default();
    let after = blank_to_none(&raw.after).map(After::parse).ok_or("The 'after' parameter must be defined.")?;
    let subject = bounded(blank_to_none(&raw.subject), "subject")?.map(str::to_owned);
    let alternative_subject =
        bounded(blank_to_none(&raw.alternative_subject), "alternativeSubject")?.map(str::to_owned);
    if subject.is_some() && alternative_subject.is_some() {
        return Err("Only one of 'subject' or 'alternativeSubject' can be defined.".into());
    }
    let size = parse_generic_size(blank_to_none(&raw.size))?;
    let wait = parse_wait(blank_to_none(&raw.wait))?;
    Ok(GenericQuery {
        resource: resource.to_owned(),
        after,
        subject,
        alternative_subject,
        types: bounded_list(&raw.types, "type")?,
        size,
        wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(q: &str) -> RawParams {
        RawParams::from_query(Some(q))
    }

    #[test]
    fn altinn_validation_texts() {
        let cases = [
            ("party=1", "The 'From' or 'After' parameter must be defined."),
            (
                "from=2022-07-07T11:00:53",
                "The 'From' parameter must specify timezone. E.g. 2022-07-07T11:00:53.3917Z for UTC",
            ),
            (
                "after=1&to=2022-07-07",
                "The 'To' parameter must specify timezone. E.g. 2022-07-07T11:00:53.3917Z for UTC",
            ),
            ("from=10000-01-01T00:00:00Z", "The 'From' parameter is outside the years 0000-9999 in UTC."),
            ("after=1&to=-0001-12-31T00:00:00Z", "The 'To' parameter is outside the years 0000-9999 in UTC."),
            ("from=%2B10000-01-01T00:00:00Z", "The 'From' parameter is outside the years 0000-9999 in UTC."),
            ("after=1&size=0", "The 'Size' parameter must be a number larger that 0."),
            ("after=1&size=abc", "The 'Size' parameter must be a number larger that 0."),
            ("after=1&party=1&unit=123456789", "Only one of 'Party' or 'Unit' can be defined."),
            ("after=1&unit=12345", "Value of 'Unit' needs to be exactly 9 digits."),
            ("after=1&party=1&wait=31", "The 'wait' parameter must be a number of seconds from 0 to 30."),
            ("after=1", "Subject must be specified using either query params party or unit or header value person."),
        ];
        for (q, msg) in cases {
            assert_eq!(app_query(&raw(q), PartyRule::Required).unwrap_err(), msg, "{q}");
        }
        let mut with_person = raw("after=1&party=1");
        with_person.person = Some("01039012345".into());
        assert_eq!(
            app_query(&with_person, PartyRule::Required).unwrap_err(),
            "Only one of 'Party' or 'Person' can be defined."
        );
        assert_eq!(
            generic_query(&raw("after=0&resource=x")).unwrap_err(),
            "The 'resource' parameter must begin with `urn:altinn:resource:`"
        );
        assert_eq!(
            generic_query(&raw("resource=urn:altinn:resource:x")).unwrap_err(),
            "The 'after' parameter must be defined."
        );
        let mut both = raw("after=0&resource=urn:altinn:resource:x&subject=/party/1");
        both.alternative_subject = Some("/person/1".into());
        assert_eq!(generic_query(&both).unwrap_err(), "Only one of 'subject' or 'alternativeSubject' can be defined.");
    }

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(app_query(&raw("after=1"), PartyRule::Optional).unwrap().size, 50);
        assert_eq!(app_query(&raw("after=1&size=5000"), PartyRule::Optional).unwrap().size, 1000);
    }

    #[test]
    fn keys_are_case_insensitive_and_types_repeat() {
        let q =
            app_query(&raw("After=e1&Type=a&type=b&Party=1337&from=2022-07-07T13:00:53%2B02:00"), PartyRule::Required)
                .unwrap();
        assert_eq!(q.after, Some(After::EventId("e1".into())));
        assert_eq!(q.types, ["a", "b"]);
        assert_eq!(q.party, Some(PartyParam::Party(1337)));
        assert_eq!(q.from.as_deref(), Some("2022-07-07T11:00:53.000000Z"), "converted to UTC");
    }

    #[test]
    fn cursors_and_event_ids() {
        assert_eq!(After::parse("0"), After::Beginning);
        assert_eq!(After::parse("c1.k.abc"), After::Cursor("c1.k.abc".into()));
        assert_eq!(After::parse("3f2c"), After::EventId("3f2c".into()));
        assert_eq!(After::parse("~p4"), After::EventId("~p4".into()));
    }

    #[test]
    fn lists_and_values_are_bounded() {
        let many = (0..=MAX_LIST_VALUES).map(|i| format!("type=t{i}")).collect::<Vec<_>>().join("&");
        let err = app_query(&raw(&format!("after=0&party=1&{many}")), PartyRule::Required).unwrap_err();
        assert_eq!(err, "The 'type' parameter takes at most 30 values.");
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let err = app_query(&raw(&format!("after=0&party=1&source={long}")), PartyRule::Required).unwrap_err();
        assert_eq!(err, "A 'source' value is longer than 1024 characters.");
        let err = generic_query(&raw(&format!("resource=urn:altinn:resource:x&after=0&subject={long}"))).unwrap_err();
        assert_eq!(err, "The 'subject' parameter is longer than 1024 characters.");
        let ok = (0..MAX_LIST_VALUES).map(|i| format!("type=t{i}")).collect::<Vec<_>>().join("&");
        assert_eq!(app_query(&raw(&format!("after=0&party=1&{ok}")), PartyRule::Required).unwrap().types.len(), 30);
    }

    #[test]
    fn times_outside_the_representable_range_are_400s() {
        for t in ["9999-12-31T23:59:59-00:01", "0000-01-01T00:00:00%2B00:01"] {
            let err = app_query(&raw(&format!("party=1&from={t}")), PartyRule::Required).unwrap_err();
            assert_eq!(err, "The 'From' parameter is outside the years 0000-9999 in UTC.", "{t}");
        }
        assert!(app_query(&raw("party=1&from=9999-12-31T23:59:59Z"), PartyRule::Required).is_ok());
    }

    proptest! {
        #[test]
        fn times_never_panic(y in 0i32..10000, m in 1u8..13, d in 1u8..29, off in -1439i32..1440) {
            let sign = if off < 0 { '-' } else { '+' };
            let t = format!("{y:04}-{m:02}-{d:02}T23:59:59{sign}{:02}:{:02}", off.abs() / 60, off.abs() % 60);
            let _ = parse_time(Some(&t), "From");
        }

        #[test]
        fn parsing_never_panics(q in ".{0,120}") {
            let r = RawParams::from_query(Some(&q));
            let _ = app_query(&r, PartyRule::Required);
            let _ = generic_query(&r);
        }
    }
}
