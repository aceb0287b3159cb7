use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::header::{AUTHORIZATION, COOKIE};
use serde_json::json;

use crate::helpers::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Requests carrying national identity numbers (header, body, event data)
/// and tokens (bearer, cookie, access token) leave none of them in the logs.
#[tokio::test]
async fn no_identity_number_token_or_cookie_reaches_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter("info,altinn_events=debug")
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber of this process");

    let app = TestApp::spawn().await;
    let ssn = "01039012345";
    let unknown_ssn = "31129912345";
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let event = json!({"specversion": "1.0", "type": "t", "subject": "/party/1337", "alternativesubject": format!("/person/{ssn}"),
        "source": "https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/00000000-0000-4000-8000-000000000001"});
    let resp = app
        .http
        .post(app.url("/events/api/v1/app"))
        .header(AUTHORIZATION, format!("Bearer {user}"))
        .header("PlatformAccessToken", &access)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    for person in [ssn, unknown_ssn] {
        let _ = app
            .http
            .get(app.url("/events/api/v1/app/party?after=0"))
            .header(COOKIE, format!("AltinnStudioRuntime={user}"))
            .header("person", person)
            .send()
            .await
            .unwrap();
        let _ = app
            .http
            .post(app.url("/events/api/v1/party"))
            .header(AUTHORIZATION, format!("Bearer {user}"))
            .json(&json!({"person": person, "after": "0"}))
            .send()
            .await
            .unwrap();
    }
    let rejected = app
        .http
        .get(app.url("/localtest/whoami"))
        .header(AUTHORIZATION, format!("Bearer {user}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);
    app.shutdown().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("/events/api/v1/party"), "the requests were logged: {logs}");
    assert!(logs.contains("token rejected"), "the rejection was logged");
    for secret in [ssn, unknown_ssn, user.as_str(), access.as_str(), "AltinnStudioRuntime"] {
        assert!(!logs.contains(secret), "a log line contains {}", &secret[..secret.len().min(20)]);
    }
    // Token signatures (the part that makes a token usable) never appear either.
    let signature = user.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature));
}
