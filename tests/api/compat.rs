//! Altinn's clients work unchanged (issue 14): requests exactly as Altinn's
//! own clients and documentation send them get Altinn's answers.

use altinn_events::domain::FeedId;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::helpers::*;

const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";
const GUID: &str = "6fb3f738-6800-4f29-9f3e-1c66862656cd";
const SYSTEM_USER: &str = "a6355a68-86b8-4344-8a81-0248cb461468";

fn ids(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["id"].as_str().unwrap()).collect()
}

async fn publish_generic(app: &TestApp, body: Value) -> reqwest::Response {
    let owner = app.org_token("ttd", "altinn:events.publish").await;
    app.http
        .post(app.url("/events/api/v1/events"))
        .header(AUTHORIZATION, format!("Bearer {owner}"))
        .header(CONTENT_TYPE, "application/cloudevents+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn estate(id: &str, source: &str, subject: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "type": "no.altinn.estate.registered", "source": source,
        "subject": subject, "resource": ESTATE})
}

/// 1. Every route answers with a trailing `/` and in any ASCII case of its
/// fixed segments, for every method; `next` links stay canonical.
#[tokio::test]
async fn routes_take_a_trailing_slash_and_any_case() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test altinn:events.publish").await;
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let bearer = |t: &str| format!("Bearer {t}");
    let event = json!({"specversion": "1.0", "type": "t", "subject": "/party/1337",
        "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/{GUID}")});
    let resp = app
        .http
        .post(app.url("/Events/Api/V1/App/"))
        .header(AUTHORIZATION, bearer(&user))
        .header("PlatformAccessToken", &access)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "POST /Events/Api/V1/App/");
    let resp = app
        .http
        .post(app.url("/events/api/v1/events/"))
        .header(AUTHORIZATION, bearer(&owner))
        .header(CONTENT_TYPE, "application/cloudevents+json")
        .body(estate("e1", "urn:x", "/party/1337").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "POST /events/api/v1/events/");

    let gets = [
        ("/events/api/v1/app/party/?party=1337&after=0", &user, "/events/api/v1/app/party?"),
        ("/Events/Api/V1/App/Party?party=1337&after=0", &user, "/events/api/v1/app/party?"),
        ("/EVENTS/API/V1/APP/ttd/apps-test/?after=0", &owner, "/events/api/v1/app/ttd/apps-test?"),
        (&*format!("/events/api/v1/events/?resource={}&after=0", urlencode(ESTATE)), &bank, "/events/api/v1/events?"),
    ];
    for (path, token, canonical) in gets {
        let resp = app.get_bearer(path, token).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        let next = resp.headers()["next"].to_str().unwrap().to_owned();
        assert!(next.starts_with(&app.url(canonical)), "GET {path}: next is canonical: {next}");
        let page: Vec<Value> = resp.json().await.unwrap();
        assert_eq!(page.len(), 1, "GET {path}");
    }
    let resp = app
        .http
        .post(app.url("/events/api/v1/party/"))
        .header(AUTHORIZATION, bearer(&user))
        .json(&json!({"party": 1337, "after": "0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "POST /events/api/v1/party/ (the seed's URL)");
    assert!(resp.headers()["next"].to_str().unwrap().starts_with(&app.url("/events/api/v1/party?")));
    let resp = app
        .http
        .post(app.url(&format!("/Events/Api/V1/App/ttd/apps-test/Instances/1337/{GUID}/AccessKey/")))
        .header(AUTHORIZATION, bearer(&owner))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "POST .../AccessKey/");
    let key: Value = resp.json().await.unwrap();
    let resp = app
        .http
        .post(app.url(&format!("/Events/InstanceEventsForInstance/1337/{GUID}/?after=0")))
        .header("Altinn-Instance-Access-Key", key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "POST /Events/InstanceEventsForInstance/.../");
    for path in ["/Health/Live/", "/health/ready/", "/HEALTH", "//health//live"] {
        assert_eq!(app.http.get(app.url(path)).send().await.unwrap().status(), 200, "GET {path}");
    }
    // Empty segments, as Altinn's clients build them (`.../subscriptions//1`)
    // and the platform's proxies merge them.
    let resp = app
        .http
        .post(app.url("/events/api/v1//subscriptions/"))
        .header(AUTHORIZATION, bearer(&user))
        .json(&json!({"endPoint": app.url("/localtest/webhooks/c"), "sourceFilter": "https://ttd.apps.altinn.no/ttd/apps-test",
            "subjectFilter": "/party/1337"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "POST .../v1//subscriptions/");
    let id = resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let resp = app.get_bearer(&format!("/events/api/v1/subscriptions//{id}"), &user).await;
    assert_eq!(resp.status(), 200, "GET .../subscriptions//{id}");
    assert_eq!(resp.json::<Value>().await.unwrap()["id"], id);
    let resp = app.get_bearer("/events//api/v1/app/party?party=1337&after=0", &user).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["next"].to_str().unwrap().starts_with(&app.url("/events/api/v1/app/party?")));
    assert_problem(app.http.get(app.url("/events/api/v1/nothing/")).send().await.unwrap(), 404).await;
    app.shutdown().await;
}

/// 2. Service owners read their app's feed with Altinn's service-owner
/// scopes; the PDP still decides per event.
#[tokio::test]
async fn service_owner_scopes_open_the_app_owners_feed() {
    let app = TestApp::spawn().await;
    let id = publish_app_event(&app, "ttd", "apps-test", 1337, GUID, "t").await;
    for scope in ["altinn:serviceowner", "altinn:serviceowner/instances.read"] {
        let ttd = app.org_token("ttd", scope).await;
        let page: Vec<Value> =
            app.get_bearer("/events/api/v1/app/ttd/apps-test?after=0", &ttd).await.json().await.unwrap();
        assert_eq!(ids(&page), [id.as_str()], "{scope}");
        let skd = app.org_token("skd", scope).await;
        let page: Vec<Value> =
            app.get_bearer("/events/api/v1/app/ttd/apps-test?after=0", &skd).await.json().await.unwrap();
        assert!(page.is_empty(), "{scope}: another owner's app is denied by the PDP");
    }
    app.shutdown().await;
}

/// 3. `type` and `source` match like SQL ILIKE (case-insensitive, `%` and
/// `_`), several values are alternatives, and `eventType` names `type`.
#[tokio::test]
async fn type_and_source_filters_match_like_ilike() {
    let app = TestApp::spawn().await;
    let kinds =
        ["app.instance.created", "app.instance.process.completed", "App.Instance.Substatus.Changed", "other.type"];
    let mut published = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let guid = format!("00000000-0000-4000-8000-{i:012}");
        published.push(publish_app_event(&app, "ttd", "apps-test", 1337, &guid, kind).await);
    }
    let user = app.user_token(1337, 1337, 2).await;
    let page = |query: String| {
        let url = format!("/events/api/v1/app/party?party=1337&after=0&{query}");
        let (app, user) = (&app, &user);
        async move { app.get_bearer(&url, user).await.json::<Vec<Value>>().await.unwrap() }
    };
    let want = |idx: &[usize]| idx.iter().map(|&i| published[i].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&page("type=app.instance.%".into()).await), want(&[0, 1, 2]));
    assert_eq!(ids(&page("type=APP.INSTANCE.CREATED".into()).await), want(&[0]));
    assert_eq!(ids(&page("type=app.instance.process.complete_".into()).await), want(&[1]));
    assert_eq!(ids(&page("type=other.type&type=app.instance.created".into()).await), want(&[0, 3]));
    assert_eq!(ids(&page("eventType=app.instance.created".into()).await), want(&[0]));
    let source =
        urlencode("HTTPS://TTD.APPS.ALTINN.NO/ttd/apps-test/instances/1337/00000000-0000-4000-8000-00000000000_");
    assert_eq!(ids(&page(format!("source={source}")).await), want(&[0, 1, 2, 3]));
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let by_owner: Vec<Value> = app
        .get_bearer("/events/api/v1/app/ttd/apps-test?after=0&type=%25substatus%25", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&by_owner), want(&[2]));
    app.shutdown().await;
}

