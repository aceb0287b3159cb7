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
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
    let deps = app.http.get(app.url("/health/dependencies")).send().await.unwrap();
    assert_eq!(deps.status(), 200);
    let body: Value = deps.json().await.unwrap();
    assert_eq!(body["checks"]["pdp"], "ok");
    assert_eq!(body["checks"]["cosmos"], "ok");
    app.shutdown().await;
}

/// One blip of a dependency every pod shares must not mark every pod
/// unready at once (the ingress would answer its own bare 503): readiness
/// does not call the PDP. Requests that need it answer the service's own
/// problem+json 503, and the dependency check and its metric name the PDP.
#[tokio::test]
async fn readiness_stays_ready_through_a_pdp_outage_while_reads_that_need_it_answer_503() {
    let mut config = test_config();
    config.pdp.url = Some(closed_url("/authorization/api/v1/decision"));
    config.pdp.timeout_ms = 500;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    publish_app_event(&app, "ttd", "apps-test", 1337, "6fb3f738-6800-4f29-9f3e-1c66862656cd", "app.created").await;

    for _ in 0..3 {
        assert_eq!(app.http.get(app.url("/health/ready")).send().await.unwrap().status(), 200);
    }
    let user = app.user_token(1337, 1337, 2).await;
    let read = app.get_bearer("/events/api/v1/app/party?party=1337&after=0", &user).await;
    let body = assert_problem(read, 503).await;
    assert_eq!(body["detail"], "A dependency is unavailable: authorization.", "{body}");
    assert_eq!(app.http.get(app.url("/health/ready")).send().await.unwrap().status(), 200, "still ready");

    let body = assert_problem(app.http.get(app.url("/health/dependencies")).send().await.unwrap(), 503).await;
    assert_eq!(body["checks"]["pdp"], "unavailable", "{body}");
    assert_eq!(body["checks"]["cosmos"], "ok", "{body}");
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.lines().any(|l| l.starts_with("dependency_up{dependency=\"pdp\"} 0")), "{metrics}");
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
    // Without --url: the configured listen address (all addresses: 127.0.0.1).
    let port = url::Url::parse(&app.url("/")).unwrap().port().unwrap();
    let default = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg("healthcheck")
            .env("EVENTS__LISTEN_ADDR", format!("0.0.0.0:{port}"))
            .env_remove("EVENTS_CONFIG")
            .status()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(default.success(), "the default URL is the configured listen address");
    app.shutdown().await;
}

/// Cosmos DB unreachable at start is not fatal: the pod is live at once,
/// not ready (naming Cosmos), answers its API with its own 503 and
/// `Retry-After`, keeps trying, and becomes ready on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_reach_cosmos_at_start_stays_live_and_becomes_ready_when_it_can() {
    use altinn_events::config::Mode;
    use altinn_events::feeds::emulator::EmulatorAccount;
    use azure_data_cosmos::fault_injection::{
        FaultInjectionErrorType, FaultInjectionResultBuilder, FaultInjectionRuleBuilder,
    };
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let down_until = Instant::now() + Duration::from_secs(3);
    let down = FaultInjectionRuleBuilder::new(
        "cosmos-down",
        FaultInjectionResultBuilder::new().with_error(FaultInjectionErrorType::ServiceUnavailable).build(),
    )
    .with_end_time(down_until)
    .build();
    let account = EmulatorAccount::new().with_faults(vec![Arc::new(down)]);
    let config = test_config().finalize(Mode::Dev).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let starting =
        tokio::spawn(altinn_events::start(config, Mode::Dev, listener, Overrides { emulator: Some(account) }));
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    let live = get("/health/live").await.unwrap();
    assert_eq!(live.status(), 200, "live while Cosmos is unreachable");
    let body = assert_problem(get("/health/ready").await.unwrap(), 503).await;
    assert_eq!(body["checks"]["cosmos"], "unavailable", "{body}");
    // The local platform answers (it needs no storage); the API says it starts.
    let token = get("/localtest/token/user?userId=1337&partyId=1337&authLevel=2").await.unwrap();
    assert_eq!(token.status(), 200);
    let token = token.text().await.unwrap();
    let read_party =
        || http.get(format!("{base}/events/api/v1/app/party?party=1337&after=0")).bearer_auth(&token).send();
    let read = read_party().await.unwrap();
    assert_eq!(read.headers()["retry-after"], "5");
    let body = assert_problem(read, 503).await;
    assert_eq!(body["title"], "Starting", "{body}");
    assert!(!starting.is_finished(), "still trying");

    let running =
        tokio::time::timeout(Duration::from_secs(60), starting).await.expect("ready in time").unwrap().unwrap();
    assert!(Instant::now() >= down_until, "not before Cosmos answers");
    assert_eq!(get("/health/ready").await.unwrap().status(), 200);
    assert_eq!(read_party().await.unwrap().status(), 200, "the API once ready");
    running.shutdown(Duration::from_secs(5)).await;
}

