//! Push delivery (issue 16): every subscription's events reach its endpoint
//! in feed order, signed, at least once, never dropped; retries on the
//! schedule, disable and enable, replay, delete; the PDP decides per
//! consumer; one deliverer per subscription across instances, handed over
//! when one stops or dies.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use altinn_events::Overrides;
use altinn_events::feeds::emulator::EmulatorAccount;
use azure_data_cosmos::fault_injection::{
    CustomResponseBuilder, FaultInjectionConditionBuilder, FaultInjectionResultBuilder, FaultInjectionRule,
    FaultInjectionRuleBuilder, FaultOperationType,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::subscriptions::{Received, Receiver, subscribe};

const APP_SOURCE: &str = "https://ttd.apps.altinn.no/ttd/apps-test";
const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";
const VALIDATION: &str = "platform.events.validatesubscription";

pub(crate) fn delivery_config() -> altinn_events::config::Config {
    let mut config = test_config();
    config.webhooks.validation_retry_seconds = vec![1, 1];
    config.webhooks.timeout_seconds = 5;
    config
}

/// Creates a subscription and waits until it is validated: its id and secret.
pub(crate) async fn subscribed(app: &TestApp, token: &str, body: Value) -> (u64, String) {
    let resp = subscribe(app, token, &body).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_u64().unwrap();
    until_view(app, token, id, "validated", |s| s["validated"] == true).await;
    (id, created["secret"].as_str().unwrap().to_owned())
}

pub(crate) async fn view(app: &TestApp, token: &str, id: u64) -> Value {
    let resp = app.get_bearer(&format!("/events/api/v1/subscriptions/{id}"), token).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Polls the subscription until `done` holds ([`PATIENCE`] at most).
pub(crate) async fn until_view(
    app: &TestApp,
    token: &str,
    id: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = view(app, token, id).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events a receiver got (not the validation push), in arrival order.
pub(crate) fn events(receiver: &Receiver) -> Vec<Received> {
    receiver.received().into_iter().filter(|r| r.json()["type"] != VALIDATION).collect()
}

pub(crate) fn ids(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect()
}

/// Waits ([`PATIENCE`] at most) until the receiver got `n` events.
pub(crate) async fn until_events(receiver: &Receiver, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = events(receiver);
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {n} events; got {}", got.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of a feed read page by page through the query endpoint.
async fn feed_ids(app: &TestApp, path: &str, token: &str) -> Vec<String> {
    let resp = app.get_bearer(path, token).await;
    assert_eq!(resp.status(), 200);
    let page: Vec<Value> = resp.json().await.unwrap();
    page.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

/// Publishes an app event about party 1337's instance number `n`.
async fn publish(app: &TestApp, user: &str, access: &str, n: u64) -> String {
    let guid = format!("{n:08x}-0000-4000-8000-000000000000");
    post_app_event(app, user, access, ("ttd", "apps-test"), 1337, &guid, "app.instance.created").await
}

struct Publisher {
    user: String,
    access: String,
}

impl Publisher {
    async fn new(app: &TestApp) -> Self {
        Self { user: app.user_token(1337, 1337, 2).await, access: app.platform_token("ttd", "apps-test").await }
    }

    async fn publish(&self, app: &TestApp, n: u64) -> String {
        publish(app, &self.user, &self.access, n).await
    }
}

async fn post_json(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = app.http.post(app.url(path)).header(AUTHORIZATION, format!("Bearer {token}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// 200 events from 8 concurrent publishers reach the endpoint in feed
/// order, each once, signed with the subscription's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_concurrent_publishers_arrive_in_feed_order_once_and_signed() {
    let app = TestApp::spawn_with(delivery_config(), Overrides::default()).await;
    let receiver = Receiver::start().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let (id, secret) = subscribed(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;

    let publisher = Arc::new(Publisher::new(&app).await);
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for p in 0..8u64 {
        let (app, publisher) = (app.clone(), publisher.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                publisher.publish(&app, p * 100 + i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    until_events(&receiver, 200).await;
    // Nothing failed, so nothing comes twice. One more event, published
    // after the 200, is pushed after them (one deliverer, in feed order): a
    // repeat of any of them would have come before it.
    let app = Arc::into_inner(app).unwrap();
    let last = publisher.publish(&app, 999).await;
    let got = until_events(&receiver, 201).await;
    assert_eq!(ids(&got).last(), Some(&last), "the later event came last");
    let feed = feed_ids(&app, "/events/api/v1/app/ttd/apps-test?after=0&size=1000", &owner).await;
    assert_eq!(feed.len(), 201);
    assert_eq!(got.len(), 201, "no duplicate");
    assert_eq!(ids(&got), feed, "in feed order");
    let message_ids: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(message_ids.len(), 201, "one webhook-id per event");
    for push in &got {
        assert!(push.verifies(&secret), "signed: {}", push.id);
        assert_eq!(push.content_type, "application/json");
        assert_eq!(push.json()["source"].as_str().unwrap().split("/instances/").next(), Some(APP_SOURCE));
    }
    let shown = until_view(&app, &owner, id, "caught up", |s| cursor_for_check(s) == 201).await;
    assert_eq!(shown["status"], "active");
    assert!(shown["delivery"]["oldestPending"].is_null(), "nothing pending: {shown}");
    let attempts: Value =
        app.get_bearer(&format!("/events/api/v1/subscriptions/{id}/deliveries"), &owner).await.json().await.unwrap();
    let newest = &attempts["deliveries"][0];
    assert_eq!(newest["eventId"], feed[200].as_str(), "newest first: {attempts}");
    assert_eq!(newest["status"], 200);
    assert!(newest["latencyMs"].is_u64());
    assert_eq!((&newest["type"], &newest["attempt"]), (&json!("app.instance.created"), &json!(1)), "{newest}");
    app.shutdown().await;
}

/// The position the checkpoint cursor of a subscription's view stands for.
fn cursor_for_check(view: &Value) -> u64 {
    checkpoint_in(view, "urn:altinn:resource:app_ttd_apps-test")
}

/// The position in `resource`'s feed that a view's checkpoint stands for.
fn checkpoint_in(view: &Value, resource: &str) -> u64 {
    let feed = altinn_events::domain::FeedId::Resource(resource.into());
    cursor_of(&format!("http://x/?after={}", view["delivery"]["checkpoint"].as_str().unwrap()), &feed)
}

/// The endpoint fails, then recovers: every event arrives, in order; the
/// same event is retried (same webhook-id) and later ones wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_holds_later_events_back_and_gets_everything_when_it_recovers() {
    let mut config = delivery_config();
    config.delivery.retry_schedule_seconds = vec![1, 1, 1, 1, 1];
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let receiver = Receiver::start().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let (id, _) = subscribed(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    receiver.answer(500);
    let publisher = Publisher::new(&app).await;
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(publisher.publish(&app, n).await);
    }
    // Two attempts of the first event, nothing of the others.
    until("two failed attempts", || events(&receiver).len() >= 2).await;
    let failing = until_view(&app, &owner, id, "failing", |s| s["status"] == "failing").await;
    assert!(failing["lastError"].as_str().unwrap().contains("500"), "{failing}");
    receiver.answer(200);
    let got = until_events(&receiver, 2 + 5).await;
    let got = ids(&got);
    assert!(got[..2].iter().all(|e| *e == published[0]), "retries are of the first event: {got:?}");
    let delivered: Vec<String> = got[2..].to_vec();
    assert_eq!(delivered, published, "every event, in order, after the retries");
    let attempts: Vec<Received> = events(&receiver);
    assert_eq!(attempts[0].id, attempts[2].id, "a retry has the same webhook-id");
    let back = until_view(&app, &owner, id, "active again", |s| s["status"] == "active").await;
    assert!(back.get("lastError").is_none(), "{back}");
    // The attempts at the first event, numbered: failed ones, then the one
    // that went through; the next event's first attempt after it (once the
    // deliverer has stored them: it flushes its state now and then).
    let deliveries = || async {
        let path = format!("/events/api/v1/subscriptions/{id}/deliveries");
        app.get_bearer(&path, &owner).await.json::<Value>().await.unwrap()
    };
    let stored = |shown: &Value| shown.to_string().contains(published[4].as_str());
    eventually("every attempt stored", || async { stored(&deliveries().await) }).await;
    let shown = deliveries().await;
    let first: Vec<(u64, Value)> = shown["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|a| a["eventId"] == published[0].as_str())
        .map(|a| (a["attempt"].as_u64().unwrap(), a["status"].clone()))
        .collect();
    let n = first.len();
    assert!(n >= 3, "{shown}");
    assert_eq!(first.iter().map(|(a, _)| *a).collect::<Vec<_>>(), (1..=n as u64).collect::<Vec<_>>(), "{shown}");
    assert!(first[..n - 1].iter().all(|(_, s)| *s == 500) && first[n - 1].1 == 200, "{first:?}");
    let second = shown["deliveries"].as_array().unwrap().iter().find(|a| a["eventId"] == published[1].as_str());
    assert_eq!(second.unwrap()["attempt"], 1, "{shown}");
    app.shutdown().await;
}

/// Retries follow the schedule; when it runs out the subscription is
/// disabled with the reason; `enable` delivers the rest from the checkpoint.
/// The waits are a minute and two, by the store's clock, which the test
/// moves: a retry comes when the clock says it is due, not sooner, and
/// without the test sleeping through the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_schedule_disables_and_enable_delivers_the_rest() {
    let mut config = delivery_config();
    config.delivery.retry_schedule_seconds = vec![60, 120];
    // The leases outlast every move of the clock below: the deliverers of
    // this one instance keep their subscriptions throughout.
    config.delivery.lease_seconds = 864_000;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let (receiver, control) = (Receiver::start().await, Receiver::start().await);
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let (id, _) = subscribed(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    // Another subscription of the feed, whose endpoint answers: what it
    // got tells how far delivery went.
    subscribed(&app, &owner, json!({"endPoint": control.url, "sourceFilter": APP_SOURCE})).await;
    receiver.answer(503);
    let publisher = Publisher::new(&app).await;
    let mut published = Vec::new();
    for n in 0..3 {
        published.push(publisher.publish(&app, n).await);
    }
    // Each failure is stored with its retry's due time before the clock
    // moves on to it.
    let clock = app.feeds.clock();
    until_view(&app, &owner, id, "the first failure", |s| s["delivery"]["failures"].as_u64() >= Some(1)).await;
    clock.advance(60);
    until_view(&app, &owner, id, "the second failure", |s| s["delivery"]["failures"].as_u64() >= Some(2)).await;
    clock.advance(120);
    let disabled = until_view(&app, &owner, id, "disabled", |s| s["status"] == "disabled").await;
    assert!(disabled["lastError"].as_str().unwrap().contains("disabled after 3 failed attempts"), "{disabled}");
    let stuck = events(&receiver)[0].json();
    assert_eq!(disabled["delivery"]["oldestPending"], stuck["time"], "the event it is stuck on: {disabled}");
    assert_eq!(cursor_for_check(&disabled), 0, "nothing passed");
    let attempts: Value =
        app.get_bearer(&format!("/events/api/v1/subscriptions/{id}/deliveries"), &owner).await.json().await.unwrap();
    let attempts = attempts["deliveries"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let times: Vec<time::OffsetDateTime> = attempts
        .iter()
        .rev()
        .map(|a| {
            assert_eq!(a["status"], 503);
            assert_eq!(a["eventId"], published[0].as_str());
            time::OffsetDateTime::parse(a["time"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
                .unwrap()
        })
        .collect();
    // By the store's clock: each retry came once its wait was over (not
    // before the test moved the clock there), and the waits are the
    // schedule's in its order (the real time between two attempts, a
    // fraction of a second, would have to pass a minute to blur them).
    let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]).as_seconds_f64()).collect();
    assert!(gaps[0] >= 59.99 && gaps[0] < 120.0, "first wait 60 s: {gaps:?}");
    assert!(gaps[1] >= 119.99 && gaps[1] < 180.0, "second wait 120 s: {gaps:?}");
    // Disabled: nothing more is tried, whatever the time. A day later by
    // the clock, another event is published: the other subscription of the
    // feed gets it; this one gets nothing.
    let tried = events(&receiver).len();
    clock.advance(86_400);
    published.push(publisher.publish(&app, 3).await);
    assert_eq!(ids(&until_events(&control, 4).await), published, "the other subscription gets every event");
    assert_eq!(events(&receiver).len(), tried, "a disabled subscription is not pushed");
    // Enabled: everything from the checkpoint, in order.
    receiver.answer(200);
    let resp = post_json(&app, &format!("/events/api/v1/subscriptions/{id}/enable"), &owner, None).await;
    assert_eq!(resp.status(), 200);
    let got = until_events(&receiver, tried + 4).await;
    assert_eq!(ids(&got[tried..]), published);
    until_view(&app, &owner, id, "active", |s| {
        s["status"] == "active" && s["delivery"]["oldestPending"].is_null() && cursor_for_check(s) == 4
    })
    .await;
    // Only the owner enables.
    let other = app.org_token("skd", "altinn:events/skd/taxreport").await;
    let resp = post_json(&app, &format!("/events/api/v1/subscriptions/{id}/enable"), &other, None).await;
    assert_problem(resp, 403).await;
    app.shutdown().await;
}

/// Events the consumer's PDP decision denies are not pushed (the checkpoint
/// passes them); another consumer on the same feed gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_consumer_is_pushed_only_what_the_pdp_permits_it() {
    let pdp = FakePdp::start(PdpMode::UsersOwnParty).await;
    let mut config = delivery_config();
    config.pdp.url = Some(pdp.url.clone());
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let scope = "&scope=altinn:events.subscribe";
    let sophie = app.get_text(&format!("/localtest/token/user?userId=1337&partyId=1337&authLevel=2{scope}")).await;
    let ola = app.get_text(&format!("/localtest/token/user?userId=1338&partyId=1338&authLevel=2{scope}")).await;
    let (sa, _) = subscribed(&app, &sophie, json!({"endPoint": a.url, "resourceFilter": ESTATE})).await;
    let (sb, _) = subscribed(&app, &ola, json!({"endPoint": b.url, "resourceFilter": ESTATE})).await;
    let publisher = app.org_token("ttd", "altinn:events.publish").await;
    let mut expected = (Vec::new(), Vec::new());
    for n in 0..12 {
        let party = if n % 3 == 0 { 1338 } else { 1337 };
        let id = format!("estate-{n}");
        let event = json!({"specversion": "1.0", "id": id, "type": "no.altinn.estate.registered",
            "source": "urn:no:skd:estate", "subject": format!("/party/{party}"), "resource": ESTATE});
        let resp = app
            .http
            .post(app.url("/events/api/v1/events"))
            .header(AUTHORIZATION, format!("Bearer {publisher}"))
            .header(CONTENT_TYPE, "application/cloudevents+json")
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        if party == 1337 { &mut expected.0 } else { &mut expected.1 }.push(id);
    }
    assert_eq!(ids(&until_events(&a, 8).await), expected.0);
    assert_eq!(ids(&until_events(&b, 4).await), expected.1);
    until_view(&app, &sophie, sa, "past the denied events", |s| checkpoint_in(s, ESTATE) == 12).await;
    until_view(&app, &ola, sb, "past the denied events", |s| checkpoint_in(s, ESTATE) == 12).await;
    assert_eq!(events(&a).len(), 8, "nothing of Ola's");
    assert_eq!(events(&b).len(), 4, "nothing of Sophie's");
    app.shutdown().await;
}

/// The PDP is down: nothing is pushed (fail closed) and nothing is skipped;
/// when it is back, everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_pushed_or_skipped_while_the_pdp_is_down() {
    let pdp = FakePdp::start(PdpMode::PermitAll).await;
    let mut config = delivery_config();
    config.pdp.url = Some(pdp.url.clone());
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let receiver = Receiver::start().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let (id, _) = subscribed(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    pdp.set(PdpMode::Status(503));
    pdp.take_hits();
    let publisher = Publisher::new(&app).await;
    let mut published = Vec::new();
    for n in 0..3 {
        published.push(publisher.publish(&app, n).await);
    }
    until("the deliverer asked the PDP", || pdp.take_hits() > 0).await;
    // The deliverer counts a read the PDP could not decide once it has
    // given that read up (no push follows it): then nothing was pushed.
    let unavailable = || metric(&app, "delivery_pdp_unavailable_total");
    eventually("the deliverer gave up a read for the PDP", || async { unavailable().await >= 1.0 }).await;
    assert!(events(&receiver).is_empty(), "fail closed");
    let shown = view(&app, &owner, id).await;
    assert_eq!(cursor_for_check(&shown), 0, "nothing skipped: {shown}");
    assert_eq!(shown["status"], "active", "the endpoint did not fail: {shown}");
    pdp.set(PdpMode::PermitAll);
    assert_eq!(ids(&until_events(&receiver, 3).await), published);
    app.shutdown().await;
}

/// Deleting a subscription stops its pushes at once; replay re-sends from
/// an event id, a cursor or a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_from_the_given_position_and_delete_stops_pushes() {
    let app = TestApp::spawn_with(delivery_config(), Overrides::default()).await;
    let (receiver, control) = (Receiver::start().await, Receiver::start().await);
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let (id, secret) = subscribed(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    // Another subscription of the feed, kept: it shows how far delivery went.
    subscribed(&app, &owner, json!({"endPoint": control.url, "sourceFilter": APP_SOURCE})).await;
    let publisher = Publisher::new(&app).await;
    let mut published = Vec::new();
    for n in 0..6 {
        published.push(publisher.publish(&app, n).await);
    }
    until_events(&receiver, 6).await;
    let path = format!("/events/api/v1/subscriptions/{id}/replay");
    let replay = |body: Value| post_json(&app, &path, &owner, Some(body));

    // After an event id: the events after it again, with new webhook-ids.
    let resp = replay(json!({"after": published[3]})).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let got = until_events(&receiver, 8).await;
    assert_eq!(ids(&got[6..]), published[4..]);
    assert_ne!(got[6].id, got[4].id, "a replay is a new message");
    assert!(got[6].verifies(&secret));

    // After a cursor of the feed (the view's checkpoint is one): position 1.
    let feed = altinn_events::domain::FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into());
    let resp = replay(json!({"after": cursor_for(&feed, 1)})).await;
    assert_eq!(resp.status(), 200);
    let got = until_events(&receiver, 13).await;
    assert_eq!(ids(&got[8..]), published[1..]);

    // From a time: everything.
    let resp = replay(json!({"from": "2000-01-01T00:00:00Z"})).await;
    assert_eq!(resp.status(), 200);
    let got = until_events(&receiver, 19).await;
    assert_eq!(ids(&got[13..]), published);

    // Bad requests say why; only the owner replays.
    for body in [
        json!({}),
        json!({"after": "0", "from": "2000-01-01T00:00:00Z"}),
        json!({"from": "yesterday"}),
        json!({"after": "no-such-event"}),
        json!({"after": "c1.test.AAAA"}),
        json!({"position": 3}),
    ] {
        let resp = replay(body.clone()).await;
        let problem = assert_problem(resp, 400).await;
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}: {problem}");
    }
    let skd = app.org_token("skd", "altinn:events/skd/taxreport").await;
    let resp =
        post_json(&app, &format!("/events/api/v1/subscriptions/{id}/replay"), &skd, Some(json!({"after": "0"}))).await;
    assert_problem(resp, 403).await;
    let resp = app.get_bearer(&format!("/events/api/v1/subscriptions/{id}/deliveries"), &skd).await;
    assert_problem(resp, 403).await;

    // Deleted: the next events are not pushed, here or anywhere.
    let resp = app
        .http
        .delete(app.url(&format!("/events/api/v1/subscriptions/{id}")))
        .header(AUTHORIZATION, format!("Bearer {owner}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    until("the deliverer stopped", || !app.delivering().contains(&id)).await;
    for n in 10..13 {
        published.push(publisher.publish(&app, n).await);
    }
    // The kept subscription gets them (so they were pushed where they go);
    // the deleted one nothing.
    let kept = until_events(&control, 9).await;
    assert_eq!(ids(&kept), published, "the kept subscription gets every event");
    assert_eq!(events(&receiver).len(), 19, "nothing after the delete");
    app.shutdown().await;
}

/// Slack's incoming webhooks get the event as text, as Altinn sends it.
#[test]
fn slack_gets_the_event_as_text() {
    let event = json!({"id": "e1", "type": "t"});
    let body = altinn_events::deliver::body_for(&"https://hooks.slack.com/services/x".parse().unwrap(), &event);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, json!({"text": event.to_string()}));
    let body = altinn_events::deliver::body_for(&"https://example.com/hook".parse().unwrap(), &event);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), event);
}

fn cluster_config() -> altinn_events::config::Config {
    let mut config = delivery_config();
    config.delivery.buckets = 4;
    config.delivery.lease_seconds = 3;
    config.delivery.change_feed_poll_ms = 100;
    config
}

/// What subscription `id` got: event ids in arrival order.
fn of_subscription(receiver: &Receiver, id: u64) -> Vec<String> {
    let prefix = format!("{id}-");
    ids(&events(receiver).into_iter().filter(|r| r.id.starts_with(&prefix)).collect::<Vec<_>>())
}

/// `got` without repeats (a crash may repeat the pushes since the last
/// stored checkpoint), first arrival kept.
fn without_repeats(got: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    got.iter().filter(|e| seen.insert(e.as_str())).cloned().collect()
}

/// Two instances on one store: each subscription is delivered by one of
/// them; stopping the holder hands it over with nothing lost or repeated;
/// a holder that dies hands it over when its lease runs out, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_delivers_each_subscription_and_hands_it_over_when_it_stops_or_dies() {
    let account = EmulatorAccount::new();
    let on = || Overrides { emulator: Some(account.clone()) };
    let first = TestApp::spawn_with(cluster_config(), on()).await;
    let second = TestApp::spawn_with(cluster_config(), on()).await;
    let receiver = Receiver::start().await;
    let owner = first.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let mut subscriptions = Vec::new();
    for n in 0..4 {
        let url = format!("{}?n={n}", receiver.url);
        let (id, _) = subscribed(&first, &owner, json!({"endPoint": url, "sourceFilter": APP_SOURCE})).await;
        subscriptions.push(id);
    }
    // Every subscription runs on exactly one instance, and both work.
    until("the subscriptions are shared", || {
        let (a, b) = (first.delivering(), second.delivering());
        a.is_disjoint(&b) && a.len() + b.len() == 4 && !a.is_empty() && !b.is_empty()
    })
    .await;
    // Tokens name their issuer: each instance's own local issuer.
    let publishers = [Publisher::new(&first).await, Publisher::new(&second).await];
    let mut published = Vec::new();
    for n in 0..10 {
        let (through, publisher) = if n % 2 == 0 { (&first, &publishers[0]) } else { (&second, &publishers[1]) };
        published.push(publisher.publish(through, n).await);
    }
    until_events(&receiver, 4 * 10).await;
    for id in &subscriptions {
        assert_eq!(of_subscription(&receiver, *id), published, "subscription {id}");
    }

    // The holder of the first subscription stops: the other takes it over.
    let holder_is_first = first.delivering().contains(&subscriptions[0]);
    let (stopping, survivor) = if holder_is_first { (first, second) } else { (second, first) };
    stopping.shutdown().await;
    until("the survivor delivers all", || survivor.delivering().len() == 4).await;
    let publisher = Publisher::new(&survivor).await;
    for n in 10..20 {
        published.push(publisher.publish(&survivor, n).await);
    }
    // One more, published after those: each subscription gets it after
    // them (one deliverer each, in feed order), so a repeat of any of them
    // would have come before it.
    published.push(publisher.publish(&survivor, 20).await);
    until_events(&receiver, 4 * 21).await;
    for id in &subscriptions {
        assert_eq!(of_subscription(&receiver, *id), published, "subscription {id}: a handover on stop repeats nothing");
    }

    // A third instance joins; the survivor dies: what it held moves on when
    // its leases run out; nothing is lost, and the order holds.
    // The third renews its own leases only every 200 s (a 600 s lease), the
    // dying one's last 3 s: the third must take them over when they expire,
    // not at its next renewal round, which is beyond this test's patience.
    let mut slow = cluster_config();
    slow.delivery.lease_seconds = 600;
    assert!(Duration::from_secs(slow.delivery.lease_seconds / 3) > PATIENCE);
    let third = TestApp::spawn_with(slow, on()).await;
    until("the third takes a share", || !third.delivering().is_empty()).await;
    survivor.kill().await;
    let publisher = Publisher::new(&third).await;
    for n in 21..31 {
        published.push(publisher.publish(&third, n).await);
    }
    until("the third delivers all, when the dead one's leases expire", || third.delivering().len() == 4).await;
    let deadline = Instant::now() + PATIENCE;
    for id in &subscriptions {
        loop {
            let got = without_repeats(&of_subscription(&receiver, *id));
            if got.len() == published.len() {
                assert_eq!(got, published, "subscription {id}");
                break;
            }
            assert!(Instant::now() < deadline, "subscription {id} got {} of {}", got.len(), published.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    third.shutdown().await;
}

/// A stopping instance stores its deliverers' checkpoints before it lets
/// their buckets go: the next holder repeats nothing, even when the
/// stopping instance's writes are slow (800 ms each here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_instance_finishes_its_push_and_stores_the_checkpoint_before_it_lets_go() {
    let mut config = cluster_config();
    // One bucket: the first instance holds it. Checkpoints are stored only
    // when it stops (nothing is flushed on the way).
    config.delivery.buckets = 1;
    config.delivery.flush_ms = 600_000;
    config.delivery.change_feed_poll_ms = 50;
    let account = EmulatorAccount::new();
    let first = TestApp::spawn_with(config.clone(), Overrides { emulator: Some(account.clone()) }).await;
    let receiver = Receiver::start().await;
    let owner = first.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let (id, _) = subscribed(&first, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    until("the first instance delivers", || first.delivering().contains(&id)).await;
    let second = TestApp::spawn_with(config, Overrides { emulator: Some(account.clone()) }).await;
    let publisher = Publisher::new(&first).await;
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(publisher.publish(&first, n).await);
    }
    until_events(&receiver, 5).await;
    assert!(second.delivering().is_empty(), "one bucket, held by the first");
    // The sixth push is in flight (the receiver answers it after 1.5 s)
    // when the first instance is told to stop: the second must not take
    // the bucket before that push is answered and its checkpoint stored.
    receiver.delay(Duration::from_millis(1500));
    published.push(publisher.publish(&first, 5).await);
    until_events(&receiver, 6).await;
    first.shutdown().await;
    receiver.delay(Duration::ZERO);
    until("the second takes over", || second.delivering().contains(&id)).await;
    let publisher = Publisher::new(&second).await;
    for n in 6..9 {
        published.push(publisher.publish(&second, n).await);
    }
    // One more: it comes after the others (one deliverer, in feed order),
    // so a repeat of any of them would have come before it.
    published.push(publisher.publish(&second, 9).await);
    until_events(&receiver, 10).await;
    assert_eq!(ids(&events(&receiver)), published, "nothing repeated, nothing lost");
    second.shutdown().await;
}

/// What Cosmos DB answers an identity that lacks a data action (RBAC):
/// 403, substatus 5301.
fn forbidden(id: &str, container: &str, op: FaultOperationType) -> Arc<FaultInjectionRule> {
    let denied = CustomResponseBuilder::new(azure_core::http::StatusCode::Forbidden).with_sub_status(5301).build();
    let result = FaultInjectionResultBuilder::new().with_custom_response(denied).build();
    let condition = FaultInjectionConditionBuilder::new().with_operation_type(op).with_container_id(container).build();
    Arc::new(FaultInjectionRuleBuilder::new(id, result).with_condition(condition).build())
}

/// A rule that changes nothing and counts the requests it matches.
fn counted(id: &str, container: &str, op: FaultOperationType) -> Arc<FaultInjectionRule> {
    let result = FaultInjectionResultBuilder::new().build();
    let condition = FaultInjectionConditionBuilder::new().with_operation_type(op).with_container_id(container).build();
    Arc::new(FaultInjectionRuleBuilder::new(id, result).with_condition(condition).build())
}

/// The deliver identity's rights as `infra/` grants them: every write to
/// the events container is refused as Cosmos DB refuses a missing data
/// action; and rules that count its writes to the subscriptions container
/// (to show that rules of this kind match where they should). The SDK
/// matches a rule's container by a substring of the request's URL
/// (`dbs/events/colls/{container}/...`), and the database is `events` too:
/// hence `colls/`.
fn deliver_identity() -> (Vec<Arc<FaultInjectionRule>>, Vec<Arc<FaultInjectionRule>>) {
    use FaultOperationType::*;
    let writes = [CreateItem, UpsertItem, ReplaceItem, DeleteItem, PatchItem, BatchItem];
    let denied: Vec<_> =
        writes.iter().map(|op| forbidden(&format!("events-{}", op.as_str()), "colls/events/", *op)).collect();
    let allowed: Vec<_> = writes
        .iter()
        .map(|op| counted(&format!("subscriptions-{}", op.as_str()), "colls/subscriptions/", *op))
        .collect();
    (denied, allowed)
}

/// The API and push delivery as separate roles on one store (the chart's
/// two Deployments): the API instance serves subscriptions but never
/// validates or pushes; the deliver instance validates and pushes what the
/// API stored, and serves only probes and metrics. Subscriptions and their
/// delivery state are in their own container, and the deliver instance
/// works with the rights `infra/` gives its identity: any write of its to
/// the events container would be refused (403), and none is tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_deliver_role_split_the_work() {
    use altinn_events::config::Role;
    use altinn_events::feeds::StoredIn;
    let account = EmulatorAccount::new();
    let (denied, allowed) = deliver_identity();
    let mut config = cluster_config();
    // No validator looks for due attempts on its own within the test: what
    // is validated here is validated because the validator was told.
    config.webhooks.validation_sweep_seconds = 3600;
    config.role = Role::Api;
    let api = TestApp::spawn_with(config.clone(), Overrides { emulator: Some(account.clone()) }).await;
    let receiver = Receiver::start().await;
    let owner = api.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let resp = subscribe(&api, &owner, &json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let publisher = Publisher::new(&api).await;
    let first = publisher.publish(&api, 1).await;

    config.role = Role::Deliver;
    let rules = denied.iter().chain(&allowed).cloned().collect();
    let deliver = TestApp::spawn_with(config, Overrides { emulator: Some(account.with_faults(rules)) }).await;
    until_view(&api, &owner, id, "validated by the deliver instance", |s| s["validated"] == true).await;
    let second = publisher.publish(&api, 2).await;
    let got = until_events(&receiver, 2).await;
    assert_eq!(ids(&got), [first.clone(), second.clone()], "pushed in feed order by the deliver instance");
    // The API instance pushed nothing. It would have validated the
    // subscription the moment it made it, long before the deliver
    // instance started; a validation event names the instance that sent
    // it, and there is one, the deliver instance's. And one more event,
    // pushed after the others: a push of the API instance's of any of
    // them would have come twice.
    let validations: Vec<Value> =
        receiver.received().iter().map(Received::json).filter(|e| e["type"] == VALIDATION).collect();
    let sent_by = |app: &TestApp| json!(app.url(&format!("/events/api/v1/subscriptions/{id}")));
    assert_eq!(validations.iter().map(|e| e["source"].clone()).collect::<Vec<_>>(), [sent_by(&deliver)]);
    let third = publisher.publish(&api, 3).await;
    assert_eq!(ids(&until_events(&receiver, 3).await), [first, second, third], "each event once");
    assert_eq!(deliver.delivering(), HashSet::from([id]));
    assert!(api.delivering().is_empty());

    // A subscription created on the API instance while the deliver instance
    // runs is validated at once (the change feed wakes its validator); its
    // sweep would find it only in an hour.
    let second = Receiver::start().await;
    let resp = subscribe(&api, &owner, &json!({"endPoint": second.url, "sourceFilter": APP_SOURCE})).await;
    assert_eq!(resp.status(), 201);
    let id2 = resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    until_view(&api, &owner, id2, "validated by the running deliver instance", |s| s["validated"] == true).await;

    // The deliver instance serves probes and metrics, not the API.
    for path in ["/health/live", "/health/ready", "/metrics"] {
        assert_eq!(deliver.http.get(deliver.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    let resp = deliver.get_bearer("/events/api/v1/app/party?party=1337&after=0", &owner).await;
    assert_problem(resp, 404).await;

    // Where it is all stored: the subscriptions and their delivery states in
    // the subscriptions container, nothing of them among the events.
    let stored = api.feeds.documents_at_rest(StoredIn::Subscriptions, "subscriptions").await.unwrap();
    let seqs: HashSet<u64> = stored.iter().filter_map(|d| d["seq"].as_u64()).collect();
    assert!(seqs.contains(&id) && seqs.contains(&id2), "{seqs:?}");
    let state = api.feeds.documents_at_rest(StoredIn::Subscriptions, &format!("delivery|{id}")).await.unwrap();
    assert_eq!(state.len(), 1, "the delivery state, beside its subscription");
    for pk in ["subscriptions".to_owned(), format!("delivery|{id}"), "delivery-buckets".into()] {
        let among_events = api.feeds.documents_at_rest(StoredIn::Events, &pk).await.unwrap();
        assert!(among_events.is_empty(), "{pk} in the events container: {among_events:?}");
    }
    deliver.shutdown().await;
    api.shutdown().await;
    // The deliver instance wrote to the subscriptions container (checkpoints,
    // leases, its presence) and never tried to write an event document.
    let hits = |rules: &[Arc<FaultInjectionRule>]| -> Vec<(String, u32)> {
        rules.iter().map(|r| (r.id().to_owned(), r.hit_count())).filter(|(_, n)| *n > 0).collect()
    };
    assert_eq!(hits(&denied), [], "writes of the deliver instance refused in the events container");
    let written = hits(&allowed);
    assert!(written.iter().any(|(id, _)| id == "subscriptions-ReplaceItem"), "{written:?}");
    assert!(written.iter().any(|(id, _)| id == "subscriptions-UpsertItem"), "{written:?}");
}

/// A restore, simulated as a failover that lost writes leaves the store: the
/// newest two events are gone from their feeds while the subscription's
/// delivery state (checkpoint 4, the attempts) survived; the operator starts
/// the next generation (`bump-generation`) and the pods start again. A
/// cursor sealed before is refused with a problem that says how to go on;
/// an event id still places a read; the subscription goes on after the last
/// event that survived, so the events published now, which take the lost
/// positions, are pushed (not skipped as below its old checkpoint), each
/// with a `webhook-id` of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restore_old_cursors_are_refused_and_subscribers_get_what_takes_the_lost_positions() {
    use altinn_events::domain::FeedId;
    use altinn_events::feeds::SegmentKey;
    let account = EmulatorAccount::new();
    let mut config = delivery_config();
    config.cosmos.segment_size = 1000;
    let app = TestApp::spawn_with(config.clone(), Overrides { emulator: Some(account.clone()) }).await;
    let publisher = Publisher::new(&app).await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let receiver = Receiver::start().await;
    let (id, _) = subscribed(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    let mut before = Vec::new();
    for n in 1..=4 {
        before.push(publisher.publish(&app, n).await);
    }
    assert_eq!(ids(&until_events(&receiver, 4).await), before);
    let party = "/events/api/v1/app/party?party=1337";
    let resp = app.get_bearer(&format!("{party}&after=0&size=2"), &publisher.user).await;
    assert_eq!(resp.status(), 200);
    let stale_next = resp.headers()["next"].to_str().unwrap().to_owned();
    let stored: Vec<Value> = app.get_bearer(&format!("{party}&after=0"), &publisher.user).await.json().await.unwrap();
    app.shutdown().await;

    // The restore: the last two events are gone from both their feeds.
    let container =
        account.client().await.unwrap().database_client("events").container_client("events", None).await.unwrap();
    let resource = FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into());
    let subject = FeedId::Subject("/party/1337".into());
    for event in &stored[2..] {
        let (eid, source) = (event["id"].as_str().unwrap(), event["source"].as_str().unwrap());
        let doc = altinn_events::feeds::events::docs::event_doc_id(eid, source);
        for feed in [&resource, &subject] {
            container.delete_item(feed.pk(0), &doc, None).await.unwrap();
        }
    }
    let store = altinn_events::feeds::FeedStore::connect(&config.cosmos, Some(account.clone())).await.unwrap();
    assert_eq!(store.bump_generation("a restore, in a test").await.unwrap(), 1);

    let app = TestApp::spawn_with(config, Overrides { emulator: Some(account) }).await;
    // Tokens of the new platform stand-in.
    let publisher = Publisher::new(&app).await;
    let after = [publisher.publish(&app, 5).await, publisher.publish(&app, 6).await];
    let got = until_events(&receiver, 6).await;
    assert_eq!(ids(&got), [&before[..], &after[..]].concat(), "the new events, in the lost positions, pushed");
    let webhook_ids: HashSet<_> = got.iter().map(|r| r.id.clone()).collect();
    assert_eq!(webhook_ids.len(), 6, "each push a webhook-id of its own");
    assert_eq!(metric(&app, "delivery_reanchored_total").await, 1.0);
    // Its checkpoint, shown as a cursor (of the generation it is a position
    // of), reads on once the deliverer has stored where it went on.
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    eventually("the checkpoint is a cursor of the new generation", || async {
        let shown = view(&app, &owner, id).await;
        let checkpoint = urlencode(shown["delivery"]["checkpoint"].as_str().unwrap());
        app.get_bearer(&format!("/events/api/v1/app/ttd/apps-test?after={checkpoint}"), &owner).await.status() == 200
    })
    .await;
    // A cursor of before: refused, saying how to go on.
    let url = reqwest::Url::parse(&stale_next).unwrap();
    let problem =
        assert_problem(app.get_bearer(&format!("{}?{}", url.path(), url.query().unwrap()), &publisher.user).await, 400)
            .await;
    assert_eq!(problem["type"], "https://altinn.no/events/problems/cursor-of-another-store-generation");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("Go on with 'after' set to the id of the last event you processed"), "{problem}");
    assert!(!detail.contains("  "), "one sentence as written: {detail}");
    // An event id still places a read; cursors sealed now work.
    let resp = app.get_bearer(&format!("{party}&after={}", before[1]), &publisher.user).await;
    let page: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(page.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), after);
    let resp = app.get_bearer(&format!("{party}&after=0&size=2"), &publisher.user).await;
    let next = resp.headers()["next"].to_str().unwrap().to_owned();
    let url = reqwest::Url::parse(&next).unwrap();
    let page: Vec<Value> = app
        .get_bearer(&format!("{}?{}", url.path(), url.query().unwrap()), &publisher.user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), after);
    app.shutdown().await;
}

/// The lag gauges (issue 32): no series per subscription, and only delivery's
/// own lag. A subscription behind its feed while its endpoint answers shows
/// in `delivery_lag_seconds_max` (the age of the newest event pushed) and
/// `delivery_subscriptions_lagging`; caught up, both are 0; an endpoint
/// that fails takes its subscription out of them (that lag is the
/// endpoint's, and `AltinnEventsDeliveriesFailing` tells of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_gauges_show_a_subscription_behind_while_its_endpoint_answers() {
    let mut config = delivery_config();
    config.delivery.page_size = 2;
    config.delivery.retry_schedule_seconds = vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let receiver = Receiver::start().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    subscribed(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    receiver.delay(Duration::from_millis(400));
    let publisher = Publisher::new(&app).await;
    for n in 0..40 {
        publisher.publish(&app, n).await;
    }
    // 40 events at 0.4 s each: behind for 16 s; the gauges are set every 5 s.
    eventually("a lagging subscription in the gauges", || async {
        metric(&app, "delivery_subscriptions_lagging").await == 1.0
            && metric(&app, "delivery_lag_seconds_max").await >= 1.0
    })
    .await;
    assert!(metric(&app, "delivery_lag_events_max").await > 0.0);
    assert!(metric(&app, "delivery_lag_events_max").await <= 40.0, "positions behind, at most the feed");
    // Failing while behind: still behind, but not delivery's lag.
    receiver.answer(500);
    let before = events(&receiver).len();
    until("a failed attempt", || events(&receiver).len() > before + 1).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(metric(&app, "delivery_subscriptions_lagging").await, 0.0, "a failing endpoint's lag is its own");
    assert_eq!(metric(&app, "delivery_lag_seconds_max").await, 0.0);
    // Answering again, it catches up; caught up, nothing lags.
    receiver.delay(Duration::ZERO);
    receiver.answer(200);
    eventually("caught up", || async {
        let got: HashSet<String> = ids(&events(&receiver)).into_iter().collect();
        got.len() == 40
            && metric(&app, "delivery_subscriptions_lagging").await == 0.0
            && metric(&app, "delivery_lag_seconds_max").await == 0.0
    })
    .await;
    app.shutdown().await;
}

/// An upgrade from before the subscriptions container: a store whose
/// subscriptions and delivery states are still in the events container (as
/// that version kept them) is refused at start with what to do; the move
/// (`altinn-events move-subscriptions`) takes them over as they were, and
/// again is a no-op; the service then serves the same subscription (its id,
/// its secret) and goes on pushing after its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_the_subscriptions_container_is_moved_with_ids_secrets_and_checkpoints() {
    use altinn_events::feeds::{FeedStore, StoredIn, subscriptions::move_from_events_container};
    let account = EmulatorAccount::new();
    let config = delivery_config();
    let on = || Overrides { emulator: Some(account.clone()) };
    let app = TestApp::spawn_with(config.clone(), on()).await;
    let receiver = Receiver::start().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let (id, secret) = subscribed(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    let (gone, _) =
        subscribed(&app, &owner, json!({"endPoint": format!("{}?gone", receiver.url), "sourceFilter": APP_SOURCE}))
            .await;
    assert_eq!(app.delete_bearer(&format!("/events/api/v1/subscriptions/{gone}"), &owner).await.status(), 200);
    let publisher = Publisher::new(&app).await;
    let first = publisher.publish(&app, 1).await;
    until_events(&receiver, 1).await;
    until_view(&app, &owner, id, "the checkpoint stored", |s| s["delivery"]["oldestPending"].is_null()).await;
    let feeds = app.feeds.clone();
    app.shutdown().await;

    // The older version's layout: the same documents, in the events container.
    let mut partitions = vec!["subscriptions".to_owned()];
    partitions.extend([id, gone].map(|s| format!("delivery|{s}")));
    let mut moved_docs = 0;
    for pk in &partitions {
        for mut doc in feeds.documents_at_rest(StoredIn::Subscriptions, pk).await.unwrap() {
            doc.as_object_mut().unwrap().retain(|k, _| !k.starts_with('_'));
            let doc_id = doc["id"].as_str().unwrap().to_owned();
            feeds.put_at_rest(StoredIn::Events, pk, &doc_id, Some(&doc)).await.unwrap();
            feeds.put_at_rest(StoredIn::Subscriptions, pk, &doc_id, None).await.unwrap();
            moved_docs += 1;
        }
    }
    assert!(moved_docs >= 3, "two subscriptions (or a tombstone) and a delivery state: {moved_docs}");

    let refused = FeedStore::connect(&config.cosmos, Some(account.clone())).await.err().expect("refused");
    assert!(refused.to_string().contains("move-subscriptions"), "{refused}");

    let store = FeedStore::connect_to_move(&config.cosmos, Some(account.clone())).await.unwrap();
    let report = move_from_events_container(&store).await.unwrap();
    assert_eq!(report.delivery_states, 1, "{report:?}");
    assert_eq!(report.subscriptions + report.delivery_states, moved_docs, "{report:?}");
    assert_eq!(report.copied_before, 0);
    for pk in &partitions {
        assert_eq!(store.documents_at_rest(StoredIn::Events, pk).await.unwrap(), Vec::<Value>::new(), "{pk}");
    }
    let again = move_from_events_container(&store).await.unwrap();
    assert_eq!(again, Default::default(), "nothing left to move");

    // The upgraded service: the same subscription, its secret, its checkpoint.
    let app = TestApp::spawn_with(config, on()).await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let view = view(&app, &owner, id).await;
    assert_eq!(view["endPoint"], json!(receiver.url));
    assert_eq!(app.get_bearer(&format!("/events/api/v1/subscriptions/{gone}"), &owner).await.status(), 404);
    let publisher = Publisher::new(&app).await;
    let second = publisher.publish(&app, 2).await;
    let got = until_events(&receiver, 2).await;
    assert_eq!(ids(&got), [first, second], "after its checkpoint, nothing again");
    assert!(got[1].verifies(&secret), "signed with the secret it had");
    // Ids are never reused: the next one is above the deleted one's.
    let (next, _) =
        subscribed(&app, &owner, json!({"endPoint": format!("{}?next", receiver.url), "sourceFilter": APP_SOURCE}))
            .await;
    assert!(next > gone, "{next} after {gone}");
    app.shutdown().await;
}
