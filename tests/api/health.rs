use std::process::Command;

use altinn_events::Overrides;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn live_and_ready_with_every_dependency_up() {
    let app = TestApp::spawn().await;
    let live = app.http.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = app.http.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["pdp"], "ok");
    assert_eq!(body["checks"]["cosmos"], "ok");
    app.shutdown().await;
}

#[tokio::test]
async fn ready_is_503_naming_the_pdp_when_it_is_down() {
    // A port that nothing listens on.
    let mut config = test_config();
    config.pdp.url = Some(closed_url("/authorization/api/v1/decision"));
    config.pdp.timeout_ms = 500;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let body = assert_problem(app.http.get(app.url("/health/ready")).send().await.unwrap(), 503).await;
    assert_eq!(body["checks"]["pdp"], "unavailable", "{body}");
    assert_eq!(body["checks"]["cosmos"], "ok", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("pdp"), "{body}");
    // Liveness does not depend on the PDP.
    assert_eq!(app.http.get(app.url("/health/live")).send().await.unwrap().status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_set_and_propagated_and_metrics_count_requests() {
    let app = TestApp::spawn().await;
    let resp = app.http.get(app.url("/health/live")).send().await.unwrap();
    let generated = resp.headers().get("x-request-id").expect("request id set").to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let resp = app.http.get(app.url("/health/live")).header("x-request-id", "my-trace-42").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "my-trace-42");

    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("http_requests_total") && l.contains("route=\"/health/live\"")),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let app = TestApp::spawn().await;
    assert_problem(app.http.get(app.url("/events/api/v1/nope")).send().await.unwrap(), 404).await;
    app.shutdown().await;
}

#[tokio::test]
async fn healthcheck_command_exits_by_liveness() {
    let app = TestApp::spawn().await;
    let bin = env!("CARGO_BIN_EXE_altinn-events");
    let url = app.url("/health/live");
    let ok = tokio::task::spawn_blocking(move || Command::new(bin).args(["healthcheck", "--url", &url]).status())
        .await
        .unwrap()
        .unwrap();
    assert!(ok.success());
    let down = closed_url("/health/live").to_string();
    let bad = tokio::task::spawn_blocking(move || {
        Command::new(bin).args(["healthcheck", "--url", &down, "--timeout-seconds", "1"]).status()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!bad.success());
    app.shutdown().await;
}
