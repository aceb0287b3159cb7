//! OpenTelemetry: a publish is one trace from the HTTP request to its Cosmos
//! writes, continued from the caller's `traceparent` and exported over OTLP
//! to a collector (here a stand-in in this process); the PDP call carries
//! the trace on; every log line of the request names its request and trace.

use std::sync::{Arc, Mutex};

use altinn_events::config::LogFormat;
use axum::routing::post;
use serde_json::Value;

use crate::helpers::*;

/// An OTLP/HTTP JSON collector: keeps every span it is sent.
async fn collector() -> (url::Url, Arc<Mutex<Vec<Value>>>) {
    let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                for rs in export["resourceSpans"].as_array().into_iter().flatten() {
                    let attributes = rs["resource"]["attributes"].as_array().cloned().unwrap_or_default();
                    let service = attributes.iter().find(|a| a["key"] == "service.name");
                    assert_eq!(service.map(|a| &a["value"]["stringValue"]), Some(&Value::from("altinn-events")));
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        kept.lock().unwrap().extend(ss["spans"].as_array().into_iter().flatten().cloned());
                    }
                }
                axum::Json(serde_json::json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}").parse().unwrap(), spans)
}

fn events_named<'a>(span: &'a Value, name: &str) -> Vec<&'a Value> {
    span["events"].as_array().into_iter().flatten().filter(|e| e["name"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_a_publish_from_http_to_its_cosmos_writes() {
    let (endpoint, spans) = collector().await;
    let logs = Capture::default();
    let writer = logs.clone();
    let traces =
        altinn_events::telemetry::init_tracing_to(LogFormat::Json, "info", Some(&endpoint), move || writer.clone())
            .unwrap();
    let app = TestApp::spawn().await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let body = serde_json::json!({"specversion": "1.0", "type": "app.instance.created", "subject": "/party/1337",
        "source": "https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/6fb3f738-6800-4f29-9f3e-1c66862656cd"});
    let resp = app
        .http
        .post(app.url("/events/api/v1/app"))
        .bearer_auth(&user)
        .header("PlatformAccessToken", &access)
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .header("x-request-id", "publish-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // A read in another trace calls the PDP, and passes that trace on.
    let read_trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = app
        .http
        .get(app.url("/events/api/v1/app/party?party=1337&after=0"))
        .bearer_auth(&user)
        .header("traceparent", format!("00-{read_trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap().as_array().unwrap().len(), 1);
    let pdp_traceparent = app.stats().await["last_pdp_traceparent"].as_str().unwrap().to_owned();
    assert!(pdp_traceparent.starts_with(&format!("00-{read_trace}-")), "{pdp_traceparent}");

    app.shutdown().await;
    traces.flush().await;

    let spans = spans.lock().unwrap().clone();
    let in_trace: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == trace).collect();
    let summary: Vec<String> =
        in_trace.iter().map(|s| format!("{} {} <- {}", s["name"], s["spanId"], s["parentSpanId"])).collect();
    let request = in_trace
        .iter()
        .find(|s| s["name"] == "request" && s["parentSpanId"] == caller_span)
        .unwrap_or_else(|| panic!("no request span continues the caller's: {summary:#?}"));
    // The first token check fetched the local issuer's OIDC keys (served by
    // the same process in dev mode): those calls are part of the trace.
    let route = |s: &Value| {
        s["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "http.route")
            .map(|a| a["value"].to_string())
    };
    let oidc: Vec<String> = in_trace
        .iter()
        .filter(|s| s["parentSpanId"] == request["spanId"] && s["name"] == "request")
        .filter_map(|s| route(s))
        .collect();
    assert!(oidc.iter().any(|r| r.contains("openid")), "{oidc:?} {summary:#?}");
    // The event is stored in two feeds (the app's resource feed and the
    // party's subject feed): two writes, each a child of the request, each
    // with the Cosmos requests it made and their RU.
    let writes: Vec<&&Value> = in_trace.iter().filter(|s| s["name"] == "cosmos.append").collect();
    assert_eq!(writes.len(), 2, "{in_trace:#?}");
    for write in writes {
        assert_eq!(write["parentSpanId"], request["spanId"]);
        let cosmos = events_named(write, "cosmos.request");
        assert!(!cosmos.is_empty(), "{write:#}");
        assert!(cosmos.iter().any(|e| e["attributes"].to_string().contains("request_charge")), "{write:#}");
    }

    // Every request's log line names its request and trace; the publish's
    // names the ones it was given.
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let responses: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "response")
        .collect();
    assert!(responses.len() >= 6, "the requests of this test each logged a response: {logs}");
    for line in &responses {
        let request_span = line["spans"].as_array().unwrap().iter().find(|s| s["name"] == "request");
        let request_span = request_span.unwrap_or_else(|| panic!("a response line outside its request: {line}"));
        assert!(request_span["request.id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
        assert_eq!(request_span["trace.id"].as_str().map(str::len), Some(32), "{line}");
    }
    let publish = responses.iter().find(|l| l.to_string().contains("publish-1")).expect("the publish's line");
    let request_span = publish["spans"].as_array().unwrap().iter().find(|s| s["name"] == "request").unwrap();
    assert_eq!(request_span["request.id"], "publish-1", "{publish}");
    assert_eq!(request_span["trace.id"], trace, "{publish}");
}
