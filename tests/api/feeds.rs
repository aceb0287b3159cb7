//! The feed store on the in-process emulator, segment size 4 so that every
//! test rolls segments over.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use altinn_events::config::{CosmosAuth, CosmosConfig};
use altinn_events::domain::{EventRecord, FeedId, Filters};
use altinn_events::feeds::emulator::EmulatorAccount;
use altinn_events::feeds::{Cosmos, FeedStore, IdSource, Repairer, SegmentKey};
use azure_data_cosmos::fault_injection::{
    FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder, FaultInjectionRule,
    FaultInjectionRuleBuilder, FaultOperationType,
};
use proptest::prelude::*;

use crate::helpers::until;

const S: u64 = 4;

fn cosmos_config() -> CosmosConfig {
    CosmosConfig { auth: Some(CosmosAuth::Emulator), provision: Some(true), segment_size: S, ..CosmosConfig::default() }
}

async fn store_on(account: &EmulatorAccount) -> FeedStore {
    FeedStore::new(Cosmos::connect(&cosmos_config(), Some(account.clone())).await.expect("connect"))
}

fn event(id: &str, resource: &str, subject: &str, event_type: &str) -> EventRecord {
    crate::helpers::event_record("ttd/apps-test", id, resource, subject, event_type)
}

/// Every event of a feed, paging with `limit`.
async fn read_all(store: &FeedStore, feed: &FeedId, limit: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let page = store.read(feed, pos, &Filters::default(), limit, u64::MAX, false).await.expect("read");
        assert!(page.next >= pos);
        out.extend(page.events.iter().map(|e| (e.seq, e.record.id.clone())));
        pos = page.next;
        if page.at_end {
            return out;
        }
    }
}

/// Publisher-chosen ids (`POST /events`) when `dedupe`, else server ids.
fn ids(dedupe: bool) -> IdSource {
    if dedupe { IdSource::Publisher } else { IdSource::Server }
}

/// Dense from 0, each id once.
fn assert_dense_and_unique(feed: &FeedId, events: &[(u64, String)]) {
    for (i, (seq, _)) in events.iter().enumerate() {
        assert_eq!(*seq, i as u64, "{feed}: sequence has a gap or disorder: {events:?}");
    }
    let mut ids: Vec<_> = events.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "{feed}: an event appears twice: {events:?}");
}

#[tokio::test]
async fn append_read_page_and_locate_across_segments() {
    let account = EmulatorAccount::new();
    let store = store_on(&account).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    for i in 0..10 {
        let subject = if i % 2 == 0 { "/party/1337" } else { "/party/500000" };
        let kind = if i % 3 == 0 { "app.instance.created" } else { "app.instance.process.completed" };
        let a = store.append(event(&format!("e{i}"), res, subject, kind), IdSource::Server).await.unwrap();
        assert_eq!(a.resource_seq, i);
        assert_eq!(a.subject_seq, Some(i / 2));
    }
    let resource = FeedId::Resource(res.into());
    let all = read_all(&store, &resource, 3).await;
    assert_eq!(
        all.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
        ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"]
    );
    assert_dense_and_unique(&resource, &all);
    let party = FeedId::Subject("/party/1337".into());
    let mine = read_all(&store, &party, 50).await;
    assert_eq!(mine.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), ["e0", "e2", "e4", "e6", "e8"]);
    assert_eq!(store.len(&resource).await.unwrap(), 10);

    // Filters: the page is filled from several segments, next is past the scan.
    let created = Filters { types: vec!["app.instance.created".into()], ..Filters::default() };
    let page = store.read(&resource, 0, &created, 10, u64::MAX, false).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.record.id.as_str()).collect::<Vec<_>>(), ["e0", "e3", "e6", "e9"]);
    assert_eq!(page.next, 10);
    assert!(page.at_end);
    // A bounded scan stops early and says where.
    let page = store.read(&resource, 0, &created, 10, 5, false).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.record.id.as_str()).collect::<Vec<_>>(), ["e0", "e3"]);
    assert_eq!(page.next, 5);
    assert!(!page.at_end);
    // Wildcard sources.
    let sources = Filters {
        sources: vec!["https://ttd.apps.altinn.no/ttd/apps-test/instances/party/500000/%".into()],
        ..Filters::default()
    };
    let page = store.read(&resource, 0, &sources, 10, u64::MAX, false).await.unwrap();
    assert_eq!(page.events.len(), 5);
    assert!(page.events.iter().all(|e| e.record.subject == "/party/500000"));

    // locate: the position after the event, in any segment; unknown → None.
    assert_eq!(store.locate(&resource, "e0").await.unwrap(), Some(1));
    assert_eq!(store.locate(&resource, "e9").await.unwrap(), Some(10));
    assert_eq!(store.locate(&party, "e8").await.unwrap(), Some(5));
    assert_eq!(store.locate(&resource, "nope").await.unwrap(), None);
    assert_eq!(store.locate(&FeedId::Subject("/party/1".into()), "e0").await.unwrap(), None);
}

#[tokio::test]
async fn appends_are_idempotent_by_id_and_source_and_one_id_from_two_sources_is_two_events() {
    let account = EmulatorAccount::new();
    let store = store_on(&account).await;
    let res = "urn:altinn:resource:ttd-estate-of-deceased";
    let first = store.append(event("same", res, "/party/1337", "t"), IdSource::Publisher).await.unwrap();
    // Move into the next segment, then retry the first event.
    for i in 0..3 {
        store.append(event(&format!("x{i}"), res, "/party/1338", "t"), IdSource::Publisher).await.unwrap();
    }
    let again = store.append(event("same", res, "/party/1337", "t"), IdSource::Publisher).await.unwrap();
    assert_eq!(
        (first.resource_seq, first.subject_seq),
        (again.resource_seq, again.subject_seq),
        "a retry returns the stored positions"
    );
    assert_eq!(again.request_charge, 0.0, "and stores nothing");
    // An event may be called "head" without touching the segment's head.
    let head = store.append(event("head", res, "/party/1337", "t"), IdSource::Publisher).await.unwrap();
    assert_eq!(head.resource_seq, 4);
    assert_eq!(store.locate(&FeedId::Resource(res.into()), "head").await.unwrap(), Some(5));
    // (id, source) identifies a CloudEvent: the same id from another source
    // is another event, stored in both its feeds; again, it is a retry.
    let mut other = event("same", res, "/party/1337", "t");
    other.source = "https://elsewhere/".into();
    let stored = store.append(other.clone(), IdSource::Publisher).await.unwrap();
    assert_eq!((stored.resource_seq, stored.subject_seq), (5, Some(2)));
    assert_eq!(store.append(other, IdSource::Publisher).await.unwrap().resource_seq, 5);
    assert_eq!(store.len(&FeedId::Resource(res.into())).await.unwrap(), 6);
    let subject = read_all(&store, &FeedId::Subject("/party/1337".into()), 10).await;
    assert_eq!(subject.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), ["same", "head", "same"]);
    // `after=same` (an id alone, as Altinn's clients give it) continues after the newest.
    assert_eq!(store.locate(&FeedId::Resource(res.into()), "same").await.unwrap(), Some(6));
}

