use altinn_events::Overrides;
use altinn_events::domain::{FeedId, Filters};
use altinn_events::feeds::IdSource;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use serde_json::{Value, json};

use crate::helpers::*;

const SOURCE: &str = "https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/6fb3f738-6800-4f29-9f3e-1c66862656cd";
const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";

fn app_event() -> Value {
    json!({"specversion": "1.0", "type": "app.instance.created", "source": SOURCE, "subject": "/party/1337",
        "alternativesubject": "/person/01039012345", "datacontenttype": "application/json", "data": {"step": 1}, "myextension": 7})
}

fn generic_event(id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "type": "no.altinn.estate.registered", "source": "urn:no:skatteetaten:estate:1",
        "subject": "/party/1337", "resource": ESTATE, "data": {"x": 1}})
}

async fn post_app(app: &TestApp, bearer: Option<&str>, access: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = app.http.post(app.url("/events/api/v1/app")).json(body);
    if let Some(t) = bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(t) = access {
        req = req.header("PlatformAccessToken", t);
    }
    req.send().await.unwrap()
}

async fn post_generic(app: &TestApp, bearer: Option<&str>, content_type: &str, body: &Value) -> reqwest::Response {
    let mut req =
        app.http.post(app.url("/events/api/v1/events")).header(CONTENT_TYPE, content_type).body(body.to_string());
    if let Some(t) = bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    req.send().await.unwrap()
}

async fn all_events(app: &TestApp, feed: FeedId) -> Vec<Value> {
    let page = app.feeds.read(&feed, 0, &Filters::default(), 1000, u64::MAX, false).await.unwrap();
    page.events.into_iter().map(|e| e.record.cloud_event).collect()
}

#[tokio::test]
async fn an_app_publishes_and_the_event_is_in_both_feeds() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let resp = post_app(&app, Some(&user), Some(&access), &app_event()).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()[LOCATION], "/party/1337");
    let id: String = resp.json().await.unwrap();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let in_resource = all_events(&app, FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into())).await;
    let in_subject = all_events(&app, FeedId::Subject("/party/1337".into())).await;
    assert_eq!(in_resource, in_subject);
    assert_eq!(in_resource.len(), 1);
    let stored = &in_resource[0];
    assert_eq!(stored["id"], id.as_str());
    assert_eq!(stored["resource"], "urn:altinn:resource:app_ttd_apps-test");
    assert_eq!(stored["resourceinstance"], "1337/6fb3f738-6800-4f29-9f3e-1c66862656cd");
    assert_eq!(stored["myextension"], 7, "extension attributes are kept");
    assert_eq!(stored["data"], json!({"step": 1}));
    assert_eq!(stored["time"].as_str().unwrap().len(), 27, "fixed-width time: {stored}");
    app.shutdown().await;
}

