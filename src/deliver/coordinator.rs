//! The coordinator: which instance delivers which subscriptions, and which
//! deliverers run here.
//!
//! Invariants it keeps:
//! - **One deliverer per subscription across instances.** Subscriptions
//!   are divided into buckets (`id % buckets`); a deliverer runs here only
//!   for a subscription of a bucket this instance holds a live lease on
//!   (`holds`, by the store's clock), and a deliverer stops pushing once
//!   the lease is no longer held.
//! - **Fair shares.** Each instance announces its presence and holds at
//!   most `buckets / live instances` (rounded up); beyond that it hands the
//!   highest buckets over. Free and expired buckets are taken from a
//!   starting place of the instance's own, so instances do not all race
//!   for the same one.
//! - **Handed over, not dropped.** A bucket is let go (handed over, or at
//!   stop) only after its deliverers finished their push and stored their
//!   checkpoints, so the next holder starts where they ended; a dead
//!   instance's buckets pass on one lease after its last renewal, because
//!   every instance looks again as soon as a foreign lease or presence
//!   expires (a live instance renews long before).
//! - **Told, not polling.** Subscription, state and lease changes come
//!   from this instance and from the change feed (`on_change`); an idle
//!   subscription costs nothing per subscription.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Delivery, Running, Signals};
use crate::feeds::StoreError;
use crate::feeds::coordination::BucketLease;
use crate::feeds::coordination::changes::Change;

impl Delivery {
    /// What the instance's change-feed follower reports (see
    /// [`crate::feeds::coordination::changes::follow`]), while this instance delivers.
    pub fn on_change(&self, change: Change) {
        match change {
            Change::Appended(_) => {} // the store woke the feed's watchers
            Change::Subscription(id, etag) => match self.running.lock().expect("deliverers lock").get(&id) {
                // Unless it is the change the deliverer already read.
                Some(r) if r.signals.known.lock().expect("known lock").as_deref() != Some(etag.as_str()) => {
                    r.changed(true, false);
                }
                Some(_) => {}
                // A new subscription of a bucket this instance holds.
                None if self.holds(id) => self.wake_start.notify_one(),
                None => {}
            },
            Change::Delivery(id, etag) => {
                let own = self.written.lock().expect("written lock").get(&id) == Some(&etag);
                if !own && let Some(r) = self.running.lock().expect("deliverers lock").get(&id) {
                    r.changed(false, true);
                }
            }
            // Another instance took or released a bucket (this one's own
            // renewals wake nobody).
            Change::Lease { owner } if owner != self.instance => self.wake_balance.notify_one(),
            Change::Lease { .. } => {}
            Change::Missed => self.resync(),
        }
    }

    /// Changes may have been missed: every deliverer reads its subscription,
    /// state and feed again.
    fn resync(&self) {
        for running in self.running.lock().expect("deliverers lock").values() {
            running.changed(true, true);
        }
        self.wake_balance.notify_one();
    }

    /// Tells the deliverer of subscription `id`, when it runs here, that
    /// its subscription or state changed.
    pub fn changed(&self, id: u64) {
        match self.running.lock().expect("deliverers lock").get(&id) {
            Some(r) => r.changed(true, true),
            None => self.wake_start.notify_one(),
        }
    }

    fn bucket_of(&self, id: u64) -> u64 {
        id % self.settings.buckets.max(1)
    }

    /// Whether this instance holds a live lease on subscription `id`'s bucket.
    pub(super) fn holds(&self, id: u64) -> bool {
        let bucket = self.bucket_of(id);
        let now = self.now_ms();
        self.held.lock().expect("held lock").get(&bucket).is_some_and(|until| *until > now)
    }

    /// Every third of the lease (and when another instance takes or lets
    /// go of a bucket): renew and share the buckets. Then, and when a
    /// subscription comes or goes: run the deliverers of the held buckets.
    pub(super) async fn coordinate(self: &Arc<Self>, mut stop: watch::Receiver<bool>, tasks: &mut JoinSet<()>) {
        let mut leases: HashMap<u64, BucketLease> = HashMap::new();
        let mut next_balance = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_balance {
                let again = self.balance_again_in(self.balance(&mut leases).await);
                next_balance = tokio::time::Instant::now() + again;
            }
            // Reap the deliverers that ended.
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.start_and_stop(tasks).await {
                tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "listing subscriptions failed");
            }
            tokio::select! {
                () = tokio::time::sleep_until(next_balance) => {}
                () = self.wake_balance.notified() => next_balance = tokio::time::Instant::now(),
                () = self.wake_start.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// When to share the buckets again after a round that ended with
    /// `balanced`. A failure is tried again soon (the leases this instance
    /// holds last a whole lease; a failed round loses none).
    fn balance_again_in(&self, balanced: Result<Option<u64>, StoreError>) -> Duration {
        match balanced {
            // Renew every third of the lease; look again as soon as a
            // bucket this instance could take expires (a dead holder's
            // buckets pass on one lease after its last renewal, not a
            // balance round later).
            Ok(Some(expires_ms)) => {
                (self.settings.lease / 3).min(Duration::from_millis(expires_ms.saturating_sub(self.now_ms()) + 50))
            }
            Ok(None) => self.settings.lease / 3,
            Err(e) => {
                tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "delivery coordination failed");
                (self.settings.lease / 10).min(Duration::from_secs(1))
            }
        }
    }

