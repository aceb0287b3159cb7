//! Settings from files (`secrets_dir`): how Key Vault secrets reach the
//! service on AKS. The secrets store CSI driver writes each mapped secret
//! as one file; the file's name is the setting's path with `__` between
//! levels (the environment variable's name without `EVENTS__`, in lower
//! case: `pdp__subscription_key`, `cursors__key_ring`), its content the
//! value. Files override the environment. The folder is read again every
//! `secrets_reload_seconds`, so that a new version of a secret takes effect
//! without a restart (see `docs/deploy.md`).
//!
//! Also here: the key rings (`cursors.key_ring`, `instance_access.key_ring`)
//! in one string, and [`SharedSecret`], a secret that can be replaced while
//! the service runs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use figment::value::{Dict, Value};
use secrecy::{ExposeSecret, SecretString};

/// The settings that the files of `dir` hold: name → content (a trailing
/// newline dropped). Hidden entries (the CSI driver's `..data` links) and
/// folders are skipped; a name that is no setting path is an error.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut settings = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // `metadata` follows links: the driver's files are links into `..data`.
        if name.starts_with('.') || !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if !is_setting_path(&name) {
            return Err(format!(
                "{}: `{name}` is no setting name (lower-case letters, digits and `_`, levels separated by `__`, e.g. pdp__subscription_key)",
                dir.display()
            ));
        }
        let value = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
        settings.insert(name, value.to_owned());
    }
    Ok(settings)
}

fn is_setting_path(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.split("__").all(|level| !level.is_empty())
}

/// The settings as a nested dictionary for figment, each value parsed the
/// way figment parses an environment variable (numbers, booleans, lists),
/// except secrets (a path with `key` or `secret` in it): they are text as
/// they are, so that a secret of digits is not made a number, refused as a
/// secret, and printed in the error.
pub fn as_dict(settings: &BTreeMap<String, String>) -> Dict {
    let mut root = Dict::new();
    for (name, value) in settings {
        let path: Vec<&str> = name.split("__").collect();
        let secret =
            path.iter().any(|level| level.contains("key") || level.contains("secret") || level.contains("password"));
        let value =
            if secret { Value::from(value.clone()) } else { value.parse::<Value>().unwrap_or_else(|e| match e {}) };
        insert(&mut root, &path, value);
    }
    root
}

fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let child = dict.entry((*first).to_owned()).or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = child {
                insert(inner, rest, value);
            }
        }
    }
}

/// A key ring: key id → secret, and the id that signs (or seals) new
/// tokens; every key verifies.
#[derive(Clone, Default)]
pub struct KeyRing {
    pub signing: Option<String>,
    pub keys: HashMap<String, SecretString>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("KeyRing").field("signing", &self.signing).field("ids", &ids).finish()
    }
}

impl KeyRing {
    /// `id:secret` entries separated by white space; the first signs. Ids
    /// are lower-case letters, digits, `-` and `_`; each appears once.
    pub fn parse(ring: &str) -> Result<Self, String> {
        let mut parsed = Self::default();
        for entry in ring.split_whitespace() {
            let Some((id, secret)) = entry.split_once(':') else {
                return Err("every entry is `id:secret`".into());
            };
            let id = id.to_ascii_lowercase();
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err("key ids are letters, digits, `-` and `_`".into());
            }
            if secret.len() < 16 {
                return Err(format!("the secret of key `{id}` is shorter than 16 characters"));
            }
            if parsed.keys.insert(id.clone(), SecretString::from(secret.to_owned())).is_some() {
                return Err(format!("key `{id}` appears twice"));
            }
            parsed.signing.get_or_insert(id);
        }
        if parsed.keys.is_empty() {
            return Err("the ring holds no key".into());
        }
        Ok(parsed)
    }

    /// A fingerprint of the ring (ids and secrets), to see whether it changed.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        let mut h = Sha256::new();
        h.update(self.signing.as_deref().unwrap_or_default());
        for id in ids {
            h.update([0]);
            h.update(id);
            h.update([0]);
            h.update(self.keys[id].expose_secret());
        }
        format!("{:x}", h.finalize())
    }
}

