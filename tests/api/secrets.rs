//! Secrets from files (`secrets_dir`, as the Key Vault CSI driver mounts
//! them): read at start over the environment, and read again while the
//! service runs, so that a key ring or a subscription key is rotated
//! without a restart.

use std::path::{Path, PathBuf};

use altinn_events::Overrides;
use altinn_events::feeds::StoredIn;
use serde_json::Value;

use crate::helpers::*;

const GUID: &str = "6fb3f738-6800-4f29-9f3e-1c66862656cd";
const OLD: &str = "c1:old-cursor-secret-0123456789abcdef";
const NEW: &str = "c2:new-cursor-secret-0123456789abcdef";

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("altinn-events-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes a file the way the CSI driver does: a new file moved into
    /// place, never a half-written one.
    fn write(&self, name: &str, value: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("{value}\n")).unwrap();
        std::fs::rename(&tmp, self.0.join(name)).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `next` cursor of a page of party 1337's app events.
async fn next_cursor(app: &TestApp, token: &str) -> String {
    let resp = app.get_bearer("/events/api/v1/app/party?party=1337&after=0", token).await;
    assert_eq!(resp.status(), 200);
    let next = resp.headers()["next"].to_str().unwrap().to_owned();
    next.rsplit("after=").next().unwrap().to_owned()
}

async fn read_after(app: &TestApp, token: &str, cursor: &str) -> u16 {
    app.get_bearer(&format!("/events/api/v1/app/party?party=1337&after={cursor}"), token).await.status().as_u16()
}

/// A cursor key ring and the PDP key come from files; each rotation step
/// takes effect without a restart, and old cursors open until their key
/// leaves the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rings_and_the_pdp_key_are_rotated_in_files_without_a_restart() {
    let dir = Dir::new();
    dir.write("cursors__key_ring", OLD);
    dir.write("pdp__subscription_key", "pdp-key-1");
    dir.write("instance_access__key_ring", "i1:instance-secret-0123456789abcdef");
    let pdp = FakePdp::start(PdpMode::PermitAll).await;
    let mut config = test_config();
    config.cursors.keys.clear();
    config.pdp.url = Some(pdp.url.clone());
    config.secrets_dir = Some(dir.path().to_owned());
    config.secrets_reload_seconds = 1;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    publish_app_event(&app, "ttd", "apps-test", 1337, GUID, "app.instance.created").await;
    let user = app.user_token(1337, 1337, 2).await;

    // At start: the files' values.
    let old_cursor = next_cursor(&app, &user).await;
    assert!(old_cursor.starts_with("c1.c1."), "sealed with the file's key: {old_cursor}");
    assert_eq!(pdp.last_subscription_key().as_deref(), Some("pdp-key-1"), "the PDP got the file's key");
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let issue = || async {
        let resp =
            app.post_bearer(&format!("/events/api/v1/app/ttd/apps-test/instances/1337/{GUID}/accesskey"), &owner).await;
        assert_eq!(resp.status(), 201);
        resp.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
    };
    let old_key = issue().await;
    assert!(old_key.starts_with("v1.i1."), "{old_key}");

    // Step 1: the new key is known, the old one still seals.
    dir.write("cursors__key_ring", &format!("{OLD} {NEW}"));
    dir.write("pdp__subscription_key", "pdp-key-2");
    eventually("the PDP gets the new key", || async {
        next_cursor(&app, &user).await;
        pdp.last_subscription_key().as_deref() == Some("pdp-key-2")
    })
    .await;
    assert!(next_cursor(&app, &user).await.starts_with("c1.c1."), "the first key of the ring seals");

    // Step 2: the new key seals; cursors of the old one still open.
    dir.write("cursors__key_ring", &format!("{NEW} {OLD}"));
    eventually("the new key seals", || async { next_cursor(&app, &user).await.starts_with("c1.c2.") }).await;
    assert_eq!(read_after(&app, &user, &old_cursor).await, 200, "an old cursor still opens");

    // Step 3: the old key is gone; so are its cursors and instance keys.
    dir.write("cursors__key_ring", NEW);
    dir.write("instance_access__key_ring", "i2:instance-secret-abcdef0123456789");
    eventually("the old key is gone", || async { read_after(&app, &user, &old_cursor).await == 400 }).await;
    eventually("the new instance key signs", || async { issue().await.starts_with("v1.i2.") }).await;
    let resp = app
        .http
        .post(app.url(&format!("/events/instanceeventsforinstance/1337/{GUID}?after=0")))
        .header("Altinn-Instance-Access-Key", &old_key)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401).await;

    // A broken ring changes nothing: the service keeps the last good one.
    // Once a reload has read it (and failed, counted), the ring is the
    // last good one still.
    let failed = || metric(&app, "secrets_reloads_total{outcome=\"failed\"");
    assert_eq!(failed().await, 0.0);
    dir.write("cursors__key_ring", "not a ring");
    eventually("a reload read the broken ring", || async { failed().await >= 1.0 }).await;
    assert!(next_cursor(&app, &user).await.starts_with("c1.c2."), "the last valid ring stays");
    app.shutdown().await;
}