/// 4. `(id, source)` identifies an event: one id from two sources is two
/// events, both stored in every feed; the same pair again is a retry.
#[tokio::test]
async fn one_id_from_two_sources_is_two_events() {
    let app = TestApp::spawn().await;
    assert_eq!(publish_generic(&app, estate("shared-id", "urn:no:skd:a", "/party/1337")).await.status(), 200);
    assert_eq!(publish_generic(&app, estate("shared-id", "urn:no:skd:b", "/party/1337")).await.status(), 200);
    assert_eq!(publish_generic(&app, estate("shared-id", "urn:no:skd:a", "/party/1337")).await.status(), 200);
    for feed in [FeedId::Resource(ESTATE.into()), FeedId::Subject("/party/1337".into())] {
        let page = app.feeds.read(&feed, 0, &Default::default(), 10, u64::MAX, false).await.unwrap();
        let sources: Vec<&str> = page.events.iter().map(|e| e.record.source.as_str()).collect();
        assert_eq!(sources, ["urn:no:skd:a", "urn:no:skd:b"], "{feed}");
    }
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let page: Vec<Value> = app
        .get_bearer(&format!("/events/api/v1/events?resource={}&after=0", urlencode(ESTATE)), &bank)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page.len(), 2, "both are read, each authorized: {page:?}");
    app.shutdown().await;
}

