use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{AUTHORIZATION, COOKIE};
use serde_json::{Value, json};

use crate::helpers::*;

async fn whoami(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_bearer("/localtest/whoami", token).await
}

#[tokio::test]
async fn tokens_from_every_local_endpoint_are_accepted() {
    let app = TestApp::spawn().await;

    let user = app.user_token(1337, 1337, 2).await;
    let body: Value = whoami(&app, &user).await.json().await.unwrap();
    assert_eq!(body["subject"], json!({"kind": "user", "userId": 1337, "partyId": 1337}));
    assert_eq!(body["authLevel"], 2);

    let org = app.org_token("ttd", "altinn:events/ttd/apps-test altinn:serviceowner/instances.read").await;
    let body: Value = whoami(&app, &org).await.json().await.unwrap();
    assert_eq!(body["subject"], json!({"kind": "org", "org": "ttd", "orgNumber": "991825827"}));
    assert_eq!(body["scopes"], json!(["altinn:events/ttd/apps-test", "altinn:serviceowner/instances.read"]));

    // The approved bank has no org code: orgNumber alone.
    let bank = app.get_text("/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let body: Value = whoami(&app, &bank).await.json().await.unwrap();
    assert_eq!(body["subject"], json!({"kind": "org", "org": null, "orgNumber": "912345678"}));

    // Maskinporten token → exchange → Altinn token with the same scopes.
    let mp = app.get_text("/localtest/token/maskinporten?orgNumber=974761076&scope=altinn:events.subscribe").await;
    assert_eq!(whoami(&app, &mp).await.status(), 401, "a Maskinporten token is not an Altinn token");
    let exchanged = app.get_bearer("/authentication/api/v1/exchange/maskinporten", &mp).await;
    assert_eq!(exchanged.status(), 200);
    let altinn = exchanged.text().await.unwrap();
    let body: Value = whoami(&app, &altinn).await.json().await.unwrap();
    assert_eq!(body["subject"], json!({"kind": "org", "org": "skd", "orgNumber": "974761076"}));
    assert_eq!(body["scopes"], json!(["altinn:events.subscribe"]));

    let platform = app.platform_token("ttd", "apps-test").await;
    let resp = app
        .http
        .get(app.url("/localtest/whoami/platform"))
        .header("PlatformAccessToken", &platform)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["appId"], "ttd/apps-test");
    app.shutdown().await;
}