/// A setting file that is not a setting, or a ring given twice, stops the
/// service at start with an error that names it.
#[test]
#[expect(clippy::result_large_err, reason = "figment::Jail fixes the closure's error type")]
fn bad_secret_files_are_errors_at_start() {
    let dir = Dir::new();
    dir.write("Not-A-Setting", "x");
    figment::Jail::expect_with(|jail| {
        jail.set_env("EVENTS__SECRETS_DIR", dir.path().display().to_string());
        let err = altinn_events::Config::load(None).unwrap_err().to_string();
        assert!(err.contains("Not-A-Setting") && err.contains("EVENTS__SECRETS_DIR"), "{err}");
        std::fs::remove_file(dir.path().join("Not-A-Setting")).unwrap();
        dir.write("cursors__key_ring", OLD);
        dir.write("pdp__timeout_ms", "150");
        let config = altinn_events::Config::load(None).unwrap();
        assert_eq!(config.cursor_ring().unwrap().signing.as_deref(), Some("c1"), "the file is the setting");
        assert_eq!(config.pdp.timeout_ms, 150, "a number from a file");
        std::fs::remove_file(dir.path().join("pdp__timeout_ms")).unwrap();
        jail.set_env("EVENTS__CURSORS__KEYS__OTHER", "other-secret-0123456789abcdef");
        let err =
            altinn_events::Config::load(None).unwrap().finalize(altinn_events::Mode::Dev).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        Ok(())
    });
}

