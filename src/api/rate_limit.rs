//! Fixed-window request counting per key (client address, instance), for
//! the anonymous endpoint. In memory, per instance of the service.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// Counts one request for `key`; `Err(seconds)` to wait when more than
    /// `per_minute` came in the current window.
    pub fn check(&self, key: &str, per_minute: u32) -> Result<(), u64> {
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("rate limiter lock");
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= per_minute {
            let left = WINDOW.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs().max(1));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_says_how_long_to_wait() {
        let l = RateLimiter::default();
        assert!(l.check("a", 2).is_ok());
        assert!(l.check("a", 2).is_ok());
        let wait = l.check("a", 2).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.check("b", 2).is_ok(), "keys are independent");
    }
}