/// What one publisher saw: when it started and finished each append.
#[derive(Clone, Debug)]
struct Ack {
    id: String,
    resource: String,
    subject: String,
    started: Instant,
    acked: Instant,
    resource_seq: u64,
    subject_seq: u64,
}

impl Ack {
    /// An append of `id` that started at `started` and was acknowledged now.
    fn new(id: String, resource: &str, subject: &str, started: Instant, a: altinn_events::feeds::Appended) -> Self {
        Self {
            id,
            resource: resource.to_owned(),
            subject: subject.to_owned(),
            started,
            acked: Instant::now(),
            resource_seq: a.resource_seq,
            subject_seq: a.subject_seq.expect("a subject feed"),
        }
    }
}

/// Several tasks on several FeedStore instances (as pods would be) append
/// concurrently; `check_feeds` then proves every acknowledged event is in
/// both its feeds exactly once, the feeds dense, in acknowledgement order.
async fn concurrent_publishers(
    account: EmulatorAccount,
    stores: usize,
    tasks: usize,
    per_task: usize,
    seed: u64,
    dedupe: bool,
) -> Vec<Ack> {
    let mut instances = Vec::new();
    for _ in 0..stores {
        instances.push(store_on(&account).await);
    }
    let resources = ["urn:altinn:resource:app_ttd_apps-test", "urn:altinn:resource:app_skd_taxreport"];
    let subjects = ["/party/1337", "/party/1338", "/party/500000"];
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = instances[t % stores].clone();
        handles.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..per_task {
                let pick = (seed as usize).wrapping_mul(31).wrapping_add(t * 7 + i * 13);
                let resource = resources[pick % 2];
                let subject = subjects[(pick / 2) % 3];
                let id = format!("t{t}-e{i}-{seed}");
                let started = Instant::now();
                match store.append(event(&id, resource, subject, "t"), ids(dedupe)).await {
                    Ok(a) => acks.push(Ack::new(id, resource, subject, started, a)),
                    Err(e) => panic!("append failed beyond retries: {e}"),
                }
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for h in handles {
        acks.extend(h.await.unwrap());
    }
    acks
}

async fn check_feeds(reader: &FeedStore, acks: &[Ack]) {
    let mut by_feed: BTreeMap<FeedId, Vec<(&Ack, u64)>> = BTreeMap::new();
    for a in acks {
        by_feed.entry(FeedId::Resource(a.resource.clone())).or_default().push((a, a.resource_seq));
        by_feed.entry(FeedId::Subject(a.subject.clone())).or_default().push((a, a.subject_seq));
    }
    for (feed, entries) in &by_feed {
        let stored = read_all(reader, feed, 7).await;
        assert_dense_and_unique(feed, &stored);
        assert_eq!(stored.len(), entries.len(), "{feed}: stored {} acknowledged {}", stored.len(), entries.len());
        let at: HashMap<&str, u64> = stored.iter().map(|(s, id)| (id.as_str(), *s)).collect();
        for (ack, seq) in entries {
            assert_eq!(at.get(ack.id.as_str()), Some(seq), "{feed}: {} is not where its ack said", ack.id);
        }
        // Acknowledged before another append started ⇒ earlier in the feed.
        for (a, sa) in entries {
            for (b, sb) in entries {
                if a.acked < b.started {
                    assert!(sa < sb, "{feed}: {} acked before {} started but is not before it", a.id, b.id);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, .. ProptestConfig::default() })]
    #[test]
    fn concurrent_publishers_lose_and_duplicate_nothing(stores in 1usize..4, tasks in 1usize..7, per_task in 1usize..9, seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let account = EmulatorAccount::new();
            let acks = concurrent_publishers(account.clone(), stores, tasks, per_task, seed, seed % 2 == 0).await;
            check_feeds(&store_on(&account).await, &acks).await;
            prop_assert_eq!(acks.len(), tasks * per_task);
            Ok(())
        })?;
    }
}

/// Two stores (pods) take turns on one feed: each one's known length is
/// stale on every turn, so its create meets the other's document at that
/// sequence number (409 on the unique key), re-reads the segment's length
/// and lands on the next free number. Segments of 4 make the turns cross
/// segment boundaries too.
#[tokio::test]
async fn writers_with_stale_lengths_take_the_next_free_sequence_number() {
    let account = EmulatorAccount::new();
    let (a, b) = (store_on(&account).await, store_on(&account).await);
    let res = "urn:altinn:resource:app_ttd_apps-test";
    for i in 0..10u64 {
        let store = if i % 2 == 0 { &a } else { &b };
        let appended =
            store.append(event(&format!("turn{i}"), res, "/party/1337", "t"), IdSource::Server).await.unwrap();
        assert_eq!((appended.resource_seq, appended.subject_seq), (i, Some(i)));
    }
    // Turns 2..=9 start from a stale length in both feeds: 16 stale
    // appends (turn 1 is b's first, which reads the length afresh). Where
    // the stale length says "segment full" (b after writing 3 and 7, on
    // turns 5 and 9) the writer opens the next segment, finds it open and
    // reads its length instead: 16 - 2 * 2 = 12 conflicts on seq.
    assert_eq!(a.stats().seq_conflicts + b.stats().seq_conflicts, 12);
    for feed in [FeedId::Resource(res.into()), FeedId::Subject("/party/1337".into())] {
        let stored = read_all(&a, &feed, 3).await;
        assert_dense_and_unique(&feed, &stored);
        assert_eq!(
            stored.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
            (0..10).map(|i| format!("turn{i}")).collect::<Vec<_>>()
        );
    }
}

fn rule(id: &str, op: FaultOperationType, error: FaultInjectionErrorType, probability: f32) -> Arc<FaultInjectionRule> {
    let result = FaultInjectionResultBuilder::new().with_error(error).with_probability(probability).build();
    let condition = FaultInjectionConditionBuilder::new().with_operation_type(op).build();
    Arc::new(
        FaultInjectionRuleBuilder::new(id, result)
            .with_condition(condition)
            .with_end_time(Instant::now() + Duration::from_secs(60))
            .build(),
    )
}

/// `n` appends at once to one resource feed and three subject feeds.
async fn burst(store: &FeedStore, round: usize, n: usize, dedupe: bool) -> Vec<Ack> {
    let resource = "urn:altinn:resource:app_ttd_apps-test";
    let started = Instant::now();
    let appends = (0..n).map(|i| async move {
        let id = format!("burst{round}-{i}");
        let subject = ["/party/1337", "/party/1338", "/party/500000"][i % 3];
        let a = store.append(event(&id, resource, subject, "t"), ids(dedupe)).await.expect("burst append");
        Ack::new(id, resource, subject, started, a)
    });
    futures::future::join_all(appends).await
}

