//! Building the PDP multi-request for a page of events, and reading the
//! answer back by `urn:altinn:event-id`.

use std::collections::HashMap;

use crate::domain::{AppSource, EventRecord, PlatformApp, Principal, Subject};

use super::xacml::{
    ACTION_ID, EVENT_ID, MultiRequests, RequestReference, XacmlAttribute, XacmlCategory, XacmlRequest, XacmlResponse,
    XacmlRoot,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// App events and party feeds.
    Read,
    /// Generic event feeds.
    Subscribe,
    /// Generic publish.
    Publish,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
        }
    }
}

/// Who asks the PDP: an Altinn token's principal, (publish only) the app
/// of a platform access token, or a subscription's consumer known only by
/// name (`/user/1337`, `/org/ttd`, `/party/50001`, `/organisation/{orgno}`,
/// `/systemuser/{uuid}`): a subscription imported from Altinn Events, whose
/// pushes Altinn decides for that name alone.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    Principal(&'a Principal),
    App(&'a PlatformApp),
    Consumer(&'a str),
}

impl Caller<'_> {
    /// The authentication level obligations are checked against. A consumer
    /// known only by name has none: as Altinn's pushes, its decisions take
    /// the PDP's Permit without the level obligation.
    pub fn auth_level(&self) -> u8 {
        match self {
            Self::Principal(p) => p.auth_level,
            Self::App(_) => 3,
            Self::Consumer(_) => u8::MAX,
        }
    }
}

impl<'a> Caller<'a> {
    /// Whom the PDP decides for when `subscription`'s events are pushed:
    /// the token that created it, or (imported from Altinn) its consumer.
    pub fn of_subscription(subscription: &'a crate::domain::subscription::Subscription) -> Self {
        match &subscription.caller {
            Some(principal) => Self::Principal(principal),
            None => Self::Consumer(&subscription.consumer),
        }
    }
}

/// A consumer's name as a subject attribute, as Altinn maps it.
fn consumer_attribute(consumer: &str) -> Option<(&'static str, &str)> {
    const PREFIXES: [(&str, &str); 5] = [
        ("/user/", "urn:altinn:userid"),
        ("/org/", "urn:altinn:org"),
        ("/party/", "urn:altinn:partyid"),
        ("/organisation/", "urn:altinn:organization:identifier-no"),
        ("/systemuser/", "urn:altinn:systemuser:uuid"),
    ];
    PREFIXES.iter().find_map(|(prefix, attribute)| {
        consumer.strip_prefix(prefix).filter(|v| !v.is_empty()).map(|v| (*attribute, v))
    })
}

fn subject_category(caller: Caller<'_>) -> XacmlCategory {
    let mut s = XacmlCategory::new("s1");
    match caller {
        Caller::Consumer(consumer) => {
            // An unknown form names no one: the PDP denies.
            if let Some((attribute, value)) = consumer_attribute(consumer) {
                s = s.with(attribute, value.to_owned());
            }
        }
        Caller::Principal(p) => {
            match &p.subject {
                Subject::User { user_id, party_id } => {
                    s = s.with("urn:altinn:userid", user_id.to_string());
                    if let Some(party) = party_id {
                        s = s.with("urn:altinn:partyid", party.to_string());
                    }
                }
                Subject::SystemUser { id, .. } => {
                    s = s.with("urn:altinn:systemuser:uuid", id.clone());
                }
                Subject::Org { org, org_number } => {
                    if let Some(org) = org {
                        s = s.with("urn:altinn:org", org.clone());
                    }
                    if !org_number.is_empty() {
                        s = s.with("urn:altinn:organization:identifier-no", org_number.clone());
                    }
                }
            }
            if !p.scopes.is_empty() {
                s = s.with("urn:scope", p.scopes.join(" "));
            }
        }
        Caller::App(app) => {
            s = s.with("urn:altinn:org", app.issuer.clone()).with("urn:altinn:app", app.app.clone());
        }
    }
    s
}