#[tokio::test]
async fn app_publish_errors_are_altinns() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;

    let body = assert_problem(post_app(&app, None, Some(&access), &app_event()).await, 401).await;
    assert!(body["detail"].as_str().unwrap().contains("Missing"), "{body}");
    assert_problem(post_app(&app, Some(&user), None, &app_event()).await, 403).await;

    for missing in ["source", "subject", "type", "specversion"] {
        let mut ev = app_event();
        ev.as_object_mut().unwrap().remove(missing);
        let body = assert_problem(post_app(&app, Some(&user), Some(&access), &ev).await, 400).await;
        assert_eq!(body["detail"], "Missing parameter values: source, subject and type cannot be null", "{missing}");
    }

    let skd = app.platform_token("skd", "taxreport").await;
    let body = assert_problem(post_app(&app, Some(&user), Some(&skd), &app_event()).await, 401).await;
    assert_eq!(body["detail"], format!("skd/taxreport is not authorized to create events for {SOURCE}"));

    let garbage = app
        .http
        .post(app.url("/events/api/v1/app"))
        .header(AUTHORIZATION, format!("Bearer {user}"))
        .header("PlatformAccessToken", &access)
        .header(CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let body = assert_problem(garbage, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("not valid JSON"), "{body}");

    let mut huge = app_event();
    huge["data"] = json!("x".repeat(300 * 1024));
    assert_problem(post_app(&app, Some(&user), Some(&access), &huge).await, 413).await;

    let xml = app
        .http
        .post(app.url("/events/api/v1/app"))
        .header(AUTHORIZATION, format!("Bearer {user}"))
        .header("PlatformAccessToken", &access)
        .header(CONTENT_TYPE, "application/xml")
        .body("<event/>")
        .send()
        .await
        .unwrap();
    assert_problem(xml, 415).await;

    // Found by the contract fuzzer: attributes kept as given must still
    // have their CloudEvents type, or readers' SDKs fail on the feed.
    for (field, value) in [("datacontenttype", json!({})), ("contenttype", json!(7)), ("dataschema", json!([1]))] {
        let mut ev = app_event();
        ev.as_object_mut().unwrap().remove("datacontenttype");
        ev[field] = value;
        let body = assert_problem(post_app(&app, Some(&user), Some(&access), &ev).await, 400).await;
        let expected = if field == "dataschema" { "dataschema" } else { "datacontenttype" };
        assert_eq!(body["detail"], format!("'{expected}' must be a string."), "{field}");
    }
    // Nothing of the above was stored.
    assert_eq!(app.feeds.len(&FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into())).await.unwrap(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn generic_publish_scopes_pdp_and_idempotent_retries() {
    let app = TestApp::spawn().await;
    let owner = app.org_token("ttd", "altinn:events.publish").await;
    let ev = generic_event("estate-1");

    // Media type, authentication, scope.
    assert_problem(post_generic(&app, Some(&owner), "application/json", &ev).await, 415).await;
    assert_problem(post_generic(&app, None, "application/cloudevents+json", &ev).await, 401).await;
    let no_scope = app.org_token("ttd", "altinn:events.subscribe").await;
    assert_problem(post_generic(&app, Some(&no_scope), "application/cloudevents+json", &ev).await, 403).await;

    // The PDP decides: skd does not own the resource.
    let skd = app.org_token("skd", "altinn:events.publish").await;
    assert_problem(post_generic(&app, Some(&skd), "application/cloudevents+json", &ev).await, 403).await;

    // The owner may; a retry stores nothing new.
    let resp = post_generic(&app, Some(&owner), "application/cloudevents+json; charset=utf-8", &ev).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<String>().await.unwrap(), "estate-1");
    let retry = post_generic(&app, Some(&owner), "application/cloudevents+json", &ev).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(all_events(&app, FeedId::Resource(ESTATE.into())).await.len(), 1);
    assert_eq!(all_events(&app, FeedId::Subject("/party/1337".into())).await.len(), 1);

    // The same id from another source is another event (CloudEvents: id and
    // source identify an event): stored, in both its feeds.
    let mut other = generic_event("estate-1");
    other["source"] = json!("urn:no:other:source");
    assert_eq!(post_generic(&app, Some(&owner), "application/cloudevents+json", &other).await.status(), 200);
    assert_eq!(all_events(&app, FeedId::Resource(ESTATE.into())).await.len(), 2);
    assert_eq!(all_events(&app, FeedId::Subject("/party/1337".into())).await.len(), 2);

    // Admin scope skips the PDP.
    let before = app.stats().await["pdp_requests"].as_u64().unwrap();
    let admin = app.org_token("skd", "altinn:events.publish.admin").await;
    let resp = post_generic(&app, Some(&admin), "application/cloudevents+json", &generic_event("estate-2")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.stats().await["pdp_requests"].as_u64().unwrap(), before);

    // Bad input.
    let mut bad = generic_event("estate-3");
    bad["resource"] = json!("ttd-estate-of-deceased");
    let body = assert_problem(post_generic(&app, Some(&owner), "application/cloudevents+json", &bad).await, 400).await;
    assert_eq!(body["detail"], "The 'resource' must begin with `urn:altinn:resource:`");
    let mut no_id = generic_event("x");
    no_id.as_object_mut().unwrap().remove("id");
    assert_problem(post_generic(&app, Some(&owner), "application/cloudevents+json", &no_id).await, 400).await;
    app.shutdown().await;
}

#[tokio::test]
async fn generic_publish_is_503_when_the_pdp_is_down() {
    let mut config = test_config();
    config.pdp.url = Some(closed_url("/authorization/api/v1/decision"));
    config.pdp.timeout_ms = 300;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let owner = app.org_token("ttd", "altinn:events.publish").await;
    let resp = post_generic(&app, Some(&owner), "application/cloudevents+json", &generic_event("e")).await;
    let body = assert_problem(resp, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("authorization"), "{body}");
    assert_eq!(app.feeds.len(&FeedId::Resource(ESTATE.into())).await.unwrap(), 0, "nothing stored");
    app.shutdown().await;
}

/// A publish whose Cosmos writes keep failing is retried until its deadline
/// (`cosmos.publish_deadline_ms`, 15 s by default; 2.5 s here) leaves no
/// room for another attempt (`cosmos.operation_timeout_ms`, 1 s here), then
/// answered 503: the caller knows the event was not stored and retries.
#[tokio::test]
async fn a_publish_cosmos_keeps_refusing_is_a_503_after_the_retry_deadline() {
    use altinn_events::feeds::emulator::EmulatorAccount;
    use azure_data_cosmos::fault_injection::{
        FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
        FaultInjectionRuleBuilder, FaultOperationType,
    };
    let rules: Vec<_> = [FaultOperationType::CreateItem, FaultOperationType::BatchItem]
        .into_iter()
        .map(|op| {
            std::sync::Arc::new(
                FaultInjectionRuleBuilder::new(
                    format!("failing-{op:?}"),
                    FaultInjectionResultBuilder::new().with_error(FaultInjectionErrorType::InternalServerError).build(),
                )
                .with_condition(FaultInjectionConditionBuilder::new().with_operation_type(op).build())
                .build(),
            )
        })
        .collect();
    let account = EmulatorAccount::new();
    let mut config = test_config();
    config.cosmos.publish_deadline_ms = 2_500;
    config.cosmos.operation_timeout_ms = 1_000;
    let app = TestApp::spawn_with(config, Overrides { emulator: Some(account.with_faults(rules.clone())) }).await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let started = std::time::Instant::now();
    let body = assert_problem(post_app(&app, Some(&user), Some(&access), &app_event()).await, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("storage"), "{body}");
    // Timed from before the request: a slow machine only lengthens it.
    // That the retries end at all is the answer itself (the client gives
    // up after 30 s).
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(1_500), "retried until no attempt fitted: {took:?}");
    assert!(rules[0].hit_count() > 1, "the create was retried");
    for rule in &rules {
        rule.disable();
    }
    assert_eq!(post_app(&app, Some(&user), Some(&access), &app_event()).await.status(), 201);
    assert_eq!(all_events(&app, FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into())).await.len(), 1);
    app.shutdown().await;
}

