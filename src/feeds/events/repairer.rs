//! The repairer completes publishes that were interrupted between their two
//! appends. It follows the container's change feed, and for every event in a
//! resource feed that is older than a grace period (so that a publisher
//! still working on it is left alone) makes sure its subject feed holds it.
//! Events imported from Altinn Events are the import's to complete (a
//! killed import finishes its last batches when started again), not the
//! repairer's.
//! One instance works at a time: a lease document with an expiry decides
//! which, and carries the change-feed continuation, so a new owner resumes
//! where the last one stopped.

use std::collections::HashSet;
use std::time::Duration;

use azure_data_cosmos::ContainerClient;
use azure_data_cosmos::options::ChangeFeedStartFrom;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::docs::{EventDoc, FeedId};
use super::{FeedStore, IdSource};
use crate::feeds::Changed;
use crate::feeds::StoreError;
use crate::feeds::cosmos::{ChangeRound, read_versioned, write_versioned};

const LEASE_PK: &str = "lease|repairer";
/// Change-feed documents per page.
const PAGE_SIZE: u32 = 1000;
/// Pages a round reads at most (empty ones included) before it lets the next
/// round continue; a round that stops there is behind.
const MAX_PAGES_PER_ROUND: usize = 50;
const LEASE_ID: &str = "lease";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseDoc {
    id: String,
    pk: String,
    owner: String,
    /// Milliseconds since the epoch.
    expires_at: u64,
    continuation: Option<String>,
    ttl: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// This instance held the lease for the round.
    pub leader: bool,
    /// Resource-feed events looked at.
    pub checked: u64,
    /// Events appended to their subject feed.
    pub repaired: u64,
    /// Events left for a later round because they are younger than the grace.
    pub deferred: u64,
    /// Imported events passed over (the import completes its own).
    pub imported: u64,
    /// Events that cannot be repaired (unreadable, or refused by their
    /// subject feed): logged, counted, and passed over.
    pub skipped: u64,
    /// The round stopped at its page budget with more to read.
    pub behind: bool,
    /// When the newest document it read (its checked events among them)
    /// was written (`_ts`, seconds).
    pub last_checked_ts: u64,
}

impl RepairReport {
    /// How far behind the repairer is, in seconds, at `now_s`: the age of
    /// the newest document it read when it stopped with more to read, 0 when
    /// it read up to the events younger than the grace period.
    pub fn lag_seconds(&self, now_s: u64) -> u64 {
        if self.behind { now_s.saturating_sub(self.last_checked_ts) } else { 0 }
    }
}

pub struct Repairer {
    store: FeedStore,
    owner: String,
    lease_for: Duration,
    grace: Duration,
    /// The subject-feed copies the last round saw (`Due::copy`).
    seen_before: std::sync::Mutex<HashSet<String>>,
}

/// A resource-feed event to check: where its copy in its subject feed would
/// be, and where to read it for a repair. Small: a round holds thousands.
struct Due {
    /// The document id (the same in both feeds).
    id: String,
    resource_pk: String,
    subject: String,
    /// Its copy's key among the copies seen (`copy_key`).
    copy: String,
}

/// What a subject-feed event document is known by among the copies seen:
/// its feed (`s:{subject}`) and its id.
fn copy_key(feed_key: &str, id: &str) -> String {
    format!("{feed_key}\n{id}")
}

/// Takes a page of the change feed: its resource-feed events older than the
/// grace period into `due`, its subject-feed events into `seen`; whether the
/// page has younger resource-feed events.
fn take_page(
    docs: &[Value],
    cutoff_s: u64,
    due: &mut Vec<Due>,
    seen: &mut HashSet<String>,
    report: &mut RepairReport,
) -> bool {
    let mut young = false;
    for doc in docs {
        let (Some(pk), Some(id)) = (doc.get("pk").and_then(Value::as_str), doc.get("id").and_then(Value::as_str))
        else {
            continue;
        };
        let ts = doc.get("_ts").and_then(Value::as_u64).unwrap_or(0);
        if ts <= cutoff_s {
            report.last_checked_ts = report.last_checked_ts.max(ts);
        }
        if doc.get("seq").is_none() || doc.get("sealed").is_some() {
            continue;
        }
        if pk.starts_with("s:") {
            let feed = pk.rsplit_once('|').map_or(pk, |(feed, _segment)| feed);
            seen.insert(copy_key(feed, id));
            continue;
        }
        if !pk.starts_with("r:") {
            continue;
        }
        if doc.get("aseq").is_some() {
            // Imported from Altinn Events: the import appends its subject
            // copy itself, in Altinn's order, and a killed import looks for
            // what it stored before appending again (`import_settled`). A
            // repair here, racing an import whose queues are longer than
            // the grace, would put the copy at the feed's end, out of order.
            report.imported += 1;
            continue;
        }
        if ts > cutoff_s {
            young = true;
            report.deferred += 1;
            continue;
        }
        let Some(subject) = doc.get("subject").and_then(Value::as_str) else {
            // One bad document must not stop every later repair.
            tracing::error!(doc.id = id, "skipping an event document without a subject");
            metrics::counter!("feed_repair_skipped_total").increment(1);
            report.skipped += 1;
            continue;
        };
        report.checked += 1;
        if !subject.is_empty() {
            let copy = copy_key(&FeedId::Subject(subject.to_owned()).key(), id);
            due.push(Due { id: id.to_owned(), resource_pk: pk.to_owned(), subject: subject.to_owned(), copy });
        }
    }
    young
}

