//! Taking over from a running Altinn Events (`altinn-events import`): its
//! history and subscriptions copied into this service's store, kept up to
//! date while both run, and the switch of push delivery at a cut-over
//! point. A use case with a loop, as delivery is; the command line (main)
//! drives it and shows its progress.
//!
//! Invariants it keeps:
//! - **Altinn's order**: events are appended through the feed writer in
//!   `sequenceno` order (`FeedStore::enqueue_in_order`), so each feed holds
//!   them in Altinn's order; each carries its `sequenceno` (`origin`).
//! - **Resumable, nothing twice, nothing skipped**: progress (the last
//!   `sequenceno` imported, the gaps watched) is stored in Cosmos DB only
//!   after every event up to it is in both its feeds; a restart appends
//!   from there again, and appends are idempotent by event id and source.
//! - **Rows committed out of order are not lost**: only a *settled* prefix
//!   of the table is taken (rows registered at least `settle` ago, by the
//!   database's clock, up to the first that is not); a number missing
//!   below it (a rolled-back insert, or a transaction still open) is a gap,
//!   looked at again every round for `gap_window`, and its row, when it
//!   appears, is imported then (at the feeds' end: Altinn's own readers,
//!   which hide only the newest 30 s, never see such a row at all).
//! - **Bounded**: one batch (`batch` rows, `max_batch_bytes`) in memory
//!   and one read ahead; rows larger than `max_row_bytes` are skipped
//!   unread; at most `MAX_GAPS` gaps are watched.
//! - **Subscriptions keep their ids** and are pushed only from the
//!   cut-over: Altinn pushed everything it numbered up to the cut-over
//!   `S`; an imported subscription starts at the first event of its feed
//!   that Altinn did not push, and passes over imported events numbered up
//!   to `S` after it (events published here meanwhile are pushed).

mod altinn_db;
mod rows;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::watch;

pub use altinn_db::{AltinnDb, DbError, ReadBounds};

use crate::domain::subscription::{DeliveryState, DeliveryStatus};
use crate::feeds::Changed;
use crate::feeds::import::{Gap, ImportStore, Progress, StoredProgress};
use crate::feeds::subscriptions::DeliveryStore;
use crate::feeds::subscriptions::{PutImported, SubscriptionStore};
use crate::feeds::{FeedStore, IdSource, StoreError};

/// Gaps watched at most (the oldest go first).
const MAX_GAPS: usize = 10_000;
/// Batches being written at once (each `batch_rows` rows at most).
const WINDOW: usize = 4;

/// A batch queued to the feeds' writers and not all returned yet.
struct InFlight {
    /// The last `sequenceno` it covers.
    last: u64,
    gaps: Vec<Gap>,
    /// Rows that could not be events: `sequenceno`, why.
    skipped: Vec<(u64, String)>,
    /// Each event's `sequenceno` and the outcome of its appends.
    outcomes: Vec<(u64, futures::future::BoxFuture<'static, Result<(), StoreError>>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Source(#[from] DbError),
    #[error("the store")]
    Storage(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
}

/// Settings of an import.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    pub bounds: ReadBounds,
    /// `--follow`: how long to wait when caught up.
    pub poll: Duration,
    /// `--follow`: how often subscriptions are compared with Altinn's.
    pub subscription_sync: Duration,
    /// Source hosts of apps (an app subscription's resource from its source).
    pub apps_domains: Vec<String>,
}

/// What the run does when it has caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Stop.
    CaughtUp,
    /// Keep importing new rows until stopped.
    Stopped,
    /// Catch up to (at least) this `sequenceno`, then start delivery of the
    /// imported subscriptions after it; `None`: the table's head when the
    /// import has caught up.
    CutOver(Option<u64>),
}

/// How the import stands (for a progress display).
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub events_through: u64,
    pub head: u64,
    pub events: u64,
    pub skipped: u64,
    pub gaps: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub progress: Progress,
    pub events_this_run: u64,
    pub subscriptions: SubscriptionCounts,
    pub cut_over: Option<CutOverReport>,
    /// Cosmos DB requests the run made (all kinds), and what else the
    /// store counted.
    pub cosmos_requests: u64,
    pub store: crate::feeds::FeedStats,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriptionCounts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub skipped: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct CutOverReport {
    pub at: u64,
    pub subscriptions: u64,
}

