//! A subscription's filters decide what is pushed (docs/subscriptions.md,
//! src/deliver/filters.rs): Altinn's matching, the type equal and the
//! source a prefix (both ignoring case), the subject the feed followed and
//! the subscription's resource within it. Each test publishes matching and
//! other events, the last of them matching: pushes come in feed order, so
//! once that one has arrived every event before it was decided, and what
//! arrived is exactly the matching ones, in order.

use altinn_events::Overrides;
use serde_json::{Value, json};

use crate::delivery::{delivery_config, events, ids, subscribed, until_events, until_view, view};
use crate::helpers::*;
use crate::subscriptions::Receiver;

const APP_SOURCE: &str = "https://ttd.apps.altinn.no/ttd/apps-test";
const APP_RESOURCE: &str = "urn:altinn:resource:app_ttd_apps-test";

/// Publishes app events as their app does.
struct Apps {
    user: String,
    strong_user: String,
    ttd: String,
    skd: String,
    n: std::cell::Cell<u64>,
}

impl Apps {
    async fn new(app: &TestApp) -> Self {
        Self {
            user: app.user_token(1337, 1337, 2).await,
            strong_user: app.user_token(1337, 1337, 3).await,
            ttd: app.platform_token("ttd", "apps-test").await,
            skd: app.platform_token("skd", "taxreport").await,
            n: std::cell::Cell::new(0),
        }
    }

    /// An event of ttd/apps-test about an instance of `party`: its id.
    async fn ttd(&self, app: &TestApp, party: u64, kind: &str) -> String {
        let guid = self.guid();
        post_app_event(app, &self.user, &self.ttd, ("ttd", "apps-test"), party, &guid, kind).await
    }

    /// An event of skd/taxreport (another app, another resource).
    async fn skd(&self, app: &TestApp, party: u64, kind: &str) -> String {
        let guid = self.guid();
        post_app_event(app, &self.strong_user, &self.skd, ("skd", "taxreport"), party, &guid, kind).await
    }

    fn guid(&self) -> String {
        let n = self.n.get();
        self.n.set(n + 1);
        format!("{n:08x}-0000-4000-8000-000000000000")
    }
}

/// Subscribes as the service owner ttd; waits until validated.
async fn owner_subscription(app: &TestApp, filters: Value) -> (String, Receiver, u64) {
    let owner = app.org_token("ttd", "altinn:events/ttd/apps-test").await;
    subscription_of(app, owner, filters).await
}

/// Subscribes with `token`; waits until validated.
async fn subscription_of(app: &TestApp, token: String, filters: Value) -> (String, Receiver, u64) {
    let owner = token;
    let receiver = Receiver::start().await;
    let mut body = json!({"endPoint": receiver.url});
    body.as_object_mut().unwrap().extend(filters.as_object().unwrap().clone());
    let (id, _) = subscribed(app, &owner, body).await;
    (owner, receiver, id)
}