impl Repairer {
    pub fn new(store: FeedStore, owner: impl Into<String>, lease_for: Duration, grace: Duration) -> Self {
        Self { store, owner: owner.into(), lease_for, grace, seen_before: Default::default() }
    }

    fn container(&self) -> &ContainerClient {
        &self.store.cosmos.container
    }

    /// Lease times and the grace period follow the store's clock.
    fn now_ms(&self) -> u64 {
        self.store.clock().now_ms()
    }

    /// Takes or renews the lease; returns it with its ETag when this
    /// instance holds it.
    async fn acquire(&self) -> Result<Option<(LeaseDoc, String)>, StoreError> {
        let now = self.now_ms();
        let current: Option<(LeaseDoc, String)> =
            read_versioned(self.container(), LEASE_PK, LEASE_ID, "read lease").await?;
        let mut doc = match &current {
            Some((doc, _)) if doc.owner != self.owner && doc.expires_at > now => return Ok(None),
            Some((doc, _)) => doc.clone(),
            None => LeaseDoc {
                id: LEASE_ID.into(),
                pk: LEASE_PK.into(),
                owner: String::new(),
                expires_at: 0,
                continuation: None,
                ttl: -1,
            },
        };
        doc.owner = self.owner.clone();
        doc.expires_at = now + self.lease_for.as_millis() as u64;
        let etag = current.as_ref().map(|(_, etag)| etag.as_str());
        Ok(match write_versioned(self.container(), LEASE_PK, LEASE_ID, &doc, etag, "write lease").await? {
            Changed::Done(etag) => Some((doc, etag)),
            // Another instance took it first.
            Changed::Stale => None,
        })
    }

    /// One round: take the lease, read the change feed from the saved
    /// continuation, repair what is missing, save the continuation. An event
    /// whose copy in its subject feed came through the change feed too (this
    /// round or the last) costs no request; only the others are looked up.
    pub async fn run_once(&self) -> Result<RepairReport, StoreError> {
        let Some((mut lease, mut etag)) = self.acquire().await? else {
            return Ok(RepairReport::default());
        };
        let mut report = RepairReport { leader: true, ..RepairReport::default() };
        let mut round = ChangeRound::open(
            self.container(),
            ChangeFeedStartFrom::Beginning,
            lease.continuation.clone(),
            PAGE_SIZE,
            Some("repair_change_feed"),
        )
        .await?;
        let cutoff_s = (self.now_ms().saturating_sub(self.grace.as_millis() as u64)) / 1000;
        // The round's resource-feed events old enough to check, the subject
        // feeds' copies it saw, and the position after the last page whose
        // events are all among them.
        let mut due = Vec::new();
        let mut seen = HashSet::new();
        let mut reached = lease.continuation.clone();
        while let Some(docs) = round.next().await? {
            // Renewed (with the position checked so far) once half the lease
            // is gone, so that no other instance takes over mid-round.
            if self.now_ms() + self.lease_for.as_millis() as u64 / 2 > lease.expires_at
                && !self.renew(&mut lease, &mut etag).await?
            {
                return Ok(report);
            }
            if take_page(&docs, cutoff_s, &mut due, &mut seen, &mut report) {
                // Younger events: keep the position before this page, which
                // is read again next round (checks are idempotent).
                break;
            }
            reached = Some(round.continuation()?);
            if round.read >= MAX_PAGES_PER_ROUND {
                report.behind = true;
                break;
            }
        }
        // Copies seen in the last round count too: a publish's two documents
        // can be read in different rounds.
        let previous = std::mem::take(&mut *self.seen_before.lock().expect("seen lock"));
        let missing: Vec<Due> =
            due.into_iter().filter(|d| !seen.contains(&d.copy) && !previous.contains(&d.copy)).collect();
        *self.seen_before.lock().expect("seen lock") = seen;
        self.repair_missing(missing, &mut report).await?;
        lease.continuation = reached;
        // Saved once per round (and on the way when the lease needs it): a
        // save is a change the next round reads, so saving after every page
        // would keep the change feed from ever running dry. A crash loses
        // only checks, which the next owner repeats.
        self.renew(&mut lease, &mut etag).await?;
        Ok(report)
    }