/// One fault rule per operation type: the first rule whose condition
/// matches a request decides for it.
async fn publish_through_faults(rules: Vec<Arc<FaultInjectionRule>>, split: bool, seed: u64, dedupe: bool) {
    let base = EmulatorAccount::new();
    // Provision through a clean client first.
    store_on(&base).await;
    let faulty = base.with_faults(rules.clone());
    let store = base.store();
    let splitter = tokio::spawn(async move {
        if !split {
            return 2;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        let epk = store.midpoint_split_epk("events", "events", 0).expect("partition 0");
        store
            .split_partition_and_wait("events", "events", 0, epk, Duration::from_millis(20))
            .await
            .expect("split")
            .len()
    });
    let mut acks = concurrent_publishers(faulty.clone(), 3, 6, 8, seed, dedupe).await;
    // Bursts: appends that queue up together are stored by batches.
    let bursting = store_on(&faulty).await;
    for round in 0..5 {
        acks.extend(burst(&bursting, round, 16, dedupe).await);
    }
    assert_eq!(splitter.await.unwrap(), 2, "the partition split during the run");
    for r in &rules {
        eprintln!("fault {}: {} hits", r.id(), r.hit_count());
        assert!(r.hit_count() > 0, "fault {} was never injected", r.id());
    }
    assert_eq!(acks.len(), 48 + 5 * 16);
    // And the feeds read back the same through a clean client.
    check_feeds(&store_on(&base).await, &acks).await;
}

fn throttling_and_unavailability() -> Vec<Arc<FaultInjectionRule>> {
    vec![
        rule("throttled-batches", FaultOperationType::BatchItem, FaultInjectionErrorType::TooManyRequests, 0.3),
        rule("timeouts-on-create", FaultOperationType::CreateItem, FaultInjectionErrorType::Timeout, 0.2),
        rule("unavailable-reads", FaultOperationType::ReadItem, FaultInjectionErrorType::ServiceUnavailable, 0.2),
        rule("throttled-queries", FaultOperationType::QueryItem, FaultInjectionErrorType::TooManyRequests, 0.2),
    ]
}

fn lost_answers() -> Vec<Arc<FaultInjectionRule>> {
    vec![
        // The write reached the service and committed; the answer was lost.
        rule(
            "lost-create-answers",
            FaultOperationType::CreateItem,
            FaultInjectionErrorType::ResponseTimeoutAfterService,
            0.25,
        ),
        rule(
            "lost-batch-answers",
            FaultOperationType::BatchItem,
            FaultInjectionErrorType::ResponseTimeoutAfterService,
            0.25,
        ),
        rule("throttled-reads", FaultOperationType::ReadItem, FaultInjectionErrorType::TooManyRequests, 0.2),
        rule("unavailable-queries", FaultOperationType::QueryItem, FaultInjectionErrorType::ServiceUnavailable, 0.2),
    ]
}

/// The interleavings of `concurrent_publishers` follow the seed; each seed
/// is another one (the faults themselves are drawn at random).
const FAULT_SEEDS: [u64; 2] = [7, 1_000_003];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_unavailability_timeouts_and_a_split_lose_and_duplicate_nothing() {
    for seed in FAULT_SEEDS {
        publish_through_faults(throttling_and_unavailability(), true, seed, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_write_answers_lose_and_duplicate_nothing() {
    for seed in FAULT_SEEDS {
        publish_through_faults(lost_answers(), false, seed, false).await;
    }
}

/// The same with publisher-chosen ids (`POST /events`: `dedupe`, which also
/// looks for the event in the previous segment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_ids_through_lost_answers_and_throttling_lose_and_duplicate_nothing() {
    for seed in FAULT_SEEDS {
        publish_through_faults(lost_answers(), false, seed, true).await;
        publish_through_faults(throttling_and_unavailability(), false, seed + 1, true).await;
    }
}

/// A write whose outcome a writer cannot know (its create failed after it
/// was sent) may have stored the event. When the writer's retry finds the
/// segment full (another pod took its last number meanwhile) and goes on in
/// the next segment, it first looks for the event where the failed write
/// may have put it: here it is not there, so it is stored once, at 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_looked_up_after_the_rollover_before_it_is_written_again() {
    let base = EmulatorAccount::new();
    let other = store_on(&base).await; // another pod, on a clean client
    let failing = Arc::new(
        FaultInjectionRuleBuilder::new(
            "failing-creates",
            FaultInjectionResultBuilder::new().with_error(FaultInjectionErrorType::InternalServerError).build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new().with_operation_type(FaultOperationType::CreateItem).build(),
        )
        .build(),
    );
    failing.disable();
    let store = store_on(&base.with_faults(vec![failing.clone()])).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let feed = FeedId::Resource(res.into());
    for i in 0..3 {
        store.append_to(&feed, event(&format!("e{i}"), res, "/party/1", "t"), IdSource::Server).await.unwrap();
    }
    failing.enable();
    let append = {
        let (store, feed) = (store.clone(), feed.clone());
        tokio::spawn(async move { store.append_to(&feed, event("e3", res, "/party/1", "t"), IdSource::Server).await })
    };
    until("the create at seq 3 failed", || failing.hit_count() >= 1).await;
    assert_eq!(other.append_to(&feed, event("x3", res, "/party/1", "t"), IdSource::Server).await.unwrap(), 3);
    failing.disable();
    assert_eq!(append.await.unwrap().unwrap(), 4);
    let stats = store.stats();
    assert_eq!((stats.maybe_stored_lookups, stats.maybe_stored_found), (1, 0), "{stats:?}");
    let stored = read_all(&store, &feed, 10).await;
    assert_dense_and_unique(&feed, &stored);
    assert_eq!(stored.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), ["e0", "e1", "e2", "x3", "e3"]);
}

#[tokio::test]
async fn the_repairer_completes_an_interrupted_publish() {
    let account = EmulatorAccount::new();
    let store = store_on(&account).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    store.append(event("whole", res, "/party/1337", "t"), IdSource::Server).await.unwrap();
    // The publisher dies after its first append.
    let half = event("half", res, "/party/1337", "t");
    store.append_to(&FeedId::Resource(res.into()), half, IdSource::Server).await.unwrap();
    let subject = FeedId::Subject("/party/1337".into());
    assert_eq!(read_all(&store, &subject, 10).await.len(), 1);

    // A repairer with a grace period leaves young events alone.
    let patient = Repairer::new(store.clone(), "pod-a", Duration::from_secs(30), Duration::from_secs(3600));
    let report = patient.run_once().await.unwrap();
    assert!(report.leader);
    assert_eq!(report.repaired, 0);
    assert!(report.deferred >= 2);

    let repairer = Repairer::new(store.clone(), "pod-a", Duration::from_secs(30), Duration::ZERO);
    let report = repairer.run_once().await.unwrap();
    assert_eq!(report.repaired, 1, "{report:?}");
    let feed = read_all(&store, &subject, 10).await;
    assert_eq!(feed.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), ["whole", "half"]);

    // Another pod cannot take the lease while it is held. A second round
    // starts where the first one saved its position: nothing to check.
    let other = Repairer::new(store.clone(), "pod-b", Duration::from_secs(30), Duration::ZERO);
    assert!(!other.run_once().await.unwrap().leader);
    let again = repairer.run_once().await.unwrap();
    assert_eq!((again.leader, again.checked, again.repaired), (true, 0, 0), "{again:?}");
    assert_eq!(read_all(&store, &subject, 10).await.len(), 2);

    // One more interrupted publish; pod-a stops renewing its lease. Once the
    // lease has expired, pod-b takes over from pod-a's saved position: it
    // checks only the new event, and repairs it.
    store
        .append_to(&FeedId::Resource(res.into()), event("half-2", res, "/party/1337", "t"), IdSource::Server)
        .await
        .unwrap();
    assert!(!other.run_once().await.unwrap().leader, "pod-a's lease still runs");
    store.clock().advance(31);
    let takeover = other.run_once().await.unwrap();
    assert_eq!((takeover.leader, takeover.checked, takeover.repaired), (true, 1, 1), "{takeover:?}");
    assert!(!repairer.run_once().await.unwrap().leader, "pod-b holds the lease now");
    let feed = read_all(&store, &subject, 10).await;
    assert_eq!(feed.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), ["whole", "half", "half-2"]);
}

