use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use altinn_events::config::{Config, Mode};
use altinn_events::{Overrides, Running};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

/// The PKCS#8 key the local issuer signs with, generated once per test
/// process (RSA key generation is the slowest part of a start).
pub fn key_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let pem = altinn_events::localtest::keys::generate_pem().expect("key");
        let path = std::env::temp_dir().join(format!("altinn-events-test-key-{}.pem", std::process::id()));
        std::fs::write(&path, pem).expect("write key");
        path
    })
}

/// A second key that the platform does not know.
pub fn foreign_key_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| altinn_events::localtest::keys::generate_pem().expect("key"))
}

/// The cursor key of the test apps, so that tests can read positions.
pub const TEST_CURSOR_KEY: &str = "test-cursor-key-0123456789abcdef0123456789abcdef";

pub fn test_config() -> Config {
    let mut config = Config::default();
    config.localtest.key_file = Some(key_file().clone());
    config.cosmos.segment_size = 4;
    config.cursors.keys.insert("test".into(), secrecy::SecretString::from(TEST_CURSOR_KEY));
    config.subscription_secrets.keys.insert("test".into(), secrecy::SecretString::from(TEST_WEBHOOK_SECRET_KEY));
    config
}

/// The ring that seals the test apps' stored webhook secrets: the same for
/// every app of a test, so that one app delivers what another stored.
pub const TEST_WEBHOOK_SECRET_KEY: &str = "test-webhook-secret-key-0123456789";

fn test_cursors() -> altinn_events::api::cursor::Cursors {
    let keys = [("test".to_owned(), secrecy::SecretString::from(TEST_CURSOR_KEY))].into_iter().collect();
    altinn_events::api::cursor::Cursors::new(Some("test".into()), &keys)
}

/// The position in `feed` that the `after` cursor of a `next` link stands for.
pub fn cursor_of(next: &str, feed: &altinn_events::domain::FeedId) -> u64 {
    let url: url::Url = next.parse().expect("next is a URL");
    let after = url.query_pairs().find(|(k, _)| k == "after").expect("next has after").1.into_owned();
    test_cursors().open(feed, &after).unwrap_or_else(|e| panic!("{after} is not a cursor of {feed}: {e}")).position
}