/// 5. `next` carries what the request said in `Altinn-AlternativeSubject`:
/// following it without the header continues with the same subject.
#[tokio::test]
async fn next_carries_the_alternative_subject() {
    let app = TestApp::spawn().await;
    for (id, alt) in [("a1", "/person/01039012345"), ("b1", "/person/01039012346"), ("a2", "/person/01039012345")] {
        let mut event = estate(id, "urn:no:skd", "/party/1337");
        event["alternativesubject"] = json!(alt);
        assert_eq!(publish_generic(&app, event).await.status(), 200);
    }
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let resp = app
        .http
        .get(app.url(&format!("/events/api/v1/events?resource={}&after=0&size=1", urlencode(ESTATE))))
        .header(AUTHORIZATION, format!("Bearer {bank}"))
        .header("Altinn-AlternativeSubject", "/person/01039012345")
        .send()
        .await
        .unwrap();
    let next = resp.headers()["next"].to_str().unwrap().to_owned();
    assert_eq!(ids(&resp.json::<Vec<Value>>().await.unwrap()), ["a1"]);
    assert!(next.contains("alternativeSubject="), "{next}");
    let rest: Vec<Value> =
        app.http.get(&next).header(AUTHORIZATION, format!("Bearer {bank}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids(&rest), ["a2"], "the same subject, without the header");
    app.shutdown().await;
}

/// 6. `GET /events` reads `size` as Altinn does there: below 1 is 50, above
/// 1000 is 1000. The app endpoints keep their 400.
#[tokio::test]
async fn generic_size_is_read_as_altinn_reads_it() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        assert_eq!(publish_generic(&app, estate(&format!("e{i}"), "urn:x", "/party/1337")).await.status(), 200);
    }
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    for size in ["0", "-5", "5000"] {
        let resp = app
            .get_bearer(&format!("/events/api/v1/events?resource={}&after=0&size={size}", urlencode(ESTATE)), &bank)
            .await;
        assert_eq!(resp.status(), 200, "size={size}");
        assert_eq!(resp.json::<Vec<Value>>().await.unwrap().len(), 3, "size={size}");
    }
    let resp =
        app.get_bearer(&format!("/events/api/v1/events?resource={}&after=0&size=abc", urlencode(ESTATE)), &bank).await;
    assert_problem(resp, 400).await;
    let user = app.user_token(1337, 1337, 2).await;
    let body =
        assert_problem(app.get_bearer("/events/api/v1/app/party?party=1337&after=0&size=0", &user).await, 400).await;
    assert_eq!(body["detail"], "The 'Size' parameter must be a number larger that 0.");
    app.shutdown().await;
}

