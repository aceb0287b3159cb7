//! Who may push how much at once: the slow endpoint pays, not its
//! neighbours.
//!
//! Invariants it keeps:
//! - A push (a delivery or a validation) holds three slots while it runs:
//!   one of its consumer's (`per_consumer`), one of its endpoint's host's
//!   (`per_host`, host and port), and one of the instance's (`total`). It
//!   takes them in that order and waits in each queue in turn, so a
//!   consumer whose endpoints never answer fills only its own slots: its
//!   further pushes wait in its own queue, holding nothing that others
//!   need. The instance's queue is first come, first served, and a consumer
//!   has at most `per_consumer` pushes in it: consumers take turns.
//! - The tables of consumers and hosts hold only those with a push running
//!   or waiting: an entry goes with its last permit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct SlotLimits {
    pub total: usize,
    pub per_consumer: usize,
    pub per_host: usize,
}

/// Semaphores by key, kept while anyone holds or waits for one.
struct Table {
    size: usize,
    entries: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Table {
    fn new(size: usize) -> Self {
        Self { size: size.max(1), entries: Mutex::default() }
    }

    fn get(&self, key: &str) -> Arc<Semaphore> {
        let mut entries = self.entries.lock().expect("slots lock");
        entries.entry(key.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.size))).clone()
    }

    /// Forgets `key` when nobody holds or waits for its semaphore (the
    /// table's own reference is the only one left).
    fn release(&self, key: &str) {
        let mut entries = self.entries.lock().expect("slots lock");
        if entries.get(key).is_some_and(|s| Arc::strong_count(s) == 1) {
            entries.remove(key);
        }
    }

    fn len(&self) -> usize {
        self.entries.lock().expect("slots lock").len()
    }
}

/// The push slots of one instance.
pub struct PushSlots {
    total: Arc<Semaphore>,
    consumers: Arc<Table>,
    hosts: Arc<Table>,
}

/// The three slots of a running push; given back when dropped.
pub struct Permit {
    // The host's and the consumer's slots are given back first (in `drop`),
    // then the table entries that no one needs any more are forgotten, then
    // the instance's slot goes with the fields.
    _total: OwnedSemaphorePermit,
    host: Option<OwnedSemaphorePermit>,
    consumer: Option<OwnedSemaphorePermit>,
    keys: (String, String),
    tables: (Arc<Table>, Arc<Table>),
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.host.take();
        self.consumer.take();
        self.tables.0.release(&self.keys.0);
        self.tables.1.release(&self.keys.1);
    }
}

/// Gives a waiter's reference back to its table if the wait is dropped
/// (a push that was cancelled before it got its slots).
struct Waiting<'a> {
    table: &'a Table,
    key: &'a str,
    semaphore: Option<Arc<Semaphore>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.semaphore.take();
        self.table.release(self.key);
    }
}

impl<'a> Waiting<'a> {
    fn new(table: &'a Table, key: &'a str) -> Self {
        Self { semaphore: Some(table.get(key)), table, key }
    }

    async fn acquire(&self) -> OwnedSemaphorePermit {
        let semaphore = self.semaphore.clone().expect("set until dropped");
        semaphore.acquire_owned().await.expect("slot semaphores are never closed")
    }
}

impl PushSlots {
    pub fn new(limits: SlotLimits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(limits.total.max(1))),
            consumers: Arc::new(Table::new(limits.per_consumer)),
            hosts: Arc::new(Table::new(limits.per_host)),
        }
    }

    /// Waits for a slot of `consumer`, then of `host`, then of the instance.
    pub async fn acquire(&self, consumer: &str, host: &str) -> Permit {
        let consumer_wait = Waiting::new(&self.consumers, consumer);
        let consumer_permit = consumer_wait.acquire().await;
        let host_wait = Waiting::new(&self.hosts, host);
        let host_permit = host_wait.acquire().await;
        let total = self.total.clone().acquire_owned().await.expect("slot semaphores are never closed");
        // The permits keep their semaphores alive from here on; the waits'
        // own references go without releasing the entries (the permits'
        // references are still counted).
        drop((consumer_wait, host_wait));
        Permit {
            _total: total,
            host: Some(host_permit),
            consumer: Some(consumer_permit),
            keys: (consumer.to_owned(), host.to_owned()),
            tables: (self.consumers.clone(), self.hosts.clone()),
        }
    }

    /// Consumers and hosts with a push running or waiting (for tests and
    /// metrics: bounded by the pushes, not by who ever pushed).
    pub fn tracked(&self) -> (usize, usize) {
        (self.consumers.len(), self.hosts.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slots() -> Arc<PushSlots> {
        Arc::new(PushSlots::new(SlotLimits { total: 3, per_consumer: 2, per_host: 2 }))
    }

    #[tokio::test]
    async fn one_consumer_cannot_take_every_slot() {
        let slots = slots();
        let a1 = slots.acquire("a", "tarpit:443").await;
        let a2 = slots.acquire("a", "tarpit2:443").await;
        // A third push of consumer a waits for its own slots...
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("a", "tarpit3:443").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        // ...while consumer b gets one at once.
        let b = tokio::time::timeout(Duration::from_millis(100), slots.acquire("b", "good:443")).await;
        assert!(b.is_ok(), "another consumer is not held up");
        drop((a1, b));
        let a3 = tokio::time::timeout(Duration::from_secs(1), waiting).await.unwrap().unwrap();
        drop((a2, a3));
        assert_eq!(slots.tracked(), (0, 0), "nothing is kept for those who do not push");
    }

    #[tokio::test]
    async fn one_host_cannot_take_every_slot() {
        let slots = slots();
        let _x = slots.acquire("x", "tarpit:443").await;
        let _y = slots.acquire("y", "tarpit:443").await;
        let z = tokio::time::timeout(Duration::from_millis(50), slots.acquire("z", "tarpit:443")).await;
        assert!(z.is_err(), "a third consumer's push to the same host waits");
        let w = tokio::time::timeout(Duration::from_millis(100), slots.acquire("w", "good:443")).await;
        assert!(w.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_nothing_behind() {
        let slots = slots();
        let a1 = slots.acquire("a", "h:1").await;
        let a2 = slots.acquire("a", "h:2").await;
        let cancelled = tokio::time::timeout(Duration::from_millis(20), slots.acquire("a", "h:3")).await;
        assert!(cancelled.is_err());
        drop((a1, a2));
        assert_eq!(slots.tracked(), (0, 0));
    }
}