/// Every metric docs/operations.md lists for dashboards is on `/metrics`
/// of a pod that has just started, or is named in the docs as appearing
/// with its first value.
#[tokio::test]
async fn every_dashboard_metric_is_on_metrics_from_the_start_or_said_to_come_later() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let section = docs.split("### Metrics for dashboards").nth(1).unwrap().split("\n## ").next().unwrap();
    let names = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(|code| code.split('{').next().unwrap().to_owned())
            .filter(|name| name.starts_with(|c: char| c.is_ascii_lowercase()) && name.contains('_'))
            .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect()
    };
    let table: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| area") && !l.contains("kube-state-metrics"))
        .flat_map(|l| names(l.split('|').nth(2).unwrap_or_default()))
        .collect();
    let later_text = section.split("Appear with their first value:").nth(1).unwrap().split("\n\n").next().unwrap();
    let later = names(later_text);
    assert!(table.len() > 40 && later.len() > 10, "{table:?} {later:?}");

    let app = TestApp::spawn().await;
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let present: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count"))
        .collect();
    let missing: Vec<&String> = table.iter().filter(|n| !present.contains(n.as_str()) && !later.contains(n)).collect();
    assert!(missing.is_empty(), "listed for dashboards, not on /metrics at start, not said to come later: {missing:?}");
    app.shutdown().await;
}

/// A background task that ends unasked (here: one that panics) makes the
/// instance not live: the probes answer 503 naming it, the exit is counted,
/// and the instance keeps serving the rest meanwhile. A task that runs on
/// leaves the probe at 200 (the control: the same probe, before).
#[tokio::test]
async fn a_background_task_that_panics_fails_liveness_and_is_counted() {
    use altinn_events::config::Mode;
    use std::time::Duration;
    let config = test_config().finalize(Mode::Dev).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut running = altinn_events::start(config, Mode::Dev, listener, Overrides::default()).await.unwrap();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();
    assert_eq!(get("/health/live").await.unwrap().status(), 200, "whole at start");

    let (fail, failed) = tokio::sync::oneshot::channel::<()>();
    running.spawn_supervised("probe_test_worker", |_stop| async move {
        let _ = failed.await;
        if true {
            panic!("the worker's state is gone");
        }
    });
    assert_eq!(get("/health/live").await.unwrap().status(), 200, "a running task leaves the instance live");
    fail.send(()).unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let live = loop {
        let live = get("/health/live").await.unwrap();
        if live.status() != 200 || tokio::time::Instant::now() > deadline {
            break live;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let body = assert_problem(live, 503).await;
    assert_eq!(body["checks"]["probe_test_worker"], "ended", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("probe_test_worker"), "{body}");
    assert_eq!(get("/health").await.unwrap().status(), 503, "Altinn's probe path says the same");
    assert_eq!(get("/health/ready").await.unwrap().status(), 200, "it still serves meanwhile");
    assert_eq!(running.ended_tasks(), vec!["probe_test_worker"]);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("background_task_exits_total")
            && l.contains("task=\"probe_test_worker\"")
            && l.contains("how=\"panicked\"")
            && l.ends_with(" 1")),
        "counted:\n{}",
        metrics.lines().filter(|l| l.contains("background_task")).collect::<Vec<_>>().join("\n")
    );
    running.shutdown(Duration::from_secs(5)).await;
}