/// A repair round that runs after a party feed took many segments (here 60
/// events, 15 segments of 4, far more than the newest segments looked at
/// first) finds every complete publish where it is and appends nothing
/// again; the one interrupted publish among them is repaired, once.
#[tokio::test]
async fn the_repairer_finds_old_copies_in_a_long_feed_and_repeats_nothing() {
    let account = EmulatorAccount::new();
    let store = store_on(&account).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let subject = FeedId::Subject("/party/1337".into());
    let mut want = Vec::new();
    for i in 0..60 {
        let id = format!("e{i}");
        if i == 5 {
            // Interrupted early on: only in the resource feed.
            store
                .append_to(&FeedId::Resource(res.into()), event(&id, res, "/party/1337", "t"), IdSource::Server)
                .await
                .unwrap();
        } else {
            store.append(event(&id, res, "/party/1337", "t"), IdSource::Server).await.unwrap();
            want.push(id);
        }
    }
    let first = event("e0", res, "/party/1337", "t");
    assert_eq!(store.position_of(&subject, &first).await.unwrap(), Some(0), "found 15 segments back");
    let repairer = Repairer::new(store.clone(), "pod-a", Duration::from_secs(30), Duration::ZERO);
    let mut rounds = Vec::new();
    loop {
        let report = repairer.run_once().await.unwrap();
        rounds.push(report.clone());
        if report.checked == 0 {
            break;
        }
    }
    let repaired: u64 = rounds.iter().map(|r| r.repaired).sum();
    assert_eq!(repaired, 1, "{rounds:?}");
    want.push("e5".into());
    let feed: Vec<String> = read_all(&store, &subject, 100).await.into_iter().map(|(_, id)| id).collect();
    assert_eq!(feed, want, "every event once; the repaired one last");
}

/// An event its subject feed refuses (here: Cosmos answers 400 for its
/// document) cannot be repaired by retrying: the round logs and counts it,
/// passes over it, and repairs the events after it.
#[tokio::test]
async fn the_repairer_passes_over_an_event_it_cannot_repair() {
    use azure_data_cosmos::fault_injection::CustomResponseBuilder;
    let base = EmulatorAccount::new();
    store_on(&base).await;
    let refuse = Arc::new(
        FaultInjectionRuleBuilder::new(
            "refuse-one-create",
            FaultInjectionResultBuilder::new()
                .with_custom_response(CustomResponseBuilder::new(azure_core::http::StatusCode::BadRequest).build())
                .build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new().with_operation_type(FaultOperationType::CreateItem).build(),
        )
        .with_hit_limit(1)
        .build(),
    );
    refuse.disable();
    let store = store_on(&base.with_faults(vec![refuse.clone()])).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    store.append(event("whole", res, "/party/1337", "t"), IdSource::Server).await.unwrap();
    for id in ["refused", "repairable"] {
        store
            .append_to(&FeedId::Resource(res.into()), event(id, res, "/party/1337", "t"), IdSource::Server)
            .await
            .unwrap();
    }
    // A first round (patient: it only takes the lease) creates the lease
    // document; then the next create, the first repair's, is refused.
    let patient = Repairer::new(store.clone(), "pod-a", Duration::from_secs(30), Duration::from_secs(3600));
    assert_eq!(patient.run_once().await.unwrap().repaired, 0);
    refuse.enable();
    let repairer = Repairer::new(store.clone(), "pod-a", Duration::from_secs(30), Duration::ZERO);
    let report = repairer.run_once().await.unwrap();
    assert_eq!(refuse.hit_count(), 1);
    assert_eq!((report.checked, report.skipped, report.repaired), (3, 1, 1), "{report:?}");
    let subject = read_all(&store, &FeedId::Subject("/party/1337".into()), 10).await;
    assert_eq!(subject.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(), ["whole", "repairable"]);
    // Passed over for good: the next round starts after it.
    let again = repairer.run_once().await.unwrap();
    assert_eq!((again.checked, again.repaired), (0, 0), "{again:?}");
}

