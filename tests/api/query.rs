use std::collections::HashSet;

use altinn_events::Overrides;
use altinn_events::domain::FeedId;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::helpers::*;

const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";

fn source(org: &str, app: &str, party: u64, n: usize) -> String {
    format!("https://{org}.apps.altinn.no/{org}/{app}/instances/{party}/00000000-0000-4000-8000-{n:012}")
}

/// Publishes app events as the app would; returns their ids in order.
async fn publish(app: &TestApp, events: &[(&str, &str, u64, &str)]) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, (org, name, party, kind)) in events.iter().enumerate() {
        ids.push(publish_app_event(app, org, name, *party, &format!("00000000-0000-4000-8000-{n:012}"), kind).await);
    }
    ids
}

async fn publish_generic(app: &TestApp, id: &str, subject: &str) {
    let owner = app.org_token("ttd", "altinn:events.publish").await;
    let body = json!({"specversion": "1.0", "id": id, "type": "estate.registered", "source": "urn:no:skd:estate",
        "subject": subject, "resource": ESTATE});
    let resp = app
        .http
        .post(app.url("/events/api/v1/events"))
        .header(AUTHORIZATION, format!("Bearer {owner}"))
        .header(CONTENT_TYPE, "application/cloudevents+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

struct Page {
    ids: Vec<String>,
    next: String,
    content_type: String,
}

async fn get_page(app: &TestApp, url: &str, token: &str, headers: &[(&str, &str)]) -> Page {
    let mut req = app.http.get(url).header(AUTHORIZATION, format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    let next = resp.headers().get("next").expect("next on every 200").to_str().unwrap().to_owned();
    let content_type = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    let body: Vec<Value> = resp.json().await.unwrap();
    Page { ids: body.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect(), next, content_type }
}

/// Follows `next` links to the head of the feed: until `next` stops moving
/// (an empty page can come before the head, when a page's scan budget is
/// spent on events the caller may not see).
async fn follow(app: &TestApp, first: &str, feed: &FeedId, token: &str) -> (Vec<String>, usize) {
    let mut url = first.to_owned();
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut position = None;
    loop {
        let page = get_page(app, &url, token, &[]).await;
        pages += 1;
        assert!(pages < 100, "paging does not end");
        ids.extend(page.ids);
        let next = cursor_of(&page.next, feed);
        if position == Some(next) {
            return (ids, pages);
        }
        position = Some(next);
        url = page.next;
    }
}

#[tokio::test]
async fn the_app_owner_sees_all_its_app_events_in_order() {
    let app = TestApp::spawn().await;
    let ids = publish(
        &app,
        &[
            ("ttd", "apps-test", 1337, "app.instance.created"),
            ("ttd", "apps-test", 500001, "app.instance.created"),
            ("skd", "taxreport", 1337, "app.instance.created"),
            ("ttd", "apps-test", 1338, "app.instance.process.completed"),
            ("ttd", "apps-test", 500000, "app.instance.process.completed"),
        ],
    )
    .await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let first = app.url("/events/api/v1/app/ttd/apps-test?after=0&size=2");
    let app_feed = FeedId::Resource("urn:altinn:resource:app_ttd_apps-test".into());
    let (seen, _) = follow(&app, &first, &app_feed, &owner).await;
    assert_eq!(seen, [ids[0].as_str(), ids[1].as_str(), ids[3].as_str(), ids[4].as_str()]);

    // Filters: type (repeatable), party, a stored event id as `after`.
    let completed = get_page(
        &app,
        &app.url("/events/api/v1/app/ttd/apps-test?after=0&type=app.instance.process.completed"),
        &owner,
        &[],
    )
    .await;
    assert_eq!(completed.ids, [ids[3].as_str(), ids[4].as_str()]);
    assert_eq!(completed.content_type, "application/json");
    let one_party =
        get_page(&app, &app.url("/events/api/v1/app/ttd/apps-test?after=0&party=500001"), &owner, &[]).await;
    assert_eq!(one_party.ids, [ids[1].as_str()]);
    // `from` alone: the events registered at or after that time.
    let all: Vec<Value> =
        app.get_bearer("/events/api/v1/app/ttd/apps-test?after=0", &owner).await.json().await.unwrap();
    let third_time = urlencode(all[2]["time"].as_str().unwrap());
    let from =
        get_page(&app, &app.url(&format!("/events/api/v1/app/ttd/apps-test?from={third_time}")), &owner, &[]).await;
    assert_eq!(from.ids, [ids[3].as_str(), ids[4].as_str()]);
    let after_id =
        get_page(&app, &app.url(&format!("/events/api/v1/app/ttd/apps-test?after={}", ids[1])), &owner, &[]).await;
    assert_eq!(after_id.ids, [ids[3].as_str(), ids[4].as_str()]);
    // Unknown id: from the beginning (Altinn semantics).
    let unknown = get_page(&app, &app.url("/events/api/v1/app/ttd/apps-test?after=no-such-id"), &owner, &[]).await;
    assert_eq!(unknown.ids.len(), 4);

    // The next link is encoded and keeps the other parameters.
    let page = get_page(
        &app,
        &app.url("/events/api/v1/app/ttd/apps-test?after=0&size=1&type=app.instance.created"),
        &owner,
        &[],
    )
    .await;
    assert!(page.next.starts_with(&app.url("/events/api/v1/app/ttd/apps-test?")), "{}", page.next);
    assert!(page.next.contains("type=app.instance.created"), "{}", page.next);
    assert_eq!(cursor_of(&page.next, &app_feed), 1);

    // Who may ask.
    let user = app.user_token(1337, 1337, 2).await;
    let body = assert_problem(app.get_bearer("/events/api/v1/app/ttd/apps-test?after=0", &user).await, 401).await;
    assert_eq!(body["detail"], "Only orgs can call this api");
    let other_scope = app.org_token("ttd", "altinn:events/ttd/other-app").await;
    assert_problem(app.get_bearer("/events/api/v1/app/ttd/apps-test?after=0", &other_scope).await, 403).await;
    let body = assert_problem(app.get_bearer("/events/api/v1/app/ttd/apps-test?party=1", &owner).await, 400).await;
    assert_eq!(body["detail"], "The 'From' or 'After' parameter must be defined.");
    // The broad service-owner scope works, and the PDP still keeps skd to its own app.
    let skd = app.org_token("skd", "altinn:serviceowner/instances.read").await;
    let page = get_page(&app, &app.url("/events/api/v1/app/ttd/apps-test?after=0"), &skd, &[]).await;
    assert!(page.ids.is_empty(), "skd may not read ttd's events");
    app.shutdown().await;
}

#[tokio::test]
async fn a_user_sees_their_own_and_their_organisations_events_never_another_partys() {
    let app = TestApp::spawn().await;
    let ids = publish(
        &app,
        &[
            ("ttd", "apps-test", 1337, "app.instance.created"),
            ("ttd", "apps-test", 500000, "app.instance.created"),
            ("ttd", "apps-test", 500001, "app.instance.created"),
            ("skd", "taxreport", 1337, "app.instance.created"),
            ("ttd", "apps-test", 1338, "app.instance.created"),
        ],
    )
    .await;
    // A generic event in the same party feed: not an app event.
    publish_generic(&app, "estate-for-1337", "/party/1337").await;
    let level2 = app.user_token(1337, 1337, 2).await;
    let party = |q: &str| app.url(&format!("/events/api/v1/app/party?after=0&{q}"));
    assert_eq!(get_page(&app, &party("party=1337"), &level2, &[]).await.ids, [ids[0].as_str()], "skd needs level 3");
    let level3 = app.user_token(1337, 1337, 3).await;
    assert_eq!(get_page(&app, &party("party=1337"), &level3, &[]).await.ids, [ids[0].as_str(), ids[3].as_str()]);
    assert_eq!(get_page(&app, &party("party=500000"), &level2, &[]).await.ids, [ids[1].as_str()], "a role");
    assert_eq!(get_page(&app, &party("unit=897069650"), &level2, &[]).await.ids, [ids[1].as_str()], "by org number");
    let stranger = get_page(&app, &party("party=500001"), &level2, &[]).await;
    assert!(stranger.ids.is_empty());
    let subject = |p: u64| FeedId::Subject(format!("/party/{p}"));
    assert_eq!(cursor_of(&stranger.next, &subject(500001)), 1, "the cursor moves past denied events");
    assert!(get_page(&app, &party("party=1338"), &level2, &[]).await.ids.is_empty());
    let by_person =
        get_page(&app, &app.url("/events/api/v1/app/party?after=0"), &level2, &[("person", "01039012345")]).await;
    assert_eq!(by_person.ids, [ids[0].as_str()]);
    assert!(!by_person.next.contains("01039012345"));
    // Sources with a wildcard.
    let wild = urlencode("https://ttd.apps.altinn.no/ttd/apps-test/%");
    assert_eq!(get_page(&app, &party(&format!("party=1337&source={wild}")), &level3, &[]).await.ids, [ids[0].as_str()]);

    // An organisation asks about itself.
    let org = app.get_text("/localtest/token/org?orgNumber=897069650").await;
    assert_eq!(get_page(&app, &party("unit=897069650"), &org, &[]).await.ids, [ids[1].as_str()]);

    let body = assert_problem(app.get_bearer("/events/api/v1/app/party?after=0", &level2).await, 400).await;
    assert_eq!(
        body["detail"],
        "Subject must be specified using either query params party or unit or header value person."
    );
    let body = assert_problem(app.get_bearer("/events/api/v1/app/party?after=0&unit=12", &level2).await, 400).await;
    assert_eq!(body["detail"], "Value of 'Unit' needs to be exactly 9 digits.");
    let resp = app
        .http
        .get(app.url("/events/api/v1/app/party?after=0"))
        .header(AUTHORIZATION, format!("Bearer {level2}"))
        .header("person", "0103")
        .send()
        .await
        .unwrap();
    let body = assert_problem(resp, 400).await;
    assert_eq!(body["detail"], "Value of 'Person' needs to be exactly 11 digits.");
    // A cursor at the end of the number range is an empty page, at once.
    let far_cursor = urlencode(&cursor_for(&subject(1337), u64::MAX));
    let far = get_page(&app, &party(&format!("party=1337&after={far_cursor}")), &level2, &[]).await;
    assert!(far.ids.is_empty());
    assert_problem(app.get_bearer("/events/api/v1/app/party?after=0&unit=999999999", &level2).await, 404).await;
    let body =
        assert_problem(app.get_bearer("/events/api/v1/app/party?after=0&party=1&size=0", &level2).await, 400).await;
    assert_eq!(body["detail"], "The 'Size' parameter must be a number larger that 0.");
    assert_problem(app.http.get(party("party=1337")).send().await.unwrap(), 401).await;
    app.shutdown().await;
}

#[tokio::test]
async fn post_party_keeps_the_person_out_of_the_url() {
    let app = TestApp::spawn().await;
    let ids = publish(
        &app,
        &[("ttd", "apps-test", 1337, "a"), ("ttd", "apps-test", 1337, "b"), ("ttd", "apps-test", 1337, "c")],
    )
    .await;
    let token = app.user_token(1337, 1337, 2).await;
    let post = |url: String, body: Value| {
        let req = app.http.post(url).header(AUTHORIZATION, format!("Bearer {token}")).json(&body);
        async move { req.send().await.unwrap() }
    };
    let body = json!({"person": "01039012345", "after": "0", "size": 2});
    let resp = post(app.url("/events/api/v1/party"), body.clone()).await;
    assert_eq!(resp.status(), 200);
    let next = resp.headers()["next"].to_str().unwrap().to_owned();
    assert!(next.starts_with(&app.url("/events/api/v1/party?after=c1.")), "only the cursor: {next}");
    assert_eq!(cursor_of(&next, &FeedId::Subject("/party/1337".into())), 2);
    let page: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(page.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), [ids[0].as_str(), ids[1].as_str()]);
    // The same body POSTed to `next`: the URL's after wins.
    let rest: Vec<Value> = post(next, body).await.json().await.unwrap();
    assert_eq!(rest.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), [ids[2].as_str()]);
    let resp = post(app.url("/events/api/v1/party"), json!({"after": "0"})).await;
    assert_problem(resp, 400).await;
    let resp = post(app.url("/events/api/v1/party"), json!({"after": "0", "party": 1337, "bogus": 1})).await;
    assert_problem(resp, 400).await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_approved_organisation_follows_a_resource_for_all_parties() {
    let app = TestApp::spawn().await;
    for (i, subject) in ["/party/1337", "/party/1338", "/party/500001"].iter().enumerate() {
        publish_generic(&app, &format!("estate-{i}"), subject).await;
    }
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let url = app.url(&format!("/events/api/v1/events?resource={}&after=0", urlencode(ESTATE)));
    let page = get_page(&app, &url, &bank, &[]).await;
    assert_eq!(page.ids, ["estate-0", "estate-1", "estate-2"]);
    assert_eq!(page.content_type, "application/cloudevents+json");
    let (all, _) = follow(&app, &format!("{url}&size=1"), &FeedId::Resource(ESTATE.into()), &bank).await;
    assert_eq!(all, ["estate-0", "estate-1", "estate-2"]);
    let one = get_page(&app, &format!("{url}&subject=%2Fparty%2F1338"), &bank, &[]).await;
    assert_eq!(one.ids, ["estate-1"]);
    let after = get_page(
        &app,
        &app.url(&format!("/events/api/v1/events?resource={}&after=estate-0", urlencode(ESTATE))),
        &bank,
        &[],
    )
    .await;
    assert_eq!(after.ids, ["estate-1", "estate-2"]);

    // Not approved: the PDP denies every event, the page is empty with a cursor.
    let skd = app.org_token("skd", "altinn:events.subscribe").await;
    let denied = get_page(&app, &url, &skd, &[]).await;
    assert!(denied.ids.is_empty());
    assert_eq!(cursor_of(&denied.next, &FeedId::Resource(ESTATE.into())), 3);
    let no_scope = app.get_text("/localtest/token/org?orgNumber=912345678").await;
    assert_problem(
        app.get_bearer(&format!("/events/api/v1/events?resource={}&after=0", urlencode(ESTATE)), &no_scope).await,
        403,
    )
    .await;
    let body = assert_problem(app.get_bearer("/events/api/v1/events?resource=estate&after=0", &bank).await, 400).await;
    assert_eq!(body["detail"], "The 'resource' parameter must begin with `urn:altinn:resource:`");
    let body = assert_problem(
        app.get_bearer(&format!("/events/api/v1/events?resource={}", urlencode(ESTATE)), &bank).await,
        400,
    )
    .await;
    assert_eq!(body["detail"], "The 'after' parameter must be defined.");
    let resp = app
        .http
        .get(format!("{url}&subject=%2Fparty%2F1"))
        .header(AUTHORIZATION, format!("Bearer {bank}"))
        .header("Altinn-AlternativeSubject", "/person/01039012345")
        .send()
        .await
        .unwrap();
    let body = assert_problem(resp, 400).await;
    assert_eq!(body["detail"], "Only one of 'subject' or 'alternativeSubject' can be defined.");
    app.shutdown().await;
}

#[tokio::test]
async fn a_mostly_denied_feed_still_fills_the_page_with_one_pdp_request_per_batch() {
    let app = TestApp::spawn().await;
    // Party 1337's feed: 4 skd events (level 3) for every ttd event (level 2).
    let mut plan = Vec::new();
    for _ in 0..6 {
        for _ in 0..4 {
            plan.push(("skd", "taxreport", 1337, "t"));
        }
        plan.push(("ttd", "apps-test", 1337, "t"));
    }
    let ids = publish(&app, &plan).await;
    let permitted: Vec<String> = ids.iter().enumerate().filter(|(i, _)| i % 5 == 4).map(|(_, id)| id.clone()).collect();
    let user = app.user_token(1337, 1337, 2).await;
    let before = app.stats().await["pdp_requests"].as_u64().unwrap();
    let page = get_page(&app, &app.url("/events/api/v1/app/party?party=1337&after=0&size=5"), &user, &[]).await;
    let pdp_calls = app.stats().await["pdp_requests"].as_u64().unwrap() - before;
    assert_eq!(page.ids, permitted[..5], "the page is full although 4 of 5 events are denied");
    // Reads of 5, 10 and 20 events: one PDP request each, not one per event.
    assert_eq!(pdp_calls, 3, "PDP requests for one page");
    // Seqs 25..=28 were scanned and denied; 29 is the next permitted event.
    let party = FeedId::Subject("/party/1337".into());
    assert_eq!(cursor_of(&page.next, &party), 29, "next skips the denied events already scanned");
    let rest = get_page(&app, &page.next, &user, &[]).await;
    assert_eq!(rest.ids, permitted[5..]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_while_publishing_loses_and_duplicates_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let base = app.base.clone();
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let http = app.http.clone();
    let total = 40;
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for n in 0..total {
            let body = json!({"specversion": "1.0", "type": "t", "source": source("ttd", "apps-test", 1337, n), "subject": "/party/1337"});
            let resp = http
                .post(format!("{base}/events/api/v1/app"))
                .header(AUTHORIZATION, format!("Bearer {user}"))
                .header("PlatformAccessToken", &access)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            ids.push(resp.json::<String>().await.unwrap());
        }
        ids
    });
    let mut url = app.url("/events/api/v1/app/ttd/apps-test?after=0&size=3");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < total {
        assert!(std::time::Instant::now() < deadline, "consumer did not catch up");
        let page = get_page(&app, &url, &owner, &[]).await;
        if page.ids.is_empty() {
            tokio::task::yield_now().await;
        }
        seen.extend(page.ids);
        url = page.next;
    }
    let published = publisher.await.unwrap();
    assert_eq!(seen, published, "every event once, in publish order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), total);
    app.shutdown().await;
}

#[tokio::test]
async fn queries_fail_closed_when_the_pdp_or_register_is_down() {
    let mut config = test_config();
    config.register.url = Some(closed_url("/register/api/v1/parties/lookup"));
    config.register.timeout_ms = 300;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    publish(&app, &[("ttd", "apps-test", 1337, "t")]).await;
    let user = app.user_token(1337, 1337, 2).await;
    let body =
        assert_problem(app.get_bearer("/events/api/v1/app/party?after=0&unit=897069650", &user).await, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("register"), "{body}");
    app.shutdown().await;

    let mut config = test_config();
    config.pdp.url = Some(closed_url("/authorization/api/v1/decision"));
    config.pdp.timeout_ms = 300;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    // Store an event directly: publishing needs no PDP for apps, reading does.
    publish(&app, &[("ttd", "apps-test", 1337, "t")]).await;
    let user = app.user_token(1337, 1337, 2).await;
    let resp = app.get_bearer("/events/api/v1/app/party?after=0&party=1337", &user).await;
    let body = assert_problem(resp, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("authorization"), "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_local_pdp_takes_a_multi_request_for_a_full_1000_event_page() {
    let app = TestApp::spawn().await;
    let resources: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"Id": format!("r{i}"), "Attribute": [
                {"AttributeId": "urn:altinn:event-id", "Value": format!("00000000-0000-4000-8000-{i:012}"), "IncludeInResult": true},
                {"AttributeId": "urn:altinn:instance-id", "Value": format!("1337/00000000-0000-4000-8000-{i:012}")},
                {"AttributeId": "urn:altinn:org", "Value": "ttd"}, {"AttributeId": "urn:altinn:app", "Value": "apps-test"},
                {"AttributeId": "urn:altinn:partyid", "Value": "1337"}, {"AttributeId": "urn:altinn:appresource", "Value": "events"}]})
        })
        .collect();
    let refs: Vec<Value> = (0..1000).map(|i| json!({"ReferenceId": ["s1", "a1", format!("r{i}")]})).collect();
    let body = json!({"Request": {
        "AccessSubject": [{"Id": "s1", "Attribute": [{"AttributeId": "urn:altinn:org", "Value": "ttd"}]}],
        "Action": [{"Id": "a1", "Attribute": [{"AttributeId": "urn:oasis:names:tc:xacml:1.0:action:action-id", "Value": "read"}]}],
        "Resource": resources, "MultiRequests": {"RequestReference": refs}}});
    assert!(body.to_string().len() > 256 * 1024, "larger than the API's body limit");
    let resp = app.http.post(app.url("/authorization/api/v1/decision")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let results = answer["Response"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r["Decision"] == "Permit"));
    app.shutdown().await;
}