/// A publish has one deadline for all its storage work
/// (`cosmos.publish_deadline_ms`, 600 s here), not one per feed. Its
/// resource feed's create is slow, and while it is under way the store's
/// clock is moved 300 s; then its subject feed keeps failing, and the clock
/// is moved another 290 s. With one deadline an attempt of up to 10 s
/// (`cosmos.operation_timeout_ms`) no longer fits, and the publish answers
/// 503 at once; a deadline counted from the subject feed's start would be
/// 300 s of the clock away, and the publish would go on retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_has_one_deadline_for_both_its_feeds() {
    use altinn_events::feeds::emulator::EmulatorAccount;
    use azure_data_cosmos::fault_injection::{
        FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
        FaultInjectionRuleBuilder, FaultOperationType,
    };
    use std::sync::Arc;
    let on = |op| FaultInjectionConditionBuilder::new().with_operation_type(op).build();
    // The first create after the rules are on is slow and succeeds (the
    // resource feed's); every create or batch after it fails.
    let slow = Arc::new(
        FaultInjectionRuleBuilder::new(
            "slow-first-create",
            FaultInjectionResultBuilder::new().with_delay(std::time::Duration::from_secs(5)).build(),
        )
        .with_condition(on(FaultOperationType::CreateItem))
        .with_hit_limit(1)
        .build(),
    );
    let failing: Vec<_> = [FaultOperationType::CreateItem, FaultOperationType::BatchItem]
        .into_iter()
        .map(|op| {
            Arc::new(
                FaultInjectionRuleBuilder::new(
                    format!("failing-{op:?}"),
                    FaultInjectionResultBuilder::new().with_error(FaultInjectionErrorType::InternalServerError).build(),
                )
                .with_condition(on(op))
                .build(),
            )
        })
        .collect();
    let rules: Vec<_> = std::iter::once(slow.clone()).chain(failing.iter().cloned()).collect();
    for rule in &rules {
        rule.disable();
    }
    let mut config = test_config();
    config.cosmos.publish_deadline_ms = 600_000;
    config.cosmos.operation_timeout_ms = 10_000;
    config.shutdown_grace_seconds = 700;
    config.cosmos.repair_interval_seconds = 0;
    let app =
        TestApp::spawn_with(config, Overrides { emulator: Some(EmulatorAccount::new().with_faults(rules.clone())) })
            .await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    // Both feeds exist (their segments' heads are made) before the faults.
    assert_eq!(post_app(&app, Some(&user), Some(&access), &app_event()).await.status(), 201);
    for rule in &rules {
        rule.enable();
    }
    let publish = tokio::spawn({
        let (http, url) = (app.http.clone(), app.url("/events/api/v1/app"));
        let (user, access) = (user.clone(), access.clone());
        async move {
            http.post(url)
                .bearer_auth(user)
                .header("PlatformAccessToken", access)
                .json(&app_event())
                .send()
                .await
                .unwrap()
        }
    });
    until("the resource feed's create is under way", || slow.hit_count() == 1).await;
    app.feeds.clock().advance(300);
    until("the subject feed's append is failing", || failing[0].hit_count() > 0).await;
    assert!(!publish.is_finished(), "still retrying");
    app.feeds.clock().advance(290);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), publish)
        .await
        .expect("answered once past its one deadline")
        .unwrap();
    let body = assert_problem(answer, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("storage"), "{body}");
    for rule in &rules {
        rule.disable();
    }
    // As the test meant it: the resource feed has the event, the subject
    // feed does not (the repairer, off here, would complete it).
    assert_eq!(all_events(&app, FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into())).await.len(), 2);
    assert_eq!(all_events(&app, FeedId::Subject("/party/1337".into())).await.len(), 1);
    app.shutdown().await;
}

