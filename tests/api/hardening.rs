//! One request must not crash, stall or inform (issue 13): each test is a
//! reproduction of a probe finding, over HTTP against dev mode.

use std::time::{Duration, Instant};

use altinn_events::Overrides;
use altinn_events::domain::FeedId;
use altinn_events::feeds::IdSource;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const GUID: &str = "6fb3f738-6800-4f29-9f3e-1c66862656cd";

async fn post_party(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/events/api/v1/party"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// 1. Thousands of `source` values (a 54 KB body) used to overflow the
/// stack evaluating the query; lists and values are bounded, with a 400
/// that names the limit, and the service keeps serving.
#[tokio::test]
async fn huge_filter_lists_and_values_are_400s_that_name_the_limit() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let sources: Vec<String> = (0..6000).map(|i| format!("https://ttd.apps.altinn.no/ttd/a{i}")).collect();
    let body = json!({"party": 1337, "after": "0", "source": sources});
    assert!(body.to_string().len() > 50_000);
    let problem = assert_problem(post_party(&app, &user, &body).await, 400).await;
    assert_eq!(problem["detail"], "The 'source' parameter takes at most 30 values.");
    let types = (0..31).map(|i| format!("type=t{i}")).collect::<Vec<_>>().join("&");
    let problem = assert_problem(
        app.get_bearer(&format!("/events/api/v1/app/party?party=1337&after=0&{types}"), &user).await,
        400,
    )
    .await;
    assert_eq!(problem["detail"], "The 'type' parameter takes at most 30 values.");
    let long = "x".repeat(1025);
    let problem =
        assert_problem(post_party(&app, &user, &json!({"party": 1337, "after": "0", "type": [long]})).await, 400).await;
    assert_eq!(problem["detail"], "A 'type' value is longer than 1024 characters.");
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let url = format!(
        "/events/api/v1/events?resource=urn:altinn:resource:ttd-estate-of-deceased&after=0&subject={}",
        "y".repeat(1025)
    );
    let problem = assert_problem(app.get_bearer(&url, &bank).await, 400).await;
    assert_eq!(problem["detail"], "The 'subject' parameter is longer than 1024 characters.");
    // Thirty are fine, and the service still answers.
    let ok: Vec<String> = (0..30).map(|i| format!("https://ttd.apps.altinn.no/ttd/a{i}/%")).collect();
    assert_eq!(post_party(&app, &user, &json!({"party": 1337, "after": "0", "source": ok})).await.status(), 200);
    app.shutdown().await;
}

/// 2. A time whose UTC form is beyond year 9999 used to panic the handler;
/// a year of five digits was answered as if it had no timezone.
#[tokio::test]
async fn times_beyond_what_the_service_represents_are_400s() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    for from in ["9999-12-31T23:59:59-00:01", "0000-01-01T00:00:00%2B00:01", "10000-01-01T00:00:00Z"] {
        let resp = app.get_bearer(&format!("/events/api/v1/app/party?party=1337&from={from}"), &user).await;
        let problem = assert_problem(resp, 400).await;
        assert_eq!(problem["detail"], "The 'From' parameter is outside the years 0000-9999 in UTC.", "{from}");
    }
    let resp = app.get_bearer("/events/api/v1/app/party?party=1337&after=0&to=9999-12-31T23:59:59-00:01", &user).await;
    assert_problem(resp, 400).await;
    assert_eq!(
        app.get_bearer("/events/api/v1/app/party?party=1337&from=9999-12-31T23:59:59Z", &user).await.status(),
        200
    );
    app.shutdown().await;
}

