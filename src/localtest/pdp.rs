//! The local PDP: answers XACML JSON multi-requests, in the Altinn wire
//! format, from the rules of the demo dataset (see `dev/dataset.toml`).

use crate::authz::xacml::{
    ACTION_ID, AttributeAssignment, CATEGORY_RESOURCE, EVENT_ID, MIN_AUTH_LEVEL, Obligation, XacmlCategory,
    XacmlRequest, XacmlResponse, XacmlResult,
};

use super::dataset::Dataset;

/// Who asks, as the access subject's attributes say. A system user asks
/// as the organisation that owns it.
#[derive(Default)]
struct Asker<'a> {
    user_id: Option<u64>,
    party_id: Option<u64>,
    org: Option<&'a str>,
    org_number: Option<&'a str>,
}

enum Decision {
    Permit(Option<u8>),
    Deny,
}

pub fn decide(dataset: &Dataset, request: &XacmlRequest) -> XacmlResponse {
    let by_id = |list: &'_ [XacmlCategory], id: &str| list.iter().find(|c| c.id.as_deref() == Some(id)).cloned();
    // Without MultiRequests: every resource with the first subject and action.
    let references: Vec<Vec<String>> = match &request.multi_requests {
        Some(m) => m.request_reference.iter().map(|r| r.reference_id.iter().map(|s| s.to_string()).collect()).collect(),
        None => request
            .resource
            .iter()
            .map(|r| {
                vec![
                    request.access_subject.first().and_then(|s| s.id.clone()).unwrap_or_default(),
                    request.action.first().and_then(|a| a.id.clone()).unwrap_or_default(),
                    r.id.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    };
    let response = references
        .iter()
        .map(|refs| {
            let find = |list: &[XacmlCategory]| refs.iter().find_map(|id| by_id(list, id));
            let (subject, action, resource) = (
                find(&request.access_subject).or_else(|| request.access_subject.first().cloned()),
                find(&request.action).or_else(|| request.action.first().cloned()),
                find(&request.resource),
            );
            let decision = match (&subject, &action, &resource) {
                (Some(s), Some(a), Some(r)) => decide_one(dataset, s, a, r),
                _ => Decision::Deny,
            };
            let category = resource
                .map(|r| {
                    let attribute: Vec<_> = r.attribute.into_iter().filter(|a| a.include_in_result).collect();
                    vec![XacmlCategory { id: None, category_id: Some(CATEGORY_RESOURCE.into()), attribute }]
                })
                .unwrap_or_default();
            let (decision, obligations) = match decision {
                Decision::Permit(level) => ("Permit", level.map(min_level_obligation).into_iter().collect()),
                Decision::Deny => ("Deny", vec![]),
            };
            XacmlResult {
                decision: decision.into(),
                status: Some(serde_json::json!({"StatusCode": {"Value": "urn:oasis:names:tc:xacml:1.0:status:ok"}})),
                obligations,
                category,
            }
        })
        .collect();
    XacmlResponse { response }
}

fn min_level_obligation(level: u8) -> Obligation {
    Obligation {
        id: "urn:altinn:obligation:authenticationLevel1".into(),
        attribute_assignment: vec![AttributeAssignment {
            attribute_id: "urn:altinn:obligation-assignment:1".into(),
            value: level.to_string(),
            category: MIN_AUTH_LEVEL.into(),
            data_type: Some("http://www.w3.org/2001/XMLSchema#integer".into()),
        }],
    }
}

fn decide_one(
    dataset: &Dataset,
    subject: &XacmlCategory,
    action: &XacmlCategory,
    resource: &XacmlCategory,
) -> Decision {
    let system_user = subject.get("urn:altinn:systemuser:uuid").map(|id| dataset.system_user(id));
    if let Some(None) = system_user {
        return Decision::Deny;
    }
    let asker = Asker {
        user_id: subject.get("urn:altinn:userid").and_then(|v| v.parse().ok()),
        party_id: subject.get("urn:altinn:partyid").and_then(|v| v.parse().ok()),
        org: subject.get("urn:altinn:org").filter(|v| !v.is_empty()),
        org_number: system_user.flatten().map(|u| u.org_number.as_str()).or_else(|| {
            subject.get("urn:altinn:organization:identifier-no").or_else(|| subject.get("urn:altinn:orgNumber"))
        }),
    };
    // Altinn's PDP does not take a national identity number as the
    // resource's subject: the events service sends the person's party.
    if resource.get("urn:altinn:person:identifier-no").is_some() {
        return Decision::Deny;
    }
    let Some(action) = action.get(ACTION_ID) else { return Decision::Deny };
    // The org code of an asker known only by organisation number.
    let asker_org =
        asker.org.or_else(|| asker.org_number.and_then(|n| dataset.service_owner_by_number(n)).map(|o| o.org.as_str()));
    let party: Option<u64> = resource
        .get("urn:altinn:partyid")
        .and_then(|v| v.parse().ok())
        .or_else(|| resource.get("urn:altinn:party:uuid").and_then(|uuid| dataset.party_by_uuid(uuid)));
    let _ = resource.get(EVENT_ID);

    // App events: urn:altinn:org + urn:altinn:app.
    if let (Some(org), Some(app)) = (resource.get("urn:altinn:org"), resource.get("urn:altinn:app")) {
        let Some(app) = dataset.app(org, app) else { return Decision::Deny };
        if action != "read" {
            return Decision::Deny;
        }
        if asker_org == Some(org) {
            return Decision::Permit(None);
        }
        return party_reader(dataset, &asker, party, app.min_authentication_level);
    }

    // Generic events: urn:altinn:resource (+ the resource id split at its last ':').
    let Some(resource_id) = resource_urn(resource) else { return Decision::Deny };
    let Some(res) = dataset.resource(&resource_id) else { return Decision::Deny };
    let owner = dataset.service_owner(&res.owner);
    let is_owner = asker_org == Some(res.owner.as_str())
        || (asker.org_number.is_some() && owner.map(|o| o.org_number.as_str()) == asker.org_number);
    match action {
        "publish" if is_owner => Decision::Permit(None),
        "subscribe" | "read" if is_owner => Decision::Permit(None),
        "subscribe" | "read" if asker.org_number.is_some_and(|n| res.approved_subscribers.iter().any(|a| a == n)) => {
            Decision::Permit(None)
        }
        "subscribe" | "read" => party_reader(dataset, &asker, party, res.min_authentication_level),
        _ => Decision::Deny,
    }
}

/// A user reading their own party or one they have a role for; an
/// organisation reading its own party.
fn party_reader(dataset: &Dataset, asker: &Asker<'_>, party: Option<u64>, min_level: u8) -> Decision {
    let Some(party) = party else { return Decision::Deny };
    if let Some(user) = asker.user_id.and_then(|u| dataset.person_by_user(u)) {
        if user.party_id == party || user.roles.contains(&party) {
            return Decision::Permit(Some(min_level));
        }
        return Decision::Deny;
    }
    if let Some(number) = asker.org_number
        && dataset.organisations.iter().any(|o| o.party_id == party && o.org_number == number)
    {
        return Decision::Permit(None);
    }
    // An organisation known by its party (an organisation's token, or a
    // subscription's consumer `/party/{id}` imported from Altinn).
    if asker.party_id == Some(party) && asker.user_id.is_none() {
        return Decision::Permit(None);
    }
    Decision::Deny
}

/// `urn:altinn:resource:foo` from either one attribute holding the whole URN
/// or the split form (`urn:altinn:resource` = `foo`).
fn resource_urn(resource: &XacmlCategory) -> Option<String> {
    let value = resource.get("urn:altinn:resource")?;
    Some(if value.starts_with("urn:altinn:resource:") {
        value.to_owned()
    } else {
        format!("urn:altinn:resource:{value}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::xacml::{MultiRequests, RequestReference, XacmlAttribute};

    fn request(subject: XacmlCategory, action: &str, resources: Vec<XacmlCategory>) -> XacmlRequest {
        let refs = resources
            .iter()
            .map(|r| RequestReference { reference_id: vec!["s1".into(), "a1".into(), r.id.clone().unwrap().into()] })
            .collect();
        XacmlRequest {
            return_policy_id_list: false,
            access_subject: vec![subject],
            action: vec![XacmlCategory::new("a1").with(ACTION_ID, action)],
            resource: resources,
            multi_requests: Some(MultiRequests { request_reference: refs }),
        }
    }

    fn app_event(id: &str, org: &str, app: &str, party: u64) -> XacmlCategory {
        let mut c = XacmlCategory::new(id)
            .with("urn:altinn:org", org)
            .with("urn:altinn:app", app)
            .with("urn:altinn:partyid", party.to_string());
        let mut ev = XacmlAttribute::new(EVENT_ID, format!("ev-{id}"));
        ev.include_in_result = true;
        c.attribute.push(ev);
        c
    }

    #[test]
    fn app_owner_user_roles_and_strangers() {
        let d = Dataset::load(None).unwrap();
        let resources = vec![
            app_event("r1", "ttd", "apps-test", 1337),
            app_event("r2", "ttd", "apps-test", 500000),
            app_event("r3", "ttd", "apps-test", 500001),
            app_event("r4", "skd", "taxreport", 1337),
        ];
        let owner =
            decide(&d, &request(XacmlCategory::new("s1").with("urn:altinn:org", "ttd"), "read", resources.clone()));
        let decisions: Vec<_> = owner.response.iter().map(|r| r.decision.as_str()).collect();
        assert_eq!(decisions, ["Permit", "Permit", "Permit", "Deny"]);
        assert_eq!(owner.response[1].attribute(EVENT_ID), Some("ev-r2"));

        let user = decide(&d, &request(XacmlCategory::new("s1").with("urn:altinn:userid", "1337"), "read", resources));
        let permits: Vec<_> = user.response.iter().map(|r| r.permits(2)).collect();
        assert_eq!(permits, [true, true, false, false], "skd/taxreport needs level 3");
        assert!(user.response[3].permits(3));
    }

    #[test]
    fn approved_bank_subscribes_but_cannot_publish() {
        let d = Dataset::load(None).unwrap();
        let res = vec![XacmlCategory::new("r1").with("urn:altinn:resource", "ttd-estate-of-deceased")];
        let bank = XacmlCategory::new("s1").with("urn:altinn:organization:identifier-no", "912345678");
        assert_eq!(decide(&d, &request(bank.clone(), "subscribe", res.clone())).response[0].decision, "Permit");
        assert_eq!(decide(&d, &request(bank, "publish", res.clone())).response[0].decision, "Deny");
        let owner = XacmlCategory::new("s1").with("urn:altinn:organization:identifier-no", "991825827");
        assert_eq!(decide(&d, &request(owner, "publish", res.clone())).response[0].decision, "Permit");
        let other = XacmlCategory::new("s1").with("urn:altinn:org", "skd");
        assert_eq!(decide(&d, &request(other, "subscribe", res)).response[0].decision, "Deny");
    }
}
