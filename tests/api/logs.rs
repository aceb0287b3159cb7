use altinn_events::Overrides;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use serde_json::json;

use crate::helpers::*;

const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";
const GUID: &str = "00000000-0000-4000-8000-000000000001";

/// Requests carrying national identity numbers (header, query, body, event
/// fields) and credentials (bearer, cookie, access token, instance access
/// key), on their successful paths, their refusals and their server errors,
/// leave none of them in the logs. Every request's status is asserted, so
/// that each one went the way it is meant to test.
#[tokio::test]
async fn no_identity_number_token_key_or_cookie_reaches_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter("info,altinn_events=debug")
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber of this process");

    let pdp = FakePdp::start(PdpMode::PermitAll).await;
    let mut config = test_config();
    config.pdp.url = Some(pdp.url.clone());
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let ssn = "01039012345";
    let unknown_ssn = "31129912345";
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    let publisher = app.org_token("ttd", "altinn:events.publish altinn:events/ttd/apps-test").await;
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let bearer = |t: &str| format!("Bearer {t}");
    let mut statuses = Vec::new();
    let mut record = |what: &str, resp: &reqwest::Response| statuses.push((what.to_owned(), resp.status().as_u16()));

    // Publishing: an app event with a person as alternative subject, and a
    // generic event about a person (subject and alternative subject).
    let event = json!({"specversion": "1.0", "type": "t", "subject": "/party/1337", "alternativesubject": format!("/person/{ssn}"),
        "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/{GUID}")});
    let resp = app
        .http
        .post(app.url("/events/api/v1/app"))
        .header(AUTHORIZATION, bearer(&user))
        .header("PlatformAccessToken", &access)
        .json(&event)
        .send()
        .await
        .unwrap();
    record("POST /app", &resp);
    let generic = json!({"specversion": "1.0", "id": "estate-about-a-person", "type": "t", "source": "urn:no:skd:estate",
        "subject": format!("/person/{ssn}"), "alternativesubject": format!("/person/{ssn}"), "resource": ESTATE});
    let resp = app
        .http
        .post(app.url("/events/api/v1/events"))
        .header(AUTHORIZATION, bearer(&publisher))
        .header(CONTENT_TYPE, "application/cloudevents+json")
        .body(generic.to_string())
        .send()
        .await
        .unwrap();
    record("POST /events", &resp);

    // Reading by person: header (bearer and cookie), body, query, the
    // alternative-subject header; known and unknown numbers.
    for person in [ssn, unknown_ssn] {
        let resp = app
            .http
            .get(app.url("/events/api/v1/app/party?after=0"))
            .header(COOKIE, format!("AltinnStudioRuntime={user}"))
            .header("person", person)
            .send()
            .await
            .unwrap();
        record(&format!("GET /app/party person {person}"), &resp);
        let resp = app
            .http
            .post(app.url("/events/api/v1/party"))
            .header(AUTHORIZATION, bearer(&user))
            .json(&json!({"person": person, "after": "0"}))
            .send()
            .await
            .unwrap();
        record(&format!("POST /party person {person}"), &resp);
        let subject = urlencode(&format!("/person/{person}"));
        let resp = app
            .get_bearer(
                &format!("/events/api/v1/events?resource={}&after=0&subject={subject}", urlencode(ESTATE)),
                &bank,
            )
            .await;
        record(&format!("GET /events subject {person}"), &resp);
        let resp = app
            .http
            .get(app.url(&format!("/events/api/v1/events?resource={}&after=0", urlencode(ESTATE))))
            .header(AUTHORIZATION, bearer(&bank))
            .header("Altinn-AlternativeSubject", format!("/person/{person}"))
            .send()
            .await
            .unwrap();
        record(&format!("GET /events alternative subject {person}"), &resp);
    }

    // The instance access key: issued, used, and refused when altered.
    let resp = app
        .http
        .post(app.url(&format!("/events/api/v1/app/ttd/apps-test/instances/1337/{GUID}/accesskey")))
        .header(AUTHORIZATION, bearer(&publisher))
        .send()
        .await
        .unwrap();
    record("POST accesskey", &resp);
    let key = resp.json::<serde_json::Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    for (what, k) in [("instance read", key.clone()), ("instance read, forged key", format!("{key}x"))] {
        let resp = app
            .http
            .post(app.url(&format!("/events/instanceeventsforinstance/1337/{GUID}?after=0")))
            .header("Altinn-Instance-Access-Key", &k)
            .send()
            .await
            .unwrap();
        record(what, &resp);
    }

    // Refused tokens.
    let resp = app
        .http
        .get(app.url("/localtest/whoami"))
        .header(AUTHORIZATION, format!("Bearer {user}x"))
        .send()
        .await
        .unwrap();
    record("whoami, tampered bearer", &resp);
    let resp = app
        .http
        .get(app.url("/events/api/v1/app/party?after=0"))
        .header(COOKIE, format!("AltinnStudioRuntime={user}x"))
        .header("person", ssn)
        .send()
        .await
        .unwrap();
    record("GET /app/party, tampered cookie", &resp);

    // A platform access token whose claim has the wrong type: the JSON
    // error would quote the value; the log says why, not what.
    let (_, mut claims) = parts(&access);
    claims["urn:altinn:app"] = json!(987654321);
    let pem = std::fs::read_to_string(key_file()).unwrap();
    let odd = sign_rs256(&pem, None, &claims);
    let resp =
        app.http.get(app.url("/localtest/whoami/platform")).header("PlatformAccessToken", &odd).send().await.unwrap();
    record("whoami/platform, claim of the wrong type", &resp);

    // A subscription's signing secret: made, shown once, rotated.
    let resp = app
        .http
        .post(app.url("/events/api/v1/subscriptions"))
        .header(AUTHORIZATION, bearer(&user))
        .json(&json!({"endPoint": app.url("/localtest/webhooks/logs"), "subjectFilter": "/party/1337",
            "sourceFilter": "https://ttd.apps.altinn.no/ttd/apps-test"}))
        .send()
        .await
        .unwrap();
    record("POST /subscriptions", &resp);
    let created: serde_json::Value = resp.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap_or_default().to_owned();
    let resp = app
        .http
        .post(app.url(&format!("/events/api/v1/subscriptions/{}/secret/rotate", created["id"])))
        .header(AUTHORIZATION, bearer(&user))
        .send()
        .await
        .unwrap();
    record("rotate the secret", &resp);
    let rotated = resp.json::<serde_json::Value>().await.unwrap()["secret"].as_str().unwrap_or_default().to_owned();

    // Server errors: the PDP fails, the chain of the error is logged.
    pdp.set(PdpMode::Status(500));
    let resp = app
        .http
        .post(app.url("/events/api/v1/party"))
        .header(AUTHORIZATION, bearer(&user))
        .json(&json!({"person": ssn, "after": "0"}))
        .send()
        .await
        .unwrap();
    record("POST /party, PDP down", &resp);
    let resp = app
        .http
        .get(app.url(&format!(
            "/events/api/v1/events?resource={}&after=0&subject={}",
            urlencode(ESTATE),
            urlencode(&format!("/person/{ssn}"))
        )))
        .header(AUTHORIZATION, bearer(&bank))
        .send()
        .await
        .unwrap();
    record("GET /events subject, PDP down", &resp);
    app.shutdown().await;

    let expected = [
        ("POST /app", 201),
        ("POST /events", 200),
        (&*format!("GET /app/party person {ssn}"), 200),
        (&*format!("POST /party person {ssn}"), 200),
        (&*format!("GET /events subject {ssn}"), 200),
        (&*format!("GET /events alternative subject {ssn}"), 200),
        (&*format!("GET /app/party person {unknown_ssn}"), 404),
        (&*format!("POST /party person {unknown_ssn}"), 404),
        (&*format!("GET /events subject {unknown_ssn}"), 200),
        (&*format!("GET /events alternative subject {unknown_ssn}"), 200),
        ("POST accesskey", 201),
        ("instance read", 200),
        ("instance read, forged key", 401),
        ("whoami, tampered bearer", 401),
        ("GET /app/party, tampered cookie", 401),
        ("whoami/platform, claim of the wrong type", 403),
        ("POST /subscriptions", 201),
        ("rotate the secret", 200),
        ("POST /party, PDP down", 503),
        ("GET /events subject, PDP down", 503),
    ];
    for (what, status) in expected {
        let got = statuses.iter().find(|(w, _)| w == what).map(|(_, s)| *s);
        assert_eq!(got, Some(status), "{what}");
    }

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("/events/api/v1/party"), "the requests were logged: {logs}");
    assert!(logs.contains("token rejected"), "the rejections were logged");
    assert!(logs.contains("instance access key refused"), "the key refusal was logged");
    assert!(logs.contains("error.chain"), "the server errors were logged with their cause");
    assert!(logs.contains("platform access token rejected"), "the odd token was logged as rejected");
    assert!(secret.starts_with("whsec_") && rotated.starts_with("whsec_"));
    let secret_body = secret.trim_start_matches("whsec_").to_owned();
    let rotated_body = rotated.trim_start_matches("whsec_").to_owned();
    for secret in [
        ssn,
        unknown_ssn,
        user.as_str(),
        access.as_str(),
        publisher.as_str(),
        bank.as_str(),
        key.as_str(),
        "AltinnStudioRuntime",
        // The value of the claim of the wrong type.
        "987654321",
        secret_body.as_str(),
        rotated_body.as_str(),
    ] {
        assert!(!logs.contains(secret), "a log line contains {}", &secret[..secret.len().min(20)]);
    }
    // Signatures (the part that makes a token or key usable) never appear either.
    for credential in [&user, &access, &publisher, &bank, &key] {
        let signature = credential.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a signature appears in the logs");
    }
}