    /// Makes sure the subject feeds hold these events, whose copies the
    /// change feed did not bring (rare: a publisher stopped between its two
    /// appends, or a copy read more than a round apart): each one is looked
    /// for in its subject feed, and appended when it is not there.
    async fn repair_missing(&self, missing: Vec<Due>, report: &mut RepairReport) -> Result<(), StoreError> {
        for due in missing {
            let subject = FeedId::Subject(due.subject.clone());
            if self.store.position_of_doc(&subject, &due.id).await?.is_some() {
                continue;
            }
            let event: EventDoc = match self.container().read_item(&due.resource_pk, &due.id, None).await {
                Ok(resp) => match resp.into_model() {
                    Ok(event) => event,
                    Err(e) => {
                        // One bad document must not stop every later repair.
                        tracing::error!(error = %e, "skipping an unreadable event document");
                        metrics::counter!("feed_repair_skipped_total").increment(1);
                        report.skipped += 1;
                        continue;
                    }
                },
                // Gone from its resource feed since (expired): nothing to do.
                Err(e) if e.status().is_not_found() => continue,
                Err(e) => return Err(StoreError::cosmos("read event")(e)),
            };
            let record = event.into_record();
            tracing::warn!(event.id = %record.id, feed = %subject.log_label(), "repairing an event missing from its subject feed");
            match self.store.append_to(&subject, record, IdSource::Publisher).await {
                Ok(_) => {
                    report.repaired += 1;
                    metrics::counter!("feed_repaired_events_total").increment(1);
                }
                // Refused for what it is (not a store failure): a retry
                // cannot succeed, and failing the round would stop every
                // later repair behind it.
                Err(e) if e.is_client_error() => {
                    tracing::error!(error = %e, "skipping an event its subject feed refuses");
                    metrics::counter!("feed_repair_skipped_total").increment(1);
                    report.skipped += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Extends the lease (and saves `lease.continuation`); `false` when
    /// another instance has taken it.
    async fn renew(&self, lease: &mut LeaseDoc, etag: &mut String) -> Result<bool, StoreError> {
        lease.expires_at = self.now_ms() + self.lease_for.as_millis() as u64;
        match write_versioned(self.container(), LEASE_PK, LEASE_ID, &*lease, Some(etag), "save continuation").await? {
            Changed::Done(renewed) => {
                *etag = renewed;
                Ok(true)
            }
            Changed::Stale => Ok(false),
        }
    }

    /// Runs rounds every `interval` until `stop` fires.
    pub async fn run(self, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let round = self.run_once().await;
            if let Ok(report) = &round {
                if report.leader {
                    // For the "repairer stalled" alert: only the lease holder
                    // sets it, so the newest over all pods is the last round.
                    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
                    metrics::gauge!("feed_repair_last_success_timestamp_seconds").set(now);
                }
                // For the "repair lagging" alert: the holder's lag, 0 on the
                // others (so the largest over all pods is the holder's).
                let lag = if report.leader { report.lag_seconds(self.now_ms() / 1000) } else { 0 };
                metrics::gauge!("feed_repair_lag_seconds").set(lag as f64);
            }
            let behind = round.as_ref().is_ok_and(|r| r.behind);
            match round {
                Ok(r) if r.repaired > 0 => tracing::info!(repaired = r.repaired, checked = r.checked, "repair round"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "repair round failed"),
            }
            // Behind: the next round at once.
            let wait = if behind { Duration::ZERO } else { interval };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_page_gives_the_events_to_check_and_the_copies_it_brings() {
        let docs = [
            json!({"pk": "r:urn:x|0", "id": "a", "seq": 0, "subject": "/party/1", "_ts": 100}),
            json!({"pk": "s:/party/1|0", "id": "a", "seq": 0, "subject": "/party/1", "_ts": 100}),
            json!({"pk": "r:urn:x|0", "id": "b", "seq": 1, "subject": "/party/2", "_ts": 101}),
            json!({"pk": "r:urn:x|0", "id": "head", "_ts": 90}),
            json!({"pk": "r:urn:x|0", "id": "seal", "seq": 2, "sealed": true, "_ts": 102}),
            json!({"pk": "subscriptions", "id": "7", "seq": 7, "_ts": 103}),
            json!({"pk": "r:urn:x|0", "id": "i", "seq": 3, "subject": "/party/4", "aseq": 41, "_ts": 100}),
        ];
        let (mut due, mut seen, mut report) = (Vec::new(), HashSet::new(), RepairReport::default());
        assert!(!take_page(&docs, 200, &mut due, &mut seen, &mut report), "nothing younger than the grace");
        assert_eq!(due.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((report.checked, report.imported), (2, 1), "the imported event is left to the import");
        let held: Vec<bool> = due.iter().map(|d| seen.contains(&d.copy)).collect();
        assert_eq!(held, [true, false], "a's copy came with the page, b's did not");
        assert_eq!(report.last_checked_ts, 103);
        // An event younger than the grace: the page is to be read again.
        let young = [json!({"pk": "r:urn:x|0", "id": "c", "seq": 3, "subject": "/party/3", "_ts": 300})];
        assert!(take_page(&young, 200, &mut due, &mut seen, &mut report));
        assert_eq!((report.checked, report.deferred), (2, 1));
    }

    #[test]
    fn lag_is_the_age_of_what_was_read_last_when_a_round_stops_behind() {
        let report = RepairReport { behind: true, last_checked_ts: 1000, ..RepairReport::default() };
        assert_eq!(report.lag_seconds(1600), 600);
        let caught_up = RepairReport { behind: false, ..report };
        assert_eq!(caught_up.lag_seconds(1600), 0);
    }
}
