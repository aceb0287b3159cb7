//! The published contract against the router: every documented operation
//! is served, every other method of a documented path is a 405, and dev mode
//! offers a token from the local issuer to Swagger UI.

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::*;

fn concrete(path: &str) -> String {
    path.replace("{org}", "ttd")
        .replace("{app}", "apps-test")
        .replace("{party}", "50002108")
        .replace("{guid}", "3f2b7e5c-7c40-4c1a-9f2a-7b6f9f4f2a11")
        .replace("{id}", "1")
}

#[tokio::test]
async fn the_document_and_the_router_list_the_same_operations() {
    let app = TestApp::spawn().await;
    let resp = app.http.get(app.url("/events/swagger/v1/swagger.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    let mut routes: Vec<&str> = altinn_events::api::routes::ALL.to_vec();
    documented.sort_unstable();
    routes.sort_unstable();
    assert_eq!(documented, routes, "the document's paths are the router's routes");

    let mut served = 0;
    for (path, item) in paths {
        let url = app.url(&concrete(path));
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let listed = item.get(method.as_str().to_ascii_lowercase()).is_some();
            let resp = app.http.request(method.clone(), &url).send().await.unwrap();
            let status = resp.status().as_u16();
            if listed {
                served += 1;
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                let body = resp.text().await.unwrap_or_default();
                assert!(!body.contains("No such endpoint"), "{method} {path} is documented but not routed");
            } else {
                assert_eq!(status, 405, "{method} {path} is routed but not documented");
            }
        }
    }
    assert_eq!(served, 24);
    app.shutdown().await;
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let page = app.http.get(app.url("/events/swagger/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    assert!(!html.contains("https://"), "no asset from elsewhere: {html}");
    let bundle = app.http.get(app.url("/events/swagger/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    let init = app.http.get(app.url("/events/swagger/swagger-initializer.js")).send().await.unwrap();
    assert!(init.text().await.unwrap().contains("/events/swagger/v1/swagger.json"));
    app.shutdown().await;
}

#[tokio::test]
async fn the_local_issuer_hands_swagger_ui_a_token_the_service_takes() {
    let app = TestApp::spawn().await;
    let doc: Value =
        app.http.get(app.url("/events/swagger/v1/swagger.json")).send().await.unwrap().json().await.unwrap();
    let token_url = doc["components"]["securitySchemes"]["localIssuer"]["flows"]["clientCredentials"]["tokenUrl"]
        .as_str()
        .unwrap()
        .to_owned();

    // As Swagger UI sends it: credentials as HTTP Basic, scopes in the form.
    let resp = app
        .http
        .post(app.url(&token_url))
        .basic_auth("ttd", Some("anything"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=altinn%3Aevents%2Fttd%2Fapps-test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token: Value = resp.json().await.unwrap();
    assert_eq!(token["token_type"], "Bearer");
    let bearer = token["access_token"].as_str().unwrap();
    let page =
        app.http.get(app.url("/events/api/v1/app/ttd/apps-test?after=0")).bearer_auth(bearer).send().await.unwrap();
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());

    // A user, from the form; a bad grant is OAuth2's error, not a token.
    let user: Value = app
        .http
        .post(app.url(&token_url))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=user%3A1337")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let whoami: Value = app
        .http
        .get(app.url("/localtest/whoami"))
        .bearer_auth(user["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["subject"]["userId"], 1337);
    let bad = app.http.post(app.url(&token_url)).body("grant_type=password").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
    app.shutdown().await;
}

/// The request an operation's examples make: path and query parameters and
/// headers from each parameter's `example`, the body from its schema's
/// first `examples` entry.
fn example_request(doc: &Value, path: &str, op: &Value) -> (String, Vec<(String, String)>, Option<Value>) {
    let mut url = path.to_owned();
    let mut query = Vec::new();
    let mut headers = Vec::new();
    for p in op["parameters"].as_array().into_iter().flatten() {
        let Some(example) = p.get("example") else { continue };
        let value = example.as_str().map(str::to_owned).unwrap_or_else(|| example.to_string());
        let name = p["name"].as_str().unwrap();
        match p["in"].as_str().unwrap() {
            "path" => url = url.replace(&format!("{{{name}}}"), &value),
            "query" => query.push(format!("{name}={}", urlencode(&value))),
            "header" => headers.push((name.to_owned(), value)),
            other => panic!("{other} parameter"),
        }
    }
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    let body = op["requestBody"]["content"].as_object().and_then(|c| c.values().next()).map(|media| {
        let reference = media["schema"]["$ref"].as_str().expect("a body schema is a component");
        let name = reference.rsplit('/').next().unwrap();
        doc["components"]["schemas"][name]["examples"][0].clone()
    });
    (url, headers, body)
}

/// Every operation answers the request its examples make with a 2xx: the
/// examples name what dev mode has (its dataset; an instance key and
/// subscriptions 1-3, which `.ci/contract-test` makes before it fuzzes), so
/// that the contract fuzzer starting from them reaches the service's core.
#[tokio::test]
async fn every_operation_takes_the_request_its_examples_make() {
    let app = TestApp::spawn().await;
    let doc: Value =
        app.http.get(app.url("/events/swagger/v1/swagger.json")).send().await.unwrap().json().await.unwrap();
    let scopes = "altinn:events.publish altinn:events.publish.admin altinn:events.subscribe altinn:serviceowner \
                  altinn:events/ttd/apps-test";
    let token = app.org_token("ttd", scopes).await;
    let platform = app.platform_token("ttd", "apps-test").await;
    for id in 1..=3 {
        let body = json!({"endPoint": app.url(&format!("/localtest/webhooks/contract-{id}")),
            "resourceFilter": "urn:altinn:resource:app_ttd_apps-test"});
        let made: Value = app
            .http
            .post(app.url("/events/api/v1/subscriptions"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(made["id"], id);
    }
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    // The key first (the instance's events need it), the deletes last.
    operations.sort_by_key(|(method, path, _)| (!path.ends_with("/accesskey"), method == "DELETE"));
    let mut instance_key = String::new();
    for (method, path, op) in &operations {
        let (url, headers, body) = example_request(&doc, path, op);
        let mut request = app.http.request(method.parse().unwrap(), app.url(&url)).bearer_auth(&token);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if op["operationId"] == "publishAppEvent" {
            request = request.header("PlatformAccessToken", &platform);
        }
        if op["operationId"] == "getInstanceEvents" {
            request = request.header("Altinn-Instance-Access-Key", &instance_key);
        }
        if let Some(body) = body {
            let media = op["requestBody"]["content"].as_object().unwrap().keys().next().unwrap().clone();
            request = request.header(CONTENT_TYPE, media).body(body.to_string());
        }
        let resp = request.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {url}: {status} {text}");
        if op["operationId"] == "issueInstanceAccessKey" {
            instance_key = serde_json::from_str::<Value>(&text).unwrap()["key"].as_str().unwrap().to_owned();
        }
    }
    assert_eq!(operations.len(), 24);
    app.shutdown().await;
}