/// Authenticated encryption under a key ring (XChaCha20-Poly1305, a key
/// derived from each secret and a domain of its own), replaced whole when
/// the ring changes: the ring's signing key seals, every key opens. What
/// the cursors of `next` links and the stored webhook signing secrets are
/// sealed with.
pub struct Sealer {
    domain: &'static str,
    ring: RwLock<Arc<SealingRing>>,
}

struct SealingRing {
    sealing: Option<String>,
    keys: HashMap<String, chacha20poly1305::XChaCha20Poly1305>,
    fingerprint: String,
}

/// The domain of the keys that seal the subscriptions' webhook signing
/// secrets in the store (`subscription_secrets.*`).
pub const WEBHOOK_SECRET_DOMAIN: &str = "altinn-events/webhook-secret-key/v1";

/// The random nonce before each sealed text.
pub const NONCE_LEN: usize = 24;

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self.current();
        f.debug_struct("Sealer")
            .field("domain", &self.domain)
            .field("sealing", &ring.sealing)
            .field("keys", &ring.keys.len())
            .finish()
    }
}

impl Sealer {
    /// `domain` keeps the keys of one use apart from another's made from the
    /// same secret.
    pub fn new(domain: &'static str, ring: &KeyRing) -> Self {
        Self { domain, ring: RwLock::new(Arc::new(Self::derive(domain, ring))) }
    }

    fn derive(domain: &'static str, ring: &KeyRing) -> SealingRing {
        use chacha20poly1305::KeyInit;
        use sha2::{Digest, Sha256};
        let keys = ring
            .keys
            .iter()
            .map(|(id, secret)| {
                let key = Sha256::new_with_prefix(domain.as_bytes())
                    .chain_update(b"|")
                    .chain_update(secret.expose_secret().trim())
                    .finalize();
                (id.to_ascii_lowercase(), chacha20poly1305::XChaCha20Poly1305::new(&key))
            })
            .collect();
        SealingRing {
            sealing: ring.signing.as_ref().map(|s| s.to_ascii_lowercase()),
            keys,
            fingerprint: ring.fingerprint(),
        }
    }

    /// Takes `ring` from now on; whether it differs from the one before.
    pub fn replace(&self, ring: &KeyRing) -> bool {
        let next = Self::derive(self.domain, ring);
        let mut current = self.ring.write().expect("sealing ring lock");
        let changed = current.fingerprint != next.fingerprint;
        *current = Arc::new(next);
        changed
    }

    fn current(&self) -> Arc<SealingRing> {
        self.ring.read().expect("sealing ring lock").clone()
    }

    /// Whether a key seals.
    pub fn can_seal(&self) -> bool {
        let ring = self.current();
        ring.sealing.as_ref().is_some_and(|id| ring.keys.contains_key(id))
    }