/// Issue 32: webhook signing secrets are sealed at rest with the
/// `subscription_secrets` ring, bound to their subscription, and stay
/// usable through a rotation of the ring done in files: a new key first
/// (old secrets still open), then the new key alone once the subscriptions
/// were written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secrets_are_sealed_at_rest_and_still_sign_after_a_ring_rotation() {
    const W1: &str = "w1:webhook-ring-secret-one-0123456789";
    const W2: &str = "w2:webhook-ring-secret-two-0123456789";
    let dir = Dir::new();
    dir.write("subscription_secrets__key_ring", W1);
    let mut config = crate::delivery::delivery_config();
    config.subscription_secrets.keys.clear();
    config.secrets_dir = Some(dir.path().to_owned());
    config.secrets_reload_seconds = 1;
    let app = TestApp::spawn_with(config, Overrides::default()).await;
    let receiver = crate::subscriptions::Receiver::start().await;
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    let body =
        serde_json::json!({"endPoint": receiver.url, "sourceFilter": "https://ttd.apps.altinn.no/ttd/apps-test"});
    let (id, secret) = crate::delivery::subscribed(&app, &owner, body).await;
    // A second one, never written again after the rotation below.
    let other = crate::subscriptions::Receiver::start().await;
    let body = serde_json::json!({"endPoint": other.url, "sourceFilter": "https://ttd.apps.altinn.no/ttd/apps-test"});
    let (untouched, _) = crate::delivery::subscribed(&app, &owner, body).await;

    // At rest: sealed under w1, the secret nowhere in the document.
    let at_rest = |docs: Vec<Value>| -> Vec<String> {
        let doc = docs.into_iter().find(|d| d["seq"] == id && d["kind"] == "subscription").expect("the document");
        let text = doc.to_string();
        assert!(!text.contains(&secret), "the secret in plain text at rest: {text}");
        doc["secrets"].as_array().unwrap().iter().map(|s| s["value"].as_str().unwrap().to_owned()).collect()
    };
    let stored = at_rest(app.feeds.documents_at_rest(StoredIn::Subscriptions, "subscriptions").await.unwrap());
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("w1.w1."), "sealed with the ring's first key: {}", stored[0]);

    // Step 1: w2 seals from now on, w1 still opens (the rotation below reads
    // the subscription afresh, its secret sealed under w1); an event pushed
    // now is signed with the subscription's secret as before.
    dir.write("subscription_secrets__key_ring", &format!("{W2} {W1}"));
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let user = app.user_token(1337, 1337, 2).await;
    let access = app.platform_token("ttd", "apps-test").await;
    post_app_event(&app, &user, &access, ("ttd", "apps-test"), 1337, GUID, "app.instance.created").await;
    let pushed = crate::delivery::until_events(&receiver, 1).await;
    assert!(pushed[0].verifies(&secret), "a push after the new key came signs with the secret sealed under the old");

    // A change of the subscription (its secret rotated) seals it again, under w2.
    let rotated: Value = app
        .post_bearer(&format!("/events/api/v1/subscriptions/{id}/secret/rotate"), &owner)
        .await
        .json()
        .await
        .unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    let stored = at_rest(app.feeds.documents_at_rest(StoredIn::Subscriptions, "subscriptions").await.unwrap());
    assert!(stored.iter().all(|v| v.starts_with("w1.w2.")), "both secrets sealed again under w2: {stored:?}");
    assert!(!stored.iter().any(|v| v.contains(&new)), "the new secret in plain text at rest");

    // Step 2: w1 is gone; the rewritten subscription still opens and signs.
    dir.write("subscription_secrets__key_ring", W2);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // The one still sealed under w1 is an error to read, never "deleted"
    // (its delivery state stays), and left out of the owner's list.
    let view = app.get_bearer(&format!("/events/api/v1/subscriptions/{untouched}"), &owner).await;
    assert_eq!(view.status(), 503, "unreadable is not absent");
    let listed: Value = app.get_bearer("/events/api/v1/subscriptions", &owner).await.json().await.unwrap();
    assert!(listed.to_string().contains(&format!("\"id\":{id},")), "the readable one is listed: {listed}");
    assert!(!listed.to_string().contains(&format!("\"id\":{untouched},")), "{listed}");
    post_app_event(
        &app,
        &user,
        &access,
        ("ttd", "apps-test"),
        1337,
        "7fb3f738-6800-4f29-9f3e-1c66862656cd",
        "app.instance.created",
    )
    .await;
    let pushed = crate::delivery::until_events(&receiver, 2).await;
    assert!(pushed[1].verifies(&new) && pushed[1].verifies(&secret), "signed with both secrets during the overlap");
    // w1 back: the untouched one reads again, as it was.
    dir.write("subscription_secrets__key_ring", &format!("{W2} {W1}"));
    eventually("the untouched subscription reads again", || async {
        app.get_bearer(&format!("/events/api/v1/subscriptions/{untouched}"), &owner).await.status() == 200
    })
    .await;
    app.shutdown().await;
}