    /// Renews this instance's buckets, takes free or expired ones up to its
    /// fair share, and lets go of what is beyond it. Returns when the first
    /// lease of another instance expires (a live holder renews it long
    /// before; one that expires tells of a death, and of a new share), or a
    /// presence: the other instance's, which may outlive its leases.
    async fn balance(&self, mine: &mut HashMap<u64, BucketLease>) -> Result<Option<u64>, StoreError> {
        let now = self.now_ms();
        let lease_ms = u64::try_from(self.settings.lease.as_millis()).unwrap_or(u64::MAX);
        self.leases.present(&self.instance, now + lease_ms).await?;
        let presences = self.leases.presences(now).await?;
        let instances = presences.len().max(1) as u64;
        let share = self.settings.buckets.div_ceil(instances) as usize;
        let all: HashMap<u64, BucketLease> = self.leases.leases().await?.into_iter().map(|l| (l.bucket, l)).collect();
        mine.clear();
        let mut free = Vec::new();
        for bucket in 0..self.settings.buckets {
            match all.get(&bucket) {
                Some(l) if l.owner == self.instance && l.expires_ms > now => {
                    mine.insert(bucket, l.clone());
                }
                Some(l) if l.expires_ms > now => {}
                other => free.push((bucket, other.cloned())),
            }
        }
        // Beyond the share: hand the highest buckets over.
        let mut owned: Vec<u64> = mine.keys().copied().collect();
        owned.sort_unstable();
        for bucket in owned.iter().skip(share) {
            if let Some(lease) = mine.remove(bucket) {
                self.hand_over(*bucket, &lease).await?;
            }
        }
        // Renew the rest.
        for (bucket, lease) in mine.clone() {
            match self.leases.take(bucket, Some(&lease), &self.instance, now + lease_ms).await? {
                Some(renewed) => {
                    mine.insert(bucket, renewed);
                }
                None => {
                    mine.remove(&bucket);
                }
            }
        }
        // Take free ones, starting at a place of this instance's own, so that
        // instances do not all race for the same bucket.
        let start = (self.instance.bytes().map(u64::from).sum::<u64>() as usize) % free.len().max(1);
        free.rotate_left(start);
        for (bucket, current) in free {
            if mine.len() >= share {
                break;
            }
            if let Some(taken) = self.leases.take(bucket, current.as_ref(), &self.instance, now + lease_ms).await? {
                mine.insert(bucket, taken);
            }
        }
        *self.held.lock().expect("held lock") = mine.iter().map(|(b, l)| (*b, l.expires_ms)).collect();
        metrics::gauge!("delivery_buckets_held").set(mine.len() as f64);
        // A foreign lease or presence that expires changes what this
        // instance should hold (its own presence was just renewed, a whole
        // lease ahead; a dead instance's may outlive its leases).
        let own_presence = now + lease_ms;
        let next_expiry = all
            .values()
            .filter(|l| l.owner != self.instance && l.expires_ms > now)
            .map(|l| l.expires_ms)
            .chain(presences.iter().copied().filter(|e| *e < own_presence))
            .min();
        Ok(next_expiry)
    }

    /// Lets go of `bucket`: its deliverers stop and store their checkpoints
    /// first (while this instance still holds the lease), so the next holder
    /// starts where they ended and repeats nothing.
    async fn hand_over(&self, bucket: u64, lease: &BucketLease) -> Result<(), StoreError> {
        self.held.lock().expect("held lock").remove(&bucket);
        let stopping: Vec<u64> = {
            let running = self.running.lock().expect("deliverers lock");
            running
                .iter()
                .filter(|(id, _)| self.bucket_of(**id) == bucket)
                .map(|(id, r)| {
                    let _ = r.stop.send(true);
                    *id
                })
                .collect()
        };
        let deadline = Instant::now() + self.settings.lease / 3;
        while Instant::now() < deadline {
            let busy = {
                let running = self.running.lock().expect("deliverers lock");
                stopping.iter().any(|id| running.get(id).is_some_and(|r| !r.stop.is_closed()))
            };
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.leases.take(bucket, Some(lease), &self.instance, 0).await?;
        Ok(())
    }

    /// Lets go of every bucket this instance holds (it stops).
    pub(super) async fn release_all(&self) {
        let Ok(leases) = self.leases.leases().await else { return };
        for lease in leases.iter().filter(|l| l.owner == self.instance) {
            let _ = self.leases.take(lease.bucket, Some(lease), &self.instance, 0).await;
        }
        self.held.lock().expect("held lock").clear();
    }

    /// Runs a deliverer for each subscription of the held buckets, and no other.
    async fn start_and_stop(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> Result<(), StoreError> {
        let wanted: HashSet<u64> = self.subscriptions.ids().await?.into_iter().filter(|id| self.holds(*id)).collect();
        let mut running = self.running.lock().expect("deliverers lock");
        running.retain(|id, r| {
            let keep = wanted.contains(id) && !r.stop.is_closed();
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
        for id in wanted {
            if running.contains_key(&id) {
                continue;
            }
            let signals = Arc::new(Signals::default());
            let (stop, stopped) = watch::channel(false);
            running.insert(id, Running { signals: signals.clone(), stop });
            tasks.spawn(self.clone().deliver(id, signals, stopped));
        }
        metrics::gauge!("delivery_subscriptions_running").set(running.len() as f64);
        Ok(())
    }
}