#[tokio::test]
async fn bearer_and_cookie_both_work() {
    let app = TestApp::spawn().await;
    let token = app.user_token(1338, 1338, 3).await;
    let by_cookie = app
        .http
        .get(app.url("/localtest/whoami"))
        .header(COOKIE, format!("other=1; AltinnStudioRuntime={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);
    let body: Value = by_cookie.json().await.unwrap();
    assert_eq!(body["subject"]["userId"], 1338);
    assert_eq!(whoami(&app, &token).await.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_401_problems_never_500() {
    let app = TestApp::spawn().await;
    let good = app.user_token(1337, 1337, 2).await;
    let (header, claims) = parts(&good);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let pem = std::fs::read_to_string(key_file()).unwrap();

    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    let mut not_yet = claims.clone();
    not_yet["nbf"] = json!(now() + 3600);
    let wrong_key = sign_rs256(foreign_key_pem(), Some(&kid), &claims);
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    // HS256 "signed" with the platform's public key as the HMAC secret.
    let jwks: Value = app
        .http
        .get(app.url("/authentication/api/v1/openid/.well-known/openid-configuration/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public_n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(&hs_header, &claims, &jsonwebtoken::EncodingKey::from_secret(public_n.as_bytes()))
        .unwrap();
    let mut tampered_claims = claims.clone();
    tampered_claims["urn:altinn:userid"] = json!("1338");
    let (h, _, s) = {
        let mut it = good.split('.');
        (it.next().unwrap().to_owned(), it.next(), it.next().unwrap().to_owned())
    };
    let tampered = format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(tampered_claims.to_string()));

    // The service remembers tokens it verified: warm that memory with the
    // good token first, so that a memory keyed on part of a token (its
    // header and claims, a prefix) would let the variants below through.
    assert_eq!(whoami(&app, &good).await.status(), 200);
    let cases = [
        ("signature cut short", good[..good.len() - 2].to_owned()),
        ("signature extended", format!("{good}AA")),
        (
            "signature of another token",
            format!("{h}.{}.{}", good.split('.').nth(1).unwrap(), {
                let other = app.user_token(1338, 1338, 2).await;
                other.rsplit('.').next().unwrap().to_owned()
            }),
        ),
        ("expired", sign_rs256(&pem, Some(&kid), &expired)),
        ("not yet valid", sign_rs256(&pem, Some(&kid), &not_yet)),
        ("wrong key", wrong_key),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("tampered claims", tampered),
        ("garbage", "not-a-jwt".to_owned()),
        ("three garbage parts", "a.b.c".to_owned()),
    ];
    for (name, token) in cases {
        let resp = whoami(&app, &token).await;
        assert_eq!(resp.status(), 401, "{name}");
        assert_problem(resp, 401).await;
    }
    assert_eq!(whoami(&app, &good).await.status(), 200, "the good token still works");
    let missing = app.http.get(app.url("/localtest/whoami")).send().await.unwrap();
    let body = assert_problem(missing, 401).await;
    assert!(body["detail"].as_str().unwrap().contains("Missing"), "{body}");
    let empty_bearer =
        app.http.get(app.url("/localtest/whoami")).header(AUTHORIZATION, "Bearer ").send().await.unwrap();
    assert_problem(empty_bearer, 401).await;
    app.shutdown().await;
}

#[tokio::test]
async fn platform_tokens_of_unknown_or_forged_issuers_are_refused() {
    let app = TestApp::spawn().await;
    let call = |token: String| {
        let req = app.http.get(app.url("/localtest/whoami/platform")).header("PlatformAccessToken", token);
        async move { req.send().await.unwrap() }
    };
    // No certificate for this issuer.
    let unknown = app.platform_token("nav", "some-app").await;
    assert_problem(call(unknown).await, 403).await;
    // ttd's name, someone else's key, after the genuine token was verified
    // (and remembered): the same claims with another signature are refused.
    let genuine = app.platform_token("ttd", "apps-test").await;
    assert_eq!(call(genuine.clone()).await.status(), 200);
    let (_, claims) = parts(&genuine);
    assert_problem(call(sign_rs256(foreign_key_pem(), None, &claims)).await, 403).await;
    assert_problem(call(genuine[..genuine.len() - 2].to_owned()).await, 403).await;
    // Path traversal in the issuer never reaches the file system.
    let mut traversal = claims.clone();
    traversal["iss"] = json!("../../etc/passwd");
    let pem = std::fs::read_to_string(key_file()).unwrap();
    assert_problem(call(sign_rs256(&pem, None, &traversal)).await, 403).await;
    // Missing header.
    let missing = app.http.get(app.url("/localtest/whoami/platform")).send().await.unwrap();
    assert_problem(missing, 403).await;
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_kid_triggers_exactly_one_jwks_refetch() {
    let app = TestApp::spawn().await;
    let first = app.user_token(1337, 1337, 2).await;
    assert_eq!(whoami(&app, &first).await.status(), 200);
    assert_eq!(app.stats().await["jwks_requests"], 1);

    // The platform rotates its key: tokens now carry a kid the service has not seen.
    let rotated = app.http.post(app.url("/localtest/keys/rotate")).send().await.unwrap();
    assert_eq!(rotated.status(), 200);
    let second = app.user_token(1337, 1337, 2).await;
    assert_ne!(parts(&first).0["kid"], parts(&second).0["kid"]);
    assert_eq!(whoami(&app, &second).await.status(), 200);
    assert_eq!(whoami(&app, &second).await.status(), 200);
    assert_eq!(app.stats().await["jwks_requests"], 2, "one refetch for the new kid");

    // Forged kids within the refetch interval do not reach the JWKS endpoint.
    let (_, claims) = parts(&second);
    for i in 0..5 {
        let forged = sign_rs256(foreign_key_pem(), Some(&format!("forged-{i}")), &claims);
        assert_eq!(whoami(&app, &forged).await.status(), 401);
    }
    assert_eq!(app.stats().await["jwks_requests"], 2);
    app.shutdown().await;
}
