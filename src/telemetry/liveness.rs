//! Whether the process is still whole: the background tasks it runs report
//! here when one ends before the process is asked to stop, and the
//! liveness probe says so.

use std::sync::{Arc, Mutex};

/// The background tasks that ended unasked (shared: cloning shares it).
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    ended: Arc<Mutex<Vec<&'static str>>>,
}

impl Liveness {
    /// `task` ended (returned or panicked) while it should have run on.
    pub fn task_ended(&self, task: &'static str) {
        let mut ended = self.ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !ended.contains(&task) {
            ended.push(task);
        }
    }

    /// The tasks that ended unasked, in the order they did; empty while
    /// the process is whole.
    pub fn ended(&self) -> Vec<&'static str> {
        self.ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}
