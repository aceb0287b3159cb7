//! Every endpoint where the PDP decides fails closed: a PDP that answers
//! 500, 429 or garbage, or whose circuit is open, gives 503 and never an
//! unfiltered page or an unauthorized publish.

use altinn_events::Overrides;
use altinn_events::domain::FeedId;
use altinn_events::feeds::IdSource;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::json;

use crate::helpers::*;

const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";

/// The requests that need a PDP decision, by name.
async fn pdp_requests(app: &TestApp, publish_id: &str) -> Vec<(&'static str, reqwest::RequestBuilder)> {
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let user = app.user_token(1337, 1337, 2).await;
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let publisher = app.org_token("ttd", "altinn:events.publish").await;
    let bearer = |t: &str| format!("Bearer {t}");
    let http = &app.http;
    vec![
        (
            "GET /app/{org}/{app}",
            http.get(app.url("/events/api/v1/app/ttd/apps-test?after=0")).header(AUTHORIZATION, bearer(&owner)),
        ),
        (
            "GET /app/party",
            http.get(app.url("/events/api/v1/app/party?party=1337&after=0")).header(AUTHORIZATION, bearer(&user)),
        ),
        (
            "POST /party",
            http.post(app.url("/events/api/v1/party"))
                .header(AUTHORIZATION, bearer(&user))
                .json(&json!({"party": 1337, "after": "0"})),
        ),
        (
            "GET /events",
            http.get(app.url(&format!("/events/api/v1/events?resource={}&after=0", urlencode(ESTATE))))
                .header(AUTHORIZATION, bearer(&bank)),
        ),
        (
            "POST /events",
            http.post(app.url("/events/api/v1/events"))
                .header(AUTHORIZATION, bearer(&publisher))
                .header(CONTENT_TYPE, "application/cloudevents+json")
                .body(
                    json!({"specversion": "1.0", "id": publish_id, "type": "t", "source": "urn:no:skd:estate",
                        "subject": "/party/1337", "resource": ESTATE})
                    .to_string(),
                ),
        ),
    ]
}

#[tokio::test]
async fn every_pdp_failure_is_a_503_on_every_endpoint_the_pdp_decides() {
    let pdp = FakePdp::start(PdpMode::PermitAll).await;
    for failure in [PdpMode::Status(500), PdpMode::Status(429), PdpMode::Garbage] {
        let mut config = test_config();
        config.pdp.url = Some(pdp.url.clone());
        // Open for an hour of the store's clock once opened: "the circuit is
        // open" below does not depend on how fast the machine gets there.
        config.pdp.circuit_open_seconds = 3600;
        let app = TestApp::spawn_with(config, Overrides::default()).await;
        // Something in every feed read below, so that a page would not be
        // empty if the PDP were skipped.
        publish_app_event(&app, "ttd", "apps-test", 1337, "6fb3f738-6800-4f29-9f3e-1c66862656cd", "t").await;
        let estate = event_record("ttd/apps-test", "estate-0", ESTATE, "/party/1337", "t");
        app.feeds.append(estate, IdSource::Publisher).await.unwrap();

        // With the PDP working, every request succeeds and sees the events.
        for (name, req) in pdp_requests(&app, "published-while-up").await {
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "{name} with a working PDP: {}", resp.status());
            if name.starts_with("GET") || name == "POST /party" {
                let page: Vec<serde_json::Value> = resp.json().await.unwrap();
                assert_eq!(page.len(), 1, "{name} with a working PDP");
            }
        }
        // The PDP breaks: every one of them is a 503 problem naming
        // authorization, decided by the PDP's answer (it was asked).
        pdp.set(failure);
        for (name, req) in pdp_requests(&app, "published-while-down").await {
            pdp.take_hits();
            let body = assert_problem(req.send().await.unwrap(), 503).await;
            assert!(body["detail"].as_str().unwrap().contains("authorization"), "{name} {failure:?}: {body}");
            assert!(pdp.take_hits() > 0, "{name} {failure:?}: the PDP was asked");
        }
        // Five failed decisions in a row opened the circuit: even with the
        // PDP back, the next requests fail at once without asking it.
        pdp.set(PdpMode::PermitAll);
        for (name, req) in pdp_requests(&app, "published-while-open").await {
            let body = assert_problem(req.send().await.unwrap(), 503).await;
            assert!(body["detail"].as_str().unwrap().contains("authorization"), "{name} circuit open: {body}");
        }
        assert_eq!(pdp.take_hits(), 0, "an open circuit does not call the PDP");
        // Nothing was published while the PDP could not decide.
        let stored = app.feeds.len(&FeedId::Resource(ESTATE.into())).await.unwrap();
        assert_eq!(stored, 2, "{failure:?}: only what was published while the PDP could decide");
        app.shutdown().await;
    }
}