/// Every endpoint that takes a body refuses one over `limits.max_body_bytes`
/// with a 413 problem, and stores nothing.
#[tokio::test]
async fn every_body_over_the_limit_is_a_413() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let owner = app.org_token("ttd", "altinn:events.publish").await;
    let filler = "x".repeat(300 * 1024);
    let mut app_ev = app_event();
    app_ev["data"] = json!(filler);
    let mut generic = generic_event("too-big");
    generic["data"] = json!(filler);
    let requests = [
        (
            "POST /app",
            app.http
                .post(app.url("/events/api/v1/app"))
                .header(AUTHORIZATION, format!("Bearer {user}"))
                .header("PlatformAccessToken", &access)
                .json(&app_ev),
        ),
        (
            "POST /events",
            app.http
                .post(app.url("/events/api/v1/events"))
                .header(AUTHORIZATION, format!("Bearer {owner}"))
                .header(CONTENT_TYPE, "application/cloudevents+json")
                .body(generic.to_string()),
        ),
        (
            "POST /party",
            app.http
                .post(app.url("/events/api/v1/party"))
                .header(AUTHORIZATION, format!("Bearer {user}"))
                .json(&json!({"party": 1337, "after": "0", "type": [filler]})),
        ),
    ];
    for (name, req) in requests {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 413, "{name}");
        assert_problem(resp, 413).await;
    }
    assert_eq!(app.feeds.len(&FeedId::Resource(ESTATE.into())).await.unwrap(), 0);
    assert_eq!(app.feeds.len(&FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into())).await.unwrap(), 0);
    app.shutdown().await;
}

