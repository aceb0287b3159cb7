//! Instance access keys: a capability to read one instance's events without
//! logging in (the follow-up scenario of the event architecture). A key is
//! `v1.{key id}.{org}.{app}.{expiry}.{HMAC-SHA256}` over the app, the
//! instance and the expiry, verifiable without storage. Several verification keys may be configured
//! (rotation); one of them signs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::secrets::KeyRing;

type HmacSha256 = Hmac<Sha256>;

/// Key ids in lower case (they are matched without regard to case).
fn normalized(ring: &KeyRing) -> KeyRing {
    KeyRing {
        signing: ring.signing.as_ref().map(|s| s.to_ascii_lowercase()),
        keys: ring.keys.iter().map(|(id, s)| (id.to_ascii_lowercase(), s.clone())).collect(),
    }
}

const VERSION: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("instance access keys are not configured")]
    NotConfigured,
    #[error("malformed key")]
    Malformed,
    #[error("unknown key id")]
    UnknownKeyId,
    #[error("signature mismatch")]
    BadSignature,
    #[error("expired")]
    Expired,
}

pub struct InstanceKeys {
    ring: RwLock<Arc<KeyRing>>,
    ttl: Duration,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn message(org: &str, app: &str, instance: &str, expires: u64) -> String {
    format!("altinn-events/instance-access/{VERSION}|{org}/{app}|{instance}|{expires}")
}

/// Org codes and app names as Altinn spells them: they never hold a `.`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl InstanceKeys {
    /// `keys`: key id → secret; `signing`: the id that signs new keys.
    pub fn new(signing: Option<String>, keys: HashMap<String, SecretString>, ttl: Duration) -> Self {
        Self::of(&KeyRing { signing, keys }, ttl)
    }

    pub fn of(ring: &KeyRing, ttl: Duration) -> Self {
        Self { ring: RwLock::new(Arc::new(normalized(ring))), ttl }
    }

    /// Takes `ring` from now on; whether it differs from the one before.
    pub fn replace(&self, ring: &KeyRing) -> bool {
        let next = normalized(ring);
        let mut current = self.ring.write().expect("instance key ring lock");
        let changed = current.fingerprint() != next.fingerprint();
        *current = Arc::new(next);
        changed
    }

    fn current(&self) -> Arc<KeyRing> {
        self.ring.read().expect("instance key ring lock").clone()
    }

    fn mac(ring: &KeyRing, id: &str) -> Option<HmacSha256> {
        let secret = ring.keys.get(id)?;
        HmacSha256::new_from_slice(secret.expose_secret().trim().as_bytes()).ok()
    }

