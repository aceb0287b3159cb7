use std::time::Duration;

use altinn_events::Overrides;
use altinn_events::domain::FeedId;
use altinn_events::feeds::emulator::EmulatorAccount;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde_json::Value;

use crate::helpers::*;

const GUID_A: &str = "6fb3f738-6800-4f29-9f3e-1c66862656cd";
const GUID_B: &str = "0b8d7fd5-6d4e-4c8c-9a1c-7b4a1d2f3e40";

async fn publish(app: &TestApp, party: u64, guid: &str, kind: &str) -> String {
    publish_app_event(app, "ttd", "apps-test", party, guid, kind).await
}

async fn issue(app: &TestApp, token: &str, party: u64, guid: &str) -> reqwest::Response {
    app.http
        .post(app.url(&format!("/events/api/v1/app/ttd/apps-test/instances/{party}/{guid}/accesskey")))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
}

async fn key_for(app: &TestApp, party: u64, guid: &str) -> String {
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let resp = issue(app, &owner, party, guid).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["instance"], format!("{party}/{guid}"));
    body["key"].as_str().unwrap().to_owned()
}

async fn read(app: &TestApp, party: u64, guid: &str, key: Option<&str>, query: &str) -> reqwest::Response {
    let mut req = app.http.post(app.url(&format!("/events/instanceeventsforinstance/{party}/{guid}?{query}")));
    if let Some(k) = key {
        req = req.header("Altinn-Instance-Access-Key", k);
    }
    req.send().await.unwrap()
}

