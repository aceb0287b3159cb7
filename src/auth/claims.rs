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
    let subject = if let Some(user) = claims.get("urn:altinn:userid") {
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
    fn nobody_is_rejected() {
        assert!(parse(json!({"scope": "x"})).is_err());
        assert!(parse(json!({"urn:altinn:userid": "abc"})).is_err());
    }
}