/// 3. A cursor reveals nothing and cannot be forged or moved: a caller who
/// may see none of a feed learns nothing of its length from `next`, the same
/// request twice gives different cursors, a tampered or foreign cursor is a
/// 400, and a long-poll is not woken by events the caller may not see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_are_opaque_bound_to_their_feed_and_unforgeable() {
    let app = TestApp::spawn().await;
    for _ in 0..4 {
        publish_app_event(&app, "ttd", "apps-test", 1337, GUID, "t").await;
    }
    let stranger = app.user_token(1338, 1338, 2).await;
    let url = "/events/api/v1/app/party?party=1337&after=0";
    let next = |resp: &reqwest::Response| resp.headers()["next"].to_str().unwrap().to_owned();
    let first = app.get_bearer(url, &stranger).await;
    let second = app.get_bearer(url, &stranger).await;
    let (a, b) = (next(&first), next(&second));
    assert_ne!(a, b, "the same request twice gives different cursors");
    for n in [&a, &b] {
        let cursor = n.rsplit("after=").next().unwrap();
        assert!(cursor.starts_with("c1."), "{cursor}");
        // Not the old readable form (`~p4`): a sealed cursor.
        assert!(!cursor.starts_with("~p"), "no readable position: {cursor}");
    }
    assert!(first.json::<Vec<Value>>().await.unwrap().is_empty());
    // Tampered: every refusal is the same 400.
    let cursor = a.rsplit("after=").next().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let foreign_feed = urlencode(&cursor_for(&FeedId::Subject("/party/1338".into()), 0));
    let foreign_key = {
        let keys = [("test".to_owned(), secrecy::SecretString::from("another service's key"))].into_iter().collect();
        altinn_events::api::cursor::Cursors::new(Some("test".into()), &keys)
            .seal(&FeedId::Subject("/party/1337".into()), 0, 0)
            .unwrap()
    };
    for bad in [urlencode(&tampered), foreign_feed, urlencode(&foreign_key), "c1.test.AAAA".into()] {
        let resp = app.get_bearer(&format!("/events/api/v1/app/party?party=1337&after={bad}"), &stranger).await;
        let problem = assert_problem(resp, 400).await;
        assert_eq!(problem["detail"], "The 'after' parameter is not a cursor this service issued for this query.");
    }
    // A long-poll on a feed whose new events the caller may not see is not
    // answered by them: the append wakes it, it reads the event, may not
    // see it, and waits again (until the app stops, which answers it).
    let waiting = {
        let (http, url, token) = (
            app.http.clone(),
            app.url(&format!("/events/api/v1/app/party?party=1337&after={}&wait=30", urlencode(&cursor))),
            stranger.clone(),
        );
        tokio::spawn(async move {
            let resp = http.get(url).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap();
            resp.json::<Vec<Value>>().await.unwrap()
        })
    };
    app.until_parked(1).await;
    assert_eq!(app.parks(), 1);
    publish_app_event(&app, "ttd", "apps-test", 1337, GUID, "not for 1338").await;
    until("woken by the append and waiting again", || app.parks() == 2 && app.parked_waiters() == 1).await;
    assert!(!waiting.is_finished(), "not answered by an event it may not see");
    app.shutdown().await;
    assert!(waiting.await.unwrap().is_empty());
}

/// 4. An app event whose subject is another party than its instance's is
/// refused; one stored before that check (in party 1337's feed, about an
/// instance of 1338) is shown to neither party through 1337's feed.
#[tokio::test]
async fn an_app_event_must_be_about_the_party_of_its_instance() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let body = json!({"specversion": "1.0", "type": "t", "subject": "/party/1338",
        "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/{GUID}")});
    let resp = app
        .http
        .post(app.url("/events/api/v1/app"))
        .header(AUTHORIZATION, format!("Bearer {user}"))
        .header("PlatformAccessToken", &access)
        .json(&body)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(resp, 400).await;
    assert_eq!(problem["detail"], "The subject must be /party/1337: the party of the instance in source.");
    // Stored directly, as an older version would have.
    let mut old =
        event_record("ttd/apps-test", "mismatched", "urn:altinn:resource:app_ttd_apps-test", "/party/1337", "t");
    old.source = format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1338/{GUID}");
    old.resourceinstance = Some(format!("1338/{GUID}"));
    app.feeds.append(old, IdSource::Server).await.unwrap();
    for (user, party) in [(1337, 1337), (1338, 1338)] {
        let token = app.user_token(user, party, 2).await;
        let page: Vec<Value> =
            app.get_bearer("/events/api/v1/app/party?party=1337&after=0", &token).await.json().await.unwrap();
        assert!(page.is_empty(), "user {user} sees no event of another party's instance in 1337's feed: {page:?}");
    }
    app.shutdown().await;
}

