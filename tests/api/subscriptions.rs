//! Subscriptions (issue 15): Altinn's API, rules and texts, the signed
//! validation push, re-validation, secret rotation, endpoint safety.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use altinn_events::Overrides;
use altinn_events::webhooks::signing;
use reqwest::header::{AUTHORIZATION, LOCATION};
use serde_json::{Value, json};

use crate::helpers::*;

const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";
const APP_SOURCE: &str = "https://ttd.apps.altinn.no/ttd/apps-test";

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: u64,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn verifies(&self, secret: &str) -> bool {
        signing::verifies(secret, &self.signature, &self.id, self.timestamp, &self.body)
    }
}

/// A webhook endpoint on 127.0.0.1 that records what it gets and answers
/// the status a test sets.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<u16>>,
    delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let status = Arc::new(Mutex::new(200u16));
        let delay: Arc<Mutex<Duration>> = Arc::default();
        let (g, s, d) = (got.clone(), status.clone(), delay.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (g, s, d) = (g.clone(), s.clone(), d.clone());
                async move {
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    g.lock().unwrap().push(Received {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp").parse().unwrap_or(0),
                        signature: h("webhook-signature"),
                        content_type: h("content-type"),
                        body: body.to_vec(),
                    });
                    let code = *s.lock().unwrap();
                    let delay = *d.lock().unwrap();
                    tokio::time::sleep(delay).await;
                    (axum::http::StatusCode::from_u16(code).unwrap(), "receiver says so")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, got, status, delay }
    }

    /// Answers each push only after `delay` (recorded when it arrives).
    pub fn delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

pub async fn subscribe(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/events/api/v1/subscriptions"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_subscription(app: &TestApp, token: &str, id: u64) -> reqwest::Response {
    app.get_bearer(&format!("/events/api/v1/subscriptions/{id}"), token).await
}

/// Polls the subscription until `done` holds ([`PATIENCE`] at most).
async fn until_subscription(app: &TestApp, token: &str, id: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s: Value = get_subscription(app, token, id).await.json().await.unwrap();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fast_retries() -> altinn_events::config::Config {
    let mut config = test_config();
    config.webhooks.validation_retry_seconds = vec![1, 1];
    config.webhooks.timeout_seconds = 5;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_is_validated_by_a_signed_push() {
    let mut config = fast_retries();
    // The validator's sweep for attempts it was not told of is an hour away:
    // a validation within the test is the one made on creation.
    config.webhooks.validation_sweep_seconds = 3600;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let receiver = Receiver::start().await;
    let ttd = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let resp = subscribe(&app, &ttd, &json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    let id = body["id"].as_u64().expect("an integer id");
    let location = body["id"].to_string();
    assert_eq!(body["consumer"], "/org/ttd");
    assert_eq!(body["createdBy"], "/org/ttd");
    assert_eq!(body["validated"], false);
    assert_eq!(body["resourceFilter"], "urn:altinn:resource:app_ttd_apps-test", "derived from the source");
    assert!(body.get("subjectFilter").is_none(), "nulls are left out: {body}");
    let secret = body["secret"].as_str().expect("the secret, once").to_owned();
    assert!(secret.starts_with("whsec_"));
    let checked = until_subscription(&app, &ttd, id, "validated", |s| s["validated"] == true).await;
    assert_eq!(checked["status"], "active");
    assert!(checked.get("secret").is_none(), "the secret is never shown again");
    let pushes = receiver.received();
    assert_eq!(pushes.len(), 1);
    let push = &pushes[0];
    assert!(push.verifies(&secret), "signed with the subscription's secret");
    assert_eq!(push.content_type, "application/json");
    let event = push.json();
    assert_eq!(event["type"], "platform.events.validatesubscription");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], push.id.as_str());
    assert_eq!(event["source"], app.url(&format!("/events/api/v1/subscriptions/{id}")));
    assert!(location.parse::<u64>().is_ok());
    app.shutdown().await;
}

#[tokio::test]
async fn creation_answers_201_with_altinns_location_and_the_same_subscription_again_is_the_same() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let user = app.user_token(1337, 1337, 2).await;
    let body = json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE, "subjectFilter": "/party/1337", "typeFilter": "app.instance.created"});
    let first = subscribe(&app, &user, &body).await;
    assert_eq!(first.status(), 201);
    let id = first.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let again = subscribe(&app, &user, &body).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()[LOCATION], format!("/events/api/v1/subscription/{id}"));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], id, "the existing one");
    assert!(again.get("secret").is_none(), "its secret was shown once");
    assert_eq!(again["consumer"], "/user/1337");
    // Altinn's Location (singular) answers too.
    assert_eq!(app.get_bearer(&format!("/events/api/v1/subscription/{id}"), &user).await.status(), 200);
    // Another subscription gets the next id; the list holds only the caller's.
    let other = subscribe(
        &app,
        &user,
        &json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE, "subjectFilter": "/party/500000"}),
    )
    .await;
    let other_id = other.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    assert_eq!(other_id, id + 1);
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let banks = subscribe(&app, &bank, &json!({"endPoint": receiver.url, "resourceFilter": ESTATE})).await;
    assert_eq!(banks.status(), 201);
    assert_eq!(banks.json::<Value>().await.unwrap()["consumer"], "/organisation/912345678");
    let list: Value = app.get_bearer("/events/api/v1/subscriptions", &user).await.json().await.unwrap();
    assert_eq!(list["count"], 2);
    let ids: Vec<u64> = list["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [id, other_id]);
    app.shutdown().await;
}

