//! Standard Webhooks signatures (standardwebhooks.com): every push carries
//! `webhook-id`, `webhook-timestamp` and `webhook-signature`, the last one
//! `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">` for each active
//! secret (space-separated, so that a rotated secret keeps verifying).
//! Secrets are `whsec_<base64 of 32 random bytes>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A new secret: 32 random bytes.
pub fn new_secret() -> SecretString {
    let bytes: [u8; 32] = rand_bytes();
    SecretString::from(format!("{PREFIX}{}", STANDARD.encode(bytes)))
}

fn rand_bytes() -> [u8; 32] {
    use chacha20poly1305::aead::OsRng;
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// The HMAC key of a secret: the bytes after `whsec_` (base64), or the
/// text itself when it is not in that form.
fn key(secret: &str) -> Vec<u8> {
    let body = secret.strip_prefix(PREFIX).unwrap_or(secret);
    STANDARD.decode(body).unwrap_or_else(|_| secret.as_bytes().to_vec())
}

/// One `v1,<signature>` for `secret`.
pub fn sign_one(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per secret.
pub fn signature_header(secrets: &[SecretString], id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets.iter().map(|s| sign_one(s.expose_secret(), id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Whether `header` carries a signature of `secret` (for tests and the dev
/// receiver; constant-time comparison).
pub fn verifies(secret: &str, header: &str, id: &str, timestamp: u64, body: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(secret)).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    header
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| STANDARD.decode(sig).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published example: a
    /// consumer's existing library verifies what we send.
    #[test]
    fn the_specifications_example_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let (id, timestamp, body) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sign_one(secret, id, timestamp, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verifies(secret, "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", id, timestamp, body));
        assert!(!verifies(secret, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", id, timestamp + 1, body));
    }

    #[test]
    fn new_secrets_are_whsec_and_differ() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.expose_secret().starts_with("whsec_"));
        assert_eq!(key(a.expose_secret()).len(), 32);
        assert_ne!(a.expose_secret(), b.expose_secret());
        let header = signature_header(&[a.clone(), b.clone()], "m", 1, b"{}");
        assert!(verifies(a.expose_secret(), &header, "m", 1, b"{}"));
        assert!(verifies(b.expose_secret(), &header, "m", 1, b"{}"));
    }
}