async fn raw_connection(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&out).into_owned())
}

fn server_limits(header: u64, body: u64, idle: u64) -> altinn_events::config::Config {
    let mut config = test_config();
    config.server.header_read_timeout_seconds = header;
    config.server.body_read_timeout_seconds = body;
    config.server.idle_timeout_seconds = idle;
    config
}

/// 5. Silent connections, half-sent heads and trickled bodies are cut; a
/// keep-alive connection is kept for the idle timeout (longer than the head
/// timeout); a long-poll outlives both. Where a timeout must have passed,
/// the test waits for the server to close another connection by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_stall_are_closed_and_long_polls_are_not() {
    let app = TestApp::spawn_with(server_limits(1, 1, 10), Overrides::default()).await;
    // Silent: closed after the head timeout, not at once. (Timed from
    // before the connection exists, so that a late start of the clock
    // cannot shorten it.)
    let started = Instant::now();
    let mut silent = raw_connection(&app).await;
    assert!(read_to_close(&mut silent, PATIENCE).await.is_some(), "a silent connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    // Half a head: closed.
    let mut half = raw_connection(&app).await;
    half.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(read_to_close(&mut half, PATIENCE).await.is_some(), "a half-sent head is cut");
    // A body trickled byte by byte (never all of it): 408 when its time is up.
    let user = app.user_token(1337, 1337, 2).await;
    let mut trickle = raw_connection(&app).await;
    let head = format!(
        "POST /events/api/v1/party HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let trickler = tokio::spawn(async move {
        for _ in 0..6 {
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        trickle
    });
    let mut trickle = trickler.await.unwrap();
    let answer = read_to_close(&mut trickle, PATIENCE).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 408"), "a trickled body is cut with 408: {answer}");
    // A long-poll, waiting from before the keep-alive connection below.
    let polling = {
        let (http, url) = (app.http.clone(), app.url("/events/api/v1/app/party?party=1337&after=0&wait=30"));
        let user = user.clone();
        tokio::spawn(async move { http.get(url).header(AUTHORIZATION, format!("Bearer {user}")).send().await })
    };
    app.until_parked(1).await;
    // Keep-alive: a second request, sent once the head timeout has passed
    // (the server closed a silent connection opened after the first
    // answer), is served on the same connection.
    let mut kept = raw_connection(&app).await;
    let request = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    kept.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(kept.read(&mut buf).await.unwrap() > 0);
    let mut silent = raw_connection(&app).await;
    assert!(read_to_close(&mut silent, PATIENCE).await.is_some(), "the head timeout passed");
    kept.write_all(request).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "kept alive past the head timeout");
    assert!(read_to_close(&mut kept, PATIENCE).await.is_some(), "then closed when idle");
    // The long-poll outlived every timeout: it still waits, and is answered
    // (here by the app's stop).
    assert!(!polling.is_finished() && app.parked_waiters() == 1, "the long-poll still waits");
    app.shutdown().await;
    let resp = polling.await.unwrap().expect("the long-poll is answered");
    assert_eq!(resp.status(), 200);
}

/// 5. Connections beyond `server.max_connections` get a 503 problem.
#[tokio::test]
async fn connections_beyond_the_cap_get_503() {
    let mut config = server_limits(10, 10, 60);
    config.server.max_connections = 2;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let _held = [raw_connection(&app).await, raw_connection(&app).await];
    let mut third = raw_connection(&app).await;
    let answer = read_to_close(&mut third, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("retry-after: 1"), "{answer}");
    app.shutdown().await;
}

