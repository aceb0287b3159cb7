//! The subscription surface, metrics, and what one consumer can do to
//! another (issue 28): each test reproduces a probe finding over HTTP and
//! fails without its fix.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use altinn_events::Overrides;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::subscriptions::{Receiver, subscribe};

const APP_SOURCE: &str = "https://ttd.apps.altinn.no/ttd/apps-test";
const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";
const VALIDATION: &str = "platform.events.validatesubscription";
const SUBSCRIPTIONS: &str = "/events/api/v1/subscriptions";

async fn view(app: &TestApp, token: &str, id: u64) -> Value {
    let resp = app.get_bearer(&format!("{SUBSCRIPTIONS}/{id}"), token).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Polls the subscription until `done` holds ([`PATIENCE`] at most).
async fn until_view(app: &TestApp, token: &str, id: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = view(app, token, id).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}: {s}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Creates a subscription (201): its id.
async fn created(app: &TestApp, token: &str, body: Value) -> u64 {
    let resp = subscribe(app, token, &body).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
}

async fn post(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = app.http.post(app.url(path)).header(AUTHORIZATION, format!("Bearer {token}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// The events (not validations) a receiver got.
fn events(receiver: &Receiver) -> Vec<crate::subscriptions::Received> {
    receiver.received().into_iter().filter(|r| r.json()["type"] != VALIDATION).collect()
}

async fn publish_estate(app: &TestApp, publisher: &str, id: &str, party: u64) {
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
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// 1. A cross-site form (`text/plain`) or a page of a sibling site using
/// the browser's cookie cannot create, replay, change or delete a
/// subscription; bodies must be declared JSON everywhere.
#[tokio::test]
async fn cross_site_requests_cannot_create_or_change_subscriptions() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let attacker = "https://attacker.example/hook";
    let body = json!({"endPoint": app.url("/localtest/webhooks/mine"), "sourceFilter": APP_SOURCE,
        "subjectFilter": "/party/1337"})
    .to_string();
    // The body is JSON, but not declared so: 415, as ASP.NET answers.
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut req =
            app.http.post(app.url(SUBSCRIPTIONS)).header(AUTHORIZATION, format!("Bearer {user}")).body(body.clone());
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let problem = assert_problem(req.send().await.unwrap(), 415).await;
        assert!(problem["detail"].as_str().unwrap().contains("application/json"), "{problem}");
    }
    let listed: Value = app.get_bearer(SUBSCRIPTIONS, &user).await.json().await.unwrap();
    assert_eq!(listed["count"], 0, "nothing was created");

    // The cookie: a sibling site's page (same site, other origin) is refused
    // for anything that changes state; with the browser's word that the
    // request is the platform's own, it goes through.
    let cookie = format!("AltinnStudioRuntime={user}");
    let cross = |req: reqwest::RequestBuilder| {
        req.header(COOKIE, cookie.clone())
            .header("sec-fetch-site", "same-site")
            .header("origin", "https://ttd.apps.altinn.no")
    };
    let evil = json!({"endPoint": attacker, "sourceFilter": APP_SOURCE, "subjectFilter": "/party/1337"});
    let resp = cross(app.http.post(app.url(SUBSCRIPTIONS)).json(&evil)).send().await.unwrap();
    let problem = assert_problem(resp, 403).await;
    assert!(problem["detail"].as_str().unwrap().contains("Authorization: Bearer"), "{problem}");
    // No proof at all is no better.
    let resp = app.http.post(app.url(SUBSCRIPTIONS)).header(COOKIE, cookie.clone()).json(&evil).send().await.unwrap();
    assert_problem(resp, 403).await;
    // An older browser's Origin of another site, without Sec-Fetch-Site.
    let resp = app
        .http
        .post(app.url(SUBSCRIPTIONS))
        .header(COOKIE, cookie.clone())
        .header("origin", "https://ttd.apps.altinn.no")
        .json(&evil)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403).await;
    // Reads by cookie work from anywhere (the browser keeps the answer from
    // another site's page).
    let resp = cross(app.http.get(app.url(SUBSCRIPTIONS))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The platform's own page may.
    let own = json!({"endPoint": app.url("/localtest/webhooks/mine"), "sourceFilter": APP_SOURCE,
        "subjectFilter": "/party/1337"});
    let resp = app
        .http
        .post(app.url(SUBSCRIPTIONS))
        .header(COOKIE, cookie.clone())
        .header("sec-fetch-site", "same-origin")
        .json(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let listed: Value = app.get_bearer(SUBSCRIPTIONS, &user).await.json().await.unwrap();
    assert_eq!(listed["count"], 1);
    let id = listed["subscriptions"][0]["id"].as_u64().unwrap();
    assert_eq!(listed["subscriptions"][0]["endPoint"], own["endPoint"], "never the attacker's");
    // A sibling site cannot replay, rotate, enable, re-validate or delete it.
    for path in ["replay", "secret/rotate", "enable", "validate"] {
        let resp = cross(app.http.post(app.url(&format!("{SUBSCRIPTIONS}/{id}/{path}"))).json(&json!({"after": "0"})))
            .send()
            .await
            .unwrap();
        assert_problem(resp, 403).await;
    }
    let resp = cross(app.http.delete(app.url(&format!("{SUBSCRIPTIONS}/{id}")))).send().await.unwrap();
    assert_problem(resp, 403).await;
    // A replay body must be declared JSON too.
    let resp = app
        .http
        .post(app.url(&format!("{SUBSCRIPTIONS}/{id}/replay")))
        .header(AUTHORIZATION, format!("Bearer {user}"))
        .header(CONTENT_TYPE, "text/plain")
        .body(r#"{"after":"0"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 415).await;
    // So must an app's event and a party query with a body.
    let access = app.platform_token("ttd", "apps-test").await;
    let event = json!({"specversion": "1.0", "type": "t", "subject": "/party/1337",
        "source": "https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/6fb3f738-6800-4f29-9f3e-1c66862656cd"});
    let resp = app
        .http
        .post(app.url("/events/api/v1/app"))
        .header(AUTHORIZATION, format!("Bearer {user}"))
        .header("PlatformAccessToken", &access)
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_problem(resp, 415).await;
    let party = |ct: Option<&'static str>, body: &'static str| {
        let mut req =
            app.http.post(app.url("/events/api/v1/party")).header(AUTHORIZATION, format!("Bearer {user}")).body(body);
        if let Some(ct) = ct {
            req = req.header(CONTENT_TYPE, ct);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(party(Some("text/plain"), r#"{"party":1337,"after":"0"}"#).await, 415);
    assert_eq!(party(None, r#"{"party":1337,"after":"0"}"#).await, 415);
    assert_eq!(party(Some("application/json"), r#"{"party":1337,"after":"0"}"#).await, 200);
    app.shutdown().await;
}

/// The series of `/metrics`: a metric and its labels (a histogram's
/// buckets, sum and count as one).
async fn series(app: &TestApp) -> HashSet<String> {
    let text = app.get_text("/metrics").await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let name = l.rsplit_once(' ').map_or(l, |(name, _)| name);
            let (metric, labels) = name.split_once('{').unwrap_or((name, ""));
            let metric = ["_bucket", "_sum", "_count"].iter().fold(metric, |m, s| m.strip_suffix(s).unwrap_or(m));
            let labels: Vec<&str> =
                labels.trim_end_matches('}').split("\",").filter(|l| !l.is_empty() && !l.starts_with("le=")).collect();
            format!("{metric}{{{}}}", labels.join(","))
        })
        .collect()
}

/// 2. Odd methods and paths from anyone, and subscriptions made and
/// deleted, add no series to `/metrics` after the first of each kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_series_do_not_grow_with_odd_requests_or_subscriptions() {
    let mut config = test_config();
    config.webhooks.max_subscriptions_per_consumer = 200;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let round = |from: usize, to: usize| {
        let (app, user, access) = (&app, user.clone(), access.clone());
        async move {
            for i in from..to {
                let method = reqwest::Method::from_bytes(format!("Y{i}{}", "Y".repeat(200)).as_bytes()).unwrap();
                let resp = app.http.request(method, app.url("/health/live")).send().await.unwrap();
                assert!(resp.status().is_client_error(), "{}", resp.status());
                let resp = app.http.get(app.url(&format!("/odd/{i}/{}", "p".repeat(200)))).send().await.unwrap();
                assert_eq!(resp.status(), 404);
            }
            let mut ids = Vec::new();
            for i in from..to {
                let endpoint = app.url(&format!("/localtest/webhooks/s{i}"));
                let body = json!({"endPoint": endpoint, "sourceFilter": APP_SOURCE, "subjectFilter": "/party/1337"});
                ids.push((i, created(app, &user, body).await));
            }
            for (_, id) in &ids {
                until_view(app, &user, *id, "validated", |s| s["validated"] == true).await;
            }
            // One event, pushed by every deliverer.
            post_app_event(
                app,
                &user,
                &access,
                ("ttd", "apps-test"),
                1337,
                "6fb3f738-6800-4f29-9f3e-1c66862656cd",
                "t",
            )
            .await;
            for (i, _) in &ids {
                let inbox = format!("/localtest/webhooks/s{i}");
                let deadline = Instant::now() + PATIENCE;
                loop {
                    let got: Value = app.http.get(app.url(&inbox)).send().await.unwrap().json().await.unwrap();
                    if got["count"].as_u64() == Some(2) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{inbox} got no event: {got}");
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            // The deliverers report their lag (every 5 s).
            tokio::time::sleep(Duration::from_millis(5500)).await;
            for (_, id) in ids {
                let resp = app
                    .http
                    .delete(app.url(&format!("{SUBSCRIPTIONS}/{id}")))
                    .header(AUTHORIZATION, format!("Bearer {user}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        }
    };
    round(0, 1).await;
    series(&app).await; // `/metrics` itself, scraped once
    let first = series(&app).await;
    round(1, 100).await;
    let after = series(&app).await;
    let added: Vec<&String> = after.difference(&first).collect();
    // A Cosmos operation of a fixed set may show up for the first time.
    assert!(added.len() <= 3, "{} series added by 99 more odd requests and subscriptions: {added:#?}", added.len());
    assert!(!after.iter().any(|s| s.contains("subscription=")), "no series per subscription");
    assert!(!after.iter().any(|s| s.contains("YYYY")), "no method name from a client");
    app.shutdown().await;
}

/// 3. Endpoints that accept a connection and never answer delay only
/// their own consumer: another consumer is validated and pushed while the
/// tarpit holds every slot its consumer may take (before any of its pushes
/// or validations has timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tarpit_endpoint_delays_only_its_own_consumer() {
    let tarpit = Receiver::start().await;
    let good = Receiver::start().await;
    let mut config = test_config();
    config.webhooks.timeout_seconds = 120;
    config.webhooks.validation_retry_seconds = vec![30];
    config.webhooks.max_validations_per_consumer = 2;
    config.delivery.max_concurrent_pushes = 4;
    config.delivery.max_pushes_per_consumer = 2;
    config.delivery.max_pushes_per_host = 4;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let sophie = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    // Consumer A (user 1337): four subscriptions, validated while the
    // endpoint still answers; then it stops answering.
    let mut mine = Vec::new();
    for n in 0..4 {
        let body = json!({"endPoint": format!("{}?n={n}", tarpit.url), "sourceFilter": APP_SOURCE,
            "subjectFilter": "/party/1337"});
        mine.push(created(&app, &sophie, body).await);
    }
    for id in &mine {
        until_view(&app, &sophie, *id, "validated", |s| s["validated"] == true).await;
    }
    tarpit.delay(Duration::from_secs(600));
    let guid = |n: u64| format!("{n:08x}-0000-4000-8000-000000000000");
    post_app_event(&app, &sophie, &access, ("ttd", "apps-test"), 1337, &guid(1), "app.instance.created").await;
    // Its four deliverers push to the tarpit (two at a time: its share);
    // and two more of its subscriptions wait for validation there.
    until("the tarpit holds pushes", || events(&tarpit).len() >= 2).await;
    // Two more of its subscriptions: the validator takes up their attempts
    // (claims them), which wait for the consumer's push slots.
    let mut waiting = Vec::new();
    for n in 4..6 {
        let body = json!({"endPoint": format!("{}?n={n}", tarpit.url), "sourceFilter": APP_SOURCE,
            "subjectFilter": "/party/1337"});
        waiting.push(created(&app, &sophie, body).await);
    }
    let store = altinn_events::feeds::subscriptions::SubscriptionStore::new(&app.feeds);
    eventually("the validator took up the two new attempts", || async {
        let mut claimed = 0;
        for id in &waiting {
            let stored = store.get(*id).await.unwrap().unwrap();
            claimed += usize::from(stored.subscription.validation.claimed_until_ms.is_some());
        }
        claimed == waiting.len()
    })
    .await;

    // Consumer B (the service owner): validated and pushed, while every
    // push and validation of the tarpit's consumer still waits for its
    // answer (none can time out within the test: 120 s).
    let started = Instant::now();
    let theirs = created(&app, &owner, json!({"endPoint": good.url, "sourceFilter": APP_SOURCE})).await;
    until_view(&app, &owner, theirs, "validated", |s| s["validated"] == true).await;
    let validated_in = started.elapsed();
    let started = Instant::now();
    post_app_event(&app, &sophie, &access, ("ttd", "apps-test"), 1337, &guid(2), "app.instance.created").await;
    until("the other consumer got the event", || !events(&good).is_empty()).await;
    let delivered_in = started.elapsed();
    println!(
        "with the tarpit holding its consumer's slots: validated in {validated_in:?}, delivered in {delivered_in:?}"
    );
    for id in &mine {
        let shown = view(&app, &sophie, *id).await;
        assert_eq!(shown["delivery"]["failures"], 0, "no push of the tarpit's ended: {shown}");
    }
    // The tarpit still holds what it took, and no more: its consumer's share.
    assert_eq!(events(&tarpit).len(), 2, "the slow endpoint pays, with its own consumer's slots");
    let validations = tarpit.received().iter().filter(|p| p.json()["type"] == VALIDATION).count();
    assert_eq!(validations, 4, "the new validations still wait for their consumer's slots");
    assert_eq!(events(&good).len(), 1);
    app.kill().await;
}

/// 3. A consumer holds a bounded number of subscriptions, creates racing
/// each other included; the same one again is still the existing one;
/// deleting one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_holds_a_bounded_number_of_subscriptions() {
    let mut config = test_config();
    config.webhooks.max_subscriptions_per_consumer = 3;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let user = app.user_token(1337, 1337, 2).await;
    let body = |n: u32| {
        json!({"endPoint": app.url(&format!("/localtest/webhooks/n{n}")), "sourceFilter": APP_SOURCE,
            "subjectFilter": "/party/1337"})
    };
    let ids =
        [created(&app, &user, body(0)).await, created(&app, &user, body(1)).await, created(&app, &user, body(2)).await];
    let problem = assert_problem(subscribe(&app, &user, &body(3)).await, 400).await;
    assert_eq!(problem["detail"], "A consumer can hold at most 3 subscriptions; delete one before creating another.");
    assert_eq!(created(&app, &user, body(1)).await, ids[1], "the same one again is the existing one");
    // Another consumer is not counted against this one, and the refused
    // create took no id (nothing was stored, not even for a moment).
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let first =
        created(&app, &owner, json!({"endPoint": app.url("/localtest/webhooks/o"), "sourceFilter": APP_SOURCE})).await;
    assert_eq!(first, ids[2] + 1, "a refused create stores nothing");
    // Its creates, all at once, cannot race past the limit.
    let racing = (0..10).map(|n| {
        let body = json!({"endPoint": app.url(&format!("/localtest/webhooks/o{n}")), "sourceFilter": APP_SOURCE});
        let (app, owner) = (&app, owner.clone());
        async move { subscribe(app, &owner, &body).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(racing).await;
    let listed: Value = app.get_bearer(SUBSCRIPTIONS, &owner).await.json().await.unwrap();
    assert_eq!(listed["count"], 3, "{statuses:?}: {listed}");
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 2, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 400), "{statuses:?}");
    let resp = app
        .http
        .delete(app.url(&format!("{SUBSCRIPTIONS}/{}", ids[0])))
        .header(AUTHORIZATION, format!("Bearer {user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    created(&app, &user, body(3)).await;
    app.shutdown().await;
}

/// Two creates of one consumer with room for one more: the second starts
/// half a (slowed) query after the first, so that its count of the
/// consumer's subscriptions is read before the first is stored and its new
/// id after. Both pass the first check; the check after the write keeps the
/// limit (the later id removes itself). Queries are slowed by the emulator's
/// fault injection so that this order does not depend on the machine's speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_that_pass_the_limit_check_together_still_keep_the_limit() {
    use altinn_events::feeds::emulator::EmulatorAccount;
    use azure_data_cosmos::fault_injection::{
        FaultInjectionConditionBuilder, FaultInjectionResultBuilder, FaultInjectionRuleBuilder, FaultOperationType,
    };
    let slow = Duration::from_millis(600);
    let slow_queries =
        FaultInjectionRuleBuilder::new("slow-queries", FaultInjectionResultBuilder::new().with_delay(slow).build())
            .with_condition(
                FaultInjectionConditionBuilder::new().with_operation_type(FaultOperationType::QueryItem).build(),
            )
            .build();
    let account = EmulatorAccount::new().with_faults(vec![std::sync::Arc::new(slow_queries)]);
    let mut config = test_config();
    config.webhooks.max_subscriptions_per_consumer = 3;
    let app = TestApp::spawn_with(config, Overrides { emulator: Some(account) }).await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let body =
        |name: &str| json!({"endPoint": app.url(&format!("/localtest/webhooks/{name}")), "sourceFilter": APP_SOURCE});
    created(&app, &owner, body("one")).await;
    created(&app, &owner, body("two")).await;
    let (a, b) = (body("a"), body("b"));
    let first = subscribe(&app, &owner, &a);
    let second = async {
        tokio::time::sleep(slow / 2).await;
        subscribe(&app, &owner, &b).await
    };
    let (first, second) = tokio::join!(first, second);
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    // (Normally the first stays; on a machine that ran them closer together
    // they raced for one id, and the loser found the limit reached.)
    statuses.sort_unstable();
    let listed: Value = app.get_bearer(SUBSCRIPTIONS, &owner).await.json().await.unwrap();
    assert_eq!(listed["count"], 3, "{statuses:?}: {listed}");
    assert_eq!(statuses, [201, 400], "one stays, the other is refused");
    app.shutdown().await;
}

/// 3. `enable`, `replay` and `validate` do not make an endpoint be tried
/// sooner than its schedule says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_replay_and_validate_do_not_retry_sooner_than_the_schedule() {
    let mut config = test_config();
    config.delivery.retry_schedule_seconds = vec![30, 30];
    config.webhooks.validation_retry_seconds = vec![30];
    config.webhooks.timeout_seconds = 5;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let receiver = Receiver::start().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let id = created(&app, &owner, json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    until_view(&app, &owner, id, "validated", |s| s["validated"] == true).await;
    receiver.answer(500);
    publish_app_event(&app, "ttd", "apps-test", 1337, "6fb3f738-6800-4f29-9f3e-1c66862656cd", "t").await;
    let failing = until_view(&app, &owner, id, "failing", |s| s["status"] == "failing").await;
    let next_retry = failing["delivery"]["nextRetry"].clone();
    assert!(next_retry.is_string(), "{failing}");
    assert_eq!(events(&receiver).len(), 1);
    for path in ["enable", "replay"] {
        let resp = post(&app, &format!("{SUBSCRIPTIONS}/{id}/{path}"), &owner, Some(json!({"after": "0"}))).await;
        assert_eq!(resp.status(), 200, "{path}");
        let shown: Value = resp.json().await.unwrap();
        assert_eq!(shown["status"], "failing", "{path}: {shown}");
        assert_eq!(shown["delivery"]["nextRetry"], next_retry, "{path}: the retry stays where it was");
    }
    // The retry comes when the store's clock says it is due (the test
    // moves the clock there), and it is the second attempt: by the clock,
    // 30 s after the first, not at the enable or the replay.
    let clock = app.feeds.clock();
    clock.advance(30);
    until("the retry", || events(&receiver).len() >= 2).await;
    // The attempt is listed once the deliverer has stored it (just after
    // the push's answer).
    let deliveries = || async {
        app.get_bearer(&format!("{SUBSCRIPTIONS}/{id}/deliveries"), &owner).await.json::<Value>().await.unwrap()
    };
    eventually("the retry is listed", || async { deliveries().await["count"].as_u64() >= Some(2) }).await;
    let attempts = deliveries().await;
    let times: Vec<time::OffsetDateTime> = attempts["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|a| {
            time::OffsetDateTime::parse(a["time"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
                .unwrap()
        })
        .collect();
    assert_eq!(times.len(), 2, "nothing was tried sooner: {attempts}");
    assert!((times[1] - times[0]).as_seconds_f64() >= 29.99, "the retry waited its 30 s: {attempts}");
    assert_eq!(events(&receiver).len(), 2);

    // A validation that is running goes on on its schedule: its second
    // attempt, 30 s after the first by the clock, is its last; had
    // `validate` started it again, there would be more before it gave up.
    let failing_endpoint = Receiver::start().await;
    failing_endpoint.answer(500);
    let other = created(&app, &owner, json!({"endPoint": failing_endpoint.url, "sourceFilter": APP_SOURCE})).await;
    until("the first validation attempt", || failing_endpoint.received().len() == 1).await;
    let resp = post(&app, &format!("{SUBSCRIPTIONS}/{other}/validate"), &owner, None).await;
    assert_eq!(resp.status(), 202);
    clock.advance(30);
    let gave_up = until_view(&app, &owner, other, "validation gave up", |s| s["status"] == "failing").await;
    assert_eq!(gave_up["validated"], false, "{gave_up}");
    assert_eq!(failing_endpoint.received().len(), 2, "validate did not start another attempt");
    app.shutdown().await;
}

/// 4. A subscription shows its consumer nothing of events it may not see:
/// no count of the feed, a `webhook-id` without a position, and the same
/// answer for another party's event id as for an unknown one (replay and
/// reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_tells_its_consumer_nothing_of_hidden_events() {
    let pdp = FakePdp::start(PdpMode::UsersOwnParty).await;
    let mut config = test_config();
    config.pdp.url = Some(pdp.url.clone());
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let receiver = Receiver::start().await;
    let scope = "&scope=altinn:events.subscribe";
    let sophie = app.get_text(&format!("/localtest/token/user?userId=1337&partyId=1337&authLevel=2{scope}")).await;
    let publisher = app.org_token("ttd", "altinn:events.publish").await;
    let id = created(&app, &sophie, json!({"endPoint": receiver.url, "resourceFilter": ESTATE})).await;
    until_view(&app, &sophie, id, "validated", |s| s["validated"] == true).await;
    publish_estate(&app, &publisher, "mine-1", 1337).await;
    for n in 0..5 {
        publish_estate(&app, &publisher, &format!("hidden-{n}"), 1338).await;
    }
    publish_estate(&app, &publisher, "mine-2", 1337).await;
    let deadline = Instant::now() + PATIENCE;
    while events(&receiver).len() < 2 {
        assert!(Instant::now() < deadline, "two events pushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pushed = events(&receiver);
    let parts: Vec<Vec<String>> = pushed.iter().map(|r| r.id.split('-').map(str::to_owned).collect()).collect();
    for p in &parts {
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0], id.to_string());
        assert!(p[2].len() == 24 && !p[2].bytes().all(|b| b.is_ascii_digit()), "no position in the id: {p:?}");
    }
    assert_ne!(parts[0][2], parts[1][2]);
    // The view: where delivery stands, in time; no count of the feed.
    let shown = until_view(&app, &sophie, id, "caught up", |s| s["delivery"]["oldestPending"].is_null()).await;
    let keys: HashSet<&str> = shown["delivery"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["checkpoint", "oldestPending", "failures", "nextRetry"]), "{shown}");
    let resp =
        post(&app, &format!("{SUBSCRIPTIONS}/{id}/replay"), &sophie, Some(json!({"from": "2000-01-01T00:00:00Z"})))
            .await;
    assert_eq!(resp.status(), 200);
    let replayed: Value = resp.json().await.unwrap();
    assert!(replayed["delivery"].get("behind").is_none(), "{replayed}");
    // Another party's event id is as unknown as one that does not exist.
    let replay_after = |after: &'static str| {
        let path = format!("{SUBSCRIPTIONS}/{id}/replay");
        let (app, sophie) = (&app, sophie.clone());
        async move {
            let resp = post(app, &path, &sophie, Some(json!({"after": after}))).await;
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let hidden = replay_after("hidden-2").await;
    let unknown = replay_after("no-such-event").await;
    assert_eq!(hidden.0, 400, "{hidden:?}");
    assert_eq!(hidden, unknown, "the same answer");
    assert_eq!(replay_after("mine-1").await.0, 200, "one's own event id works");
    // Reads: after a hidden id, the same page as after an unknown one.
    let read = |after: &'static str| {
        let url = format!("/events/api/v1/events?resource={ESTATE}&after={after}");
        let (app, sophie) = (&app, sophie.clone());
        async move {
            let resp = app.get_bearer(&url, &sophie).await;
            assert_eq!(resp.status(), 200);
            let page: Vec<Value> = resp.json().await.unwrap();
            page.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(read("hidden-4").await, read("no-such-event").await);
    assert_eq!(read("no-such-event").await, ["mine-1", "mine-2"]);
    assert_eq!(read("mine-1").await, ["mine-2"]);
    app.shutdown().await;
}

/// 5. The endpoint is resolved only for a caller permitted to subscribe,
/// and a refusal names no address; NAT64 and other disguised internal
/// addresses are refused; only allowed ports.
#[tokio::test]
async fn the_endpoint_is_checked_after_permissions_and_names_no_address() {
    let mut config = test_config();
    config.webhooks.allow_private_endpoints = Some(false);
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let user = app.user_token(1337, 1337, 2).await;
    // Not permitted (another party's events): 403, before any lookup.
    let problem = assert_problem(
        subscribe(
            &app,
            &user,
            &json!({"endPoint": "https://localhost/hook", "sourceFilter": APP_SOURCE,
            "subjectFilter": "/party/1338"}),
        )
        .await,
        403,
    )
    .await;
    assert!(!problem["detail"].as_str().unwrap().contains("localhost"));
    for endpoint in [
        "https://localhost/hook",
        "https://127.0.0.1/hook",
        "https://[64:ff9b::7f00:1]/hook",
        "https://[64:ff9b::a9fe:a9fe]/latest",
        "https://[::ffff:0:7f00:1]/hook",
        "https://[::127.0.0.1]/hook",
        "https://[2002:7f00:1::1]/hook",
        "https://[fec0::1]/hook",
        "https://[100::1]/hook",
        "https://no-such-host.invalid/hook",
    ] {
        let body = json!({"endPoint": endpoint, "sourceFilter": APP_SOURCE, "subjectFilter": "/party/1337"});
        let problem = assert_problem(subscribe(&app, &user, &body).await, 400).await;
        assert_eq!(
            problem["detail"],
            "The endpoint's host must resolve to public addresses only: events are pushed only to public https endpoints.",
            "{endpoint}"
        );
    }
    let body = json!({"endPoint": "https://hooks.example.invalid:8443/x", "sourceFilter": APP_SOURCE,
        "subjectFilter": "/party/1337"});
    let problem = assert_problem(subscribe(&app, &user, &body).await, 400).await;
    assert_eq!(problem["detail"], "The endpoint's port is not allowed: events are pushed to port 443 only.");
    app.shutdown().await;
}

/// 5. Pushes never go through a proxy from the environment (it would
/// connect where the address check cannot see). Runs itself again as a
/// child process with `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` set (the
/// environment cannot be changed safely inside a running test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_ignore_proxies_from_the_environment() {
    const CHILD: &str = "ALTINN_EVENTS_TEST_PROXY_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let receiver = Receiver::start().await;
        let sender = altinn_events::webhooks::Sender::new(altinn_events::webhooks::SenderSettings {
            allow_private_endpoints: true,
            allowed_ports: vec![443],
            timeout: Duration::from_secs(5),
            max_response_bytes: 1024,
            slots: altinn_events::webhooks::SlotLimits { total: 4, per_consumer: 2, per_host: 2 },
        })
        .unwrap();
        let url = receiver.url.parse().unwrap();
        let outcome = sender.push("/org/ttd", &url, "m", br#"{"specversion":"1.0"}"#, &[]).await;
        assert!(outcome.delivered(), "{outcome:?}");
        assert_eq!(receiver.received().len(), 1, "straight to the endpoint");
        return;
    }
    // A "proxy" that counts connections and answers nothing useful.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = proxy.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let name = "hardening_round_two::pushes_ignore_proxies_from_the_environment";
    let exe = std::env::current_exe().unwrap();
    let output = tokio::process::Command::new(exe)
        .args(["--exact", name, "--nocapture"])
        .env(CHILD, "1")
        .env("HTTP_PROXY", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("https_proxy", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the child failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 passed"), "the child ran the test: {stdout}");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing went to the proxy");
}

/// 6. Control characters and overlong values stay out of subscriptions;
/// extension attribute names follow CloudEvents' rule; an app event whose
/// instance does not parse is refused, not waved through.
#[tokio::test]
async fn control_characters_odd_extensions_and_unparsable_instances_are_refused() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let endpoint = app.url("/localtest/webhooks/x");
    for (field, value, detail) in [
        ("typeFilter", "a\u{0}b".to_owned(), "'typeFilter' must not contain control characters."),
        ("subjectFilter", "/party/1337\n".to_owned(), "'subjectFilter' must not contain control characters."),
        ("typeFilter", "t".repeat(1025), "'typeFilter' is longer than 1024 characters."),
        ("endPoint", format!("{endpoint}/{}", "e".repeat(1025)), "'endPoint' is longer than 1024 characters."),
        ("endPoint", format!("{endpoint}\t"), "'endPoint' must not contain control characters."),
    ] {
        let mut body = json!({"endPoint": endpoint, "sourceFilter": APP_SOURCE, "subjectFilter": "/party/1337"});
        body[field] = json!(value);
        let problem = assert_problem(subscribe(&app, &user, &body).await, 400).await;
        assert_eq!(problem["detail"], detail, "{field}");
    }
    let publisher = app.org_token("ttd", "altinn:events.publish").await;
    for (name, value) in
        [("bad\u{0}name", json!("v")), ("Upper", json!("v")), ("ext", json!("v\u{0}")), ("ext", json!({"a": 1}))]
    {
        let mut event = json!({"specversion": "1.0", "id": "e1", "type": "t", "source": "urn:no:skd:estate",
            "subject": "/party/1337", "resource": ESTATE});
        event[name] = value;
        let resp = app
            .http
            .post(app.url("/events/api/v1/events"))
            .header(AUTHORIZATION, format!("Bearer {publisher}"))
            .header(CONTENT_TYPE, "application/cloudevents+json")
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_problem(resp, 400).await;
    }
    let access = app.platform_token("ttd", "apps-test").await;
    for instance in ["-1/6fb3f738-6800-4f29-9f3e-1c66862656cd", "18446744073709551616/6fb3f738", "%31337/6fb3f738"] {
        let event = json!({"specversion": "1.0", "type": "t", "subject": "/party/1338",
            "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/{instance}")});
        let resp = app
            .http
            .post(app.url("/events/api/v1/app"))
            .header(AUTHORIZATION, format!("Bearer {user}"))
            .header("PlatformAccessToken", &access)
            .json(&event)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, 400).await;
        assert!(problem["detail"].as_str().unwrap().contains("instance"), "{instance}: {problem}");
    }
    app.shutdown().await;
}

/// 6. Behind a proxy, every `X-Forwarded-For` line counts (a second line
/// is not a way around the limit), and an entry that is not an address
/// counts as the TCP peer, not as a key of the client's making.
#[tokio::test]
async fn rate_limits_read_every_forwarded_line_and_only_addresses() {
    let mut config = test_config();
    config.instance_access.client_ip_header = Some("x-forwarded-for".into());
    config.instance_access.rate_per_minute_per_client = 3;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let read = |lines: Vec<String>| {
        let mut req = app
            .http
            .post(app.url("/events/instanceeventsforinstance/1337/6fb3f738-6800-4f29-9f3e-1c66862656cd?after=0"));
        for line in lines {
            req = req.header("x-forwarded-for", line);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // The client writes a line of its own; the proxy adds its own line.
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(read(vec![format!("198.51.100.{i}"), "203.0.113.9".into()]).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429], "one client: the proxy's entry");
    // Junk where the address should be: the peer (127.0.0.1) counts.
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(read(vec![format!("junk-{i}-{}", "x".repeat(500))]).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429], "one client: the peer");
    app.shutdown().await;
}

/// 6. A long-poll refused because the instance holds all it can says when
/// to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_long_poll_pool_says_when_to_retry() {
    let mut config = test_config();
    config.limits.max_waiters = 1;
    let app = std::sync::Arc::new(TestApp::spawn_with(config, Overrides::default()).await);
    let user = app.user_token(1337, 1337, 2).await;
    let held = {
        let (app, user) = (app.clone(), user.clone());
        tokio::spawn(async move { app.get_bearer("/events/api/v1/app/party?party=1337&after=0&wait=5", &user).await })
    };
    app.until_parked(1).await;
    let resp = app.get_bearer("/events/api/v1/app/party?party=1337&after=0&wait=5", &user).await;
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_problem(resp, 503).await;
    held.abort();
}

/// 6. The token's audience is not checked, as Altinn does not check it
/// (docs/security.md says why): a token with any `aud`, or none, is
/// accepted when everything else holds.
#[tokio::test]
async fn the_audience_of_a_token_is_not_what_decides() {
    let app = TestApp::spawn().await;
    let good = app.user_token(1337, 1337, 2).await;
    let (header, mut claims) = parts(&good);
    let pem = std::fs::read_to_string(key_file()).unwrap();
    for aud in [json!("https://someone-else.example"), json!(["a", "b"])] {
        claims["aud"] = aud;
        let token = sign_rs256(&pem, header["kid"].as_str(), &claims);
        assert_eq!(app.get_bearer(SUBSCRIPTIONS, &token).await.status(), 200);
    }
    app.shutdown().await;
}
