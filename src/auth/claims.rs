//! The typed caller, parsed from Altinn token claims.

use serde_json::{Map, Value};

use super::AuthError;
use crate::domain::{Principal, Subject};

/// Reads the Altinn claims. A token is a user's when it carries
/// `urn:altinn:userid`, an organisation's when it carries
/// `urn:altinn:orgNumber` (or only `urn:altinn:org`).
pub fn principal_from_claims(claims: &Map<String, Value>) -> Result<Principal, AuthError> {
    let scopes: Vec<String> = ["scope", "urn:altinn:scope"]
        .iter()
        .filter_map(|k| claims.get(*k).and_then(Value::as_str))
        .flat_map(|s| s.split_whitespace())
        .map(str::to_owned)
        .collect();
    let auth_level = match claims.get("urn:altinn:authlevel") {
        None => 0,
        Some(v) => number(v)
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| AuthError::invalid("urn:altinn:authlevel is not a number"))?,
    };
    let subject = if let Some(system_user) = system_user(claims)? {
        system_user
    } else if let Some(user) = claims.get("urn:altinn:userid") {
        let user_id = number(user).ok_or_else(|| AuthError::invalid("urn:altinn:userid is not a number"))?;
        let party_id = match claims.get("urn:altinn:partyid") {
            None => None,
            Some(p) => Some(number(p).ok_or_else(|| AuthError::invalid("urn:altinn:partyid is not a number"))?),
        };
        Subject::User { user_id, party_id }
    } else {
        let org = claims.get("urn:altinn:org").and_then(Value::as_str).filter(|s| !s.is_empty());
        let org_number = claims.get("urn:altinn:orgNumber").and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        match (org, org_number) {
            (org, Some(org_number)) => Subject::Org { org: org.map(str::to_owned), org_number },
            (Some(org), None) => Subject::Org { org: Some(org.to_owned()), org_number: String::new() },
            (None, None) => return Err(AuthError::invalid("token names neither a user nor an organisation")),
        }
    };
    Ok(Principal { subject, auth_level, scopes })
}

/// A system user, from `authorization_details` (an object or a list of
/// them) of type `urn:altinn:systemuser`: `systemuser_id` (a list of one
/// UUID) and `systemuser_org.ID` (`0192:{organisation number}`).
fn system_user(claims: &Map<String, Value>) -> Result<Option<Subject>, AuthError> {
    let details: Vec<&Value> = match claims.get("authorization_details") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => return Ok(None),
    };
    let Some(detail) =
        details.into_iter().find(|d| d.get("type").and_then(Value::as_str) == Some("urn:altinn:systemuser"))
    else {
        return Ok(None);
    };
    let id = match detail.get("systemuser_id") {
        Some(Value::Array(ids)) => ids.first().and_then(Value::as_str),
        Some(Value::String(id)) => Some(id.as_str()),
        _ => None,
    }
    .filter(|id| uuid::Uuid::parse_str(id).is_ok())
    .ok_or_else(|| AuthError::invalid("systemuser_id is not a UUID"))?;
    let org_number = detail
        .get("systemuser_org")
        .and_then(|o| o.get("ID"))
        .and_then(Value::as_str)
        .and_then(|id| id.rsplit(':').next())
        .filter(|n| n.len() == 9 && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| AuthError::invalid("systemuser_org is not an organisation number"))?;
    Ok(Some(Subject::SystemUser { id: id.to_ascii_lowercase(), org_number: org_number.to_owned() }))
}

/// Altinn writes numeric claims as strings (`"1337"`) or numbers.
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Principal, AuthError> {
        principal_from_claims(v.as_object().unwrap())
    }

    #[test]
    fn user_claims_as_strings_or_numbers() {
        let p = parse(json!({"urn:altinn:userid": "1337", "urn:altinn:partyid": 50001, "urn:altinn:authlevel": "2"}))
            .unwrap();
        assert_eq!(p.subject, Subject::User { user_id: 1337, party_id: Some(50001) });
        assert_eq!(p.auth_level, 2);
    }

    #[test]
    fn org_scopes_from_either_claim() {
        let p = parse(json!({"urn:altinn:org": "ttd", "urn:altinn:orgNumber": "991825827",
            "scope": "altinn:events/ttd/apps-test altinn:serviceowner/instances.read"}))
        .unwrap();
        assert_eq!(p.org(), Some("ttd"));
        assert!(p.has_scope("altinn:serviceowner/instances.read"));
        let p =
            parse(json!({"urn:altinn:orgNumber": "912345678", "urn:altinn:scope": "altinn:events.subscribe"})).unwrap();
        assert_eq!(p.org(), None);
        assert_eq!(p.org_number(), Some("912345678"));
        assert!(p.has_scope("altinn:events.subscribe"));
    }

    #[test]
    fn system_users_from_authorization_details() {
        let details = json!({"type": "urn:altinn:systemuser", "systemuser_id": ["A6355A68-86B8-4344-8A81-0248CB461468"],
            "systemuser_org": {"authority": "iso6523-actorid-upis", "ID": "0192:897069650"}, "system_id": "vendor_system"});
        for claim in [details.clone(), json!([details])] {
            let p = parse(json!({"authorization_details": claim, "scope": "altinn:events.subscribe"})).unwrap();
            assert_eq!(
                p.subject,
                Subject::SystemUser {
                    id: "a6355a68-86b8-4344-8a81-0248cb461468".into(),
                    org_number: "897069650".into()
                }
            );
            assert_eq!(p.key(), "systemuser:a6355a68-86b8-4344-8a81-0248cb461468");
        }
        let bad = json!({"authorization_details": {"type": "urn:altinn:systemuser", "systemuser_id": ["x"],
            "systemuser_org": {"ID": "0192:897069650"}}});
        assert!(parse(bad).is_err());
    }

    #[test]
    fn nobody_is_rejected() {
        assert!(parse(json!({"scope": "x"})).is_err());
        assert!(parse(json!({"urn:altinn:userid": "abc"})).is_err());
    }
}