/// 6. One caller cannot take every long-polling slot: beyond its share it
/// gets 429, and another caller still gets a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_slots_are_shared_fairly_between_callers() {
    let mut config = test_config();
    config.limits.max_waiters = 4;
    config.limits.max_waiters_per_caller = 2;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let greedy = app.user_token(1337, 1337, 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (http, url, token) =
            (app.http.clone(), app.url("/events/api/v1/app/party?party=1337&after=0&wait=30"), greedy.clone());
        held.push(tokio::spawn(
            async move { http.get(url).header(AUTHORIZATION, format!("Bearer {token}")).send().await },
        ));
    }
    app.until_parked(2).await;
    let resp = app.get_bearer("/events/api/v1/app/party?party=1337&after=0&wait=5", &greedy).await;
    assert_problem(resp, 429).await;
    let other = app.user_token(1338, 1338, 2).await;
    let parks = app.parks();
    let resp = app.get_bearer("/events/api/v1/app/party?party=1338&after=0&wait=1", &other).await;
    assert_eq!(resp.status(), 200, "another caller still gets a slot");
    assert_eq!(app.parks(), parks + 1, "and waits in it");
    for h in held {
        h.abort();
    }
    app.shutdown().await;
}

/// 7. Behind a proxy, the address the proxy appended counts (a client
/// rotating the left of `X-Forwarded-For` is still one client), and wrong
/// keys spend the client's budget, not the instance's: they cannot lock
/// the key's holder out.
#[tokio::test]
async fn anonymous_rate_limits_follow_the_proxys_address_and_verified_keys() {
    let mut config = test_config();
    config.instance_access.client_ip_header = Some("x-forwarded-for".into());
    config.instance_access.rate_per_minute_per_client = 3;
    config.instance_access.rate_per_minute_per_instance = 2;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    publish_app_event(&app, "ttd", "apps-test", 1337, GUID, "t").await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let key: Value = app
        .post_bearer(&format!("/events/api/v1/app/ttd/apps-test/instances/1337/{GUID}/accesskey"), &owner)
        .await
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap();
    let read = |forwarded: String, key: String| {
        let req = app
            .http
            .post(app.url(&format!("/events/instanceeventsforinstance/1337/{GUID}?after=0")))
            .header("x-forwarded-for", forwarded)
            .header("Altinn-Instance-Access-Key", key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // An attacker behind proxy address 10.0.0.9, rotating the left entry,
    // with wrong keys: its own budget (3) is spent, the instance's is not.
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(read(format!("198.51.100.{i}, 10.0.0.9"), format!("{key}x")).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // The key's holder, from elsewhere, reads: the instance budget is whole.
    assert_eq!(read("10.0.0.10".into(), key.to_owned()).await, 200);
    assert_eq!(read("10.0.0.10".into(), key.to_owned()).await, 200);
    assert_eq!(read("10.0.0.11".into(), key.to_owned()).await, 429, "the instance's own budget is 2");
    app.shutdown().await;
}

/// 8. A token without `iss` is refused.
#[tokio::test]
async fn a_token_without_the_issuer_is_refused() {
    let app = TestApp::spawn().await;
    let good = app.user_token(1337, 1337, 2).await;
    let (header, mut claims) = parts(&good);
    claims.as_object_mut().unwrap().remove("iss");
    let pem = std::fs::read_to_string(key_file()).unwrap();
    let no_iss = sign_rs256(&pem, header["kid"].as_str(), &claims);
    assert_problem(app.get_bearer("/localtest/whoami", &no_iss).await, 401).await;
    claims["iss"] = json!("https://someone-else.example/");
    let other_iss = sign_rs256(&pem, header["kid"].as_str(), &claims);
    assert_problem(app.get_bearer("/localtest/whoami", &other_iss).await, 401).await;
    assert_eq!(app.get_bearer("/localtest/whoami", &good).await.status(), 200);
    app.shutdown().await;
}

/// 9. A client's request id is echoed only when it is short and plain.
#[tokio::test]
async fn only_plain_short_request_ids_are_echoed() {
    let app = TestApp::spawn().await;
    let echo = |id: String| {
        let req = app.http.get(app.url("/health/live")).header("x-request-id", id);
        async move { req.send().await.unwrap().headers()["x-request-id"].to_str().unwrap().to_owned() }
    };
    assert_eq!(echo("trace-42.a_b".into()).await, "trace-42.a_b");
    for bad in ["x".repeat(16 * 1024), "x".repeat(65), "has space".into(), "tab\there".into(), "semi;colon".into()] {
        let got = echo(bad.clone()).await;
        assert_ne!(got, bad);
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "a new id instead: {got}");
    }
    app.shutdown().await;
}

/// 11. Control characters in the fields the service stores and filters on
/// are refused.
#[tokio::test]
async fn control_characters_in_event_fields_are_400s() {
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let source = format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/{GUID}");
    for (field, value) in [
        ("type", "a\u{0}b".to_owned()),
        ("subject", "/party/1337\u{0}".to_owned()),
        ("source", format!("{source}\u{1b}")),
    ] {
        let mut body = json!({"specversion": "1.0", "type": "t", "subject": "/party/1337", "source": source});
        body[field] = json!(value);
        let resp = app
            .http
            .post(app.url("/events/api/v1/app"))
            .header(AUTHORIZATION, format!("Bearer {user}"))
            .header("PlatformAccessToken", &access)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, 400).await;
        assert_eq!(problem["detail"], format!("'{field}' must not contain control characters."));
    }
    let owner = app.org_token("ttd", "altinn:events.publish").await;
    let generic = json!({"specversion": "1.0", "id": "e\u{0}1", "type": "t", "source": "urn:x",
        "resource": "urn:altinn:resource:ttd-estate-of-deceased"});
    let resp = app
        .http
        .post(app.url("/events/api/v1/events"))
        .header(AUTHORIZATION, format!("Bearer {owner}"))
        .header(CONTENT_TYPE, "application/cloudevents+json")
        .body(generic.to_string())
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400).await;
    app.shutdown().await;
}