const PERSON_URN: &str = "urn:altinn:person:identifier-no:";
const PARTY_UUID: &str = "urn:altinn:party:uuid";

/// The national identity number of a subject that names a person
/// (`urn:altinn:person:identifier-no:{ssn}` or `/person/{ssn}`).
fn person_of(subject: &str) -> Option<&str> {
    subject.strip_prefix(PERSON_URN).or_else(|| subject.strip_prefix("/person/")).filter(|n| !n.is_empty())
}

/// The persons that `events` name as their subject: the PDP takes their
/// party, which Register gives (one lookup for the batch).
pub fn person_subjects(events: &[&EventRecord]) -> Vec<String> {
    let mut ssns: Vec<String> = events.iter().filter_map(|e| person_of(&e.subject)).map(str::to_owned).collect();
    ssns.sort();
    ssns.dedup();
    ssns
}

/// The subject of a generic event as a PDP attribute. A person is sent as
/// their party (`urn:altinn:party:uuid`, from `persons`: identity number →
/// party UUID), as Altinn does: its PDP does not take a national identity
/// number as the resource's subject. A person Register does not know: no
/// subject attribute.
fn subject_attribute(subject: &str, persons: &HashMap<String, String>) -> Option<(String, String)> {
    if let Some(ssn) = person_of(subject) {
        return persons.get(ssn).map(|uuid| (PARTY_UUID.to_owned(), uuid.clone()));
    }
    let pairs = [
        ("/party/", "urn:altinn:partyid"),
        ("/user/", "urn:altinn:userid"),
        ("/org/", "urn:altinn:org"),
        ("/organisation/", "urn:altinn:organization:identifier-no"),
        ("/systemuser/", "urn:altinn:systemuser:uuid"),
    ];
    for (prefix, attribute) in pairs {
        if let Some(value) = subject.strip_prefix(prefix).filter(|v| !v.is_empty()) {
            return Some((attribute.to_owned(), value.to_owned()));
        }
    }
    // A URN subject: the last part is the value, the rest the attribute id.
    if subject.starts_with("urn:") {
        return subject.rsplit_once(':').map(|(a, v)| (a.to_owned(), v.to_owned()));
    }
    None
}

fn resource_category(id: String, event: &EventRecord, persons: &HashMap<String, String>) -> XacmlCategory {
    let mut r = XacmlCategory::new(id);
    let app = event
        .resource
        .strip_prefix("urn:altinn:resource:app_")
        .and_then(|_| AppSource::parse(&event.source))
        .filter(|a| event.resource == a.resource());
    match app {
        Some(app) => {
            if let Some(instance) = &event.resourceinstance {
                r = r.with("urn:altinn:instance-id", instance.clone());
            }
            r = r.with("urn:altinn:appresource", "events");
            r.attribute.push(event_id_attribute(&event.id));
            if let Some((party, _)) = app.instance {
                r = r.with("urn:altinn:partyid", party.to_string());
            } else if let Some(party) = event.subject.strip_prefix("/party/") {
                r = r.with("urn:altinn:partyid", party);
            }
            r = r.with("urn:altinn:org", app.org).with("urn:altinn:app", app.app);
        }
        None => {
            r.attribute.push(event_id_attribute(&event.id));
            r = r
                .with("urn:altinn:eventtype", event.event_type.clone())
                .with("urn:altinn:eventsource", event.source.clone());
            if let Some((attribute, value)) = event.resource.rsplit_once(':') {
                r = r.with(attribute.to_owned(), value);
            }
            if let Some((attribute, value)) = subject_attribute(&event.subject, persons) {
                r = r.with(attribute, value);
            }
        }
    }
    r
}

fn event_id_attribute(id: &str) -> XacmlAttribute {
    let mut a = XacmlAttribute::new(EVENT_ID, id);
    a.include_in_result = true;
    a
}

