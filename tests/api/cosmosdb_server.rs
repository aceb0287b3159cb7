//! The feed store through the SDK's real HTTP stack, against
//! `@vercel/cosmosdb-server` (a separate Node process, see
//! `.ci/cosmosdb-server/`). Ignored in the normal run: `.ci/cosmosdb-server/run-test`
//! starts the server and runs this test with `EVENTS_TEST_COSMOS_ENDPOINT` set.

use altinn_events::config::{CosmosAuth, CosmosConfig};
use altinn_events::domain::{EventRecord, FeedId, Filters};
use altinn_events::feeds::{Cosmos, FeedStore, IdSource};
use secrecy::SecretString;

const S: u64 = 4;
/// The server accepts any key; the SDK wants one that decodes as base64.
const KEY: &str = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

async fn store(segment_size: u64) -> FeedStore {
    let endpoint = std::env::var("EVENTS_TEST_COSMOS_ENDPOINT")
        .expect("EVENTS_TEST_COSMOS_ENDPOINT is not set: run this test with .ci/cosmosdb-server/run-test");
    let config = CosmosConfig {
        auth: Some(CosmosAuth::Key),
        endpoint: Some(endpoint.parse().expect("EVENTS_TEST_COSMOS_ENDPOINT is a URL")),
        key: Some(SecretString::from(KEY)),
        provision: Some(true),
        segment_size,
        ..CosmosConfig::default()
    };
    // The SDK's first request can meet a closed connection (its HTTP/2
    // probe against Node): try again, as the service does at start.
    let mut attempts = 0;
    loop {
        match Cosmos::connect(
            &config,
            #[cfg(feature = "dev")]
            None,
        )
        .await
        {
            Ok(cosmos) => return FeedStore::new(cosmos),
            Err(e) if attempts < 10 => {
                attempts += 1;
                eprintln!("connecting to cosmosdb-server (attempt {attempts}): {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("connect to cosmosdb-server: {e:?}"),
        }
    }
}

/// The app name has a `_`, which LIKE must match literally.
fn event(id: &str, resource: &str, subject: &str, event_type: &str) -> EventRecord {
    crate::helpers::event_record("ttd/apps_test", id, resource, subject, event_type)
}

/// Every event of a feed, paging with `limit`; asserts dense seqs from 0.
async fn read_all(store: &FeedStore, feed: &FeedId, limit: usize) -> Vec<String> {
    let mut out: Vec<(u64, String)> = Vec::new();
    let mut pos = 0;
    loop {
        let page = store.read(feed, pos, &Filters::default(), limit, u64::MAX, false).await.expect("read");
        assert!(page.events.len() <= limit);
        out.extend(page.events.iter().map(|e| (e.seq, e.record.id.clone())));
        assert!(page.next >= pos);
        pos = page.next;
        if page.at_end {
            break;
        }
    }
    for (i, (seq, _)) in out.iter().enumerate() {
        assert_eq!(*seq, i as u64, "{feed}: a gap or disorder: {out:?}");
    }
    assert_eq!(pos, out.len() as u64, "{feed}: the cursor ends after the last event");
    out.into_iter().map(|(_, id)| id).collect()
}

fn ids(names: &[&str], run: &str) -> Vec<String> {
    names.iter().map(|n| format!("{n}-{run}")).collect()
}

#[tokio::test]
#[ignore = "out-of-process: run by .ci/cosmosdb-server/run-test"]
async fn cosmosdb_server_feed_store_round_trip() {
    let store = store(S).await;
    // Unique per run, so that a rerun against the same server starts afresh.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let res = format!("urn:altinn:resource:app_ttd_apps-test-{run}");
    let (me, other) = (format!("/party/1337-{run}"), format!("/party/500000-{run}"));
    let created = "app.instance.created";

    // Ten appends across two subjects: resource segments 0..=2, subject segments 0..=1.
    for i in 0..10u64 {
        let subject = if i % 2 == 0 { &me } else { &other };
        let kind = if i % 3 == 0 { created } else { "app.instance.process.completed" };
        let a =
            store.append(event(&format!("e{i}-{run}"), &res, subject, kind), IdSource::Server).await.expect("append");
        assert_eq!((a.resource_seq, a.subject_seq), (i, Some(i / 2)));
    }
    let resource = FeedId::Resource(res.clone());
    let party = FeedId::Subject(me.clone());
    assert_eq!(
        read_all(&store, &resource, 3).await,
        ids(&["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"], &run)
    );
    assert_eq!(read_all(&store, &party, 3).await, ids(&["e0", "e2", "e4", "e6", "e8"], &run));
    assert_eq!(read_all(&store, &FeedId::Subject(other.clone()), 2).await, ids(&["e1", "e3", "e5", "e7", "e9"], &run));
    assert_eq!(store.len(&resource).await.unwrap(), 10);

    // A type filter fills the page from all three segments.
    let types = Filters { types: vec![created.into()], ..Filters::default() };
    let page = store.read(&resource, 0, &types, 10, u64::MAX, false).await.unwrap();
    let got: Vec<_> = page.events.iter().map(|e| (e.seq, e.record.id.clone())).collect();
    let want: Vec<_> = [0u64, 3, 6, 9].iter().map(|&i| (i, format!("e{i}-{run}"))).collect();
    assert_eq!(got, want);
    assert_eq!((page.next, page.at_end), (10, true));
    // A short page stops after its last event; a bounded scan stops early.
    let page = store.read(&resource, 1, &types, 1, u64::MAX, false).await.unwrap();
    assert_eq!((page.events[0].seq, page.next, page.at_end), (3, 4, false));
    let page = store.read(&resource, 0, &types, 10, 5, false).await.unwrap();
    assert_eq!((page.events.len(), page.next, page.at_end), (2, 5, false));
    // A wildcard source (LIKE).
    let sources = Filters {
        sources: vec![format!("https://ttd.apps.altinn.no/ttd/apps_test/instances{other}/%")],
        ..Filters::default()
    };
    let page = store.read(&resource, 0, &sources, 10, u64::MAX, false).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3, 5, 7, 9]);
    let no_match = Filters {
        sources: vec![format!("https://ttd.apps.altinn.no/ttd/apps_test/instances{me}9/%")],
        ..Filters::default()
    };
    assert!(store.read(&resource, 0, &no_match, 10, u64::MAX, false).await.unwrap().events.is_empty());

    // locate: point reads in the newest segments.
    assert_eq!(store.locate(&resource, &format!("e0-{run}")).await.unwrap(), Some(1));
    assert_eq!(store.locate(&resource, &format!("e9-{run}")).await.unwrap(), Some(10));
    assert_eq!(store.locate(&party, &format!("e2-{run}")).await.unwrap(), Some(2));
    assert_eq!(store.locate(&resource, "nope").await.unwrap(), None);
    assert_eq!(store.locate(&FeedId::Subject(format!("/party/1-{run}")), &format!("e0-{run}")).await.unwrap(), None);

    // Appending again is idempotent: the create answers 409 (the event's
    // document is taken) and the stored event's position is returned.
    let again = store.append(event(&format!("e9-{run}"), &res, &other, created), IdSource::Server).await.unwrap();
    assert_eq!((again.resource_seq, again.subject_seq), (9, Some(4)));
    assert_eq!(store.len(&resource).await.unwrap(), 10);
    assert_eq!(read_all(&store, &resource, 4).await.len(), 10);

    // A second store (another pod): each one's known feed length goes
    // stale, so their creates meet the unique key on seq (409), re-read the
    // segment's length and retry.
    let pod_b = self::store(S).await;
    for i in 10..14u64 {
        let writer = if i % 2 == 0 { &pod_b } else { &store };
        let a = writer.append(event(&format!("e{i}-{run}"), &res, &me, created), IdSource::Server).await.unwrap();
        assert_eq!(a.resource_seq, i);
    }
    // Group commit: concurrent appends share batches of several creates.
    let burst: Vec<_> = (14..20).map(|i| event(&format!("e{i}-{run}"), &res, &other, created)).collect();
    let burst_ids: Vec<_> = burst.iter().map(|e| e.id.clone()).collect();
    let acks = store.append_all(burst, IdSource::Server).await;
    let all = read_all(&pod_b, &resource, 5).await;
    assert_eq!(all.len(), 20);
    assert_eq!(all[..14], (0..14).map(|i| format!("e{i}-{run}")).collect::<Vec<_>>());
    for (id, ack) in burst_ids.iter().zip(acks) {
        let seq = usize::try_from(ack.expect("burst append").resource_seq).unwrap();
        assert_eq!(&all[seq], id, "stored where its append said");
    }

    // The same id from another source is another event: stored (once).
    let mut second = event(&format!("e9-{run}"), &res, &other, created);
    second.source = "https://elsewhere/".into();
    assert_eq!(store.append(second.clone(), IdSource::Publisher).await.unwrap().resource_seq, 20);
    assert_eq!(store.append(second, IdSource::Publisher).await.unwrap().resource_seq, 20);
    assert_eq!(store.len(&resource).await.unwrap(), 21);
    assert_eq!(store.locate(&resource, &format!("e9-{run}")).await.unwrap(), Some(21), "the newest of that id");

    // With one event per segment, an event nine segments back is found by
    // the cross-partition query that follows the point reads.
    let tiny = self::store(1).await;
    let narrow = format!("urn:altinn:resource:app_ttd_narrow-{run}");
    for i in 0..10 {
        tiny.append(event(&format!("n{i}-{run}"), &narrow, &me, created), IdSource::Server).await.unwrap();
    }
    let narrow = FeedId::Resource(narrow);
    assert_eq!(tiny.locate(&narrow, &format!("n0-{run}")).await.unwrap(), Some(1));
    assert_eq!(tiny.locate(&narrow, &format!("n1-{run}")).await.unwrap(), Some(2));
    assert_eq!(tiny.locate(&narrow, &format!("e0-{run}")).await.unwrap(), None, "another feed's event");
    assert_eq!(
        read_all(&tiny, &narrow, 3).await,
        ids(&["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"], &run)
    );
}

