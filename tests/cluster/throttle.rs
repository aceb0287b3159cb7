//! Issue 31, the "before": a hot feed is capped by one physical partition.
//!
//! Cosmos DB splits a container's RU/s evenly over its physical partitions,
//! and every write of one feed goes to its newest segment: one logical
//! partition, so one physical partition. The emulator here throttles as
//! Azure does (`COSMOSDB_SERVER_PARTITIONS`, `COSMOSDB_SERVER_RU_PER_PARTITION`,
//! `.ci/cosmosdb-server/server.js`): the same number of publishers publish
//! for the same time to ONE feed pair (one app, one party), then spread over
//! eight (eight apps, eight parties). Under throttling every acknowledged
//! publish must be in its two feeds exactly once, the feeds dense and in
//! acknowledgement order, and the service must not answer 5xx: the SDK
//! waits out each 429 (`x-ms-retry-after-ms`) and sends again. Feeds use
//! production's segment size, so a hot feed stays on one partition.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use altinn_events::domain::FeedId;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::harness::*;

/// 8 physical partitions of 200 RU/s: a feed's ceiling is 200 RU/s over
/// about 7 RU per event document (`docs/capacity.md`).
const PARTITIONS: usize = 8;
const RU_PER_PARTITION: u32 = 200;
const PUBLISHERS: usize = 16;
const PHASE: Duration = Duration::from_secs(8);
/// The production default (`cosmos.segment_size`); `EVENTS_TEST_THROTTLE_SEGMENT`
/// sets another (the layout evaluated in docs/capacity.md).
fn segment() -> u64 {
    std::env::var("EVENTS_TEST_THROTTLE_SEGMENT").ok().and_then(|s| s.parse().ok()).unwrap_or(50_000)
}

/// One published event: which feed pair, when sent and acknowledged.
struct Acked {
    feeds: usize,
    id: String,
    sent: Instant,
    acked: Instant,
}