/// The repairer checks events by what the change feed brings: a publish's
/// copy in its subject feed comes through it too, so however many subject
/// feeds the events touch (here each is about a party of its own), only the
/// events whose copy did not come are looked up. All its Cosmos requests
/// together, the change feed's pages and the repairs of the three
/// interrupted publishes included, stay under 0.1 per checked event (one or
/// more per event before).
#[tokio::test]
async fn the_repairer_looks_up_only_the_events_whose_copy_the_change_feed_did_not_bring() {
    const EVENTS: u64 = 600;
    let metrics = altinn_events::telemetry::prometheus();
    let requests = |operation: &str| -> f64 {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("cosmos_requests_total{") && l.contains(&format!("operation=\"{operation}")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let account = EmulatorAccount::new();
    let config = CosmosConfig { segment_size: 1000, ..cosmos_config() };
    let store = FeedStore::new(Cosmos::connect(&config, Some(account.clone())).await.expect("connect"));
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let mut interrupted = Vec::new();
    for i in 0..EVENTS {
        let (id, subject) = (format!("e{i}"), format!("/party/{}", 10_000 + i));
        if i % 200 == 7 {
            interrupted.push(subject.clone());
            store
                .append_to(&FeedId::Resource(res.into()), event(&id, res, &subject, "t"), IdSource::Server)
                .await
                .unwrap();
        } else {
            store.append(event(&id, res, &subject, "t"), IdSource::Server).await.unwrap();
        }
    }
    let before = requests("");
    let lookups_before = requests("read_event");
    let repairer = Repairer::new(store.clone(), "pod-a", Duration::from_secs(30), Duration::ZERO);
    let (mut checked, mut repaired) = (0, 0);
    loop {
        let report = repairer.run_once().await.unwrap();
        assert!(!report.behind, "{report:?}");
        assert_eq!(report.lag_seconds(u64::MAX), 0, "caught up: no lag");
        (checked, repaired) = (checked + report.checked, repaired + report.repaired);
        if report.checked == 0 {
            break;
        }
    }
    let spent = requests("") - before;
    assert_eq!((checked, repaired), (EVENTS, 3));
    let lookups = requests("read_event") - lookups_before;
    assert!(lookups <= 3.0 * 8.0, "only the three missing copies looked for: {lookups} point reads");
    assert!(spent <= 0.1 * EVENTS as f64, "{spent} Cosmos requests for {checked} checked events");
    for subject in interrupted {
        assert_eq!(read_all(&store, &FeedId::Subject(subject), 10).await.len(), 1, "repaired once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_paging_while_writers_append_sees_each_event_once_in_order() {
    let account = EmulatorAccount::new();
    let writer = store_on(&account).await;
    let reader = store_on(&account).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let total = 60;
    let w = tokio::spawn(async move {
        for i in 0..total {
            writer.append(event(&format!("w{i}"), res, "/party/1337", "t"), IdSource::Server).await.unwrap();
        }
    });
    let feed = FeedId::Resource(res.into());
    let mut seen = Vec::new();
    let mut pos = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(Instant::now() < deadline, "reader did not catch up: {} of {total}", seen.len());
        let page = reader.read(&feed, pos, &Filters::default(), 5, u64::MAX, false).await.unwrap();
        seen.extend(page.events.iter().map(|e| (e.seq, e.record.id.clone())));
        pos = page.next;
        if page.events.is_empty() {
            tokio::task::yield_now().await;
        }
    }
    w.await.unwrap();
    assert_dense_and_unique(&feed, &seen);
    let expected: Vec<String> = (0..total).map(|i| format!("w{i}")).collect();
    assert_eq!(seen.into_iter().map(|(_, id)| id).collect::<Vec<_>>(), expected);
}

/// Write cost per published event, in the emulator's RU model, against one
/// plain document create of the same CloudEvent (as a store without feeds
/// would write it, built without the feed store's documents): everything the publish costs
/// (head reads, segment-length queries, opening segments, the creates).
/// Prints the numbers that docs/storage.md quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_cost_per_event_against_a_single_document_create() {
    let account = EmulatorAccount::new();
    // Segments of 100, so that opening segments weighs what it does in
    // production (1 in 1000 events), not what it does with S = 4.
    let config = CosmosConfig { segment_size: 100, ..cosmos_config() };
    let store_on = |account: &EmulatorAccount| {
        let config = config.clone();
        let account = account.clone();
        async move { FeedStore::new(Cosmos::connect(&config, Some(account)).await.expect("connect")) }
    };
    let store = store_on(&account).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let baseline =
        store.baseline_create(&event("baseline", res, "/party/1", "t").cloud_event, "/party/1", 0).await.unwrap();
    store.append(event("warm", res, "/party/1", "t"), IdSource::Server).await.unwrap();

    // Sequential publishes to new parties: every subject feed is opened.
    let before = store.stats().request_charge;
    for i in 0..8 {
        store
            .append(event(&format!("c{i}"), res, &format!("/party/{}", 100 + i), "t"), IdSource::Server)
            .await
            .unwrap();
    }
    let new_party = (store.stats().request_charge - before) / 8.0;

    // The same parties through another store (a pod whose writers know
    // nothing yet): both feeds' lengths are looked up first.
    let other = store_on(&account).await;
    let before = other.stats().request_charge;
    for i in 0..8 {
        other
            .append(event(&format!("r{i}"), res, &format!("/party/{}", 100 + i), "t"), IdSource::Server)
            .await
            .unwrap();
    }
    let returning = (other.stats().request_charge - before) / 8.0;

    // Concurrent publishes to one hot resource feed and a few parties: group commit.
    let before = store.stats().request_charge;
    let futures = (0..96).map(|i| {
        let store = store.clone();
        async move {
            store
                .append(event(&format!("h{i}"), res, &format!("/party/{}", i % 3), "t"), IdSource::Server)
                .await
                .unwrap()
        }
    });
    futures::future::join_all(futures).await;
    let hot = (store.stats().request_charge - before) / 96.0;

    eprintln!(
        "RU per event: single document create {baseline:.2}; publish (two feeds) to a new party {new_party:.2} \
         ({:.2}x), by a cold writer {returning:.2} ({:.2}x), concurrent {hot:.2} ({:.2}x)",
        new_party / baseline,
        returning / baseline,
        hot / baseline
    );
    assert!(baseline > 0.0);
    // The floor is two creates (one per feed) of a document that repeats the
    // filtered fields next to the event: 2.2x a raw event's create in the
    // emulator's model (per-property charge). Opening a party's feed (a
    // head create) or finding a feed's length adds to it.
    assert!(new_party >= 2.0 * baseline - 1e-6, "{new_party}");
    assert!(new_party <= 3.25 * baseline, "a publish to a new party costs at most 3.25 raw creates: {new_party}");
    assert!(returning <= 2.75 * baseline, "a publish by a cold writer costs at most 2.75 raw creates: {returning}");
    assert!(hot < 2.0 * baseline, "group commit batches the hot feeds: {hot}");

    // Reads: a page of the hot resource feed, unfiltered and filtered.
    let feed = FeedId::Resource(res.into());
    let plain = store.read(&feed, 8, &Filters::default(), 50, u64::MAX, false).await.unwrap();
    let typed = Filters { types: vec!["t".into()], ..Filters::default() };
    let filtered = store.read(&feed, 8, &typed, 50, u64::MAX, false).await.unwrap();
    eprintln!(
        "page of 50 from segment size 100: unfiltered {} round trips {:.2} RU; filtered {} round trips {:.2} RU",
        plain.round_trips, plain.request_charge, filtered.round_trips, filtered.request_charge
    );
    assert_eq!(plain.events.len(), 50);
    assert_eq!(filtered.events.len(), 50);
}

#[tokio::test]
async fn position_at_time_finds_where_a_from_query_starts() {
    let account = EmulatorAccount::new();
    let store = store_on(&account).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    for i in 0..10 {
        let mut e = event(&format!("t{i}"), res, "/party/1337", "t");
        e.time = format!("2026-01-01T00:00:{:02}.000000Z", i * 2);
        store.append(e, IdSource::Server).await.unwrap();
    }
    let feed = FeedId::Resource(res.into());
    let at = |t: &'static str| {
        let (store, feed) = (store.clone(), feed.clone());
        async move { store.position_at_time(&feed, t).await.unwrap() }
    };
    assert_eq!(at("2025-12-31T00:00:00.000000Z").await, 0, "before everything");
    assert_eq!(at("2026-01-01T00:00:10.000000Z").await, 5, "an event's own time");
    assert_eq!(at("2026-01-01T00:00:09.000000Z").await, 5, "between two events");
    assert_eq!(at("2026-01-01T00:00:14.000000Z").await, 7, "in a later segment");
    assert_eq!(at("2026-01-02T00:00:00.000000Z").await, 10, "after everything: the end");
    assert_eq!(store.position_at_time(&FeedId::Resource("urn:altinn:resource:none".into()), "2026").await.unwrap(), 0);
}

/// A container made without the unique key on `seq` (an old one, or one made
/// by hand) would let two writers store the same position: the service
/// refuses to start on it and says what is missing.
#[tokio::test]
async fn a_container_without_the_unique_key_on_seq_is_refused() {
    use azure_data_cosmos::models::ContainerProperties;
    let account = EmulatorAccount::new();
    store_on(&account).await; // provisions database "events"
    let client = account.client().await.unwrap();
    let props = ContainerProperties::new("plain".to_owned(), "/pk".into());
    client.database_client("events").create_container(props, None).await.unwrap();
    let config = CosmosConfig { container: "plain".into(), provision: Some(false), ..cosmos_config() };
    let err = Cosmos::connect(&config, Some(account)).await.err().expect("refused");
    let message = err.to_string();
    assert!(message.contains("no unique key on /seq"), "{message}");
}

/// A store whose writers seal segments open longer than `close` seconds,
/// with its own clock (tests move it forward instead of sleeping).
async fn closing_after(account: &EmulatorAccount, close: u64) -> FeedStore {
    let config = CosmosConfig { segment_close_seconds: Some(close), ..cosmos_config() };
    FeedStore::new(Cosmos::connect(&config, Some(account.clone())).await.expect("connect"))
}

/// Segments are sealed once they have been open for
/// `cosmos.segment_close_seconds` (half the TTL by default, 100 s here), so
/// that none is still written when its first events expire: the seal takes
/// the next free number, a writer whose clock or cache says otherwise meets
/// it (409) and moves on, and readers skip from the seal to the next
/// segment, with nothing lost, repeated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_segments_are_sealed_and_read_past() {
    let account = EmulatorAccount::new();
    let (sealer, unaware) = (closing_after(&account, 100).await, closing_after(&account, 3600).await);
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let mut acked = Vec::new();
    for i in 0..2 {
        acked.push((
            format!("a{i}"),
            sealer.append(event(&format!("a{i}"), res, "/party/1337", "t"), IdSource::Server).await.unwrap(),
        ));
    }
    acked.push(("b0".into(), unaware.append(event("b0", res, "/party/1337", "t"), IdSource::Server).await.unwrap()));
    sealer.clock().advance(200);
    // Segment 0 (positions 0..4) is now older than 100 s: the next append
    // seals it at 3 and goes on in segment 1.
    acked.push(("a2".into(), sealer.append(event("a2", res, "/party/1337", "t"), IdSource::Server).await.unwrap()));
    // A writer that does not consider it old still knows length 3: its
    // create at 3 meets the seal, and it follows into segment 1.
    acked.push(("b1".into(), unaware.append(event("b1", res, "/party/1337", "t"), IdSource::Server).await.unwrap()));
    let positions: Vec<(u64, Option<u64>)> = acked.iter().map(|(_, a)| (a.resource_seq, a.subject_seq)).collect();
    assert_eq!(positions, [(0, Some(0)), (1, Some(1)), (2, Some(2)), (4, Some(4)), (5, Some(5))]);
    assert_eq!(sealer.stats().segments_sealed, 2, "segment 0 of both feeds");
    assert_eq!(unaware.stats().segments_sealed, 0);

    let ids = |v: &[(u64, String)]| v.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    let want = ["a0", "a1", "b0", "a2", "b1"].map(String::from).to_vec();
    for feed in [FeedId::Resource(res.into()), FeedId::Subject("/party/1337".into())] {
        for limit in [1, 2, 10] {
            let stored = read_all(&unaware, &feed, limit).await;
            assert_eq!(ids(&stored), want, "{feed} in pages of {limit}");
            assert_eq!(stored.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [0, 1, 2, 4, 5]);
        }
        // Filtered pages skip the seal too.
        let typed = Filters { types: vec!["t".into()], ..Filters::default() };
        let page = sealer.read(&feed, 0, &typed, 10, u64::MAX, false).await.unwrap();
        assert_eq!(page.events.iter().map(|e| e.record.id.clone()).collect::<Vec<_>>(), want);
        assert_eq!((page.next, page.at_end), (6, true));
        // Reading from the seal's own position starts in segment 1.
        let page = unaware.read(&feed, 3, &Filters::default(), 10, u64::MAX, false).await.unwrap();
        assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    }
}