/// The subscription store through the real HTTP stack: ids from the unique
/// key, the same subscription again, guarded changes, delete with a
/// tombstone in one batch, the validators' query.
#[tokio::test]
#[ignore = "out-of-process: run by .ci/cosmosdb-server/run-test"]
async fn cosmosdb_server_subscription_store_round_trip() {
    use altinn_events::domain::subscription::{Subscription, SubscriptionFilters, Validation, ValidationStatus};
    use altinn_events::feeds::Changed;
    use altinn_events::feeds::subscriptions::{Creation, SubscriptionStore};
    let feeds = store(S).await;
    feeds
        .webhook_secrets()
        .replace(&altinn_events::secrets::KeyRing::parse("w1:cosmosdb-server-webhook-key-0123").unwrap());
    let store = SubscriptionStore::new(&feeds);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let consumer = format!("/organisation/{run}");
    let filters = SubscriptionFilters {
        source_filter: None,
        resource_filter: "urn:altinn:resource:ttd-estate".into(),
        subject_filter: None,
        alternative_subject_filter: None,
        type_filter: None,
        include_subunits: false,
    };
    let make = |endpoint: &str| {
        let (consumer, filters, endpoint) = (consumer.clone(), filters.clone(), endpoint.to_owned());
        move |id| Subscription {
            id,
            end_point: altinn_events::domain::subscription::Endpoint::parse(&endpoint).unwrap(),
            filters: filters.clone(),
            consumer: consumer.clone(),
            created_by: consumer.clone(),
            created: "2026-11-27T10:00:00.000000Z".into(),
            validation: Validation {
                status: ValidationStatus::Validating,
                attempts: 0,
                last_error: None,
                next_attempt_ms: Some(1),
                claimed_until_ms: None,
            },
            secrets: vec![],
            caller: Some(altinn_events::domain::Principal {
                subject: altinn_events::domain::Subject::Org { org: None, org_number: "912345678".into() },
                auth_level: 3,
                scopes: vec!["altinn:events.subscribe".into()],
            }),
            starts_at: 0,
            imported: None,
        }
    };
    let identity = |e: &str| Subscription::identity(&consumer, e, &filters);
    let create = |e: &'static str, limit: usize| {
        let (store, identity, make) = (&store, identity(e), make(e));
        let consumer = consumer.clone();
        async move { store.create(&identity, &consumer, limit, make).await.unwrap() }
    };
    let Creation::Created(a) = create("https://a/", 2).await else { panic!("a is new") };
    let Creation::Existing(again) = create("https://a/", 2).await else { panic!("a again is a") };
    assert_eq!(again.id, a.id);
    let Creation::Created(b) = create("https://b/", 2).await else { panic!("b is new") };
    assert_eq!(b.id, a.id + 1);
    assert!(matches!(create("https://c/", 2).await, Creation::LimitReached), "two is the limit");
    assert!(matches!(create("https://a/", 2).await, Creation::Existing(_)), "the same one again is not a third");
    let listed: Vec<u64> = store.list(&consumer).await.unwrap().iter().map(|s| s.id).collect();
    assert_eq!(listed, [a.id, b.id]);
    assert!(store.due_validations(2).await.unwrap().iter().any(|s| s.subscription.id == a.id));
    let stored = store.get(a.id).await.unwrap().unwrap();
    let mut validated = stored.subscription.clone();
    validated.validation.status = ValidationStatus::Active;
    validated.validation.next_attempt_ms = None;
    assert!(matches!(store.replace(&stored, validated.clone()).await.unwrap(), Changed::Done(_)));
    assert!(
        matches!(store.replace(&stored, validated).await.unwrap(), Changed::Stale),
        "the old ETag no longer matches"
    );
    assert!(!store.due_validations(2).await.unwrap().iter().any(|s| s.subscription.id == a.id));
    let current = store.get(a.id).await.unwrap().unwrap();
    assert_eq!(store.delete(&current).await.unwrap(), Changed::Done(()));
    assert!(store.get(a.id).await.unwrap().is_none());
    let Creation::Created(c) = create("https://c/", 2).await else { panic!("a deleted one makes room") };
    assert!(c.id > b.id, "ids are not reused");
}