#[derive(Default)]
struct Phase {
    acked: Vec<Acked>,
    statuses: HashMap<u16, usize>,
    transport_failures: usize,
    elapsed: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.acked.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// The app and party of feed pair `i` of `n` (`n` = 1: the harness's app
/// and party, so that `check_feeds` reads them).
fn pair(i: usize, n: usize) -> (String, String) {
    if n == 1 {
        ("apps-test".to_owned(), PARTY.to_owned())
    } else {
        (format!("apps-test-{i}"), format!("/party/{}", 5000 + i))
    }
}

/// `PUBLISHERS` publishers, each publishing to feed pair `k % n` for its
/// `k`-th publish, one at a time, until `PHASE` is over; then the ones in
/// flight finish.
async fn publish_for(cluster: &Cluster, n: usize) -> Phase {
    let base = cluster.pod(0).base.clone();
    let mut access = Vec::new();
    for i in 0..n {
        let app = pair(i, n).0;
        let url = cluster.pod(0).url(&format!("/localtest/token/platform?issuer=ttd&app={app}"));
        access.push(cluster.http.get(url).send().await.unwrap().text().await.unwrap());
    }
    let access = Arc::new(access);
    let phase = Arc::new(Mutex::new(Phase::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PUBLISHERS {
        let (http, user, base, access, phase, next) = (
            cluster.http.clone(),
            cluster.tokens.user.clone(),
            base.clone(),
            access.clone(),
            phase.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < PHASE {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let feeds = k % n;
                let (app, party) = pair(feeds, n);
                let party_id = party.trim_start_matches("/party/");
                let body = json!({"specversion": "1.0", "type": "app.instance.created", "subject": party,
                    "source": format!("https://ttd.apps.altinn.no/ttd/{app}/instances/{party_id}/{k:08x}-0000-4000-8000-{:012x}",
                        std::process::id())});
                let sent = Instant::now();
                let resp = http
                    .post(format!("{base}/events/api/v1/app"))
                    .header(AUTHORIZATION, format!("Bearer {user}"))
                    .header("PlatformAccessToken", &access[feeds])
                    .json(&body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => {
                        let id: String = r.json().await.expect("a 201 carries the event's id");
                        phase.lock().unwrap().acked.push(Acked { feeds, id, sent, acked: Instant::now() });
                    }
                    Ok(r) => *phase.lock().unwrap().statuses.entry(r.status().as_u16()).or_default() += 1,
                    Err(_) => phase.lock().unwrap().transport_failures += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut phase = Arc::try_unwrap(phase).ok().unwrap().into_inner().unwrap();
    phase.elapsed = started.elapsed();
    phase
}

/// Each feed of the phase, as stored (`stored` asserts it dense from 0):
/// every acknowledged event exactly once, and an event acknowledged before
/// another was sent stands before it.
async fn check(cluster: &Cluster, phase: &Phase, n: usize) {
    let store = cluster.emulator.store_with(segment()).await;
    for i in 0..n {
        let (app, party) = pair(i, n);
        let resource = FeedId::Resource(format!("urn:altinn:resource:app_ttd_{app}"));
        for feed in [resource, FeedId::Subject(party)] {
            let ids = stored(&store, &feed).await;
            let at: HashMap<&String, usize> = ids.iter().enumerate().map(|(p, id)| (id, p)).collect();
            assert_eq!(at.len(), ids.len(), "{feed}: an event twice");
            let mine: Vec<&Acked> = phase.acked.iter().filter(|a| a.feeds == i).collect();
            let lost: Vec<&str> = mine.iter().filter(|a| !at.contains_key(&a.id)).map(|a| a.id.as_str()).collect();
            assert!(lost.is_empty(), "{feed}: {} acknowledged events missing: {lost:?}", lost.len());
            for a in &mine {
                for b in &mine {
                    if a.acked < b.sent {
                        assert!(
                            at[&a.id] < at[&b.id],
                            "{feed}: {} acknowledged before {} was sent, stored after it",
                            a.id,
                            b.id
                        );
                    }
                }
            }
        }
    }
}

/// The difference of two `/_sim/stats` answers: (requests, RU, 429s), and
/// the 429s per partition.
fn delta(before: &Value, after: &Value) -> (f64, f64, f64, Vec<u64>) {
    let d = |k: &str| after[k].as_f64().unwrap_or(0.0) - before[k].as_f64().unwrap_or(0.0);
    let per = (0..PARTITIONS)
        .map(|p| {
            after["perPartition"][p]["throttled"].as_u64().unwrap_or(0)
                - before["perPartition"][p]["throttled"].as_u64().unwrap_or(0)
        })
        .collect();
    (d("requests"), d("charge"), d("throttled"), per)
}

/// The service's own count of 429s it saw from Cosmos DB (including the
/// ones the SDK retried by itself).
async fn service_429s(cluster: &Cluster) -> f64 {
    cluster.metric("cosmos_throttled_requests_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "out-of-process cluster: run by .ci/cosmosdb-server/run-test"]
async fn cluster_a_hot_feed_is_capped_by_one_physical_partition() {
    let emulator_env = [
        ("COSMOSDB_SERVER_PARTITIONS".to_owned(), PARTITIONS.to_string()),
        ("COSMOSDB_SERVER_RU_PER_PARTITION".to_owned(), RU_PER_PARTITION.to_string()),
    ];
    // The writes alone: the repairer (which checks every resource-feed
    // event in its subject feed, point reads and a query on the subject
    // feed's newest segment) and the deliverers (change-feed reads, charged
    // on every partition) are off, as in examples/pod_cpu.rs; their cost
    // would land on the partitions measured here.
    // Segments as in production: one segment per feed for the whole run
    // (the harness's segments of 50 would move a hot feed to another
    // partition every 50 events, each with a fresh second of budget).
    let env = vec![
        ("EVENTS__COSMOS__SEGMENT_SIZE".to_owned(), segment().to_string()),
        ("EVENTS__COSMOS__REPAIR_INTERVAL_SECONDS".to_owned(), "0".to_owned()),
        ("EVENTS__DELIVERY__ENABLED".to_owned(), "false".to_owned()),
    ];
    let cluster = Cluster::start_with("throttle", 1, env, &emulator_env).await;
    let http = &cluster.http;

    let before = cluster.emulator.stats(http).await;
    let seen_before = service_429s(&cluster).await;
    let hot = publish_for(&cluster, 1).await;
    let after_hot = cluster.emulator.stats(http).await;
    let seen_hot = service_429s(&cluster).await - seen_before;
    let spread = publish_for(&cluster, PARTITIONS).await;
    let after_spread = cluster.emulator.stats(http).await;
    let seen_spread = service_429s(&cluster).await - seen_before - seen_hot;

    let (_, hot_ru, hot_429, hot_per) = delta(&before, &after_hot);
    let (_, spread_ru, spread_429, spread_per) = delta(&after_hot, &after_spread);
    println!(
        "cluster throttle ({PARTITIONS} partitions x {RU_PER_PARTITION} RU/s, segments of {}, {PUBLISHERS} publishers, {} s each): \
         one hot feed {:.1} events/s ({} in {:.1} s; {hot_429} 429s from the server {hot_per:?}, {seen_hot} seen by the service; \
         {:.1} RU per event); spread over {PARTITIONS} feeds {:.1} events/s ({} in {:.1} s; {spread_429} 429s {spread_per:?}, \
         {seen_spread} seen by the service; {:.1} RU per event); spread / hot = {:.2}",
        segment(),
        PHASE.as_secs(),
        hot.rate(),
        hot.acked.len(),
        hot.elapsed.as_secs_f64(),
        hot_ru / hot.acked.len().max(1) as f64,
        spread.rate(),
        spread.acked.len(),
        spread.elapsed.as_secs_f64(),
        spread_ru / spread.acked.len().max(1) as f64,
        spread.rate() / hot.rate(),
    );

    for (name, phase) in [("hot", &hot), ("spread", &spread)] {
        assert!(
            phase.statuses.is_empty() && phase.transport_failures == 0,
            "{name}: every publish acknowledged while throttled (statuses {:?}, {} without an answer)",
            phase.statuses,
            phase.transport_failures
        );
        assert!(!phase.acked.is_empty(), "{name}: publishes went through");
    }
    assert!(hot_429 > 0.0, "the hot feed met its partition's budget: the scenario measures throttling");
    assert!(seen_hot > 0.0, "the service counted the 429s it was answered");
    let distinct: HashSet<&String> = hot.acked.iter().chain(&spread.acked).map(|a| &a.id).collect();
    assert_eq!(distinct.len(), hot.acked.len() + spread.acked.len(), "every acknowledged id is new");
    println!("emulator's counters at the end: {after_spread}");
    check(&cluster, &hot, 1).await;
    check(&cluster, &spread, PARTITIONS).await;
    // And through the API: the hot feeds read as the store holds them.
    let store = cluster.emulator.store_with(segment()).await;
    let base = &cluster.pod(0).base;
    let resource = read_feed(http, base, RESOURCE_FEED, &cluster.tokens.owner).await.unwrap();
    assert_eq!(resource, stored(&store, &FeedId::Resource(RESOURCE.into())).await, "the app's feed via the API");
    let party = read_feed(http, base, PARTY_FEED, &cluster.tokens.user).await.unwrap();
    assert_eq!(party, stored(&store, &FeedId::Subject(PARTY.into())).await, "the party's feed via the API");
}