/// An old segment that never got an event is sealed too (at its first
/// number), so that a writer that still considers it young cannot start it
/// after readers have moved on. Such a segment comes about when the append
/// that opened it turned out to be a repeat of an event already stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_old_segment_is_sealed_too() {
    let account = EmulatorAccount::new();
    let (sealer, unaware) = (closing_after(&account, 100).await, closing_after(&account, 3600).await);
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let feed = FeedId::Resource(res.into());
    for i in 0..4 {
        unaware.append_to(&feed, event(&format!("e{i}"), res, "/party/1", "t"), IdSource::Publisher).await.unwrap();
    }
    // Segment 0 is full: a repeat of e3 opens segment 1 and stores nothing.
    assert_eq!(unaware.append_to(&feed, event("e3", res, "/party/1", "t"), IdSource::Publisher).await.unwrap(), 3);
    sealer.clock().advance(200);
    // Segment 1 is old and empty: sealed at 4; e4 goes to segment 2.
    assert_eq!(sealer.append_to(&feed, event("e4", res, "/party/1", "t"), IdSource::Server).await.unwrap(), 8);
    // The other writer still knows segment 1 as young and empty: it meets
    // the seal at 4 and follows.
    assert_eq!(unaware.append_to(&feed, event("e5", res, "/party/1", "t"), IdSource::Server).await.unwrap(), 9);
    let stored = read_all(&unaware, &feed, 2).await;
    assert_eq!(
        stored,
        [(0, "e0"), (1, "e1"), (2, "e2"), (3, "e3"), (8, "e4"), (9, "e5")].map(|(s, id)| (s, id.to_owned()))
    );
    let typed = Filters { types: vec!["t".into()], ..Filters::default() };
    let page = sealer.read(&feed, 0, &typed, 10, u64::MAX, false).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 8, 9]);
    // A seal has a time, but a time filter does not count it as an event.
    let timed = Filters { from_time: Some("2000-01-01T00:00:00.000000Z".into()), ..Filters::default() };
    let page = sealer.read(&feed, 0, &timed, 5, u64::MAX, false).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 8]);
}

/// Without `cosmos.segment_close_seconds`, writers seal a segment once it
/// has been open for half the container's TTL (as read at start).
#[tokio::test]
async fn segments_are_sealed_at_half_the_containers_ttl_by_default() {
    let account = EmulatorAccount::new();
    let config = CosmosConfig { default_ttl_seconds: 100, ..cosmos_config() };
    let store = FeedStore::new(Cosmos::connect(&config, Some(account.clone())).await.expect("connect"));
    assert_eq!(store.segment_close_seconds(), Some(50));
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let feed = FeedId::Resource(res.into());
    let append = |id: &'static str| {
        let store = store.clone();
        let feed = feed.clone();
        async move { store.append_to(&feed, event(id, res, "/party/1", "t"), IdSource::Server).await.unwrap() }
    };
    assert_eq!((append("e0").await, append("e1").await), (0, 1));
    store.clock().advance(40);
    assert_eq!(append("e2").await, 2, "40 s open: not sealed yet");
    store.clock().advance(20);
    assert_eq!(append("e3").await, 4, "60 s open: sealed at 3, e3 opens segment 1");
    assert_eq!(store.stats().segments_sealed, 1);
    let stored = read_all(&store, &feed, 10).await;
    assert_eq!(stored, [(0, "e0"), (1, "e1"), (2, "e2"), (4, "e3")].map(|(s, id)| (s, id.to_owned())));
}