fn ids(body: &[Value]) -> Vec<&str> {
    body.iter().map(|e| e["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn only_the_app_owner_with_the_app_scope_gets_instance_keys() {
    let app = TestApp::spawn().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let resp = issue(&app, &owner, 1337, GUID_A).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert!(body["key"].as_str().unwrap().starts_with("v1.dev.ttd.apps-test."));
    assert_eq!(body["expires"].as_str().unwrap().len(), 27);
    let skd = app.org_token("skd", "altinn:events/ttd/apps-test").await;
    assert_problem(issue(&app, &skd, 1337, GUID_A).await, 403).await;
    let no_scope = app.org_token("ttd", "altinn:events/ttd/other").await;
    assert_problem(issue(&app, &no_scope, 1337, GUID_A).await, 403).await;
    let user = app.user_token(1337, 1337, 2).await;
    assert_problem(issue(&app, &user, 1337, GUID_A).await, 403).await;
    let resp = app
        .http
        .post(app.url(&format!("/events/api/v1/app/ttd/apps-test/instances/1337/{GUID_A}/accesskey")))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_reads_its_instance_and_nothing_else() {
    let app = TestApp::spawn().await;
    let a1 = publish(&app, 1337, GUID_A, "app.instance.created").await;
    let _b = publish(&app, 1337, GUID_B, "app.instance.created").await;
    let a2 = publish(&app, 1337, GUID_A, "app.instance.process.completed").await;
    // Another app's event for the same instance id: not opened by ttd's key.
    publish_app_event(&app, "skd", "taxreport", 1337, GUID_A, "app.instance.created").await;
    let key_a = key_for(&app, 1337, GUID_A).await;
    let key_b = key_for(&app, 1337, GUID_B).await;

    // Page by page to the head of the party's feed, which holds the other
    // instance's event and skd's event for the same instance id too.
    let resp = read(&app, 1337, GUID_A, Some(&key_a), "after=0&size=1").await;
    assert_eq!(resp.status(), 200);
    let mut next = resp.headers()["next"].to_str().unwrap().to_owned();
    let mut seen: Vec<String> = ids(&resp.json::<Vec<Value>>().await.unwrap()).iter().map(|s| s.to_string()).collect();
    let party = FeedId::Subject("/party/1337".into());
    for _ in 0..20 {
        let resp = app.http.post(&next).header("Altinn-Instance-Access-Key", &key_a).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let following = resp.headers()["next"].to_str().unwrap().to_owned();
        seen.extend(ids(&resp.json::<Vec<Value>>().await.unwrap()).iter().map(|s| s.to_string()));
        let moved = cursor_of(&following, &party) != cursor_of(&next, &party);
        next = following;
        if !moved {
            break;
        }
    }
    assert_eq!(seen, [a1.as_str(), a2.as_str()], "exactly ttd's events of instance A, to the end of the feed");
    assert_eq!(cursor_of(&next, &party), 4, "the whole feed was read: {next}");

    // Missing, forged, other-instance and nonexistent-instance keys all look the same.
    let forged = format!("{}x", &key_a[..key_a.len() - 1]);
    let mut details = Vec::new();
    for (party, guid, key) in [
        (1337, GUID_A, None),
        (1337, GUID_A, Some(forged.as_str())),
        (1337, GUID_A, Some(key_b.as_str())),
        (1337, "11111111-2222-4333-8444-555555555555", Some(key_a.as_str())),
        (1338, GUID_A, Some(key_a.as_str())),
    ] {
        let body = assert_problem(read(&app, party, guid, key, "after=0").await, 401).await;
        details.push(body["detail"].clone());
    }
    assert!(details.windows(2).all(|w| w[0] == w[1]), "{details:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let mut config = test_config();
    config.instance_access.ttl_seconds = 0;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    publish(&app, 1337, GUID_A, "t").await;
    let key = key_for(&app, 1337, GUID_A).await;
    assert_problem(read(&app, 1337, GUID_A, Some(&key), "after=0").await, 401).await;
    app.shutdown().await;
}

#[tokio::test]
async fn anonymous_reads_are_rate_limited_per_client() {
    let mut config = test_config();
    config.instance_access.rate_per_minute_per_client = 3;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    for _ in 0..3 {
        assert_eq!(read(&app, 1337, GUID_A, Some("guess"), "after=0").await.status(), 401);
    }
    let resp = read(&app, 1337, GUID_A, Some("guess"), "after=0").await;
    let retry: u64 = resp.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_problem(resp, 429).await;
    app.shutdown().await;
}

#[tokio::test]
async fn anonymous_reads_are_rate_limited_per_instance() {
    let mut config = test_config();
    config.instance_access.rate_per_minute_per_instance = 2;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    publish(&app, 1337, GUID_A, "t").await;
    let key = key_for(&app, 1337, GUID_A).await;
    assert_eq!(read(&app, 1337, GUID_A, Some(&key), "after=0").await.status(), 200);
    assert_eq!(read(&app, 1337, GUID_A, Some(&key), "after=0").await.status(), 200);
    assert_problem(read(&app, 1337, GUID_A, Some(&key), "after=0").await, 429).await;
    // Another instance is not affected.
    assert_eq!(read(&app, 1337, GUID_B, Some(&key), "after=0").await.status(), 401);
    app.shutdown().await;
}

/// The cursor at the current end of party 1337's feed.
async fn end_cursor(app: &TestApp, token: &str) -> String {
    let resp = app.get_bearer("/events/api/v1/app/party?party=1337&after=0&size=1000", token).await;
    let next = resp.headers()["next"].to_str().unwrap().to_owned();
    next.rsplit("after=").next().unwrap().to_owned()
}

/// A request parked on an empty page is woken by the append itself: the
/// change feed (other instances' appends) is read once a minute, so only
/// the in-process wake-up can answer it within its 20 s wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_is_answered_as_soon_as_an_event_is_published() {
    let mut config = test_config();
    config.delivery.change_feed_poll_ms = 60_000;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    publish(&app, 1337, GUID_A, "before").await;
    let user = app.user_token(1337, 1337, 2).await;
    let cursor = end_cursor(&app, &user).await;
    let url = app.url(&format!("/events/api/v1/app/party?party=1337&after={cursor}&wait=30"));
    let http = app.http.clone();
    let token = user.clone();
    let waiter = tokio::spawn(async move {
        let resp = http.get(url).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap();
        resp.json::<Vec<Value>>().await.unwrap()
    });
    app.until_parked(1).await;
    assert!(!waiter.is_finished(), "the request waits while there is nothing");
    let id = publish(&app, 1337, GUID_A, "after").await;
    // Had the append not woken it, it would answer empty when its wait is
    // over (the poll comes after that).
    let body = waiter.await.unwrap();
    assert_eq!(ids(&body), [id.as_str()], "woken by the append, before its wait or the poll");

    // Nothing arrives: an empty page with next after the wait, which it
    // waited at the head of the feed.
    let parks = app.parks();
    let resp = app
        .get_bearer(
            &format!("/events/api/v1/app/party?party=1337&after={}&wait=1", end_cursor(&app, &user).await),
            &user,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("next").is_some());
    assert!(resp.json::<Vec<Value>>().await.unwrap().is_empty());
    assert_eq!(app.parks(), parks + 1, "it waited for an append");
    let body =
        assert_problem(app.get_bearer("/events/api/v1/app/party?party=1337&after=0&wait=31", &user).await, 400).await;
    assert_eq!(body["detail"], "The 'wait' parameter must be a number of seconds from 0 to 30.");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_sees_events_published_through_another_instance_within_the_poll_interval() {
    let account = EmulatorAccount::new();
    let mut config = test_config();
    config.delivery.change_feed_poll_ms = 100;
    let reader = TestApp::spawn_with(config.clone(), Overrides { emulator: Some(account.clone()) }).await;
    let writer = TestApp::spawn_with(config, Overrides { emulator: Some(account) }).await;
    publish(&writer, 1337, GUID_A, "before").await;
    let user = reader.user_token(1337, 1337, 2).await;
    let cursor = end_cursor(&reader, &user).await;
    let url = reader.url(&format!("/events/api/v1/app/party?party=1337&after={cursor}&wait=30"));
    let http = reader.http.clone();
    let waiter = tokio::spawn(async move {
        let resp = http.get(url).header(AUTHORIZATION, format!("Bearer {user}")).send().await.unwrap();
        resp.json::<Vec<Value>>().await.unwrap()
    });
    reader.until_parked(1).await;
    let id = publish(&writer, 1337, GUID_A, "elsewhere").await;
    // Had the reader's poll not seen it, the request would answer empty
    // when its 30 s wait is over.
    let body = waiter.await.unwrap();
    assert_eq!(ids(&body), [id.as_str()], "the reader's poll saw the other instance's append");
    reader.shutdown().await;
    writer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_bounded_and_released_when_the_client_goes_away() {
    let mut config = test_config();
    config.limits.max_waiters = 1;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let user = app.user_token(1337, 1337, 2).await;
    let url = app.url("/events/api/v1/app/party?party=1337&after=0&wait=30");
    // A client that gives up after 500 ms.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let held = {
        let (url, user) = (url.clone(), user.clone());
        tokio::spawn(async move { impatient.get(url).header(AUTHORIZATION, format!("Bearer {user}")).send().await })
    };
    app.until_parked(1).await;
    assert_eq!(app.holding_waiters(), 1);
    let body =
        assert_problem(app.get_bearer("/events/api/v1/app/party?party=1337&after=0&wait=5", &user).await, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("waiting requests"), "{body}");
    let gave_up = held.await.unwrap().expect_err("the impatient client timed out");
    assert!(gave_up.is_timeout(), "{gave_up}");
    // Its request is cancelled with the connection: the slot is free again.
    until("the cancelled waiter's slot is released", || app.holding_waiters() == 0).await;
    let resp = app.get_bearer("/events/api/v1/app/party?party=1337&after=0&wait=1", &user).await;
    assert_eq!(resp.status(), 200, "the freed slot is taken by the next long poll");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiting_requests_at_once() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let url = app.url("/events/api/v1/app/party?party=1337&after=0&wait=30");
    let http = app.http.clone();
    let waiter =
        tokio::spawn(async move { http.get(url).header(AUTHORIZATION, format!("Bearer {user}")).send().await });
    app.until_parked(1).await;
    // The app gives in-flight requests 5 s before it drops them: a long
    // poll that waited out its 30 s would be dropped, not answered.
    app.shutdown().await;
    let resp = waiter.await.unwrap().expect("the in-flight request is answered, not dropped");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("next").is_some());
    assert!(resp.json::<Vec<Value>>().await.unwrap().is_empty());
}

/// Cosmos DB requests the instance made so far (from its metrics): the
/// change feed's reads, and all the others.
async fn cosmos_requests(app: &TestApp) -> (f64, f64) {
    let all = metric(app, "cosmos_requests_total").await;
    let change_feed = metric(app, "cosmos_requests_total{operation=\"change_feed\"").await;
    (change_feed, all - change_feed)
}

/// Long-polls waiting on many feeds cost the instance no more Cosmos DB
/// requests than one does, and none cost nothing: appends made elsewhere
/// reach them through the instance's one change-feed reader (which runs
/// only while something waits), not a poll per watched feed.
///
/// Counted, not timed against a fixed bound: while requests wait, the
/// instance's Cosmos DB requests are the change feed's reads and nothing
/// else; thirty of them take about as long with forty-one waiters as with
/// one (a reader per waiter would read forty-one times as often); and once
/// nobody waits, the time thirty reads took passes without a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_long_polls_cost_per_instance_not_per_feed() {
    const FEEDS: u64 = 40;
    const READS: f64 = 30.0;
    let mut config = test_config();
    config.cosmos.repair_interval_seconds = 0;
    config.delivery.enabled = false;
    // The reader's pace, without its backing off while nothing changes.
    config.delivery.change_feed_idle_poll_ms = config.delivery.change_feed_poll_ms;
    let poll = Duration::from_millis(config.delivery.change_feed_poll_ms);
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let mut tokens = Vec::new();
    for party in 0..=FEEDS {
        tokens.push(app.user_token(50_000 + party, 50_000 + party, 2).await);
    }
    let park = |party: u64, token: String| {
        let url = app.url(&format!("/events/api/v1/app/party?party={}&after=0&wait=20", 50_000 + party));
        let http = app.http.clone();
        tokio::spawn(async move {
            http.get(url).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap().status()
        })
    };
    // Until the change feed has been read READS more times: how long that
    // took, and how many other requests were made meanwhile.
    let reads = || async {
        let started = std::time::Instant::now();
        let (feed, others) = cosmos_requests(&app).await;
        eventually("the change feed is read while requests wait", || async {
            cosmos_requests(&app).await.0 >= feed + READS
        })
        .await;
        let took = started.elapsed();
        (took, cosmos_requests(&app).await.1 - others)
    };
    let mut waiters = vec![park(FEEDS, tokens.pop().unwrap())];
    app.until_parked(1).await;
    // The reader's first reads, once it starts, may come with a look at
    // the watched feed; from then on it only polls.
    reads().await;
    let (one, others) = reads().await;
    assert_eq!(others, 0.0, "one parked long-poll: only the change feed is read");
    for (party, token) in (0..FEEDS).zip(tokens) {
        waiters.push(park(party, token));
    }
    app.until_parked(FEEDS as usize + 1).await;
    reads().await;
    let (many, others) = reads().await;
    assert_eq!(others, 0.0, "{} parked long-polls: only the change feed is read", FEEDS + 1);
    // The reads come at the reader's pace (a round of a few requests per
    // poll interval), not the waiters': a reader per waiter would make
    // them forty-one times as frequent. (A margin of 8 between two spans of
    // several intervals each, measured the same way.)
    println!("{READS} change-feed reads took {one:?} with one waiter, {many:?} with {}", FEEDS + 1);
    assert!(one >= poll && many >= poll, "{READS} reads take more than one interval: {one:?}, {many:?}");
    assert!(many * 8 >= one, "{} waiters: {READS} reads in {many:?}, against {one:?} with one", FEEDS + 1);
    // Once nobody waits (every long-poll ran out its 20 s), the reader
    // stops: after a first span in which it may finish a round, a span in
    // which it read the change feed READS times while one request waited
    // (measured above, on this machine) passes without a single request.
    for w in waiters {
        assert_eq!(w.await.unwrap(), 200);
    }
    app.until_parked(0).await;
    tokio::time::sleep(one).await;
    let before = cosmos_requests(&app).await;
    tokio::time::sleep(one).await;
    assert_eq!(cosmos_requests(&app).await, before, "nobody waits: no request in the time of {READS} reads");
    app.shutdown().await;
}

/// A publish that returned through one instance is in the very next read
/// through another, even while long-polls there watch the feed (whose
/// shared, possibly older pages answer only readers that were woken). The
/// other instance's change feed is read once a minute here, so only a read
/// of its own can see the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_in_the_next_read_through_another_instance_while_others_wait() {
    let account = EmulatorAccount::new();
    let mut config = test_config();
    config.delivery.enabled = false;
    config.delivery.change_feed_poll_ms = 60_000;
    let reader = TestApp::spawn_with(config.clone(), Overrides { emulator: Some(account.clone()) }).await;
    let writer = TestApp::spawn_with(config, Overrides { emulator: Some(account) }).await;
    publish(&writer, 1337, GUID_A, "first").await;
    let user = reader.user_token(1337, 1337, 2).await;
    let cursor = end_cursor(&reader, &user).await;
    let url = reader.url(&format!("/events/api/v1/app/party?party=1337&after={cursor}&wait=20"));
    let (http, token) = (reader.http.clone(), user.clone());
    let waiter = tokio::spawn(async move {
        http.get(url).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap().status()
    });
    reader.until_parked(1).await;
    let page = |app: &TestApp| {
        let (app_url, user) = (app.url("/events/api/v1/app/party?party=1337&after=0&size=100"), user.clone());
        let http = app.http.clone();
        async move {
            let resp = http.get(app_url).header(AUTHORIZATION, format!("Bearer {user}")).send().await.unwrap();
            resp.json::<Vec<Value>>().await.unwrap().len()
        }
    };
    assert_eq!(page(&reader).await, 1);
    publish(&writer, 1337, GUID_A, "second").await;
    assert_eq!(page(&reader).await, 2, "the publish that returned is in the next read");
    writer.shutdown().await;
    reader.shutdown().await;
    waiter.abort();
}
