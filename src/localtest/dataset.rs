//! The demo dataset of dev mode (`dev/dataset.toml`, embedded by default).

use std::path::Path;

use serde::Deserialize;

pub const EMBEDDED: &str = include_str!("../../dev/dataset.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    #[serde(default)]
    pub persons: Vec<Person>,
    #[serde(default)]
    pub organisations: Vec<Organisation>,
    #[serde(default)]
    pub service_owners: Vec<ServiceOwner>,
    #[serde(default)]
    pub apps: Vec<App>,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub system_users: Vec<SystemUser>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    pub user_id: u64,
    pub party_id: u64,
    /// The party's UUID in Register; made up from `party_id` when unset.
    #[serde(default)]
    pub party_uuid: Option<String>,
    pub ssn: String,
    pub name: String,
    #[serde(default)]
    pub roles: Vec<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    pub party_id: u64,
    #[serde(default)]
    pub party_uuid: Option<String>,
    pub org_number: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOwner {
    pub org: String,
    pub org_number: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub org: String,
    pub app: String,
    #[serde(default = "default_level")]
    pub min_authentication_level: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub id: String,
    pub owner: String,
    #[serde(default)]
    pub approved_subscribers: Vec<String>,
    #[serde(default = "default_level")]
    pub min_authentication_level: u8,
}

/// A system user: an end-user system acting for the organisation that owns
/// it (`org_number`); the local PDP lets it read that organisation's events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemUser {
    pub id: String,
    pub org_number: String,
    pub name: String,
}

/// A party's UUID: the dataset's, or one made up from the party id.
pub fn party_uuid(given: &Option<String>, party_id: u64) -> String {
    given.clone().unwrap_or_else(|| format!("00000000-0000-4000-8000-{party_id:012}"))
}

fn default_level() -> u8 {
    2
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset {path} could not be read")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dataset is not valid")]
    Parse(#[source] toml::de::Error),
}

impl Dataset {
    pub fn load(path: Option<&Path>) -> Result<Self, DatasetError> {
        let text = match path {
            None => EMBEDDED.to_owned(),
            Some(p) => std::fs::read_to_string(p)
                .map_err(|source| DatasetError::Io { path: p.display().to_string(), source })?,
        };
        toml::from_str(&text).map_err(DatasetError::Parse)
    }

    pub fn person_by_user(&self, user_id: u64) -> Option<&Person> {
        self.persons.iter().find(|p| p.user_id == user_id)
    }

    pub fn service_owner_by_number(&self, org_number: &str) -> Option<&ServiceOwner> {
        self.service_owners.iter().find(|o| o.org_number == org_number)
    }

    pub fn service_owner(&self, org: &str) -> Option<&ServiceOwner> {
        self.service_owners.iter().find(|o| o.org == org)
    }

    pub fn organisation_by_party(&self, party_id: u64) -> Option<&Organisation> {
        self.organisations.iter().find(|o| o.party_id == party_id)
    }

    pub fn app(&self, org: &str, app: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.org == org && a.app == app)
    }

    pub fn resource(&self, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }

    pub fn system_user(&self, id: &str) -> Option<&SystemUser> {
        self.system_users.iter().find(|u| u.id.eq_ignore_ascii_case(id))
    }

    /// The party id of a party UUID (a person's or an organisation's).
    pub fn party_by_uuid(&self, uuid: &str) -> Option<u64> {
        let persons = self.persons.iter().map(|p| (party_uuid(&p.party_uuid, p.party_id), p.party_id));
        let orgs = self.organisations.iter().map(|o| (party_uuid(&o.party_uuid, o.party_id), o.party_id));
        persons.chain(orgs).find(|(u, _)| u.eq_ignore_ascii_case(uuid)).map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_dataset_parses_and_has_the_documented_people() {
        let d = Dataset::load(None).unwrap();
        assert_eq!(d.person_by_user(1337).unwrap().ssn, "01039012345");
        assert_eq!(d.person_by_user(1338).unwrap().party_id, 1338);
        assert_eq!(d.service_owner("skd").unwrap().org_number, "974761076");
        assert_eq!(
            d.resource("urn:altinn:resource:ttd-estate-of-deceased").unwrap().approved_subscribers,
            ["912345678"]
        );
    }
}