#[tokio::test]
async fn only_the_owner_reads_or_deletes_and_ids_are_never_reused() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let ttd = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let id = subscribe(&app, &ttd, &json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE}))
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let other = app.user_token(1338, 1338, 2).await;
    assert_problem(get_subscription(&app, &other, id).await, 403).await;
    let delete = |token: &str, id: u64| {
        let req = app
            .http
            .delete(app.url(&format!("/events/api/v1/subscriptions/{id}")))
            .header(AUTHORIZATION, format!("Bearer {token}"));
        async move { req.send().await.unwrap() }
    };
    assert_problem(delete(&other, id).await, 403).await;
    assert_problem(get_subscription(&app, &ttd, 999_999).await, 404).await;
    assert_problem(delete(&ttd, 999_999).await, 404).await;
    assert_problem(app.get_bearer("/events/api/v1/subscriptions/not-a-number", &ttd).await, 404).await;
    assert_eq!(delete(&ttd, id).await.status(), 200);
    assert_problem(get_subscription(&app, &ttd, id).await, 404).await;
    assert_problem(delete(&ttd, id).await, 404).await;
    // The same subscription again is a new one, with a new id.
    let again = subscribe(&app, &ttd, &json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(again["id"].as_u64().unwrap(), id + 1, "a deleted id is not reused");
    app.shutdown().await;
}

