//! A short memory of tokens whose signature already verified. Callers send
//! the same token with every request for as long as it is valid, and an
//! RS256 check costs more CPU than the rest of a publish; remembering the
//! outcome for a minute makes repeats a hash lookup.
//!
//! Only successes are kept, keyed by the whole token (compared byte for
//! byte: a changed byte is another token; hashing it with SHA-256 instead
//! cost a tenth of a publish's instructions), until the token expires (with the
//! configured leeway) or `MAX_AGE` passes, whichever comes first. So a key
//! withdrawn from the JWKS or a replaced certificate stops being honoured
//! for remembered tokens within `MAX_AGE`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a verified token is remembered at most.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Tokens remembered at most; when full, expired ones go, then all. (At
/// about 1.5 KB a token, at most some 15 MB.)
const CAPACITY: usize = 10_000;

pub struct Verified<T> {
    entries: Mutex<HashMap<Box<str>, (T, Instant)>>,
    leeway: Duration,
}

impl<T: Clone> Verified<T> {
    pub fn new(leeway_seconds: u64) -> Self {
        Self { entries: Mutex::new(HashMap::new()), leeway: Duration::from_secs(leeway_seconds) }
    }

    /// What a token is remembered under: all of it, signature included.
    fn key(token: &str) -> &str {
        token
    }

    /// The remembered outcome for `token`, if it is still good.
    pub fn get(&self, token: &str) -> Option<T> {
        self.get_at(token, Instant::now())
    }

    fn get_at(&self, token: &str, now: Instant) -> Option<T> {
        let entries = self.entries.lock().expect("verified-token lock");
        entries.get(Self::key(token)).filter(|(_, until)| now < *until).map(|(value, _)| value.clone())
    }

    /// Remembers that `token`, expiring at `exp` (Unix seconds), verified
    /// as `value`.
    pub fn insert(&self, token: &str, exp: u64, value: T) {
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let left = Duration::from_secs(exp).saturating_add(self.leeway).saturating_sub(unix_now);
        self.insert_at(token, Instant::now(), left, value);
    }

    fn insert_at(&self, token: &str, now: Instant, left: Duration, value: T) {
        if left.is_zero() {
            return;
        }
        let until = now + left.min(MAX_AGE);
        let mut entries = self.entries.lock().expect("verified-token lock");
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, u)| now < *u);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(Self::key(token).into(), (value, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_token_is_remembered_until_it_or_max_age_expires() {
        let v = Verified::<u32>::new(0);
        let now = Instant::now();
        v.insert_at("a.b.c", now, Duration::from_secs(10), 7);
        assert_eq!(v.get_at("a.b.c", now), Some(7));
        assert_eq!(v.get_at("a.b.d", now), None, "another token is not the same token");
        assert_eq!(v.get_at("a.b.c", now + Duration::from_secs(10)), None, "expired with the token");

        v.insert_at("long", now, Duration::from_secs(3600), 8);
        assert_eq!(v.get_at("long", now + MAX_AGE - Duration::from_millis(1)), Some(8));
        assert_eq!(v.get_at("long", now + MAX_AGE), None, "never longer than MAX_AGE");

        v.insert_at("gone", now, Duration::ZERO, 9);
        assert_eq!(v.get_at("gone", now), None, "an expired token is not remembered");
    }

    #[test]
    fn the_memory_is_bounded() {
        let v = Verified::<u32>::new(0);
        let now = Instant::now();
        for i in 0..CAPACITY + 5 {
            v.insert_at(&format!("t{i}"), now, Duration::from_secs(30), 1);
        }
        assert!(v.entries.lock().unwrap().len() <= CAPACITY);
        assert_eq!(v.get_at(&format!("t{}", CAPACITY + 4), now), Some(1), "the newest is kept");
    }

    #[test]
    fn an_absurd_expiry_is_capped_not_a_panic() {
        let v = Verified::<u32>::new(30);
        v.insert("far", u64::MAX, 1);
        assert_eq!(v.get("far"), Some(1));
    }

    #[test]
    fn expiry_counts_the_leeway() {
        let v = Verified::<u32>::new(30);
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 10;
        v.insert("within-leeway", exp, 1);
        assert_eq!(v.get("within-leeway"), Some(1));
        let v = Verified::<u32>::new(0);
        v.insert("past", exp, 1);
        assert_eq!(v.get("past"), None);
    }
}