/// One multi-request for all `events`: `s1`, `a1`, `r1..rN`. `persons`:
/// the party UUIDs of persons named as subjects (see [`person_subjects`]).
pub fn multi_request(
    caller: Caller<'_>,
    action: Action,
    events: &[&EventRecord],
    persons: &HashMap<String, String>,
) -> XacmlRoot {
    let resource: Vec<XacmlCategory> =
        events.iter().enumerate().map(|(i, e)| resource_category(format!("r{}", i + 1), e, persons)).collect();
    let request_reference = (1..=events.len())
        .map(|i| RequestReference { reference_id: vec!["s1".into(), "a1".into(), format!("r{i}").into()] })
        .collect();
    XacmlRoot {
        request: XacmlRequest {
            return_policy_id_list: false,
            access_subject: vec![subject_category(caller)],
            action: vec![XacmlCategory::new("a1").with(ACTION_ID, action.as_str())],
            resource,
            multi_requests: Some(MultiRequests { request_reference }),
        },
    }
}

/// Per event, in order: permitted (Permit, obligations met) or not. An event
/// the answer does not mention is denied.
pub fn decisions(response: &XacmlResponse, events: &[&EventRecord], auth_level: u8) -> Vec<bool> {
    let mut by_id: HashMap<&str, bool> = HashMap::new();
    for result in &response.response {
        if let Some(id) = result.attribute(EVENT_ID) {
            let permit = result.permits(auth_level);
            // The same id twice in an answer: both must permit.
            by_id.entry(id).and_modify(|p| *p &= permit).or_insert(permit);
        }
    }
    events.iter().map(|e| by_id.get(e.id.as_str()).copied().unwrap_or(false)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::xacml::{XacmlResponse, XacmlResult};
    use serde_json::json;

    fn app_event(id: &str, org: &str, app: &str, party: u64, guid: &str) -> EventRecord {
        let source = format!("https://{org}.apps.altinn.no/{org}/{app}/instances/{party}/{guid}");
        EventRecord {
            id: id.into(),
            source: source.clone(),
            subject: format!("/party/{party}"),
            resource: format!("urn:altinn:resource:app_{org}_{app}"),
            event_type: "app.instance.created".into(),
            time: "2026-11-27T10:00:00.000000Z".into(),
            alternativesubject: None,
            resourceinstance: Some(format!("{party}/{guid}")),
            cloud_event: json!({}),
            origin: None,
        }
    }

    /// The exact request the PDP receives for a page of three app events and
    /// one generic event: a contract with the Altinn PDP.
    /// A subscription imported from Altinn is decided for its consumer's
    /// name, mapped as Altinn maps it; an unknown form names no one.
    #[test]
    fn a_consumer_known_by_name_is_its_subject_attribute() {
        let cases = [
            ("/user/1337", Some(("urn:altinn:userid", "1337"))),
            ("/org/ttd", Some(("urn:altinn:org", "ttd"))),
            ("/party/500000", Some(("urn:altinn:partyid", "500000"))),
            ("/organisation/912345678", Some(("urn:altinn:organization:identifier-no", "912345678"))),
            ("/systemuser/a6355a68", Some(("urn:altinn:systemuser:uuid", "a6355a68"))),
            ("/user/", None),
            ("/person/01039012345", None),
        ];
        for (consumer, want) in cases {
            assert_eq!(consumer_attribute(consumer), want, "{consumer}");
        }
        let subject = subject_category(Caller::Consumer("/user/1337"));
        assert_eq!(subject.attribute.len(), 1, "the name alone: no scope, no party");
        assert_eq!(Caller::Consumer("/user/1337").auth_level(), u8::MAX, "no level obligation");
    }

    #[test]
    fn multi_request_for_a_page_is_pinned() {
        let events = [
            app_event("e1", "ttd", "apps-test", 1337, "6fb3f738-6800-4f29-9f3e-1c66862656cd"),
            app_event("e2", "ttd", "apps-test", 500000, "0b8d7fd5-6d4e-4c8c-9a1c-7b4a1d2f3e40"),
            app_event("e3", "skd", "taxreport", 1337, "c2a1e8a4-12f0-4a6e-8f7e-2b9c3d4e5f60"),
            EventRecord {
                id: "estate-1".into(),
                source: "urn:no:skatteetaten:estate:1".into(),
                subject: "/party/1337".into(),
                resource: "urn:altinn:resource:ttd-estate-of-deceased".into(),
                event_type: "no.altinn.estate.registered".into(),
                time: "2026-11-27T10:00:00.000000Z".into(),
                alternativesubject: None,
                resourceinstance: None,
                cloud_event: json!({}),
                origin: None,
            },
        ];
        let principal = Principal {
            subject: Subject::User { user_id: 1337, party_id: Some(1337) },
            auth_level: 2,
            scopes: vec!["altinn:events.subscribe".into()],
        };
        let refs: Vec<&EventRecord> = events.iter().collect();
        let request = multi_request(Caller::Principal(&principal), Action::Read, &refs, &HashMap::new());
        insta::assert_json_snapshot!(request);
    }

    /// Attributes as `(id, value, include in result)`, sorted: what a PDP
    /// reads of a category (`DataType` string is the default, so its
    /// presence is not compared).
    fn attributes(category: &serde_json::Value) -> Vec<(String, String, bool)> {
        let mut out: Vec<_> = category["Attribute"]
            .as_array()
            .expect("Attribute is a list")
            .iter()
            .map(|a| {
                let data_type = a["DataType"].as_str().unwrap_or(crate::authz::xacml::XSD_STRING);
                assert_eq!(data_type, crate::authz::xacml::XSD_STRING, "{a}");
                (
                    a["AttributeId"].as_str().unwrap().to_owned(),
                    a["Value"].as_str().unwrap().to_owned(),
                    a["IncludeInResult"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The request for one app event and one generic event, against a
    /// hand-written request in Altinn's wire format (XACML 3.0 JSON profile
    /// as the Altinn PDP takes it; `fixtures/altinn_multi_request.json`):
    /// the same categories, ids, attributes and references, in Altinn's
    /// PascalCase names.
    #[test]
    fn the_multi_request_is_altinns_wire_format() {
        let expected: serde_json::Value =
            serde_json::from_str(include_str!("fixtures/altinn_multi_request.json")).unwrap();
        let events = [
            app_event("e1", "ttd", "apps-test", 1337, "6fb3f738-6800-4f29-9f3e-1c66862656cd"),
            EventRecord {
                id: "estate-1".into(),
                source: "urn:no:skatteetaten:estate:1".into(),
                subject: "/party/1337".into(),
                resource: "urn:altinn:resource:ttd-estate-of-deceased".into(),
                event_type: "no.altinn.estate.registered".into(),
                time: "2026-11-27T10:00:00.000000Z".into(),
                alternativesubject: None,
                resourceinstance: None,
                cloud_event: json!({}),
                origin: None,
            },
        ];
        let principal = Principal {
            subject: Subject::User { user_id: 1337, party_id: Some(1337) },
            auth_level: 2,
            scopes: vec!["altinn:events.subscribe".into()],
        };
        let refs: Vec<&EventRecord> = events.iter().collect();
        let ours =
            serde_json::to_value(multi_request(Caller::Principal(&principal), Action::Read, &refs, &HashMap::new()))
                .unwrap();
        let (ours, expected) = (&ours["Request"], &expected["Request"]);
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(ours), keys(expected), "the request's members");
        assert_eq!(ours["ReturnPolicyIdList"], expected["ReturnPolicyIdList"]);
        assert_eq!(ours["MultiRequests"], expected["MultiRequests"]);
        for category in ["AccessSubject", "Action", "Resource"] {
            let (a, b) = (ours[category].as_array().unwrap(), expected[category].as_array().unwrap());
            assert_eq!(a.len(), b.len(), "{category}");
            for (a, b) in a.iter().zip(b) {
                assert_eq!(a["Id"], b["Id"], "{category}");
                assert_eq!(attributes(a), attributes(b), "{category} {}", b["Id"]);
            }
        }
    }

    /// An answer as Altinn's PDP writes it (`fixtures/altinn_pdp_response.json`:
    /// .NET nulls for absent lists and fields, obligations on permits, an
    /// Indeterminate without categories) is read as Altinn means it.
    #[test]
    fn altinns_pdp_answer_is_read_as_altinn_means_it() {
        let response: XacmlResponse =
            serde_json::from_str(include_str!("fixtures/altinn_pdp_response.json")).expect("Altinn's answer parses");
        let events: Vec<EventRecord> =
            ["e1", "e2", "e3", "e4", "e5"].iter().map(|id| app_event(id, "ttd", "apps-test", 1337, "g")).collect();
        let refs: Vec<&EventRecord> = events.iter().collect();
        // Permit (level 2), Deny, NotApplicable, Permit needing level 3, Indeterminate.
        assert_eq!(decisions(&response, &refs, 2), [true, false, false, false, false]);
        assert_eq!(decisions(&response, &refs, 3), [true, false, false, true, false]);
        assert_eq!(decisions(&response, &refs, 1), [false, false, false, false, false]);
    }

    #[test]
    fn decisions_are_mapped_by_event_id_not_position() {
        let events = [app_event("a", "ttd", "apps-test", 1, "g"), app_event("b", "ttd", "apps-test", 1, "g")];
        let refs: Vec<&EventRecord> = events.iter().collect();
        let result = |id: &str, decision: &str| XacmlResult {
            decision: decision.into(),
            status: None,
            obligations: vec![],
            category: vec![XacmlCategory::new("x").with(EVENT_ID, id)],
        };
        // Answered out of order, and one result missing entirely.
        let response = XacmlResponse { response: vec![result("b", "Permit")] };
        assert_eq!(decisions(&response, &refs, 2), [false, true]);
        let response = XacmlResponse { response: vec![result("b", "Deny"), result("a", "Permit")] };
        assert_eq!(decisions(&response, &refs, 2), [true, false]);
    }

    /// Two answers for one event id (the PDP answering a repeated resource
    /// twice): a Deny anywhere denies, whatever order they come in.
    #[test]
    fn a_repeated_event_id_is_permitted_only_when_every_answer_permits() {
        let events = [app_event("a", "ttd", "apps-test", 1, "g")];
        let refs: Vec<&EventRecord> = events.iter().collect();
        let result = |decision: &str| XacmlResult {
            decision: decision.into(),
            status: None,
            obligations: vec![],
            category: vec![XacmlCategory::new("x").with(EVENT_ID, "a")],
        };
        for answers in [["Deny", "Permit"], ["Permit", "Deny"], ["NotApplicable", "Permit"]] {
            let response = XacmlResponse { response: answers.iter().map(|d| result(d)).collect() };
            assert_eq!(decisions(&response, &refs, 2), [false], "{answers:?}");
        }
        let response = XacmlResponse { response: vec![result("Permit"), result("Permit")] };
        assert_eq!(decisions(&response, &refs, 2), [true]);
    }

    #[test]
    fn subjects_map_to_pdp_attributes() {
        let none = HashMap::new();
        assert_eq!(subject_attribute("/party/1337", &none), Some(("urn:altinn:partyid".into(), "1337".into())));
        assert_eq!(
            subject_attribute("/organisation/897069650", &none),
            Some(("urn:altinn:organization:identifier-no".into(), "897069650".into()))
        );
        // A person is sent as their party, never their identity number.
        let persons: HashMap<String, String> = [("01039012345".to_owned(), "uuid-1337".to_owned())].into();
        for subject in ["urn:altinn:person:identifier-no:01039012345", "/person/01039012345"] {
            assert_eq!(
                subject_attribute(subject, &persons),
                Some(("urn:altinn:party:uuid".into(), "uuid-1337".into()))
            );
            assert_eq!(subject_attribute(subject, &none), None, "unknown to Register: no subject");
        }
        assert_eq!(subject_attribute("urn:altinn:organization:identifier-no:897069650", &none).unwrap().1, "897069650");
        assert_eq!(subject_attribute("/party/", &none), None);
        assert_eq!(subject_attribute("nonsense", &none), None);
    }
}