#[tokio::test]
async fn altinns_creation_rules_and_texts() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let hook = receiver.url.clone();
    let user = app.user_token(1337, 1337, 2).await;
    let user_subscribe =
        app.get_text("/localtest/token/user?userId=1337&partyId=1337&authLevel=2&scope=altinn:events.subscribe").await;
    let ttd = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let skd = app.org_token("skd", "altinn:events.subscribe").await;
    let cases: Vec<(&str, &String, Value, u16, &str)> = vec![
        (
            "no endpoint",
            &user,
            json!({"sourceFilter": APP_SOURCE, "subjectFilter": "/party/1337"}),
            400,
            "Missing or invalid endpoint to push events towards",
        ),
        (
            "relative endpoint",
            &user,
            json!({"endPoint": "/hook", "sourceFilter": APP_SOURCE, "subjectFilter": "/party/1337"}),
            400,
            "Missing or invalid endpoint to push events towards",
        ),
        (
            "http source",
            &user,
            json!({"endPoint": hook, "sourceFilter": "http://ttd.apps.altinn.no/ttd/apps-test", "subjectFilter": "/party/1337"}),
            400,
            "SourceFilter must be an absolute URL with the https scheme.",
        ),
        (
            "generic without the scope",
            &user,
            json!({"endPoint": hook, "resourceFilter": ESTATE}),
            403,
            "The token lacks the scope altinn:events.subscribe.",
        ),
        (
            "resource not a urn",
            &user_subscribe,
            json!({"endPoint": hook, "resourceFilter": "urn:altinn"}),
            400,
            "Resource filter must be a valid urn",
        ),
        (
            "app id missing from the source",
            &user,
            json!({"endPoint": hook, "sourceFilter": "https://ttd.apps.altinn.no/ttd", "subjectFilter": "/party/1337"}),
            400,
            "A valid app id is required in source filter {environment}/{org}/{app}",
        ),
        (
            "resource and source disagree",
            &user,
            json!({"endPoint": hook, "sourceFilter": APP_SOURCE, "resourceFilter": "urn:altinn:resource:app_skd_taxreport", "subjectFilter": "/party/1337"}),
            400,
            "Provided resource filter and source filter are not compatible",
        ),
        (
            "app without a subject",
            &user,
            json!({"endPoint": hook, "sourceFilter": APP_SOURCE}),
            400,
            "A valid subject to the authenticated identity is required",
        ),
        (
            "unknown alternative subject",
            &user,
            json!({"endPoint": hook, "sourceFilter": APP_SOURCE, "alternativeSubjectFilter": "/person/31129912345"}),
            400,
            "A valid subject to the authenticated identity is required",
        ),
        (
            "generic without a resource",
            &user_subscribe,
            json!({"endPoint": hook, "sourceFilter": "https://skatteetaten.no/estate"}),
            400,
            "Resource filter is required.",
        ),
        (
            "generic with a source",
            &user_subscribe,
            json!({"endPoint": hook, "resourceFilter": ESTATE, "sourceFilter": "https://skatteetaten.no/estate"}),
            400,
            "Source filter is not supported for subscriptions on this resource.",
        ),
        (
            "generic with an alternative subject",
            &user_subscribe,
            json!({"endPoint": hook, "resourceFilter": ESTATE, "alternativeSubjectFilter": "/person/01039012345"}),
            400,
            "AlternativeSubject filter is not supported for subscriptions on this resource.",
        ),
        (
            "subunits without a subject",
            &ttd,
            json!({"endPoint": hook, "sourceFilter": APP_SOURCE, "includeSubunits": true}),
            400,
            "IncludeSubunits requires a subject filter.",
        ),
        (
            "app: the PDP denies another party",
            &user,
            json!({"endPoint": hook, "sourceFilter": APP_SOURCE, "subjectFilter": "/party/1338"}),
            403,
            "Not authorized to create a subscription for resource urn:altinn:resource:app_ttd_apps-test.",
        ),
        (
            "generic: the PDP denies",
            &skd,
            json!({"endPoint": hook, "resourceFilter": ESTATE}),
            403,
            "Not authorized to create a subscription for resource urn:altinn:resource:ttd-estate-of-deceased.",
        ),
    ];
    for (name, token, body, status, detail) in cases {
        let problem = assert_problem(subscribe(&app, token, &body).await, status).await;
        assert_eq!(problem["detail"], detail, "{name}");
    }
    // An alternative subject known to Register becomes the subject.
    let resp = subscribe(
        &app,
        &user,
        &json!({"endPoint": hook, "sourceFilter": APP_SOURCE, "alternativeSubjectFilter": "/person/01039012345"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["subjectFilter"], "/party/1337");
    assert_eq!(body["alternativeSubjectFilter"], "/person/01039012345");
    // A resource filter alone makes an app subscription too.
    let resp =
        subscribe(&app, &ttd, &json!({"endPoint": hook, "resourceFilter": "urn:altinn:resource:app_ttd_apps-test"}))
            .await;
    assert_eq!(resp.status(), 201);
    assert_problem(
        app.http
            .post(app.url("/events/api/v1/subscriptions"))
            .header(AUTHORIZATION, format!("Bearer {user}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{nope")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_problem(app.http.post(app.url("/events/api/v1/subscriptions")).json(&json!({})).send().await.unwrap(), 401)
        .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_shows_its_error_and_validate_runs_again() {
    let app = TestApp::spawn_with(fast_retries(), Overrides::default()).await;
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let ttd = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let created: Value = subscribe(&app, &ttd, &json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE}))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_u64().unwrap();
    // The first attempt and two retries (1 s apart) fail: failing, with the error.
    let failing = until_subscription(&app, &ttd, id, "failing", |s| s["status"] == "failing").await;
    assert_eq!(failing["validated"], false);
    assert_eq!(failing["lastError"], "the endpoint answered 500: receiver says so");
    assert_eq!(receiver.received().len(), 3, "the first attempt and the two retries");
    // The endpoint recovers; the owner asks for validation again.
    receiver.answer(200);
    let resp = app
        .http
        .post(app.url(&format!("/events/api/v1/subscriptions/{id}/validate")))
        .header(AUTHORIZATION, format!("Bearer {ttd}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let validated = until_subscription(&app, &ttd, id, "validated", |s| s["validated"] == true).await;
    assert!(validated.get("lastError").is_none());
    let other = app.org_token("skd", "altinn:events.subscribe").await;
    let resp = app
        .http
        .post(app.url(&format!("/events/api/v1/subscriptions/{id}/validate")))
        .header(AUTHORIZATION, format!("Bearer {other}"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_new_one() {
    let app = TestApp::spawn_with(fast_retries(), Overrides::default()).await;
    let receiver = Receiver::start().await;
    let ttd = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let created: Value = subscribe(&app, &ttd, &json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE}))
        .await
        .json()
        .await
        .unwrap();
    let (id, old) = (created["id"].as_u64().unwrap(), created["secret"].as_str().unwrap().to_owned());
    until_subscription(&app, &ttd, id, "validated", |s| s["validated"] == true).await;
    let rotated: Value =
        app.post_bearer(&format!("/events/api/v1/subscriptions/{id}/secret/rotate"), &ttd).await.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    // The next push (a re-validation) verifies with either secret.
    app.http
        .post(app.url(&format!("/events/api/v1/subscriptions/{id}/validate")))
        .header(AUTHORIZATION, format!("Bearer {ttd}"))
        .send()
        .await
        .unwrap();
    until("a second push", || receiver.received().len() == 2).await;
    let push = &receiver.received()[1];
    assert!(push.verifies(&new) && push.verifies(&old), "{}", push.signature);
    assert!(!receiver.received()[0].verifies(&new), "the first push was signed with the old secret only");
    app.shutdown().await;
}

/// With `webhooks.allow_private_endpoints = false` (serve's default), an
/// `http` or loopback endpoint is refused at creation, and nothing is sent.
#[tokio::test]
async fn internal_endpoints_are_refused_when_private_endpoints_are_not_allowed() {
    let receiver = Receiver::start().await;
    let port = receiver.url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    let mut config = test_config();
    config.webhooks.allow_private_endpoints = Some(false);
    // The port is allowed: what refuses is the address.
    config.webhooks.allowed_ports = vec![443, port.parse().unwrap()];
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let ttd = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let problem = assert_problem(
        subscribe(&app, &ttd, &json!({"endPoint": receiver.url, "sourceFilter": APP_SOURCE})).await,
        400,
    )
    .await;
    assert_eq!(problem["detail"], "Missing or invalid endpoint to push events towards");
    for endpoint in [
        format!("https://127.0.0.1:{port}/hook"),
        format!("https://localhost:{port}/hook"),
        "https://169.254.169.254/latest".to_owned(),
        "https://[::1]/hook".to_owned(),
    ] {
        let problem = assert_problem(
            subscribe(&app, &ttd, &json!({"endPoint": endpoint, "sourceFilter": APP_SOURCE})).await,
            400,
        )
        .await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("events are pushed only to public https endpoints"), "{endpoint}: {detail}");
        assert!(!detail.contains("127.0.0.1") && !detail.contains("::1"), "no address named: {detail}");
    }
    assert!(receiver.received().is_empty(), "no request was sent");
    app.shutdown().await;
}

/// Dev mode's built-in receiver records what is pushed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_receiver_shows_what_it_got() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let endpoint = app.url("/localtest/webhooks/mine");
    let created: Value = subscribe(
        &app,
        &user,
        &json!({"endPoint": endpoint, "sourceFilter": APP_SOURCE, "subjectFilter": "/party/1337"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = created["id"].as_u64().unwrap();
    until_subscription(&app, &user, id, "validated", |s| s["validated"] == true).await;
    let log: Value = app.http.get(app.url("/localtest/webhooks/mine")).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["count"], 1);
    let entry = &log["received"][0];
    assert_eq!(entry["body"]["type"], "platform.events.validatesubscription");
    let signature = entry["webhookSignature"].as_str().unwrap();
    let body = serde_json::to_vec(&entry["body"]).unwrap();
    let timestamp: u64 = entry["webhookTimestamp"].as_str().unwrap().parse().unwrap();
    assert!(signing::verifies(
        created["secret"].as_str().unwrap(),
        signature,
        entry["webhookId"].as_str().unwrap(),
        timestamp,
        &body
    ));
    app.shutdown().await;
}