/// A cursor the test apps accept, for `position` in `feed` (in the store's
/// first generation).
pub fn cursor_for(feed: &altinn_events::domain::FeedId, position: u64) -> String {
    test_cursors().seal(feed, position, 0).unwrap()
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub feeds: altinn_events::feeds::FeedStore,
    running: Option<Running>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(test_config(), Overrides::default()).await
    }

    pub async fn spawn_with(config: Config, overrides: Overrides) -> Self {
        let config = config.finalize(Mode::Dev).expect("valid config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running = altinn_events::start(config, Mode::Dev, listener, overrides).await.expect("start");
        let base = running.base_url.as_str().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let feeds = running.feeds.clone();
        Self { base, http, feeds, running: Some(running) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get_text(&self, path: &str) -> String {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.text().await.unwrap()
    }

    pub async fn user_token(&self, user_id: u64, party_id: u64, auth_level: u8) -> String {
        self.get_text(&format!("/localtest/token/user?userId={user_id}&partyId={party_id}&authLevel={auth_level}"))
            .await
    }

    pub async fn org_token(&self, org: &str, scope: &str) -> String {
        self.get_text(&format!("/localtest/token/org?org={org}&scope={}", urlencode(scope))).await
    }

    pub async fn platform_token(&self, issuer: &str, app: &str) -> String {
        self.get_text(&format!("/localtest/token/platform?issuer={issuer}&app={app}")).await
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.get(self.url(path)).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap()
    }

    /// A POST without a body (an action: rotate, validate, issue a key).
    pub async fn post_bearer(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.post(self.url(path)).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap()
    }

    pub async fn delete_bearer(&self, path: &str, token: &str) -> reqwest::Response {
        self.http.delete(self.url(path)).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap()
    }

    /// Long-polling requests this app holds a slot for.
    pub fn holding_waiters(&self) -> usize {
        self.running.as_ref().map_or(0, Running::holding_waiters)
    }

    /// Long-polling requests that found nothing and wait for an append.
    pub fn parked_waiters(&self) -> usize {
        self.running.as_ref().map_or(0, Running::parked_waiters)
    }

    /// How often a long-polling request parked since the app started.
    pub fn parks(&self) -> u64 {
        self.running.as_ref().map_or(0, Running::parks)
    }

    /// Waits until `n` requests are parked waiting for appends.
    pub async fn until_parked(&self, n: usize) {
        until("long-polling requests parked", || self.parked_waiters() == n).await;
    }

    pub async fn stats(&self) -> Value {
        self.http.get(self.url("/localtest/stats")).send().await.unwrap().json().await.unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// Stops as a crash would (nothing handed over).
    pub async fn kill(mut self) {
        if let Some(r) = self.running.take() {
            r.kill().await;
        }
    }

    /// The subscriptions this app pushes right now.
    pub fn delivering(&self) -> std::collections::HashSet<u64> {
        self.running.as_ref().map(Running::delivering).unwrap_or_default()
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Asserts a problem+json answer with this status; returns the body.
pub async fn assert_problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(ct, "application/problem+json", "content type");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    body
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Signs `claims` as RS256 with a PKCS#8 PEM key and the given `kid`.
pub fn sign_rs256(pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
}

/// Header and claims of a token, unverified.
pub fn parts(token: &str) -> (Value, Value) {
    use base64::Engine;
    let mut it = token.split('.');
    let dec = |s: &str| -> Value {
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()
    };
    (dec(it.next().unwrap()), dec(it.next().unwrap()))
}

/// An event record as the feed store takes it, from app `app_path` (`org/app`).
pub fn event_record(
    app_path: &str,
    id: &str,
    resource: &str,
    subject: &str,
    event_type: &str,
) -> altinn_events::domain::EventRecord {
    let source = format!("https://ttd.apps.altinn.no/{app_path}/instances{subject}/{id}");
    altinn_events::domain::EventRecord {
        id: id.to_owned(),
        source: source.clone(),
        subject: subject.to_owned(),
        resource: resource.to_owned(),
        event_type: event_type.to_owned(),
        time: "2026-11-27T10:00:00.000000Z".to_owned(),
        alternativesubject: None,
        resourceinstance: None,
        cloud_event: serde_json::json!({"specversion": "1.0", "id": id, "source": source, "type": event_type, "subject": subject}),
        origin: None,
    }
}

/// A URL on 127.0.0.1 where nothing listens: a dependency that is down.
pub fn closed_url(path: &str) -> url::Url {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    format!("http://{closed}{path}").parse().unwrap()
}

/// Publishes an app event through `POST /app` as `{org}/{app}` for the
/// instance `{party}/{guid}`; returns its id.
pub async fn publish_app_event(app: &TestApp, org: &str, name: &str, party: u64, guid: &str, kind: &str) -> String {
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token(org, name).await;
    post_app_event(app, &user, &access, (org, name), party, guid, kind).await
}

/// `publish_app_event` with tokens the caller already has.
pub async fn post_app_event(
    app: &TestApp,
    user: &str,
    access: &str,
    app_id: (&str, &str),
    party: u64,
    guid: &str,
    kind: &str,
) -> String {
    let resp = send_app_event(app, user, access, app_id, party, guid, kind).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// `POST /app` of an event about `{party}/{guid}`; the answer, whatever it is.
pub async fn send_app_event(
    app: &TestApp,
    user: &str,
    access: &str,
    (org, name): (&str, &str),
    party: u64,
    guid: &str,
    kind: &str,
) -> reqwest::Response {
    let body = serde_json::json!({"specversion": "1.0", "type": kind, "subject": format!("/party/{party}"),
        "source": format!("https://{org}.apps.altinn.no/{org}/{name}/instances/{party}/{guid}")});
    app.http
        .post(app.url("/events/api/v1/app"))
        .header(AUTHORIZATION, format!("Bearer {user}"))
        .header("PlatformAccessToken", access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// How long a test waits for something that must happen before it calls it
/// a failure: far beyond what any of them takes, so that a loaded machine
/// only makes a test slower, never makes it fail.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `done` holds, checking every 10 ms; panics after [`PATIENCE`].
pub async fn until(what: &str, done: impl FnMut() -> bool) {
    until_within(what, PATIENCE, done).await;
}

/// Waits until `done` holds, checking every 10 ms; panics after `within`
/// (a bound the test's claim sets, longer than anything that may take).
pub async fn until_within(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the async `done` holds, checking every 50 ms; panics after
/// [`PATIENCE`].
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of the values of the `/metrics` lines of `series` (a metric
/// name, or a name and the start of its labels, e.g.
/// `secrets_reloads_total{outcome="failed"`); 0 when there is none.
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get_text("/metrics").await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with([' ', '{', ',', '}'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How the fake PDP answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdpMode {
    /// Permit for every resource, echoing its `IncludeInResult` attributes.
    PermitAll,
    /// As `PermitAll` for organisations; a user is permitted the resources
    /// of their own party (and those that name no party, as creation
    /// checks do), denied the rest.
    UsersOwnParty,
    /// This HTTP status with a problem body.
    Status(u16),
    /// 200 with a body that is not a XACML response.
    Garbage,
}

/// A PDP on 127.0.0.1 whose answers a test chooses, counting its decision
/// requests.
pub struct FakePdp {
    pub url: url::Url,
    mode: std::sync::Arc<std::sync::Mutex<PdpMode>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The `Ocp-Apim-Subscription-Key` of the newest request.
    key: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl FakePdp {
    pub async fn start(mode: PdpMode) -> Self {
        use axum::response::IntoResponse;
        use std::sync::atomic::Ordering;
        let state =
            (std::sync::Arc::new(std::sync::Mutex::new(mode)), std::sync::Arc::default(), std::sync::Arc::default());
        let (mode, hits, key): (
            _,
            std::sync::Arc<std::sync::atomic::AtomicUsize>,
            std::sync::Arc<std::sync::Mutex<Option<String>>>,
        ) = state.clone();
        let app = axum::Router::new().route(
            "/authorization/api/v1/decision",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (mode, hits, key) = state.clone();
                async move {
                    // Decisions are counted; readiness probes (a request
                    // for no resource, made every 30 s) are not.
                    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if request["Request"]["Resource"].as_array().is_none_or(|r| !r.is_empty()) {
                        hits.fetch_add(1, Ordering::SeqCst);
                    }
                    *key.lock().unwrap() = headers
                        .get("ocp-apim-subscription-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let mode = *mode.lock().unwrap();
                    match mode {
                        PdpMode::Status(code) => (
                            axum::http::StatusCode::from_u16(code).unwrap(),
                            [("content-type", "application/json")],
                            r#"{"title":"PDP failure"}"#.to_owned(),
                        )
                            .into_response(),
                        PdpMode::Garbage => {
                            ([("content-type", "text/html")], "<html>upstream hiccup</html>".to_owned()).into_response()
                        }
                        PdpMode::PermitAll | PdpMode::UsersOwnParty => {
                            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let attribute = |category: &Value, id: &str| {
                                category["Attribute"]
                                    .as_array()
                                    .and_then(|a| a.iter().find(|a| a["AttributeId"] == id))
                                    .and_then(|a| a["Value"].as_str().map(str::to_owned))
                            };
                            let subject = &request["Request"]["AccessSubject"][0];
                            let user_party = attribute(subject, "urn:altinn:userid")
                                .and_then(|_| attribute(subject, "urn:altinn:partyid"));
                            let results: Vec<Value> = request["Request"]["Resource"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                                .iter()
                                .map(|r| {
                                    let echoed: Vec<Value> = r["Attribute"]
                                        .as_array()
                                        .cloned()
                                        .unwrap_or_default()
                                        .into_iter()
                                        .filter(|a| a["IncludeInResult"] == true)
                                        .collect();
                                    let party = attribute(r, "urn:altinn:partyid");
                                    let permit = mode == PdpMode::PermitAll
                                        || user_party.is_none()
                                        || party.is_none()
                                        || party == user_party;
                                    serde_json::json!({"Decision": if permit { "Permit" } else { "Deny" }, "Category": [{"CategoryId":
                                        "urn:oasis:names:tc:xacml:3.0:attribute-category:resource", "Attribute": echoed}]})
                                })
                                .collect();
                            axum::Json(serde_json::json!({ "Response": results })).into_response()
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/authorization/api/v1/decision").parse().unwrap();
        Self { url, mode, hits, key }
    }

    /// The subscription key the newest request carried.
    pub fn last_subscription_key(&self) -> Option<String> {
        self.key.lock().unwrap().clone()
    }

    pub fn set(&self, mode: PdpMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests received since the last call.
    pub fn take_hits(&self) -> usize {
        self.hits.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Log output captured in memory (a `MakeWriter` by cloning).
#[derive(Clone, Default)]
pub struct Capture(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