/// A page that spends its scan budget on events the caller may not see
/// answers at once, even with `wait`, with `next` past what it scanned: the
/// caller moves on instead of waiting at a place that is not the head.
#[tokio::test]
async fn a_page_that_runs_out_of_scan_budget_answers_at_once_and_moves_on() {
    let app = TestApp::spawn().await;
    let res = "urn:altinn:resource:app_ttd_apps-test";
    let records: Vec<_> =
        (0..150).map(|i| event_record("ttd/apps-test", &format!("e{i}"), res, "/party/1337", "t")).collect();
    for result in app.feeds.append_all(records, altinn_events::feeds::IdSource::Server).await {
        result.unwrap();
    }
    // User 1338 may see none of party 1337's events; size 1 scans at most 100.
    let stranger = app.user_token(1338, 1338, 2).await;
    let first =
        get_page(&app, &app.url("/events/api/v1/app/party?party=1337&after=0&size=1&wait=30"), &stranger, &[]).await;
    assert!(first.ids.is_empty());
    assert_eq!(app.parks(), 0, "did not wait");
    let party = FeedId::Subject("/party/1337".into());
    assert_eq!(cursor_of(&first.next, &party), 100, "past the 100 events scanned");
    // The rest of the feed fits the budget: that page is at the head and
    // waits (until the app stops, which answers it).
    let second = {
        let (app_url, stranger) = (first.next.clone(), stranger.clone());
        let http = app.http.clone();
        tokio::spawn(async move { http.get(app_url).header(AUTHORIZATION, format!("Bearer {stranger}")).send().await })
    };
    app.until_parked(1).await;
    app.shutdown().await;
    let second = second.await.unwrap().unwrap();
    let next = second.headers()["next"].to_str().unwrap().to_owned();
    assert!(second.json::<Vec<Value>>().await.unwrap().is_empty());
    assert_eq!(cursor_of(&next, &party), 150);
}
