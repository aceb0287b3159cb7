//! The background tasks of a running instance, in one supervised set.
//!
//! Invariants it keeps:
//! - **No task ends unseen.** A task that ends before the instance is
//!   asked to stop (it returned, or it panicked) is logged as an error with
//!   its name, counted (`background_task_exits_total{task, how}`), and
//!   marks the instance not live: `/health/live` answers 503 naming it.
//! - **The policy is a restart of the pod, not of the task.** A task that
//!   panicked left its state (leases, queues, caches) unknown; Kubernetes
//!   restarts the container on the failing probe, with its own backoff, and
//!   the other pods take over its leases meanwhile. The instance keeps
//!   serving what it can until then.
//! - **Shutdown waits for every task**, up to the grace period; a task
//!   still running then is aborted, and named in the log.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::telemetry::Liveness;

/// The supervised set.
pub struct Tasks {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
    stop: watch::Receiver<bool>,
    liveness: Liveness,
}

impl Tasks {
    /// An empty set; its tasks are asked to stop through `stop` (each is
    /// given it), and report an early end to `liveness`.
    pub fn new(stop: watch::Receiver<bool>, liveness: Liveness) -> Self {
        Self { set: JoinSet::new(), names: HashMap::new(), stop, liveness }
    }

    /// Runs `task` (made from the stop signal) under supervision.
    pub fn spawn<F, T>(&mut self, name: &'static str, task: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: Future<Output = T> + Send + 'static,
        T: Outcome,
    {
        let stop = self.stop.clone();
        let liveness = self.liveness.clone();
        let run = task(stop.clone());
        let handle = self.set.spawn(async move {
            let failure = match AssertUnwindSafe(run).catch_unwind().await {
                Ok(outcome) => outcome.failure().map(|error| ("failed", error)),
                Err(panic) => Some(("panicked", panic_message(panic.as_ref()).to_owned())),
            };
            if *stop.borrow() {
                if let Some((how, error)) = failure {
                    tracing::warn!(task = name, how, error, "a background task ended badly while stopping");
                }
                return;
            }
            let (how, error) = failure.unwrap_or(("returned", String::new()));
            tracing::error!(task = name, how, error, "a background task ended: the instance is no longer live");
            metrics::counter!("background_task_exits_total", "task" => name, "how" => how).increment(1);
            liveness.task_ended(name);
        });
        self.names.insert(handle.id(), name);
    }

    /// Ends every task at once, as a crash would (nothing finishes), and
    /// waits until they are gone.
    pub async fn abort_all(mut self) {
        self.set.shutdown().await;
    }

    /// Waits for every task to end, until `deadline`; aborts and names
    /// those still running then.
    pub async fn join(mut self, deadline: tokio::time::Instant) {
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await {
                Ok(None) => return,
                Ok(Some(Ok((id, ())))) => {
                    self.names.remove(&id);
                }
                Ok(Some(Err(e))) => {
                    self.names.remove(&e.id());
                }
                Err(_) => {
                    let mut left: Vec<&str> = self.names.values().copied().collect();
                    left.sort_unstable();
                    tracing::warn!(tasks = ?left, "grace period over; aborting what still runs");
                    self.set.shutdown().await;
                    return;
                }
            }
        }
    }
}

/// What a task's end says: nothing (`()`), or an error it ended with.
pub trait Outcome: Send + 'static {
    fn failure(&self) -> Option<String>;
}

impl Outcome for () {
    fn failure(&self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display + Send + 'static> Outcome for Result<(), E> {
    fn failure(&self) -> Option<String> {
        self.as_ref().err().map(ToString::to_string)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_unasked_marks_the_instance_not_live_and_shutdown_waits_for_the_rest() {
        let (stop_tx, stop) = watch::channel(false);
        let liveness = Liveness::default();
        let mut tasks = Tasks::new(stop, liveness.clone());
        tasks.spawn("panics", |_| async {
            if true {
                panic!("boom");
            }
        });
        tasks.spawn("fails", |_| async { Err::<(), _>("no store") });
        let (done_tx, done) = tokio::sync::oneshot::channel();
        tasks.spawn("waits", |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done_tx.send(());
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while liveness.ended().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", liveness.ended());
            tokio::task::yield_now().await;
        }
        let mut ended = liveness.ended();
        ended.sort_unstable();
        assert_eq!(ended, ["fails", "panics"]);
        stop_tx.send(true).unwrap();
        tasks.join(deadline).await;
        assert!(done.await.is_ok(), "shutdown waited for the task that stops when asked");
        assert_eq!(liveness.ended().len(), 2, "a task that ends when asked is not reported");
    }

    #[tokio::test]
    async fn a_task_still_running_at_the_deadline_is_aborted() {
        struct Dropped(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let (stop_tx, stop) = watch::channel(false);
        let mut tasks = Tasks::new(stop, Liveness::default());
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        tasks.spawn("stuck", |_| async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        stop_tx.send(true).unwrap();
        tasks.join(tokio::time::Instant::now() + Duration::from_millis(10)).await;
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the stuck task was aborted");
    }
}
