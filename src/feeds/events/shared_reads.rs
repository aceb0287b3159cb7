//! One Cosmos read for many readers of the same page: when deliverers of
//! many subscriptions follow one feed, an append wakes them all and they
//! ask for the same page. A read that is under way, or finished a moment
//! ago, is used instead of repeated, but only when it began after every
//! append the reader may have been told of (the feed's notification count
//! when the read began is at least the count the reader sees now): a shared
//! page never hides an event that its reader was woken for. Pages are kept
//! for `KEEP` at most, failures not at all.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::reader::ReadPage;
use crate::feeds::StoreError;

/// What makes two reads the same: feed, position, filters, limit, budget.
pub(crate) type ReadKey = (String, u64, String, usize, u64);

/// How long a finished read's page may be used by others.
const KEEP: Duration = Duration::from_secs(5);

/// A read under way or done: the notification count when it began, when it
/// began, and where its page (or `None`: it failed) is.
struct Flight {
    version: u64,
    began: Instant,
    page: watch::Receiver<Option<Option<ReadPage>>>,
}

#[derive(Default)]
pub(crate) struct SharedReads {
    inflight: Mutex<HashMap<ReadKey, Flight>>,
}

/// Removes a flight from the map when its read failed or was dropped.
struct Landing<'a> {
    reads: &'a SharedReads,
    key: ReadKey,
    page: watch::Receiver<Option<Option<ReadPage>>>,
    succeeded: bool,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        if self.succeeded {
            return;
        }
        let mut inflight = self.reads.inflight.lock().expect("shared reads lock");
        if inflight.get(&self.key).is_some_and(|f| f.page.same_channel(&self.page)) {
            inflight.remove(&self.key);
        }
    }
}

impl SharedReads {
    /// Runs `read`, or joins the same read under way. `version`: the
    /// feed's notification count now (`None`: the feed is not watched, the
    /// read is not shared). A failed or abandoned read is not shared: a
    /// joiner then reads for itself and gets its own error.
    pub(crate) async fn read<Fut>(
        &self,
        key: ReadKey,
        version: Option<u64>,
        read: impl FnOnce() -> Fut,
    ) -> Result<ReadPage, StoreError>
    where
        Fut: Future<Output = Result<ReadPage, StoreError>>,
    {
        let Some(version) = version else { return read().await };
        let joined = {
            let inflight = self.inflight.lock().expect("shared reads lock");
            inflight.get(&key).filter(|f| f.version >= version && f.began.elapsed() < KEEP).map(|f| f.page.clone())
        };
        if let Some(mut page) = joined {
            if let Ok(done) = page.wait_for(Option::is_some).await
                && let Some(Some(page)) = &*done
            {
                metrics::counter!("feed_reads_shared_total").increment(1);
                return Ok(page.clone());
            }
            return read().await;
        }
        let (tx, rx) = watch::channel(None);
        {
            let mut inflight = self.inflight.lock().expect("shared reads lock");
            inflight.retain(|_, f| f.began.elapsed() < KEEP);
            inflight.insert(key.clone(), Flight { version, began: Instant::now(), page: rx.clone() });
        }
        let mut landing = Landing { reads: self, key, page: rx, succeeded: false };
        let out = read().await;
        landing.succeeded = out.is_ok();
        let _ = tx.send(Some(out.as_ref().ok().cloned()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn page(next: u64) -> ReadPage {
        ReadPage { events: Vec::new(), next, at_end: true, skipped: 0, round_trips: 1, request_charge: 0.0 }
    }

    fn key() -> ReadKey {
        ("s:/party/1".into(), 0, String::new(), 50, 100)
    }

    #[tokio::test]
    async fn concurrent_reads_share_one_and_a_newer_append_starts_another() {
        let reads = Arc::new(SharedReads::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = watch::channel(false);
        let leader = {
            let (reads, runs, mut gate) = (reads.clone(), runs.clone(), gate.clone());
            tokio::spawn(async move {
                reads
                    .read(key(), Some(3), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|g| *g).await;
                        Ok(page(7))
                    })
                    .await
            })
        };
        while reads.inflight.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Same count: joins. A newer count (an append since): its own read.
        let joiner = {
            let (reads, runs) = (reads.clone(), runs.clone());
            tokio::spawn(async move {
                reads
                    .read(key(), Some(3), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(page(0))
                    })
                    .await
            })
        };
        // (One thread: the joiner runs up to its wait when this task yields.)
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let newer = reads
            .read(key(), Some(4), || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(page(9))
            })
            .await
            .unwrap();
        assert_eq!(newer.next, 9);
        let _ = release.send(true);
        assert_eq!(leader.await.unwrap().unwrap().next, 7);
        assert_eq!(joiner.await.unwrap().unwrap().next, 7, "the joiner got the leader's page");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A finished page serves readers of its version, not newer ones.
        let again = reads.read(key(), Some(4), || async { Ok(page(0)) }).await.unwrap();
        assert_eq!(again.next, 9, "kept");
        let newer = reads.read(key(), Some(5), || async { Ok(page(11)) }).await.unwrap();
        assert_eq!(newer.next, 11);
        // Unwatched feeds are not shared.
        let alone = reads.read(key(), None, || async { Ok(page(1)) }).await.unwrap();
        assert_eq!(alone.next, 1);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_shared() {
        let reads = Arc::new(SharedReads::default());
        let (release, gate) = watch::channel(false);
        let leader = {
            let (reads, mut gate) = (reads.clone(), gate.clone());
            tokio::spawn(async move {
                reads
                    .read(key(), Some(1), || async move {
                        let _ = gate.wait_for(|g| *g).await;
                        Err(StoreError::Transient("down".into()))
                    })
                    .await
            })
        };
        while reads.inflight.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let joiner = {
            let reads = reads.clone();
            tokio::spawn(async move { reads.read(key(), Some(1), || async { Ok(page(5)) }).await })
        };
        tokio::task::yield_now().await;
        let _ = release.send(true);
        assert!(leader.await.unwrap().is_err());
        assert_eq!(joiner.await.unwrap().unwrap().next, 5, "the joiner read for itself");
        assert!(reads.inflight.lock().unwrap().is_empty(), "a failure is not kept");
    }
}