/// Events removed by TTL leave the front of a feed (the oldest go first):
/// whole segments of it, and the start of the next one. Readers skip what
/// is gone, in pages, filtered or not, and do not stop at the gap.
#[tokio::test]
async fn reads_skip_what_has_expired() {
    let account = EmulatorAccount::new();
    let config = CosmosConfig { default_ttl_seconds: 100, ..cosmos_config() };
    let store = FeedStore::new(Cosmos::connect(&config, Some(account.clone())).await.expect("connect"));
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let feed = FeedId::Resource(res.into());
    for i in 0..10 {
        store.append_to(&feed, event(&format!("e{i}"), res, "/party/1", "t"), IdSource::Server).await.unwrap();
    }
    // Time passes beyond the TTL of the first events; the emulator has no
    // TTL, so remove them as Cosmos would: segment 0 entirely, and the
    // first three events of segment 1.
    store.clock().advance(1000);
    let container =
        account.client().await.unwrap().database_client("events").container_client("events", None).await.unwrap();
    for seq in 0..7u64 {
        let record = event(&format!("e{seq}"), res, "/party/1", "t");
        let id = altinn_events::feeds::events::docs::event_doc_id(&record.id, &record.source);
        container.delete_item(feed.pk(seq / S), &id, None).await.unwrap();
    }
    let want = [(7, "e7"), (8, "e8"), (9, "e9")].map(|(s, id)| (s, id.to_owned()));
    for limit in [1, 2, 10] {
        assert_eq!(read_all(&store, &feed, limit).await, want, "pages of {limit}");
    }
    let typed = Filters { types: vec!["t".into()], ..Filters::default() };
    let page = store.read(&feed, 0, &typed, 10, u64::MAX, false).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [7, 8, 9]);
    assert_eq!((page.next, page.at_end), (10, true));
    // A scan budget smaller than the gap: the page stops inside it, not at the end.
    let page = store.read(&feed, 0, &Filters::default(), 10, 3, false).await.unwrap();
    assert_eq!((page.events.len(), page.next, page.at_end), (0, 3, false));
}

/// Several writers (pods) append to one feed at once, rolling its segments
/// over, while a reader on another store pages through it: the reader sees
/// every event once, in feed order, with no gap, and the feed holds
/// exactly what the writers were acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_paging_while_several_writers_roll_segments_over_sees_each_event_once_in_order() {
    let account = EmulatorAccount::new();
    let reader = store_on(&account).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let (writers, per_writer) = (3, 20);
    let mut handles = Vec::new();
    for w in 0..writers {
        let store = store_on(&account).await;
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per_writer {
                let id = format!("w{w}-{i}");
                let a = store.append(event(&id, res, &format!("/party/{w}"), "t"), IdSource::Server).await.unwrap();
                acked.push((a.resource_seq, id));
            }
            acked
        }));
    }
    let feed = FeedId::Resource(res.into());
    let total = writers * per_writer;
    let mut seen = Vec::new();
    let mut pos = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(Instant::now() < deadline, "reader did not catch up: {} of {total}", seen.len());
        let page = reader.read(&feed, pos, &Filters::default(), 3, u64::MAX, false).await.unwrap();
        seen.extend(page.events.iter().map(|e| (e.seq, e.record.id.clone())));
        pos = page.next;
        if page.events.is_empty() {
            tokio::task::yield_now().await;
        }
    }
    let mut acked = Vec::new();
    for h in handles {
        acked.extend(h.await.unwrap());
    }
    acked.sort();
    assert_dense_and_unique(&feed, &seen);
    assert_eq!(seen, acked, "the reader saw exactly the acknowledged events, each at its position");
    assert!(seen.len() as u64 > 4 * S, "several segments were rolled over");
}

/// A feed's append queue is bounded (`cosmos.max_queued_appends`): with
/// writes slowed and 2 places, a burst of 12 publishes is partly refused
/// (`Overloaded`, before anything is stored) and what was accepted is
/// stored, once, in both feeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_append_queue_refuses_publishes_before_storing_anything() {
    use azure_data_cosmos::fault_injection::{FaultInjectionConditionBuilder, FaultInjectionResultBuilder};
    let slow = FaultInjectionRuleBuilder::new(
        "slow-creates",
        FaultInjectionResultBuilder::new().with_delay(Duration::from_millis(300)).build(),
    )
    .with_condition(FaultInjectionConditionBuilder::new().with_operation_type(FaultOperationType::CreateItem).build())
    .build();
    let account = EmulatorAccount::new().with_faults(vec![Arc::new(slow)]);
    let config = CosmosConfig { max_queued_appends: 2, ..cosmos_config() };
    let store = FeedStore::new(Cosmos::connect(&config, Some(account)).await.unwrap());
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let results = futures::future::join_all(
        (0..12).map(|i| store.append(event(&format!("q{i}"), res, "/party/1337", "t"), IdSource::Server)),
    )
    .await;
    let refused = results.iter().filter(|r| matches!(r, Err(altinn_events::feeds::StoreError::Overloaded))).count();
    let stored = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(stored + refused, 12, "{results:?}");
    assert!(refused > 0 && stored > 0, "{stored} stored, {refused} refused");
    let resource = read_all(&store, &FeedId::Resource(res.into()), 100).await;
    let subject = read_all(&store, &FeedId::Subject("/party/1337".into()), 100).await;
    assert_eq!((resource.len(), subject.len()), (stored, stored), "what was accepted, in both feeds");
}

/// A store whose writers cut a hot feed's segments: a feed that takes 10
/// publishes a second in one writer is cut every 8 events (segments of
/// 1000 otherwise).
async fn cutting_hot_feeds(account: &EmulatorAccount) -> FeedStore {
    let config =
        CosmosConfig { segment_size: 1000, hot_feed_events_per_second: 10, hot_segment_events: 8, ..cosmos_config() };
    FeedStore::new(Cosmos::connect(&config, Some(account.clone())).await.expect("connect"))
}

/// Positions that only move on, by one, or to the start of a later segment
/// (where a cut segment's seal sent the writers): the numbers in between
/// were never used.
fn assert_gapless_but_for_cuts(feed: &FeedId, events: &[(u64, String)], size: u64) {
    for pair in events.windows(2) {
        let (a, b) = (pair[0].0, pair[1].0);
        assert!(b == a + 1 || (b > a && b % size == 0), "{feed}: {a} then {b}: a gap inside a segment");
    }
}