pub struct Importer {
    db: AltinnDb,
    feeds: FeedStore,
    store: ImportStore,
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    settings: ImportSettings,
}

impl Importer {
    /// Now, by the store's clock.
    fn now_ms(&self) -> u64 {
        self.feeds.clock().now_ms()
    }

    pub fn new(db: AltinnDb, feeds: FeedStore, settings: ImportSettings) -> Self {
        Self {
            store: ImportStore::new(&feeds),
            subscriptions: SubscriptionStore::new(&feeds),
            deliveries: DeliveryStore::new(&feeds),
            db,
            feeds,
            settings,
        }
    }

    /// Imports until `until` says to stop (or `stop`), reporting progress
    /// to `status` after every batch.
    pub async fn run(
        &self,
        until: Until,
        mut stop: watch::Receiver<bool>,
        status: &(dyn Fn(&Status) + Sync),
    ) -> Result<Report, ImportError> {
        let requests_before = self.feeds.stats().requests;
        let mut stored = self.store.load().await?;
        if let (Some(at), Until::Stopped) = (stored.progress.cut_over, until) {
            return Err(ImportError::Refused(format!(
                "the cut-over was made at sequenceno {at}: Altinn Events is no longer the source to follow"
            )));
        }
        let mut report = Report::default();
        let mut head = self.db.head().await?;
        // A cut-over begun before (and killed) is finished at its point,
        // whatever `head` is now.
        let mut target = match until {
            Until::CutOver(Some(at)) => Some(at),
            Until::CutOver(None) => stored.progress.cut_over,
            _ => None,
        };
        let mut synced_at: Option<tokio::time::Instant> = None;
        loop {
            let show = |p: &Progress| {
                status(&Status {
                    events_through: p.events_through,
                    head,
                    events: p.events,
                    skipped: p.skipped_count,
                    gaps: p.gaps.len(),
                })
            };
            let taken = self.import_settled(&mut stored, &mut report, &stop, &show).await?;
            self.watch_gaps(&mut stored, &mut report).await?;
            show(&stored.progress);
            if *stop.borrow() {
                break;
            }
            if taken > 0 {
                continue;
            }
            // Caught up with what is settled.
            let sync_due = synced_at.is_none_or(|t| t.elapsed() >= self.settings.subscription_sync);
            if sync_due || until != Until::Stopped {
                self.sync_subscriptions(&mut stored, &mut report).await?;
                synced_at = Some(tokio::time::Instant::now());
            }
            match until {
                Until::CaughtUp => break,
                Until::CutOver(_) => {
                    // `head`: the table's head now that the import caught up
                    // (later rows are pushed here).
                    if target.is_none() {
                        target = Some(self.db.head().await?);
                    }
                    let at = target.unwrap_or(head);
                    if stored.progress.events_through >= at {
                        report.cut_over = Some(self.cut_over(&mut stored, at).await?);
                        break;
                    }
                }
                Until::Stopped => {}
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            head = self.db.head().await?;
        }
        report.progress = stored.progress.clone();
        report.store = self.feeds.stats();
        report.cosmos_requests = report.store.requests.saturating_sub(requests_before);
        Ok(report)
    }

    /// Imports the settled rows after the progress until there are none
    /// (or `stop`); how many it took. Pipelined: while a batch is being
    /// written, the next is read and queued behind it (each feed's writer
    /// keeps the order), at most `WINDOW` batches at once; the progress
    /// moves over each batch when all its appends returned, in order.
    async fn import_settled(
        &self,
        stored: &mut StoredProgress,
        report: &mut Report,
        stop: &watch::Receiver<bool>,
        status: &(dyn Fn(&Progress) + Sync),
    ) -> Result<usize, ImportError> {
        let mut cursor = stored.progress.events_through;
        // Rows an earlier run may have begun to append are looked for
        // before they are appended again; the rest no one has written.
        let written_before = stored.progress.appending_through;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut taken = 0;
        loop {
            let (read, completed) = tokio::join!(
                self.db.events_after(cursor, &self.settings.bounds),
                self.complete(&mut in_flight, WINDOW - 1, stored, report)
            );
            completed?;
            status(&stored.progress);
            // The settled prefix: nothing after a row that is not settled yet.
            let settled: Vec<_> = read?.into_iter().take_while(|r| r.settled).collect();
            let Some(last) = settled.last().map(|r| r.sequenceno) else { break };
            let mut batch = InFlight { last, gaps: Vec::new(), skipped: Vec::new(), outcomes: Vec::new() };
            for row in &settled {
                if row.sequenceno > cursor + 1 && row.recent {
                    batch.gaps.push(Gap { from: cursor + 1, to: row.sequenceno - 1, seen_ms: self.now_ms() });
                }
                cursor = row.sequenceno;
            }
            taken += settled.len();
            if last > stored.progress.appending_through {
                let mut beginning = stored.progress.clone();
                beginning.appending_through = last;
                self.save(stored, beginning).await?;
            }
            let records = self.records(&settled, &mut batch.skipped);
            // What a killed run stored of its last batches is looked up,
            // per feed, with one query each (not one read per event); the
            // rest no one has written.
            let stored_before = match records.first().and_then(|r| r.origin).filter(|o| *o <= written_before) {
                Some(from) => self.stored_origins(&records, from, written_before).await?,
                None => crate::feeds::StoredOrigins::new(),
            };
            let origins: Vec<u64> = records.iter().map(|r| r.origin.unwrap_or_default()).collect();
            let outcomes = self.feeds.enqueue_in_order(records, IdSource::Server, &stored_before).await;
            batch.outcomes.extend(origins.into_iter().zip(outcomes));
            in_flight.push_back(batch);
            if *stop.borrow() {
                break;
            }
        }
        self.complete(&mut in_flight, 0, stored, report).await?;
        Ok(taken)
    }

    /// Waits for the oldest batches until at most `keep` are in flight,
    /// moving the progress over each.
    async fn complete(
        &self,
        in_flight: &mut VecDeque<InFlight>,
        keep: usize,
        stored: &mut StoredProgress,
        report: &mut Report,
    ) -> Result<(), ImportError> {
        while in_flight.len() > keep {
            let Some(batch) = in_flight.pop_front() else { break };
            let mut progress = stored.progress.clone();
            let (origins, outcomes): (Vec<u64>, Vec<_>) = batch.outcomes.into_iter().unzip();
            let outcomes = futures::future::join_all(outcomes).await;
            for (seq, outcome) in origins.into_iter().zip(outcomes) {
                match outcome {
                    Ok(_) => {
                        progress.events += 1;
                        report.events_this_run += 1;
                    }
                    Err(e) if e.is_client_error() => {
                        tracing::warn!(sequenceno = seq, error = %e, "event row refused by the store");
                        progress.skip(seq, "events.events", format!("refused by the store: {e}"));
                    }
                    // The writer has tried for its whole deadline: stop, and
                    // go on from the progress when started again.
                    Err(e) => return Err(ImportError::Storage(e)),
                }
            }
            for (seq, reason) in batch.skipped {
                progress.skip(seq, "events.events", reason);
            }
            progress.gaps.extend(batch.gaps);
            progress.events_through = batch.last;
            self.save(stored, progress).await?;
        }
        Ok(())
    }

    /// For each feed of `records`, the Altinn numbers in `from..=to` it
    /// holds already.
    async fn stored_origins(
        &self,
        records: &[crate::domain::EventRecord],
        from: u64,
        to: u64,
    ) -> Result<crate::feeds::StoredOrigins, ImportError> {
        let mut feeds = HashSet::new();
        for r in records.iter().filter(|r| r.origin.is_some_and(|o| o <= to)) {
            feeds.insert(crate::domain::FeedId::Resource(r.resource.clone()));
            if !r.subject.is_empty() {
                feeds.insert(crate::domain::FeedId::Subject(r.subject.clone()));
            }
        }
        let mut stored = crate::feeds::StoredOrigins::new();
        for feed in feeds {
            let origins = self.feeds.stored_origins(&feed, from, to).await?;
            stored.insert(feed, origins);
        }
        Ok(stored)
    }

    /// The events of `rows`; the rows that cannot be events are added to
    /// `skipped` with their reasons.
    fn records(
        &self,
        rows: &[altinn_db::EventRow],
        skipped: &mut Vec<(u64, String)>,
    ) -> Vec<crate::domain::EventRecord> {
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            match rows::event(row) {
                Ok(record) => records.push(record),
                Err(reason) => {
                    tracing::warn!(sequenceno = row.sequenceno, reason, "event row skipped");
                    skipped.push((row.sequenceno, reason));
                }
            }
        }
        records
    }

