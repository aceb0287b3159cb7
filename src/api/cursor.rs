//! The cursors that `next` links carry: a position in one feed, encrypted
//! and authenticated, so that a cursor reveals nothing (not how many events
//! a caller was not allowed to see, not how long a feed is) and cannot be
//! forged or moved to another feed.
//!
//! A cursor is `c1.{key id}.{base64url(nonce | ciphertext)}`: XChaCha20-
//! Poly1305 under a key from the configured ring (`cursors.key_ring` or
//! `cursors.keys`; one of them seals new cursors, all of them open old
//! ones: rotation, without a restart when the ring comes from a file), a random 192-bit nonce (the same position twice gives
//! different bytes), the position and the store's generation as plaintext
//! (`feeds/events/generation.rs`: a position means something only within
//! its generation; cursors sealed before generations existed hold the
//! position alone and are of generation 0), and the feed's name as
//! associated data (a cursor opens only in the feed it came from).

use std::collections::HashMap;

use secrecy::SecretString;

use crate::domain::FeedId;
use crate::secrets::{KeyRing, Sealer};

const PREFIX: &str = "c1.";
/// The keys derived from the ring's secrets are the cursors' own.
const DOMAIN: &str = "altinn-events/cursor-key/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("no cursor key is configured")]
    NotConfigured,
    #[error("the cursor is not one this service issued for this query")]
    Invalid,
}

/// The key ring, replaced whole when its secret changes (see
/// [`Cursors::replace`]).
#[derive(Debug)]
pub struct Cursors {
    sealer: Sealer,
}

fn aad(feed: &FeedId) -> Vec<u8> {
    format!("altinn-events/cursor/v1|{}", feed.key()).into_bytes()
}

impl Cursors {
    /// `keys`: key id → secret; `sealing`: the id that seals new cursors.
    pub fn new(sealing: Option<String>, keys: &HashMap<String, SecretString>) -> Self {
        Self::of(&KeyRing { signing: sealing, keys: keys.clone() })
    }

    pub fn of(ring: &KeyRing) -> Self {
        Self { sealer: Sealer::new(DOMAIN, ring) }
    }

    /// Takes `ring` from now on (cursors sealed under a key it no longer
    /// holds stop opening); whether it differs from the one before.
    pub fn replace(&self, ring: &KeyRing) -> bool {
        self.sealer.replace(ring)
    }

    /// Whether `value` is meant as a cursor (and must open as one).
    pub fn is_cursor(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    /// A cursor for `position` in `feed`, in the store's `generation`.
    pub fn seal(&self, feed: &FeedId, position: u64, generation: u32) -> Result<String, CursorError> {
        let mut plain = position.to_be_bytes().to_vec();
        plain.extend_from_slice(&generation.to_be_bytes());
        self.sealer.seal_text(PREFIX, &plain, &aad(feed)).ok_or(CursorError::NotConfigured)
    }

    /// The position a cursor of `feed` stands for, and the store generation
    /// it was sealed in.
    pub fn open(&self, feed: &FeedId, cursor: &str) -> Result<Opened, CursorError> {
        let plain = self.sealer.open_text(PREFIX, cursor, &aad(feed)).ok_or(CursorError::Invalid)?;
        let (position, generation) = match plain.len() {
            8 => (&plain[..], 0),
            12 => (&plain[..8], u32::from_be_bytes(plain[8..].try_into().map_err(|_| CursorError::Invalid)?)),
            _ => return Err(CursorError::Invalid),
        };
        let position = u64::from_be_bytes(position.try_into().map_err(|_| CursorError::Invalid)?);
        Ok(Opened { position, generation })
    }
}

/// What a cursor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub position: u64,
    pub generation: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(sealing: &str, keys: &[(&str, &str)]) -> Cursors {
        let keys = keys.iter().map(|(id, s)| (id.to_string(), SecretString::from(s.to_string()))).collect();
        Cursors::new(Some(sealing.into()), &keys)
    }

    #[test]
    fn cursors_open_in_their_feed_only_and_reveal_nothing() {
        let c = ring("k1", &[("k1", "first secret")]);
        let party = FeedId::Subject("/party/1337".into());
        let other = FeedId::Subject("/party/1338".into());
        let a = c.seal(&party, 4, 0).unwrap();
        let b = c.seal(&party, 4, 0).unwrap();
        assert_ne!(a, b, "the same position twice gives different bytes");
        // Neither the position nor its size shows.
        let far = c.seal(&party, 987_654_321_012, 0).unwrap();
        assert!(!far.contains("987654321012"), "{far}");
        assert_eq!(far.len(), a.len(), "every position seals to the same length");
        assert_eq!(c.open(&party, &a), Ok(Opened { position: 4, generation: 0 }));
        assert_eq!(c.open(&party, &b), Ok(Opened { position: 4, generation: 0 }));
        assert_eq!(c.open(&other, &a), Err(CursorError::Invalid), "bound to its feed");
        // Every single-character change is refused.
        for i in PREFIX.len()..a.len() {
            let mut bytes = a.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != a {
                assert!(c.open(&party, &tampered).is_err(), "tampered at {i}: {tampered}");
            }
        }
        assert_eq!(c.open(&party, "c1.k1."), Err(CursorError::Invalid));
        assert_eq!(c.open(&party, "~p4"), Err(CursorError::Invalid));
        // Another service's key: refused.
        let foreign = ring("k1", &[("k1", "another secret")]).seal(&party, 4, 0).unwrap();
        assert_eq!(c.open(&party, &foreign), Err(CursorError::Invalid));
    }

    #[test]
    fn a_cursor_carries_its_generation_and_one_sealed_before_generations_is_of_the_first() {
        let c = ring("k1", &[("k1", "first secret")]);
        let feed = FeedId::Subject("/party/1337".into());
        let third = c.seal(&feed, 42, 3).unwrap();
        assert_eq!(c.open(&feed, &third), Ok(Opened { position: 42, generation: 3 }));
        assert_eq!(third.len(), c.seal(&feed, 1, 0).unwrap().len(), "every generation seals to the same length");
        // As cursors were sealed before: the position alone, under the key
        // derived as it always was (so cursors issued before still open).
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use chacha20poly1305::XChaCha20Poly1305;
        use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
        use sha2::{Digest, Sha256};
        let key = Sha256::new_with_prefix(b"altinn-events/cursor-key/v1|").chain_update("first secret").finalize();
        let cipher = XChaCha20Poly1305::new(&key);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher.encrypt(&nonce, Payload { msg: &42u64.to_be_bytes(), aad: &aad(&feed) }).unwrap();
        let old = format!("{PREFIX}k1.{}", URL_SAFE_NO_PAD.encode([nonce.to_vec(), sealed].concat()));
        assert_eq!(c.open(&feed, &old), Ok(Opened { position: 42, generation: 0 }));
    }

    #[test]
    fn rotation_keeps_old_cursors_open() {
        let feed = FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into());
        let old = ring("k1", &[("k1", "first")]).seal(&feed, 9, 0).unwrap();
        let rotated = ring("k2", &[("k1", "first"), ("k2", "second")]);
        assert_eq!(rotated.open(&feed, &old).map(|o| o.position), Ok(9));
        assert!(rotated.seal(&feed, 9, 0).unwrap().starts_with("c1.k2."));
        let retired = ring("k2", &[("k2", "second")]);
        assert_eq!(retired.open(&feed, &old), Err(CursorError::Invalid));
        let none = Cursors::new(None, &HashMap::new());
        assert_eq!(none.seal(&feed, 1, 0), Err(CursorError::NotConfigured));
    }
}