/// 7. An event about a person (`urn:altinn:person:identifier-no:{ssn}`) is
/// decided by the person's party: the service looks the person up in
/// Register and sends `urn:altinn:party:uuid` (the local PDP, like Altinn's,
/// denies a request that names an identity number). The event is returned
/// as published.
#[tokio::test]
async fn events_about_a_person_are_decided_by_the_persons_party() {
    let app = TestApp::spawn().await;
    let urn = "urn:altinn:person:identifier-no:01039012345";
    assert_eq!(publish_generic(&app, estate("about-1337", "urn:x", urn)).await.status(), 200, "the owner publishes");
    let unknown = "urn:altinn:person:identifier-no:31129912345";
    assert_eq!(publish_generic(&app, estate("about-nobody", "urn:x", unknown)).await.status(), 200);
    let url = format!("/events/api/v1/events?resource={}&after=0", urlencode(ESTATE));
    let read = |user: u64| {
        let (app, url) = (&app, &url);
        async move {
            let token = app
                .get_text(&format!(
                    "/localtest/token/user?userId={user}&partyId={user}&authLevel=2&scope=altinn:events.subscribe"
                ))
                .await;
            app.get_bearer(url, &token).await.json::<Vec<Value>>().await.unwrap()
        }
    };
    let mine = read(1337).await;
    assert_eq!(ids(&mine), ["about-1337"], "the person reads events about themselves");
    assert_eq!(mine[0]["subject"], urn, "returned unchanged");
    assert!(read(1338).await.is_empty(), "another person does not");
    app.shutdown().await;
}

/// 8. System users (an end-user system acting for an organisation) read
/// their organisation's events, by a token from the Maskinporten exchange or
/// the local issuer.
#[tokio::test]
async fn system_users_read_their_organisations_events() {
    let app = TestApp::spawn().await;
    let theirs = publish_app_event(&app, "ttd", "apps-test", 500000, GUID, "t").await;
    publish_app_event(&app, "ttd", "apps-test", 1337, GUID, "t").await;
    let direct =
        app.get_text(&format!("/localtest/token/systemuser?systemUserId={SYSTEM_USER}&orgNumber=897069650")).await;
    let mp = app
        .get_text(&format!(
            "/localtest/token/maskinporten?orgNumber=897069650&systemUserId={SYSTEM_USER}&scope=altinn:events.subscribe"
        ))
        .await;
    let exchanged = app.get_bearer("/authentication/api/v1/exchange/maskinporten", &mp).await.text().await.unwrap();
    for token in [direct, exchanged] {
        let who: Value = app.get_bearer("/localtest/whoami", &token).await.json().await.unwrap();
        assert_eq!(
            who["subject"],
            json!({"kind": "systemuser", "systemUserId": SYSTEM_USER, "orgNumber": "897069650"})
        );
        let page: Vec<Value> =
            app.get_bearer("/events/api/v1/app/party?party=500000&after=0", &token).await.json().await.unwrap();
        assert_eq!(ids(&page), [theirs.as_str()]);
        let page: Vec<Value> =
            app.get_bearer("/events/api/v1/app/party?party=1337&after=0", &token).await.json().await.unwrap();
        assert!(page.is_empty(), "not another party's");
        let resp = app
            .http
            .post(app.url("/events/api/v1/party"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .json(&json!({"unit": "897069650", "after": "0"}))
            .send()
            .await
            .unwrap();
        assert_eq!(ids(&resp.json::<Vec<Value>>().await.unwrap()), [theirs.as_str()]);
    }
    // A system user nobody registered: denied everything.
    let stranger = app
        .get_text("/localtest/token/systemuser?systemUserId=11111111-2222-4333-8444-555555555555&orgNumber=897069650")
        .await;
    let page: Vec<Value> =
        app.get_bearer("/events/api/v1/app/party?party=500000&after=0", &stranger).await.json().await.unwrap();
    assert!(page.is_empty());
    app.shutdown().await;
}

/// 9. `/health` (Altinn's probe path) answers like `/health/live`.
#[tokio::test]
async fn health_answers_like_live() {
    let app = TestApp::spawn().await;
    let resp = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "live"}));
    app.shutdown().await;
}
