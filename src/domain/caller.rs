//! Who calls: the identities that tokens prove, as the rest of the service
//! sees them (the token clients in `auth` make them; the PDP client and the
//! use cases read them).

/// A person or an organisation, from an Altinn token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Subject {
    /// A person logged in to Altinn.
    User { user_id: u64, party_id: Option<u64> },
    /// An organisation, from a Maskinporten exchange. `org` is the service
    /// owner code (`ttd`) when the organisation is one.
    Org { org: Option<String>, org_number: String },
    /// A system user: an end-user system acting for the organisation that
    /// owns the system user (`org_number`), from a Maskinporten exchange
    /// with `authorization_details` of type `urn:altinn:systemuser`.
    SystemUser { id: String, org_number: String },
}

/// The caller an Altinn token speaks for. (Stored with a subscription: the
/// PDP decides for it when events are pushed.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    pub subject: Subject,
    pub auth_level: u8,
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The service owner code, for an organisation token of a service owner.
    pub fn org(&self) -> Option<&str> {
        match &self.subject {
            Subject::Org { org, .. } => org.as_deref(),
            Subject::User { .. } | Subject::SystemUser { .. } => None,
        }
    }

    /// The organisation number of an organisation, or of a system user's owner.
    pub fn org_number(&self) -> Option<&str> {
        match &self.subject {
            Subject::Org { org_number, .. } | Subject::SystemUser { org_number, .. } => Some(org_number),
            Subject::User { .. } => None,
        }
    }

    /// Who this is, for per-caller limits: `user:{id}` or `org:{number}`
    /// (`org:{code}` for a service owner known only by its code).
    pub fn key(&self) -> String {
        match &self.subject {
            Subject::User { user_id, .. } => format!("user:{user_id}"),
            Subject::Org { org_number, .. } if !org_number.is_empty() => format!("org:{org_number}"),
            Subject::Org { org, .. } => format!("org:{}", org.as_deref().unwrap_or_default()),
            Subject::SystemUser { id, .. } => format!("systemuser:{id}"),
        }
    }

    pub fn user_id(&self) -> Option<u64> {
        match &self.subject {
            Subject::User { user_id, .. } => Some(*user_id),
            Subject::Org { .. } | Subject::SystemUser { .. } => None,
        }
    }
}

/// The app a platform access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformApp {
    pub issuer: String,
    pub app: String,
}

impl PlatformApp {
    /// `{org}/{app}`.
    pub fn app_id(&self) -> String {
        format!("{}/{}", self.issuer, self.app)
    }
}