    /// A key for `instance` (`{partyId}/{instanceGuid}`) of app `{org}/{app}`
    /// and its expiry (Unix seconds).
    pub fn issue(&self, org: &str, app: &str, instance: &str) -> Result<(String, u64), KeyError> {
        if !is_name(org) || !is_name(app) {
            return Err(KeyError::Malformed);
        }
        let ring = self.current();
        let id = ring.signing.as_deref().ok_or(KeyError::NotConfigured)?;
        let mut mac = Self::mac(&ring, id).ok_or(KeyError::NotConfigured)?;
        let expires = now() + self.ttl.as_secs();
        mac.update(message(org, app, instance, expires).as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok((format!("{VERSION}.{id}.{org}.{app}.{expires}.{sig}"), expires))
    }

    /// Checks that `key` grants access to `instance` now; returns the app
    /// (`org`, `app`) whose events of that instance it opens.
    pub fn verify(&self, key: &str, instance: &str) -> Result<(String, String), KeyError> {
        let mut parts = key.trim().split('.');
        let (Some(VERSION), Some(id), Some(org), Some(app), Some(expires), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::Malformed);
        };
        let expires: u64 = expires.parse().map_err(|_| KeyError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| KeyError::Malformed)?;
        let mut mac = Self::mac(&self.current(), &id.to_ascii_lowercase()).ok_or(KeyError::UnknownKeyId)?;
        mac.update(message(org, app, instance, expires).as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig).map_err(|_| KeyError::BadSignature)?;
        if expires <= now() {
            return Err(KeyError::Expired);
        }
        Ok((org.to_owned(), app.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(signing: &str, ids: &[(&str, &str)]) -> InstanceKeys {
        let map = ids.iter().map(|(id, s)| (id.to_string(), SecretString::from(s.to_string()))).collect();
        InstanceKeys::new(Some(signing.into()), map, Duration::from_secs(60))
    }

    #[test]
    fn keys_bind_the_instance_and_survive_rotation() {
        let old = keys("k1", &[("k1", "first secret")]);
        let (key, _) = old.issue("ttd", "apps-test", "1337/abc").unwrap();
        let app = Ok(("ttd".to_owned(), "apps-test".to_owned()));
        assert_eq!(old.verify(&key, "1337/abc"), app);
        assert_eq!(old.verify(&key, "1337/abd"), Err(KeyError::BadSignature));
        // The app is signed too: another org's name does not verify.
        assert_eq!(old.verify(&key.replace(".ttd.", ".skd."), "1337/abc"), Err(KeyError::BadSignature));
        // Rotation: k2 signs now, k1 still verifies.
        let rotated = keys("k2", &[("k1", "first secret"), ("k2", "second secret")]);
        assert_eq!(rotated.verify(&key, "1337/abc"), app);
        let (new_key, _) = rotated.issue("ttd", "apps-test", "1337/abc").unwrap();
        assert!(new_key.starts_with("v1.k2."));
        // k1 retired: its keys stop working.
        let retired = keys("k2", &[("k2", "second secret")]);
        assert_eq!(retired.verify(&key, "1337/abc"), Err(KeyError::UnknownKeyId));
    }

    #[test]
    fn forged_and_expired_keys_fail() {
        let k = keys("k1", &[("k1", "s")]);
        let (key, expires) = k.issue("ttd", "a", "1/g").unwrap();
        let forged_expiry = key.replace(&expires.to_string(), &(expires + 1000).to_string());
        assert_eq!(k.verify(&forged_expiry, "1/g"), Err(KeyError::BadSignature));
        assert_eq!(k.verify("garbage", "1/g"), Err(KeyError::Malformed));
        assert_eq!(k.verify("v1.k1.ttd.a.1.AAAA", "1/g"), Err(KeyError::BadSignature));
        let mut mac = InstanceKeys::mac(&k.current(), "k1").unwrap();
        mac.update(message("ttd", "a", "1/g", 10).as_bytes());
        let past = format!("v1.k1.ttd.a.10.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        assert_eq!(k.verify(&past, "1/g"), Err(KeyError::Expired));
        let none = InstanceKeys::new(None, HashMap::new(), Duration::from_secs(1));
        assert_eq!(none.issue("ttd", "a", "1/g"), Err(KeyError::NotConfigured));
        assert_eq!(k.issue("t.d", "a", "1/g"), Err(KeyError::Malformed));
    }

    #[test]
    fn a_replaced_ring_signs_with_its_first_key_and_verifies_with_all() {
        let k = keys("k1", &[("k1", "old-secret-0123456789")]);
        let (old, _) = k.issue("ttd", "a", "1/g").unwrap();
        // Step 1 of a rotation: the new key is known, the old one still signs.
        assert!(k.replace(&KeyRing::parse("k1:old-secret-0123456789 k2:new-secret-0123456789").unwrap()));
        assert!(k.issue("ttd", "a", "1/g").unwrap().0.starts_with("v1.k1."));
        // Step 2: the new key signs, the old one still verifies.
        assert!(k.replace(&KeyRing::parse("k2:new-secret-0123456789 k1:old-secret-0123456789").unwrap()));
        assert!(!k.replace(&KeyRing::parse("k2:new-secret-0123456789 k1:old-secret-0123456789").unwrap()));
        let (new, _) = k.issue("ttd", "a", "1/g").unwrap();
        assert!(new.starts_with("v1.k2."), "{new}");
        assert!(k.verify(&old, "1/g").is_ok() && k.verify(&new, "1/g").is_ok());
        // Step 3: the old key is gone.
        k.replace(&KeyRing::parse("k2:new-secret-0123456789").unwrap());
        assert_eq!(k.verify(&old, "1/g"), Err(KeyError::UnknownKeyId));
    }
}