/// More PDP requests at once than `pdp.max_concurrent_requests` (here 1,
/// with a PDP that never answers): the one with the slot fails closed when
/// its timeout is over (503, authorization unavailable); the others are
/// refused as this instance's overload (503 `Overloaded`, `Retry-After`),
/// not reported as a PDP outage. Nothing unfiltered is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdp_requests_beyond_the_slots_are_refused_as_overload() {
    // A PDP that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let mut config = test_config();
    config.pdp.url = Some(format!("http://{addr}/authorization/api/v1/decision").parse().unwrap());
    config.pdp.timeout_ms = 800;
    config.pdp.max_concurrent_requests = 1;
    let app = std::sync::Arc::new(TestApp::spawn_with(config, Overrides::default()).await);
    publish_app_event(&app, "ttd", "apps-test", 1337, "6fb3f738-6800-4f29-9f3e-1c66862656cd", "t").await;
    let user = app.user_token(1337, 1337, 2).await;
    let reads: Vec<_> = (0..3)
        .map(|_| {
            let (app, user) = (app.clone(), user.clone());
            tokio::spawn(async move {
                let resp = app.get_bearer("/events/api/v1/app/party?party=1337&after=0", &user).await;
                let retry_after = resp.headers().contains_key("retry-after");
                (assert_problem(resp, 503).await, retry_after)
            })
        })
        .collect();
    let mut overloaded = 0;
    for read in reads {
        let (problem, retry_after) = read.await.unwrap();
        if problem["title"] == "Overloaded" {
            assert!(retry_after, "{problem}");
            overloaded += 1;
        } else {
            assert_eq!(problem["detail"], "A dependency is unavailable: authorization.", "{problem}");
        }
    }
    assert!(overloaded >= 1, "the reads without a slot are refused as overload");
}

/// The circuit closes again without a restart: once it has been open for
/// its time, the next decision is a probe of the PDP; a failed probe opens
/// it again at once (no five failures needed), a good one closes it and
/// reads are answered again. The breaker's time is the store's clock: open
/// for an hour here, and the test moves the clock past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_closes_again_when_the_pdp_recovers() {
    let pdp = FakePdp::start(PdpMode::PermitAll).await;
    let mut config = test_config();
    config.pdp.url = Some(pdp.url.clone());
    config.pdp.circuit_open_seconds = 3600;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let clock = app.feeds.clock();
    publish_app_event(&app, "ttd", "apps-test", 1337, "6fb3f738-6800-4f29-9f3e-1c66862656cd", "t").await;
    let user = app.user_token(1337, 1337, 2).await;
    let read = || async {
        let resp = app.get_bearer("/events/api/v1/app/party?party=1337&after=0", &user).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    };
    let opened = || metric(&app, "pdp_circuit_opened_total");
    assert_eq!(read().await.0, 200);
    assert_eq!(opened().await, 0.0);

    // The PDP fails: five failed reads open the circuit; then reads fail
    // without asking it.
    pdp.set(PdpMode::Status(500));
    for _ in 0..5 {
        assert_eq!(read().await.0, 503);
    }
    assert_eq!(opened().await, 1.0, "five failures in a row open the circuit");
    pdp.take_hits();
    assert_eq!(read().await.0, 503);
    assert_eq!(pdp.take_hits(), 0, "an open circuit does not call the PDP");
    assert_eq!(metric(&app, "pdp_circuit_open").await, 1.0);

    // Still failing: when the circuit's hour is over, the next read asks
    // the PDP (the probe); it fails, and that one failure opens the
    // circuit again.
    clock.advance(3600);
    assert_eq!(read().await.0, 503, "nothing is answered while the PDP fails");
    assert!(pdp.take_hits() > 0, "the probe asked the PDP");
    assert_eq!(opened().await, 2.0, "a failed probe opens the circuit again");
    assert_eq!(read().await.0, 503);
    assert_eq!(pdp.take_hits(), 0, "open again: the PDP is not called");

    // The PDP recovers: still open, reads fail without asking it; once the
    // hour is over, the probe succeeds, the circuit closes, and reads are
    // answered, by the PDP, from then on.
    pdp.set(PdpMode::PermitAll);
    assert_eq!(read().await.0, 503);
    assert_eq!(pdp.take_hits(), 0, "still open");
    clock.advance(3600);
    for _ in 0..3 {
        let (status, body) = read().await;
        assert_eq!(status, 200, "{body}");
        let page: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(page.len(), 1, "the event, decided by the PDP");
        assert!(pdp.take_hits() > 0, "each read asks the PDP");
    }
    assert_eq!(metric(&app, "pdp_circuit_open").await, 0.0, "closed");
    assert_eq!(opened().await, 2.0);
    app.shutdown().await;
}
