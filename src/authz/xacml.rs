//! XACML 3.0 JSON profile, as the Altinn PDP speaks it: one multi-request
//! per page (`AccessSubject s1`, `Action a1`, `Resource r1..rN`,
//! `MultiRequests.RequestReference [s1, a1, rK]`), one result per resource.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};

/// Attribute ids, data types and reference ids: nearly always constants,
/// so a page of 1000 resources does not allocate each of them again.
pub type Text = Cow<'static, str>;

pub const ACTION_ID: &str = "urn:oasis:names:tc:xacml:1.0:action:action-id";
pub const EVENT_ID: &str = "urn:altinn:event-id";
pub const MIN_AUTH_LEVEL: &str = "urn:altinn:minimum-authenticationlevel";
pub const XSD_STRING: &str = "http://www.w3.org/2001/XMLSchema#string";
pub const CATEGORY_RESOURCE: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource";

/// Altinn's PDP is .NET: it writes absent lists, flags and strings as
/// `null`. Read `null` as the default, as a missing field is.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XacmlRoot {
    pub request: XacmlRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XacmlRequest {
    #[serde(default, deserialize_with = "null_default")]
    pub return_policy_id_list: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub access_subject: Vec<XacmlCategory>,
    #[serde(default, deserialize_with = "null_default")]
    pub action: Vec<XacmlCategory>,
    #[serde(default, deserialize_with = "null_default")]
    pub resource: Vec<XacmlCategory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_requests: Option<MultiRequests>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XacmlCategory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub attribute: Vec<XacmlAttribute>,
}

impl XacmlCategory {
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: Some(id.into()), category_id: None, attribute: Vec::new() }
    }

    pub fn with(mut self, attribute_id: impl Into<Text>, value: impl Into<String>) -> Self {
        self.attribute.push(XacmlAttribute::new(attribute_id, value));
        self
    }

    /// The value of the first attribute with this id.
    pub fn get(&self, attribute_id: &str) -> Option<&str> {
        self.attribute.iter().find(|a| a.attribute_id == attribute_id).map(|a| a.value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XacmlAttribute {
    pub attribute_id: Text,
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<Text>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "std::ops::Not::not")]
    pub include_in_result: bool,
}

impl XacmlAttribute {
    pub fn new(attribute_id: impl Into<Text>, value: impl Into<String>) -> Self {
        Self {
            attribute_id: attribute_id.into(),
            value: value.into(),
            data_type: Some(Cow::Borrowed(XSD_STRING)),
            include_in_result: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MultiRequests {
    pub request_reference: Vec<RequestReference>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestReference {
    pub reference_id: Vec<Text>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XacmlResponse {
    #[serde(default, deserialize_with = "null_default")]
    pub response: Vec<XacmlResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct XacmlResult {
    pub decision: String,
    /// Written (the dev PDP answers as Altinn's does), never read: the
    /// decision and the obligations are what a result means, and reading
    /// the status into a tree for every event of a page cost as much as
    /// the rest of the result.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<Obligation>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<XacmlCategory>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Obligation {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub attribute_assignment: Vec<AttributeAssignment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeAssignment {
    #[serde(default, deserialize_with = "null_default")]
    pub attribute_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub value: String,
    #[serde(default, deserialize_with = "null_default")]
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
}

impl XacmlResult {
    /// Permit, and every minimum-authentication-level obligation met by
    /// `auth_level`. Anything else (Deny, NotApplicable, Indeterminate, an
    /// unreadable obligation) is a deny.
    pub fn permits(&self, auth_level: u8) -> bool {
        if self.decision != "Permit" {
            return false;
        }
        self.obligations
            .iter()
            .flat_map(|o| &o.attribute_assignment)
            .filter(|a| a.category == MIN_AUTH_LEVEL)
            .all(|a| a.value.trim().parse::<u8>().is_ok_and(|min| auth_level >= min))
    }

    /// The `IncludeInResult` attribute value that ties this result to its resource.
    pub fn attribute(&self, attribute_id: &str) -> Option<&str> {
        self.category.iter().find_map(|c| c.get(attribute_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(decision: &str, min: Option<&str>) -> XacmlResult {
        XacmlResult {
            decision: decision.into(),
            status: None,
            obligations: min
                .map(|m| {
                    vec![Obligation {
                        id: "urn:altinn:obligation:authenticationLevel1".into(),
                        attribute_assignment: vec![AttributeAssignment {
                            attribute_id: "urn:altinn:obligation-assignment:1".into(),
                            value: m.into(),
                            category: MIN_AUTH_LEVEL.into(),
                            data_type: None,
                        }],
                    }]
                })
                .unwrap_or_default(),
            category: vec![],
        }
    }

    #[test]
    fn only_permit_with_met_obligations_permits() {
        assert!(result("Permit", None).permits(0));
        assert!(result("Permit", Some("2")).permits(2));
        assert!(!result("Permit", Some("3")).permits(2));
        assert!(!result("Permit", Some("two")).permits(4));
        assert!(!result("Deny", None).permits(4));
        assert!(!result("NotApplicable", None).permits(4));
        assert!(!result("Indeterminate", None).permits(4));
    }
}