/// The service runs the repairer itself: an event that reached its resource
/// feed but not its subject feed (its publisher died in between) is in the
/// subject feed a moment later, with no one calling anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_repairs_interrupted_publishes_by_itself() {
    let mut config = test_config();
    config.cosmos.repair_interval_seconds = 1;
    config.cosmos.repair_grace_seconds = 0;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let half = event_record("ttd/apps-test", "half-published", res, "/party/1337", "t");
    app.feeds.append_to(&FeedId::Resource(res.into()), half, IdSource::Server).await.unwrap();
    let subject = FeedId::Subject("/party/1337".into());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = app.feeds.read(&subject, 0, &Filters::default(), 10, u64::MAX, false).await.unwrap();
        if page.events.iter().any(|e| e.record.id == "half-published") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the service did not repair the event");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

/// More publishes at once than an instance takes (`limits.max_publishes_in_flight`,
/// here 2, with Cosmos slowed to 500 ms a write): the rest are refused at
/// once with 503, `Retry-After` and nothing stored; what was accepted is
/// stored; and the instance takes publishes again as soon as it has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_beyond_what_an_instance_takes_are_shed_with_retry_after() {
    use altinn_events::feeds::emulator::EmulatorAccount;
    use azure_data_cosmos::fault_injection::{
        FaultInjectionConditionBuilder, FaultInjectionResultBuilder, FaultInjectionRuleBuilder, FaultOperationType,
    };
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    // Creates take 5 s (a publish makes several): the accepted publishes
    // hold their room that long, far longer than a refusal takes even on a
    // slow machine.
    let slow = Arc::new(
        FaultInjectionRuleBuilder::new(
            "slow-creates",
            FaultInjectionResultBuilder::new().with_delay(Duration::from_secs(5)).build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new().with_operation_type(FaultOperationType::CreateItem).build(),
        )
        .with_end_time(Instant::now() + Duration::from_secs(120))
        .build(),
    );
    let mut config = test_config();
    config.limits.max_publishes_in_flight = 2;
    // Room for those slow creates in one attempt and in a publish.
    config.cosmos.operation_timeout_ms = 20_000;
    config.cosmos.publish_deadline_ms = 60_000;
    config.shutdown_grace_seconds = 70;
    let account = EmulatorAccount::new().with_faults(vec![slow.clone()]);
    let app = Arc::new(TestApp::spawn_with(config, Overrides { emulator: Some(account) }).await);
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    // The signing keys fetched and the token checked once, before the burst.
    assert_eq!(app.get_bearer("/events/api/v1/app/party?party=1337&after=0", &user).await.status(), 200);
    // The answers in the order they come.
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..8 {
        let (app, user, access, answers) = (app.clone(), user.clone(), access.clone(), answers.clone());
        tokio::spawn(async move {
            let guid = format!("{n:08x}-0000-4000-8000-000000000000");
            let resp = send_app_event(&app, &user, &access, ("ttd", "apps-test"), 1337, &guid, "t").await;
            let status = resp.status().as_u16();
            let retry_after = resp.headers().get("retry-after").cloned();
            let _ = answers.send((status, retry_after, resp.text().await.unwrap()));
        });
    }
    drop(answers);
    let mut accepted = 0;
    while let Some((status, retry_after, body)) = answered.recv().await {
        match status {
            201 => accepted += 1,
            503 => {
                assert_eq!(retry_after.unwrap(), "1");
                let problem: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(problem["title"], "Overloaded", "{problem}");
                // Refused at once: not after waiting for room, which comes
                // only when an accepted publish is answered.
                assert_eq!(accepted, 0, "a refusal came after a publish was accepted: it waited for room");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!((1..=2).contains(&accepted), "{accepted} accepted of 8 with room for 2");
    slow.disable();
    let res = FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into());
    assert_eq!(app.feeds.len(&res).await.unwrap(), accepted, "nothing stored for the refused ones");
    // Room again: the next publish is taken.
    assert!(
        !publish_app_event(&app, "ttd", "apps-test", 1337, "6fb3f738-6800-4f29-9f3e-1c66862656cd", "t")
            .await
            .is_empty()
    );
}