/// Delivery's documents through the real HTTP stack: a state made once and
/// changed only with its ETag, removed with its subscription; bucket leases
/// taken, renewed and refused to a second taker; instances' presence.
#[tokio::test]
#[ignore = "out-of-process: run by .ci/cosmosdb-server/run-test"]
async fn cosmosdb_server_delivery_store_round_trip() {
    use altinn_events::domain::subscription::{DeliveryState, DeliveryStatus};
    use altinn_events::feeds::Changed;
    use altinn_events::feeds::coordination::LeaseStore;
    use altinn_events::feeds::subscriptions::DeliveryStore;
    let feeds = store(S).await;
    let (store, leases) = (DeliveryStore::new(&feeds), LeaseStore::new(&feeds));
    let run = uuid::Uuid::new_v4().as_u64_pair().0 >> 20;

    // State: made with the initial one, then guarded by its ETag.
    let (state, etag) = store.state_or(run, DeliveryState::starting_at(7)).await.unwrap();
    assert_eq!(state.checkpoint, 7);
    let (again, same) = store.state_or(run, DeliveryState::starting_at(99)).await.unwrap();
    assert_eq!((again.checkpoint, &same), (7, &etag), "made once");
    let mut moved = state.clone();
    moved.checkpoint = 12;
    moved.status = DeliveryStatus::Failing;
    let Changed::Done(newer) = store.write(run, &moved, &etag).await.unwrap() else { panic!("a fresh ETag writes") };
    assert!(matches!(store.write(run, &state, &etag).await.unwrap(), Changed::Stale), "an old ETag does not");
    let (read, read_etag) = store.state(run).await.unwrap().unwrap();
    assert_eq!((read.checkpoint, read.status, read_etag), (12, DeliveryStatus::Failing, newer));
    store.remove(run).await.unwrap();
    assert!(store.state(run).await.unwrap().is_none());
    store.remove(run).await.unwrap();

    // A bucket: taken by one, refused to another, renewed, released.
    let bucket = 1_000_000 + run % 1_000_000;
    let (a, b) = (format!("a-{run}"), format!("b-{run}"));
    let taken = leases.take(bucket, None, &a, 5_000).await.unwrap().expect("a free bucket");
    assert!(leases.take(bucket, None, &b, 5_000).await.unwrap().is_none(), "it exists");
    let listed = leases.leases().await.unwrap().into_iter().find(|l| l.bucket == bucket).unwrap();
    assert_eq!((listed.owner.as_str(), listed.expires_ms), (a.as_str(), 5_000));
    let renewed = leases.take(bucket, Some(&taken), &a, 9_000).await.unwrap().expect("renewed");
    assert!(leases.take(bucket, Some(&taken), &b, 9_000).await.unwrap().is_none(), "an old read loses");
    assert!(leases.take(bucket, Some(&renewed), &a, 0).await.unwrap().is_some(), "released");

    // Presence: counted while alive, gone when absent.
    let now = 1_000;
    let before = leases.instances(now).await.unwrap();
    leases.present(&a, now + 10_000).await.unwrap();
    leases.present(&b, now + 10_000).await.unwrap();
    leases.present(&a, now + 20_000).await.unwrap();
    assert_eq!(leases.instances(now).await.unwrap(), before + 2);
    leases.absent(&a).await;
    leases.absent(&b).await;
    assert_eq!(leases.instances(now).await.unwrap(), before);
}