/// 12. A malformed path is a problem+json 400; on the anonymous endpoint it
/// is the same 401 as a wrong key (nothing tells what was checked first).
#[tokio::test]
async fn path_errors_are_problems_and_the_anonymous_endpoint_answers_one_way() {
    let app = TestApp::spawn().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let resp = app
        .http
        .post(app.url("/events/api/v1/app/ttd/apps-test/instances/not-a-party/abc/accesskey"))
        .header(AUTHORIZATION, format!("Bearer {owner}"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400).await;
    let mut details = Vec::new();
    for path in [
        format!("1337/{GUID}"),
        format!("not-a-party/{GUID}"),
        "1337/not+a+guid".into(),
        format!("99999999999999999999999/{GUID}"),
    ] {
        let resp = app
            .http
            .post(app.url(&format!("/events/instanceeventsforinstance/{path}?after=0")))
            .header("Altinn-Instance-Access-Key", "v1.dev.ttd.apps-test.1.AAAA")
            .send()
            .await
            .unwrap();
        details.push(assert_problem(resp, 401).await["detail"].clone());
    }
    assert!(details.windows(2).all(|w| w[0] == w[1]), "{details:?}");
    app.shutdown().await;
}

/// 13. An instance GUID in upper case in an event's source is the same
/// instance as the lower-case one that instance keys bind.
#[tokio::test]
async fn instance_ids_have_one_spelling_for_events_and_keys() {
    let app = TestApp::spawn().await;
    let upper = GUID.to_ascii_uppercase();
    let id = publish_app_event(&app, "ttd", "apps-test", 1337, &upper, "t").await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    for path_guid in [GUID, upper.as_str()] {
        let key: Value = app
            .http
            .post(app.url(&format!("/events/api/v1/app/ttd/apps-test/instances/1337/{path_guid}/accesskey")))
            .header(AUTHORIZATION, format!("Bearer {owner}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(key["instance"], format!("1337/{GUID}"));
        for read_guid in [GUID, upper.as_str()] {
            let page: Vec<Value> = app
                .http
                .post(app.url(&format!("/events/instanceeventsforinstance/1337/{read_guid}?after=0")))
                .header("Altinn-Instance-Access-Key", key["key"].as_str().unwrap())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(page.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), [id.as_str()]);
        }
    }
    app.shutdown().await;
}

/// 14. Dev mode removes the folder it made for its certificates.
#[tokio::test]
async fn dev_mode_leaves_no_temporary_folder_behind() {
    let app = TestApp::spawn().await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let folder = std::env::temp_dir().join(format!("altinn-events-dev-{}-{port}", std::process::id()));
    assert!(folder.join("certs").is_dir(), "{} exists while the service runs", folder.display());
    app.shutdown().await;
    assert!(!folder.exists(), "{} is removed", folder.display());
}