/// Issue 31, §1: a hot feed's writes move from logical partition to
/// logical partition. Two instances publish to one app and one party as
/// fast as they can: their writers cut the segments every 8 events (seals
/// that the other instance's writer meets and follows), every acknowledged
/// event is in both feeds once, in acknowledgement order, and readers page
/// through the cut segments without spending their scan budget on the
/// numbers a seal closed. A feed below the threshold, and appends that
/// are not publishes (the importer's, the repairer's), are never cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_feeds_segments_are_cut_short_and_read_whole() {
    let account = EmulatorAccount::new();
    let (one, two) = (cutting_hot_feeds(&account).await, cutting_hot_feeds(&account).await);
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..25 {
                let id = format!("h{t}-{i}");
                let sent = Instant::now();
                let a = store.append(event(&id, res, "/party/1337", "t"), IdSource::Server).await.expect("append");
                acks.push((id, sent, Instant::now(), a));
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    let cut = one.stats().segments_cut + two.stats().segments_cut;
    // 200 events in each of two feeds, 8 to a segment once hot (about 24
    // cuts a feed; the first events come before the feed is hot).
    assert!(cut >= 200 / 8, "hot feeds were cut: {cut} segments");
    for feed in [FeedId::Resource(res.into()), FeedId::Subject("/party/1337".into())] {
        for limit in [7, 50, 1000] {
            let all = read_all(&one, &feed, limit).await;
            assert_eq!(all.len(), 200, "{feed}: every acknowledged event, in pages of {limit}");
            assert_gapless_but_for_cuts(&feed, &all, 1000);
            let at: HashMap<&str, u64> = all.iter().map(|(seq, id)| (id.as_str(), *seq)).collect();
            assert_eq!(at.len(), 200, "{feed}: each event once");
            for (id, _, acked, a) in &acks {
                let seq = if matches!(feed, FeedId::Resource(_)) { a.resource_seq } else { a.subject_seq.unwrap() };
                assert_eq!(at[id.as_str()], seq, "{feed}: {id} is where its publish was told");
                for (later, sent, _, _) in &acks {
                    if acked < sent {
                        assert!(at[id.as_str()] < at[later.as_str()], "{feed}: {id} acknowledged before {later}");
                    }
                }
            }
        }
        // A page of 50 spans several cut segments (about 1000 numbers
        // each): the budget of 1000 is charged the positions scanned and
        // 100 per segment passed, not the closed numbers of each.
        let page = one.read(&feed, 0, &Filters::default(), 50, 1000, false).await.unwrap();
        assert_eq!(page.events.len(), 50, "{feed}: a whole page within the budget");
        let passed = page.next / 1000;
        assert!(
            passed >= 2 && page.scanned(0) <= 50 + passed * (100 + 1),
            "{feed}: next {} scanned {}",
            page.next,
            page.scanned(0)
        );
        let typed = Filters { types: vec!["t".into()], ..Filters::default() };
        let page = one.read(&feed, 0, &typed, 50, 1000, false).await.unwrap();
        assert_eq!(page.events.len(), 50, "{feed}: a whole filtered page within the budget");
        // A filter that matches nothing stops within its budget: about
        // 1000 / 108 segments, two round trips each, not 1000 / 9.
        let nothing = Filters { types: vec!["nothing".into()], ..Filters::default() };
        let page = one.read(&feed, 0, &nothing, 50, 1000, false).await.unwrap();
        assert!(page.events.is_empty() && !page.at_end, "{feed}: stopped by the budget");
        assert!(page.round_trips <= 24, "{feed}: {} round trips for a budget of 1000", page.round_trips);
        // The newest event is found by its id.
        let (last_seq, last_id) = read_all(&one, &feed, 1000).await.pop().unwrap();
        assert_eq!(one.locate(&feed, &last_id).await.unwrap(), Some(last_seq + 1));
    }

    // A publisher's retry (`POST /events`, publisher-chosen ids) of an
    // event whose subject feed has since been cut many times over: the
    // retry is answered with the first positions, and nothing is stored
    // twice.
    let generic = "urn:altinn:resource:generic-x";
    let first = one.append(event("p-retried", generic, "/party/1337", "t"), IdSource::Publisher).await.unwrap();
    let cuts = one.stats().segments_cut + two.stats().segments_cut;
    let mut burst = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { one.clone() } else { two.clone() };
        burst.push(tokio::spawn(async move {
            for i in 0..25 {
                store.append(event(&format!("later{t}-{i}"), res, "/party/1337", "t"), IdSource::Server).await.unwrap();
            }
        }));
    }
    for b in burst {
        b.await.unwrap();
    }
    assert!(one.stats().segments_cut + two.stats().segments_cut >= cuts + 10, "the party's feed moved on, cut");
    let again = two.append(event("p-retried", generic, "/party/1337", "t"), IdSource::Publisher).await.unwrap();
    assert_eq!((again.resource_seq, again.subject_seq), (first.resource_seq, first.subject_seq), "the retry's answer");
    let party = read_all(&two, &FeedId::Subject("/party/1337".into()), 1000).await;
    assert_eq!(party.iter().filter(|(_, id)| id == "p-retried").count(), 1, "stored once in the party's feed");
    assert_eq!(party.len(), 401);

    // Below the threshold: never cut.
    let before = one.stats().segments_cut;
    let quiet = "urn:altinn:resource:app_ttd_quiet";
    for i in 0..5 {
        one.append(event(&format!("q{i}"), quiet, "/party/1338", "t"), IdSource::Server).await.unwrap();
    }
    // The importer's and the repairer's appends are not publishes: a burst
    // of them leaves history in whole segments.
    let imported = FeedId::Resource("urn:altinn:resource:app_ttd_history".into());
    let records: Vec<EventRecord> =
        (0..100).map(|i| event(&format!("i{i}"), "urn:altinn:resource:app_ttd_history", "", "t")).collect();
    for outcome in one.enqueue_in_order(records, IdSource::Server, &Default::default()).await {
        outcome.await.unwrap();
    }
    // Nor is a feed of publisher-chosen ids, however hot: a retry must find
    // its event in the segment written or the one before.
    let hot_generic = "urn:altinn:resource:generic-hot";
    let records: Vec<EventRecord> =
        (0..100).map(|i| event(&format!("g{i}"), hot_generic, "/party/1339", "t")).collect();
    for outcome in one.append_all(records, IdSource::Publisher).await {
        outcome.unwrap();
    }
    assert_eq!(one.stats().segments_cut, before, "neither a quiet feed, an import nor publisher ids are cut");
    let history = read_all(&one, &imported, 1000).await;
    assert_dense_and_unique(&imported, &history);
    assert_eq!(history.len(), 100);
}

/// A restarted import finds what it stored before although live publishes
/// cut the same feed into many small segments since (issue 31 §1, during
/// a migration's overlap): it searches back to the segment whose newest
/// imported event is older than the batch, not two segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_import_finds_its_events_behind_cut_segments() {
    let account = EmulatorAccount::new();
    let store = cutting_hot_feeds(&account).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let imported: Vec<EventRecord> = (1..=10)
        .map(|n| EventRecord { origin: Some(n), ..event(&format!("imp{n}"), res, "/party/1337", "t") })
        .collect();
    for outcome in store.enqueue_in_order(imported, IdSource::Server, &Default::default()).await {
        outcome.await.unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                store.append(event(&format!("live{t}-{i}"), res, "/party/1337", "t"), IdSource::Server).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(store.stats().segments_cut >= 10, "the live publishes cut the feed");
    for feed in [FeedId::Resource(res.into()), FeedId::Subject("/party/1337".into())] {
        let found = store.stored_origins(&feed, 5, 12).await.unwrap();
        assert_eq!(found, (5..=10).collect(), "{feed}: what the killed run stored of the batch");
    }
}