    /// Rows that filled a watched gap are imported (at the feeds' end);
    /// gaps older than the window are forgotten.
    async fn watch_gaps(&self, stored: &mut StoredProgress, report: &mut Report) -> Result<(), ImportError> {
        if stored.progress.gaps.is_empty() {
            return Ok(());
        }
        let window_ms = u64::try_from(self.settings.bounds.gap_window.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let mut progress = stored.progress.clone();
        progress.gaps.retain(|g| g.seen_ms + window_ms > now);
        let excess = progress.gaps.len().saturating_sub(MAX_GAPS);
        progress.gaps.drain(..excess);
        let ranges: Vec<(u64, u64)> = progress.gaps.iter().map(|g| (g.from, g.to)).collect();
        let found: Vec<_> = self.db.events_in(&ranges, &self.settings.bounds).await?.into_iter().collect();
        if !found.is_empty() {
            tracing::info!(rows = found.len(), "rows committed late filled gaps; imported at the feeds' end");
            let filled: HashSet<u64> = found.iter().map(|r| r.sequenceno).collect();
            progress.gaps = progress.gaps.iter().flat_map(|g| split(g, &filled)).collect();
            let mut skipped = Vec::new();
            let records = self.records(&found, &mut skipped);
            let mut in_flight = VecDeque::new();
            let origins: Vec<u64> = records.iter().map(|r| r.origin.unwrap_or_default()).collect();
            let outcomes =
                self.feeds.enqueue_in_order(records, IdSource::Publisher, &crate::feeds::StoredOrigins::new()).await;
            in_flight.push_back(InFlight {
                last: progress.events_through,
                gaps: Vec::new(),
                skipped,
                outcomes: origins.into_iter().zip(outcomes).collect(),
            });
            // Progress with the gaps filled is what `complete` stores.
            stored.progress.gaps.clone_from(&progress.gaps);
            self.complete(&mut in_flight, 0, stored, report).await?;
            return Ok(());
        }
        if progress != stored.progress {
            self.save(stored, progress).await?;
        }
        Ok(())
    }

    async fn save(&self, stored: &mut StoredProgress, progress: Progress) -> Result<(), ImportError> {
        match self.store.save(stored, progress).await? {
            Changed::Done(next) => {
                *stored = next;
                Ok(())
            }
            Changed::Stale => Err(ImportError::Refused(
                "another import wrote the progress meanwhile: only one import may run at a time".into(),
            )),
        }
    }

    /// Brings the imported subscriptions up to Altinn's: new ones stored
    /// under their ids, changed ones updated, deleted ones deleted (before
    /// the cut-over only: after it this service is where they live).
    async fn sync_subscriptions(&self, stored: &mut StoredProgress, report: &mut Report) -> Result<(), ImportError> {
        if stored.progress.cut_over.is_some() {
            return Ok(());
        }
        let rows = self.db.subscriptions().await?;
        let mut progress = stored.progress.clone();
        progress.skipped_subscriptions.clear();
        let altinn: HashSet<u64> = rows.iter().map(|r| r.id).collect();
        for row in &rows {
            let secret = crate::webhooks::signing::new_secret();
            let (subscription, status, reason) = match rows::subscription(row, &self.settings.apps_domains, secret) {
                Ok(converted) => converted,
                Err(reason) => {
                    report.subscriptions.skipped += 1;
                    progress.skip_subscription(row.id, reason);
                    continue;
                }
            };
            match self.subscriptions.put_imported(&subscription, rows::merge).await? {
                PutImported::Created => {
                    report.subscriptions.created += 1;
                    if status != DeliveryStatus::Active {
                        let mut state = DeliveryState::starting_at(0);
                        state.status = status;
                        state.last_error = reason;
                        let (_, etag) = self.deliveries.state_or(row.id, state.clone()).await?;
                        self.deliveries.write(row.id, &state, &etag).await?;
                    }
                }
                PutImported::Updated => report.subscriptions.updated += 1,
                PutImported::Unchanged => report.subscriptions.unchanged += 1,
                PutImported::IdTaken => {
                    report.subscriptions.skipped += 1;
                    progress.skip_subscription(row.id, "its id is taken by a subscription made here".into());
                }
            }
        }
        for id in self.subscriptions.imported_ids().await? {
            if altinn.contains(&id) {
                continue;
            }
            if let Some(gone) = self.subscriptions.get(id).await?
                && let Changed::Done(()) = self.subscriptions.delete(&gone).await?
            {
                self.deliveries.remove(id).await?;
                report.subscriptions.deleted += 1;
            }
        }
        for skipped in &progress.skipped_subscriptions {
            if !stored.progress.skipped_subscriptions.contains(skipped) {
                tracing::warn!(subscription = skipped.row, reason = skipped.reason, "subscription row skipped");
            }
        }
        if progress != stored.progress {
            self.save(stored, progress).await?;
        }
        Ok(())
    }

    /// Starts delivery of every imported subscription after `at`: each at
    /// the first event of its feed that Altinn did not push, passing over
    /// the imported ones Altinn numbered up to `at`. Recorded once; a run
    /// again with the same point finishes what a killed one began.
    async fn cut_over(&self, stored: &mut StoredProgress, at: u64) -> Result<CutOverReport, ImportError> {
        if let Some(earlier) = stored.progress.cut_over
            && earlier != at
        {
            return Err(ImportError::Refused(format!(
                "the cut-over was made at sequenceno {earlier} already; it cannot move to {at}"
            )));
        }
        let mut progress = stored.progress.clone();
        progress.cut_over = Some(at);
        self.save(stored, progress).await?;
        let mut done = 0;
        let mut contended = Vec::new();
        // Where each feed's delivery starts, found once per feed.
        let mut starts: std::collections::HashMap<crate::domain::FeedId, u64> = std::collections::HashMap::new();
        for id in self.subscriptions.imported_ids().await? {
            let mut settled = false;
            for _ in 0..10 {
                let Some(current) = self.subscriptions.get(id).await? else {
                    settled = true;
                    break;
                };
                let imported = current.subscription.imported.clone().unwrap_or_default();
                if imported.pushed_through == Some(at) {
                    done += 1;
                    settled = true;
                    break;
                }
                let feed = current.subscription.feed();
                let start = match starts.get(&feed) {
                    Some(start) => *start,
                    None => {
                        let start = self.feeds.first_not_pushed_by_altinn(&feed, at).await?;
                        starts.insert(feed, start);
                        start
                    }
                };
                let (mut state, etag) = self.deliveries.state_or(id, DeliveryState::starting_at(start)).await?;
                state.checkpoint = start;
                state.oldest_pending = None;
                state.generation += 1;
                if let Changed::Stale = self.deliveries.write(id, &state, &etag).await? {
                    continue;
                }
                let mut next = current.subscription.clone();
                next.imported = Some(crate::domain::subscription::Imported { pushed_through: Some(at), ..imported });
                if let Changed::Done(_) = self.subscriptions.replace(&current, next).await? {
                    done += 1;
                    settled = true;
                    break;
                }
            }
            if !settled {
                contended.push(id);
            }
        }
        if !contended.is_empty() {
            // Each was changed by someone else ten times while it was
            // being started: the point is recorded, a run again finishes.
            return Err(ImportError::Refused(format!(
                "the cut-over at {at} could not start subscriptions {contended:?} (changed meanwhile): run it again"
            )));
        }
        tracing::info!(at, subscriptions = done, "cut-over: imported subscriptions are pushed from here");
        Ok(CutOverReport { at, subscriptions: done })
    }
}

/// `gap` without the numbers in `filled`.
fn split(gap: &Gap, filled: &HashSet<u64>) -> Vec<Gap> {
    let mut inside: Vec<u64> = filled.iter().copied().filter(|n| (gap.from..=gap.to).contains(n)).collect();
    inside.sort_unstable();
    let mut out = Vec::new();
    let mut from = gap.from;
    for n in inside {
        if n > from {
            out.push(Gap { from, to: n - 1, seen_ms: gap.seen_ms });
        }
        from = n + 1;
    }
    if from <= gap.to {
        out.push(Gap { from, to: gap.to, seen_ms: gap.seen_ms });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_gap_splits_around_the_rows_found() {
        let gap = Gap { from: 10, to: 15, seen_ms: 1 };
        let filled: HashSet<u64> = [10, 12, 13].into_iter().collect();
        let left: Vec<(u64, u64)> = split(&gap, &filled).iter().map(|g| (g.from, g.to)).collect();
        assert_eq!(left, [(11, 11), (14, 15)]);
        assert!(split(&Gap { from: 3, to: 3, seen_ms: 1 }, &[3].into_iter().collect()).is_empty());
    }
}