/// Waits until `receiver` got as many events as `expected` (the last one
/// published matching), then checks that they are those, in order, and
/// that the subscription's checkpoint passed everything.
async fn pushed_exactly(app: &TestApp, owner: &str, id: u64, receiver: &Receiver, expected: &[String]) {
    let got = until_events(receiver, expected.len()).await;
    assert_eq!(ids(&got), expected, "exactly the matching events, in feed order");
    until_view(app, owner, id, "caught up", |s| s["delivery"]["oldestPending"].is_null()).await;
    assert_eq!(events(receiver).len(), expected.len(), "{}", view(app, owner, id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_filter_pushes_the_events_of_that_type_only() {
    let app = TestApp::spawn_with(delivery_config(), Overrides::default()).await;
    let (owner, receiver, id) =
        owner_subscription(&app, json!({"sourceFilter": APP_SOURCE, "typeFilter": "app.instance.process.completed"}))
            .await;
    // Another subscription, without a type filter: it gets every event.
    let (_, everything, _) = owner_subscription(&app, json!({"sourceFilter": APP_SOURCE})).await;
    let apps = Apps::new(&app).await;
    let mut all = Vec::new();
    let mut expected = Vec::new();
    for (kind, matches) in [
        ("app.instance.created", false),
        ("app.instance.process.completed", true),
        ("app.instance.process.completed.late", false),
        ("app.instance.process", false),
        ("APP.Instance.Process.Completed", true),
        ("app.instance.process.movedto.task_1", false),
        ("app.instance.process.completed", true),
    ] {
        let event = apps.ttd(&app, 1337, kind).await;
        if matches {
            expected.push(event.clone());
        }
        all.push(event);
    }
    pushed_exactly(&app, &owner, id, &receiver, &expected).await;
    assert_eq!(ids(&until_events(&everything, all.len()).await), all);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_filter_pushes_that_subjects_events_of_the_resource_only() {
    let app = TestApp::spawn_with(delivery_config(), Overrides::default()).await;
    // Ola (party 1338) may read every app's events about himself: what
    // keeps the other app's out is the subscription's resource.
    let ola = app.user_token(1338, 1338, 3).await;
    let (owner, receiver, id) =
        subscription_of(&app, ola, json!({"resourceFilter": APP_RESOURCE, "subjectFilter": "/party/1338"})).await;
    let apps = Apps::new(&app).await;
    let mut expected = Vec::new();
    for (party, of_ttd, matches) in [
        (1337, true, false),
        (1338, true, true),
        // The subject's, but of another app (another resource).
        (1338, false, false),
        (13380, true, false),
        (1337, true, false),
        (1338, true, true),
    ] {
        let event = if of_ttd { apps.ttd(&app, party, "t").await } else { apps.skd(&app, party, "t").await };
        if matches {
            expected.push(event);
        }
    }
    pushed_exactly(&app, &owner, id, &receiver, &expected).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternative_subject_filter_pushes_the_events_of_its_party_only() {
    let app = TestApp::spawn_with(delivery_config(), Overrides::default()).await;
    // Ola Privatperson (dev/dataset.toml): party 1338.
    let (owner, receiver, id) = owner_subscription(
        &app,
        json!({"sourceFilter": APP_SOURCE, "alternativeSubjectFilter": "/person/01039012346"}),
    )
    .await;
    let shown = view(&app, &owner, id).await;
    assert_eq!(shown["subjectFilter"], "/party/1338", "{shown}");
    let apps = Apps::new(&app).await;
    let mut expected = Vec::new();
    for (party, matches) in [(1337, false), (1338, true), (1337, false), (1338, true), (1337, false), (1338, true)] {
        let event = apps.ttd(&app, party, "t").await;
        if matches {
            expected.push(event);
        }
    }
    pushed_exactly(&app, &owner, id, &receiver, &expected).await;
    app.shutdown().await;
}

/// `includeSubunits` is kept and shown; the pushes follow the subject's
/// own feed: another organisation's events (here Sofies Gym AS, 500001)
/// are not pushed for DDG Fitness AS (500000), and neither are the events
/// of other resources about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_with_subunits_pushes_its_subjects_events() {
    let app = TestApp::spawn_with(delivery_config(), Overrides::default()).await;
    // Sophie (1337) has a role for DDG Fitness AS (500000).
    let sophie = app.user_token(1337, 1337, 3).await;
    let (owner, receiver, id) = subscription_of(
        &app,
        sophie,
        json!({"resourceFilter": APP_RESOURCE, "subjectFilter": "/party/500000", "includeSubunits": true}),
    )
    .await;
    let shown = view(&app, &owner, id).await;
    assert_eq!(shown["includeSubunits"], true, "{shown}");
    let apps = Apps::new(&app).await;
    let mut expected = Vec::new();
    for (party, of_ttd, matches) in
        [(500001, true, false), (500000, true, true), (500000, false, false), (1337, true, false), (500000, true, true)]
    {
        let event = if of_ttd { apps.ttd(&app, party, "t").await } else { apps.skd(&app, party, "t").await };
        if matches {
            expected.push(event);
        }
    }
    pushed_exactly(&app, &owner, id, &receiver, &expected).await;
    app.shutdown().await;
}