/// The change feed (implemented in `.ci/cosmosdb-server/server.js`): a
/// follower started before the appends is told of each feed appended to
/// (the signal that wakes deliverers and long-polls on other pods), and of
/// nothing written before it started.
#[tokio::test]
#[ignore = "out-of-process: run by .ci/cosmosdb-server/run-test"]
async fn cosmosdb_server_change_feed_tells_of_appends() {
    use altinn_events::feeds::coordination::changes::{Change, Polling, follow};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let store = store(S).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let before = FeedId::Resource(format!("urn:altinn:resource:app_ttd_before-{run}"));
    let FeedId::Resource(before_res) = &before else { unreachable!() };
    store.append(event(&format!("b-{run}"), before_res, "", "x"), IdSource::Server).await.unwrap();

    let seen: Arc<Mutex<Vec<Change>>> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sink = {
        let seen = seen.clone();
        move |c: Change| seen.lock().unwrap().push(c)
    };
    let polling = Polling { busy: Duration::from_millis(50), idle: Duration::from_millis(50) };
    let follower = tokio::spawn(follow(store.clone(), polling, sink, true, true, stopped));
    // The follower starts from now: give it a round to take its position.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = format!("urn:altinn:resource:app_ttd_after-{run}");
    let subject = format!("/party/77-{run}");
    for i in 0..3 {
        store.append(event(&format!("a{i}-{run}"), &res, &subject, "x"), IdSource::Server).await.unwrap();
    }
    let wanted = [FeedId::Resource(res.clone()), FeedId::Subject(subject.clone())];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let appended: Vec<FeedId> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                Change::Appended(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        if wanted.iter().all(|w| appended.iter().filter(|f| *f == w).count() >= 3) {
            assert!(!appended.contains(&before), "nothing from before the start");
            break;
        }
        assert!(Instant::now() < deadline, "the follower saw {appended:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missed = seen.lock().unwrap().iter().filter(|c| **c == Change::Missed).count();
    assert_eq!(missed, 1, "once, when it took its first position; no restart after");
    stop.send(true).unwrap();
    follower.await.unwrap();
}

/// The repairer through the change feed of the out-of-process emulator:
/// an event stored in its resource feed only is appended to its party
/// feed, once.
#[tokio::test]
#[ignore = "out-of-process: run by .ci/cosmosdb-server/run-test"]
async fn cosmosdb_server_repairer_completes_a_half_publish() {
    use altinn_events::feeds::Repairer;
    use std::time::Duration;
    let store = store(S).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let res = format!("urn:altinn:resource:app_ttd_apps-test-{run}");
    let party = format!("/party/1337-{run}");
    // A party feed longer than the newest segments the repairer reads
    // first (40 events, 10 segments of 4), then the interrupted publish.
    let mut want = Vec::new();
    for i in 0..40 {
        store.append(event(&format!("whole{i}-{run}"), &res, &party, "t"), IdSource::Server).await.unwrap();
        want.push(format!("whole{i}"));
    }
    store
        .append_to(&FeedId::Resource(res.clone()), event(&format!("half-{run}"), &res, &party, "t"), IdSource::Server)
        .await
        .unwrap();
    want.push("half".into());
    let repairer = Repairer::new(store.clone(), format!("pod-{run}"), Duration::from_secs(30), Duration::ZERO);
    let mut rounds = Vec::new();
    for _ in 0..20 {
        let report = repairer.run_once().await.expect("a repair round");
        rounds.push(report.clone());
        if report.checked == 0 && rounds.len() > 1 {
            break;
        }
    }
    let feed = read_all(&store, &FeedId::Subject(party.clone()), 100).await;
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(feed, ids(&want, &run), "{rounds:?}");
}