    /// `plain` sealed with `aad` bound to it: the sealing key's id, and a
    /// fresh nonce followed by the ciphertext. `None` without a sealing key.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Option<(String, Vec<u8>)> {
        use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};
        let ring = self.current();
        let id = ring.sealing.clone()?;
        let cipher = ring.keys.get(&id)?;
        let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher.encrypt(&nonce, Payload { msg: plain, aad }).ok()?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Some((id, bytes))
    }

    /// `plain` sealed as text: `{prefix}{key id}.{base64url(nonce | ciphertext)}`.
    /// `None` without a sealing key.
    pub fn seal_text(&self, prefix: &str, plain: &[u8], aad: &[u8]) -> Option<String> {
        use base64::Engine;
        let (id, bytes) = self.seal(plain, aad)?;
        Some(format!("{prefix}{id}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// What [`Sealer::seal_text`] sealed with `prefix` and `aad`; `None` for
    /// a text of another form, a key the ring does not hold, or bytes not
    /// sealed so.
    pub fn open_text(&self, prefix: &str, text: &str, aad: &[u8]) -> Option<Vec<u8>> {
        use base64::Engine;
        let (id, body) = text.strip_prefix(prefix)?.split_once('.')?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).ok()?;
        self.open(id, &bytes, aad)
    }

    /// What [`Sealer::seal`] sealed under key `id` with `aad`; `None` when
    /// the ring has no such key or the bytes were not sealed so.
    pub fn open(&self, id: &str, bytes: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::{Aead, Payload};
        let ring = self.current();
        let cipher = ring.keys.get(&id.to_ascii_lowercase())?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        cipher.decrypt(&chacha20poly1305::XNonce::from(nonce), Payload { msg: sealed, aad }).ok()
    }
}

/// A secret read on every use, replaced when its file changes.
#[derive(Clone, Default)]
pub struct SharedSecret(Arc<RwLock<Option<SecretString>>>);

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.get().is_some() { "SharedSecret(set)" } else { "SharedSecret(none)" })
    }
}

impl SharedSecret {
    pub fn new(secret: Option<SecretString>) -> Self {
        Self(Arc::new(RwLock::new(secret)))
    }

    pub fn get(&self) -> Option<SecretString> {
        self.0.read().expect("secret lock").clone()
    }

    /// Replaces the secret; whether it changed.
    pub fn set(&self, secret: Option<SecretString>) -> bool {
        let mut current = self.0.write().expect("secret lock");
        let same = match (&*current, &secret) {
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            (None, None) => true,
            _ => false,
        };
        *current = secret;
        !same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_is_id_secret_pairs_and_the_first_signs() {
        let ring = KeyRing::parse("k2:new-secret-0123456789\n  K1:old-secret-0123456789 ").unwrap();
        assert_eq!(ring.signing.as_deref(), Some("k2"));
        assert_eq!(ring.keys.len(), 2);
        assert_eq!(ring.keys["k1"].expose_secret(), "old-secret-0123456789");
        assert!(!format!("{ring:?}").contains("secret-0123"), "secrets never print");
        for bad in ["", "k1", "k.1:abcdefghijklmnopq", "k1:short", "k1:abcdefghijklmnopq k1:abcdefghijklmnopqr"] {
            assert!(KeyRing::parse(bad).is_err(), "{bad:?}");
        }
        let other = KeyRing::parse("k1:old-secret-0123456789 k2:new-secret-0123456789").unwrap();
        assert_ne!(ring.fingerprint(), other.fingerprint(), "the signing key counts");
    }

    #[test]
    fn file_names_are_setting_paths() {
        let dir = std::env::temp_dir().join(format!("secrets-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        std::fs::write(dir.join("pdp__subscription_key"), "abc\n").unwrap();
        std::fs::write(dir.join("cursors__key_ring"), "k1:x y").unwrap();
        std::fs::write(dir.join(".hidden"), "ignored").unwrap();
        let read = read_dir(&dir).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read["pdp__subscription_key"], "abc");
        let dict = as_dict(&read);
        let Some(Value::Dict(_, pdp)) = dict.get("pdp") else { panic!("{dict:?}") };
        assert_eq!(pdp.get("subscription_key").and_then(Value::as_str), Some("abc"));
        // Digits stay text: a secret is never turned into a number.
        let digits = as_dict(&BTreeMap::from([("pdp__subscription_key".to_owned(), "0123456789".to_owned())]));
        let Some(Value::Dict(_, pdp)) = digits.get("pdp") else { panic!("{digits:?}") };
        assert_eq!(pdp.get("subscription_key").and_then(Value::as_str), Some("0123456789"));
        std::fs::write(dir.join("Bad-Name"), "x").unwrap();
        assert!(read_dir(&dir).unwrap_err().contains("Bad-Name"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_dir(&dir).is_err(), "a missing folder is an error");
    }
}
