//! Taking over from a running Altinn Events (issue 29): a real PostgreSQL
//! with Altinn's tables and a generated history, imported by the service's
//! `import` command into the store a pod serves; the import killed and
//! resumed, followed while Altinn writes on (a row committed late among
//! them), and cut over. Then checked through the HTTP API, as each
//! consumer: feeds, `after=<Altinn id>`, subscriptions, pushes.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use altinn_events::feeds::import::ImportStore;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::harness::*;
use crate::postgres::{ALTINN_SCHEMA, Postgres};

const HISTORY: usize = 20_000;
const ESTATE: &str = "urn:altinn:resource:ttd-estate-of-deceased";
const TTD_APP: &str = "urn:altinn:resource:app_ttd_apps-test";
const SKD_APP: &str = "urn:altinn:resource:app_skd_taxreport";
const SEGMENT: &str = "2000";

fn guid(n: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", n, n * 7)
}

/// Event `i` of the generated history as Altinn stores it; `None` for the
/// rows that are bad on purpose (and to be skipped).
fn history_event(i: usize) -> Value {
    let time = |i: usize| {
        format!("2026-09-01T{:02}:{:02}:{:02}.{:07}Z", (i / 3600) % 24, (i / 60) % 60, i % 60, i * 13 % 10_000_000)
    };
    match i % 10 {
        0..=5 => {
            let party = [1337, 1338, 500000, 500001][i % 4];
            // Now and then an event about one party's instance with
            // another party as subject: Altinn took it; no party feed here
            // shows it to the subject's readers.
            let instance_party = if i.is_multiple_of(97) && party == 1337 { 1338 } else { party };
            let kind = ["app.instance.created", "app.instance.process.completed"][i % 2];
            json!({"specversion": "1.0", "id": format!("{:08x}-aaaa-4000-8000-{:012x}", i, i),
                "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/{instance_party}/{}", guid(i)),
                "type": kind,
                "subject": format!("/party/{party}"), "time": time(i), "resource": TTD_APP,
                "resourceinstance": format!("{instance_party}/{}", guid(i))})
        }
        6 | 7 => {
            let party = [1337, 500000][i % 2];
            json!({"specversion": "1.0", "id": format!("{:08x}-bbbb-4000-8000-{:012x}", i, i),
                "source": format!("https://skd.apps.altinn.no/skd/taxreport/instances/{party}/{}", guid(i)),
                "type": "app.instance.created", "subject": format!("/party/{party}"), "time": time(i),
                "resource": SKD_APP, "resourceinstance": format!("{party}/{}", guid(i))})
        }
        _ => {
            let subject = if i.is_multiple_of(3) {
                "urn:altinn:person:identifier-no:01039012345".to_owned()
            } else {
                format!("/party/{}", [1337, 500001][i % 2])
            };
            let time = if i.is_multiple_of(5) { "2026-09-01T12:00:00.5+01:00".to_owned() } else { time(i) };
            json!({"specversion": "1.0", "id": format!("estate-{i}"), "source": format!("urn:no:skd:estate:{i}"),
                "type": "no.altinn.estate.registered", "subject": subject, "time": time, "resource": ESTATE,
                "data": {"case": i, "heirs": [1, 2]}, "caseref": format!("c{i}")})
        }
    }
}

/// The bad rows: each is skipped by the import, with a reason.
fn bad_event(k: usize) -> Value {
    match k % 5 {
        0 => json!("just a string"),
        1 => json!({"specversion": "1.0", "source": "urn:x", "type": "t", "resource": ESTATE}),
        2 => {
            json!({"specversion": "1.0", "id": format!("bad-{k}"), "source": "urn:x", "type": "t", "resource": "not-a-urn"})
        }
        3 => {
            json!({"specversion": "1.0", "id": format!("bad-{k}"), "source": "urn:x", "type": "t\u{1}", "resource": ESTATE})
        }
        _ => json!({"specversion": "1.0", "id": format!("bad-{k}"), "source": "urn:x", "type": "t", "resource": ESTATE,
            "data": "x".repeat(300_000)}),
    }
}

async fn insert_events(client: &tokio_postgres::Client, events: &[Value], settled: bool) {
    for chunk in events.chunks(1000) {
        let texts: Vec<String> = chunk.iter().map(Value::to_string).collect();
        let registered = if settled { "now() - interval '2 hours'" } else { "now()" };
        let sql = format!(
            "INSERT INTO events.events (cloudevent, registeredtime) \
             SELECT x::jsonb, {registered} FROM unnest($1::text[]) WITH ORDINALITY AS t(x, n) ORDER BY n"
        );
        client.execute(&sql, &[&texts]).await.unwrap();
    }
}

#[derive(Clone)]
struct Sub {
    consumer: &'static str,
    source: Option<&'static str>,
    resource: Option<&'static str>,
    subject: Option<&'static str>,
    typ: Option<&'static str>,
    validated: bool,
}

async fn insert_subscription(client: &tokio_postgres::Client, hook: &str, s: &Sub) -> u64 {
    let id: i64 = client.query_one("SELECT nextval('events.subscription_id_seq')", &[]).await.unwrap().get(0);
    client
        .execute(
            "INSERT INTO events.subscription (id, resourcefilter, sourcefilter, subjectfilter, typefilter, consumer, \
             endpointurl, createdby, validated, \"time\", includesubunits) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $8, now(), false)",
            &[&id, &s.resource, &s.source, &s.subject, &s.typ, &s.consumer, &format!("{hook}?n={id}"), &s.validated],
        )
        .await
        .unwrap();
    u64::try_from(id).unwrap()
}

fn spawn_import(cluster_endpoint: &str, log: &std::path::Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_altinn-events"))
        .arg("import")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LIB_BACKTRACE", "0")
        .env("AZURE_COSMOS_BINARY_ENCODING_ENABLED", "false")
        .env("EVENTS__LOG_FILTER", "info")
        .env("EVENTS__COSMOS__AUTH", "key")
        .env("EVENTS__COSMOS__ENDPOINT", cluster_endpoint)
        .env("EVENTS__COSMOS__KEY", COSMOS_KEY)
        .env("EVENTS__COSMOS__SEGMENT_SIZE", SEGMENT)
        // The pods' ring (harness.rs): they push what the import stored.
        .env("EVENTS__SUBSCRIPTION_SECRETS__KEYS__CLUSTER", crate::harness::WEBHOOK_SECRET_KEY)
        .env("EVENTS__IMPORT__SETTLE_SECONDS", "2")
        .env("EVENTS__IMPORT__POLL_MS", "200")
        .env("EVENTS__IMPORT__SUBSCRIPTION_SYNC_SECONDS", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the service binary runs")
}

async fn progress(store: &ImportStore) -> altinn_events::feeds::import::Progress {
    store.load().await.unwrap().progress
}

async fn until_progress(
    store: &ImportStore,
    what: &str,
    done: impl Fn(&altinn_events::feeds::import::Progress) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let p = progress(store).await;
        if done(&p) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the import: {what} (at {})", p.events_through);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the import still runs after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every event id of a feed read through the API, page by page.
/// Fails with what differs between a feed as read and as expected: the
/// counts, ids missing or extra or read twice, and the first position out
/// of order, instead of two lists of thousands of ids.
fn same_feed(got: &[String], want: &[String], what: &str) {
    if got == want {
        return;
    }
    let want_set: std::collections::HashSet<&String> = want.iter().collect();
    let got_set: std::collections::HashSet<&String> = got.iter().collect();
    let missing: Vec<_> = want.iter().filter(|id| !got_set.contains(id)).take(10).collect();
    let extra: Vec<_> = got.iter().filter(|id| !want_set.contains(id)).take(10).collect();
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<_> = got.iter().filter(|id| !seen.insert(*id)).take(10).collect();
    let first = got.iter().zip(want).position(|(g, w)| g != w);
    let around = |ids: &[String], at: usize| ids[at.saturating_sub(2)..(at + 3).min(ids.len())].to_vec();
    panic!(
        "{what}: {} read, {} expected; missing {missing:?}; extra {extra:?}; read twice {twice:?}; first difference at {first:?}: read {:?}, expected {:?}",
        got.len(),
        want.len(),
        first.map(|at| around(got, at)),
        first.map(|at| around(want, at)),
    );
}

async fn read_all(http: &reqwest::Client, pod: &Pod, path: &str, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = pod.url(path);
    loop {
        let resp = http.get(&url).header(AUTHORIZATION, format!("Bearer {token}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {url}");
        let next = resp.headers()["next"].to_str().unwrap().to_owned();
        let page: Vec<Value> = resp.json().await.unwrap();
        if page.is_empty() {
            return ids;
        }
        ids.extend(page.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        url = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "out-of-process cluster: run by .ci/cosmosdb-server/run-test"]
async fn cluster_import_follow_and_cut_over_from_altinn_events() {
    // The repairer looks at events a second old: it would race the
    // import's subject-feed appends, were imported events its to repair.
    let cluster = Cluster::start(
        "import",
        1,
        vec![
            ("EVENTS__COSMOS__SEGMENT_SIZE".into(), SEGMENT.into()),
            ("EVENTS__COSMOS__REPAIR_GRACE_SECONDS".into(), "1".into()),
        ],
    )
    .await;
    let dir = cluster._scratch.0.clone();
    let pg = Postgres::start(&dir);
    let db = pg.client().await;
    db.batch_execute(ALTINN_SCHEMA).await.unwrap();
    let (hook, pushed) = crate::receiver().await;

    // The history: good rows, bad rows among them, and rows rolled back.
    let mut history = Vec::new();
    for i in 0..HISTORY {
        history.push(if i % 1000 == 999 { bad_event(i / 1000) } else { history_event(i) });
    }
    insert_events(&db, &history, true).await;
    db.execute("DELETE FROM events.events WHERE sequenceno % 1500 = 700", &[]).await.unwrap();

    // Fifty subscriptions of every kind.
    let app = Some("https://ttd.apps.altinn.no/ttd/apps-test");
    let kinds: Vec<(usize, Sub)> = vec![
        (
            15,
            Sub {
                consumer: "/user/1337",
                source: app,
                resource: Some(TTD_APP),
                subject: Some("/party/1337"),
                typ: None,
                validated: true,
            },
        ),
        (
            10,
            Sub {
                consumer: "/org/ttd",
                source: app,
                resource: Some(TTD_APP),
                subject: None,
                typ: None,
                validated: true,
            },
        ),
        (
            10,
            Sub {
                consumer: "/organisation/912345678",
                source: None,
                resource: Some(ESTATE),
                subject: None,
                typ: None,
                validated: true,
            },
        ),
        (
            4,
            Sub {
                consumer: "/user/1337",
                source: app,
                resource: Some(TTD_APP),
                subject: Some("/party/1337"),
                typ: Some("app.instance.created"),
                validated: false,
            },
        ),
        (
            3,
            Sub {
                consumer: "/user/1337",
                source: app,
                resource: None,
                subject: Some("/party/1337"),
                typ: None,
                validated: true,
            },
        ),
        (
            2,
            Sub {
                consumer: "/party/500000",
                source: app,
                resource: Some(TTD_APP),
                subject: Some("/party/500000"),
                typ: None,
                validated: true,
            },
        ),
        (
            3,
            Sub {
                consumer: "/org/skd",
                source: Some("https://skd.apps.altinn.no/skd/taxreport"),
                resource: Some(SKD_APP),
                subject: None,
                typ: None,
                validated: true,
            },
        ),
        (
            3,
            Sub {
                consumer: "/user/1337",
                source: Some("urn:no:skd"),
                resource: None,
                subject: None,
                typ: None,
                validated: true,
            },
        ),
    ];
    let mut subscriptions: Vec<(u64, Sub)> = Vec::new();
    for (n, sub) in kinds {
        for _ in 0..n {
            subscriptions.push((insert_subscription(&db, &hook, &sub).await, sub.clone()));
        }
    }
    assert_eq!(subscriptions.len(), 50);
    let deleted_before = subscriptions[9].0;
    db.execute("DELETE FROM events.subscription WHERE id = $1", &[&(deleted_before as i64)]).await.unwrap();

    let store = ImportStore::new(&cluster.emulator.store().await);
    let endpoint = cluster.emulator.endpoint();
    let source = pg.url();

    // The API's publish rate on this machine, before the import (its
    // events are skd's about party 1338, in feeds no check below counts).
    let pod_cpu = cpu_seconds(cluster.pod(0).pid());
    let (published, publish_rate) = publish_skd(&cluster, 600, 32).await;
    let publish_cpu = (cpu_seconds(cluster.pod(0).pid()) - pod_cpu) / published.len() as f64;

    // 1. Import, killed half way.
    let started = Instant::now();
    let mut first = spawn_import(&endpoint, &dir.join("import-1.log"), &["--source", &source]);
    until_progress(&store, "half the history", |p| p.events_through >= (HISTORY / 2) as u64).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = progress(&store).await;
    let (killed_at, progress_at_kill) = (at_kill.events_through, at_kill.events);
    let history_head: i64 = db.query_one("SELECT max(sequenceno) FROM events.events", &[]).await.unwrap().get(0);
    assert!(killed_at < history_head as u64, "killed half way ({killed_at} of {history_head})");

    // 2. Started again, following: it finishes the history, then takes what
    // Altinn writes meanwhile, a row committed late among it, and the
    // subscriptions made and deleted.
    let resumed = Instant::now();
    let mut follower = spawn_import(&endpoint, &dir.join("import-2.log"), &["--source", &source, "--follow"]);
    let head: i64 = db.query_one("SELECT max(sequenceno) FROM events.events", &[]).await.unwrap().get(0);
    until_progress(&store, "the history", |p| p.events_through >= head as u64).await;
    let import_time = started.elapsed();
    let resumed_time = resumed.elapsed();
    let imported = progress(&store).await.events;
    let resumed_events = imported - progress_at_kill;
    let importer_cpu = cpu_seconds(follower.id());
    let live: Vec<Value> = (0..500).map(|k| history_event(HISTORY + k)).collect();
    insert_events(&db, &live, false).await;
    let late_client = pg.client().await;
    late_client.batch_execute("BEGIN").await.unwrap();
    let late = history_event(HISTORY + 600);
    late_client
        .execute("INSERT INTO events.events (cloudevent) VALUES ($1::text::jsonb)", &[&late.to_string()])
        .await
        .unwrap();
    let after_late: Vec<Value> = (0..10).map(|k| history_event(HISTORY + 700 + k)).collect();
    insert_events(&db, &after_late, false).await;
    let head: i64 = db.query_one("SELECT max(sequenceno) FROM events.events", &[]).await.unwrap().get(0);
    until_progress(&store, "the rows written while following", |p| p.events_through >= head as u64).await;
    late_client.batch_execute("COMMIT").await.unwrap();
    let added = insert_subscription(&db, &hook, &subscriptions[0].1).await;
    let deleted_while_following = subscriptions[10].0;
    db.execute("DELETE FROM events.subscription WHERE id = $1", &[&(deleted_while_following as i64)]).await.unwrap();
    let late_id = late["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = read_all(
            &cluster.http,
            cluster.pod(0),
            "/events/api/v1/app/ttd/apps-test?after=0&size=1000",
            &cluster.tokens.owner,
        )
        .await;
        let subscription_added = cluster
            .http
            .get(cluster.pod(0).url(&format!("/events/api/v1/subscriptions/{added}")))
            .header(AUTHORIZATION, format!("Bearer {}", cluster.tokens.user))
            .send()
            .await
            .unwrap()
            .status()
            == 200;
        if ids.contains(&late_id) && subscription_added {
            break;
        }
        assert!(Instant::now() < deadline, "the late row and the new subscription are imported while following");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill").args(["-TERM", &follower.id().to_string()]).status().unwrap();
    assert!(wait_exit(&mut follower, Duration::from_secs(30)).success(), "the follower stops cleanly");
    subscriptions.push((added, subscriptions[0].1.clone()));
    subscriptions.retain(|(id, _)| *id != deleted_before && *id != deleted_while_following);

    // 3. The switch: publishers come here, Altinn still commits its last
    // rows, and delivery is cut over after the third of them.
    let direct = |n: usize| {
        let body = json!({"specversion": "1.0", "type": "app.instance.created", "subject": "/party/1337",
            "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/{}", guid(900_000 + n))});
        let (http, tokens, url) =
            (cluster.http.clone(), cluster.tokens.clone(), cluster.pod(0).url("/events/api/v1/app"));
        async move {
            let resp = http
                .post(url)
                .header(AUTHORIZATION, format!("Bearer {}", tokens.user))
                .header("PlatformAccessToken", &tokens.platform)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            resp.json::<String>().await.unwrap()
        }
    };
    let direct_1 = direct(1).await;
    let last: Vec<Value> = (0..5)
        .map(|k| {
            let mut e = history_event(HISTORY + 800 + k * 10);
            if k == 4 {
                e = history_event(HISTORY + 809); // an estate event
            } else {
                e["subject"] = json!("/party/1337");
                e["source"] =
                    json!(format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/{}", guid(800 + k)));
                e["resourceinstance"] = json!(format!("1337/{}", guid(800 + k)));
            }
            e
        })
        .collect();
    insert_events(&db, &last, false).await;
    let last_seqs: Vec<i64> = db
        .query("SELECT sequenceno FROM events.events ORDER BY sequenceno DESC LIMIT 5", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .rev()
        .collect();
    let cut = last_seqs[2];
    let mut cut_over =
        spawn_import(&endpoint, &dir.join("import-3.log"), &["--source", &source, "--deliver-after", &cut.to_string()]);
    assert!(wait_exit(&mut cut_over, Duration::from_secs(120)).success(), "the cut-over run ends");
    let direct_2 = direct(2).await;
    let summary = std::fs::read_to_string(dir.join("import-3.log")).unwrap();
    assert!(summary.contains(&format!("pushed everything after sequenceno {cut}")), "{summary}");

    // The feeds, as each consumer reads them.
    let pod = cluster.pod(0);
    let rows =
        db.query("SELECT sequenceno, cloudevent::text FROM events.events ORDER BY sequenceno", &[]).await.unwrap();
    let good: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.get::<_, String>(1)).unwrap())
        .filter(|e| {
            e.get("id").is_some()
                && e["resource"].as_str().is_some_and(|r| r.starts_with("urn:altinn:resource:"))
                && !e["type"].as_str().unwrap_or_default().contains('\u{1}')
                && e.to_string().len() < 200_000
        })
        .collect();
    // The late row is in the feeds after the rows imported before it came.
    let mut order: Vec<Value> = good.iter().filter(|e| e["id"] != late["id"]).cloned().collect();
    let after_pos = order.iter().position(|e| e["id"] == after_late[9]["id"]).unwrap() + 1;
    order.insert(after_pos, late.clone());
    let ids_of = |keep: &dyn Fn(&Value) -> bool| -> Vec<String> {
        order.iter().filter(|e| keep(e)).map(|e| e["id"].as_str().unwrap().to_owned()).collect()
    };
    let is_direct_position = |ids: &mut Vec<String>, resource: &str| {
        // direct_1 came before the last rows, direct_2 after them.
        if resource == TTD_APP {
            let at = ids.iter().position(|id| *id == last[0]["id"].as_str().unwrap()).unwrap();
            ids.insert(at, direct_1.clone());
            ids.push(direct_2.clone());
        }
    };
    let mut ttd_feed = ids_of(&|e| e["resource"] == TTD_APP);
    is_direct_position(&mut ttd_feed, TTD_APP);
    let owner = &cluster.tokens.owner;
    let got = read_all(&cluster.http, pod, "/events/api/v1/app/ttd/apps-test?after=0&size=1000", owner).await;
    assert_eq!(got.len(), ttd_feed.len(), "the app owner's feed holds every event of the app");
    same_feed(&got, &ttd_feed, "the app owner's feed, in sequenceno order");
    // A consumer that kept Altinn's last event id continues after it.
    let middle = &ttd_feed[ttd_feed.len() / 3];
    let rest =
        read_all(&cluster.http, pod, &format!("/events/api/v1/app/ttd/apps-test?after={middle}&size=1000"), owner)
            .await;
    assert_eq!(rest[..], ttd_feed[ttd_feed.len() / 3 + 1..], "after=<Altinn id> continues after it");
    // A user reads their own party (and the ones they have a role for),
    // not an event whose instance is another party's.
    let user = http_text(&cluster, "/localtest/token/user?userId=1337&partyId=1337&authLevel=3").await;
    let mut sophie = ids_of(&|e| {
        e["subject"] == "/party/1337"
            && e["resource"].as_str().unwrap().starts_with("urn:altinn:resource:app_")
            && e["resourceinstance"].as_str().is_some_and(|r| r.starts_with("1337/"))
    });
    is_direct_position(&mut sophie, TTD_APP);
    let got = read_all(&cluster.http, pod, "/events/api/v1/app/party?party=1337&after=0&size=1000", &user).await;
    same_feed(&got, &sophie, "party 1337's feed");
    let gym = ids_of(&|e| {
        e["subject"] == "/party/500000" && e["resource"].as_str().unwrap().starts_with("urn:altinn:resource:app_")
    });
    let got = read_all(&cluster.http, pod, "/events/api/v1/app/party?party=500000&after=0&size=1000", &user).await;
    same_feed(&got, &gym, "party 500000's feed, by role");
    let got = read_all(&cluster.http, pod, "/events/api/v1/app/party?party=1338&after=0&size=1000", &user).await;
    assert!(got.is_empty(), "another party's events are not shown");
    let bank = http_text(&cluster, "/localtest/token/org?orgNumber=912345678&scope=altinn:events.subscribe").await;
    let estate = ids_of(&|e| e["resource"] == ESTATE);
    let got =
        read_all(&cluster.http, pod, &format!("/events/api/v1/events?resource={ESTATE}&after=0&size=1000"), &bank)
            .await;
    same_feed(&got, &estate, "the approved subscriber's feed of the resource");

    // Every subscription answers with its id and Altinn's fields.
    let skd = http_text(&cluster, "/localtest/token/org?org=skd&scope=altinn:events/skd/taxreport").await;
    let gym_org = http_text(&cluster, "/localtest/token/org?orgNumber=897069650").await;
    for (id, sub) in &subscriptions {
        let token = match sub.consumer {
            "/user/1337" => &user,
            "/org/ttd" => owner,
            "/org/skd" => &skd,
            "/organisation/912345678" => &bank,
            "/party/500000" => &gym_org,
            other => panic!("{other}"),
        };
        let resp = cluster
            .http
            .get(pod.url(&format!("/events/api/v1/subscriptions/{id}")))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        if sub.resource.is_none() && !sub.source.is_some_and(|s| s.contains(".apps.")) {
            assert_eq!(resp.status(), 404, "subscription {id}: skipped (no resource, no app)");
            continue;
        }
        assert_eq!(resp.status(), 200, "subscription {id} ({})", sub.consumer);
        let shown: Value = resp.json().await.unwrap();
        assert_eq!(shown["id"], *id);
        assert_eq!(shown["consumer"], sub.consumer);
        assert_eq!(shown["createdBy"], sub.consumer);
        assert_eq!(shown["endPoint"], format!("{hook}?n={id}"));
        assert_eq!(shown["validated"], sub.validated);
        assert_eq!(shown["subjectFilter"].as_str(), sub.subject);
        assert_eq!(shown["typeFilter"].as_str(), sub.typ);
        assert_eq!(shown["sourceFilter"].as_str(), sub.source);
        if let Some(resource) = sub.resource {
            assert_eq!(shown["resourceFilter"], resource);
        }
        assert!(shown["created"].as_str().is_some_and(|c| c.ends_with('Z')), "{shown}");
        if sub.resource.is_none() {
            assert_eq!(shown["status"], "disabled", "Altinn pushed nothing to it: {shown}");
        }
    }

    // Pushes: only what Altinn did not push (published here, or numbered
    // after the cut-over), in feed order.
    let expect_app = vec![direct_1.clone(), last[3]["id"].as_str().unwrap().to_owned(), direct_2.clone()];
    // skd's subscriptions get what was published here before the cut-over:
    // Altinn never had it.
    let skd_feed = read_all(&cluster.http, pod, "/events/api/v1/app/skd/taxreport?after=0&size=1000", &skd).await;
    let expect_skd: Vec<String> = skd_feed.into_iter().filter(|id| published.contains(id)).collect();
    assert_eq!(expect_skd.len(), published.len());
    let expect_estate = vec![last[4]["id"].as_str().unwrap().to_owned()];
    let expected: HashMap<u64, Vec<String>> = subscriptions
        .iter()
        .filter(|(_, s)| s.validated && s.resource.is_some())
        .map(|(id, s)| match (s.consumer, s.resource) {
            ("/user/1337" | "/org/ttd", Some(TTD_APP)) => (*id, expect_app.clone()),
            ("/organisation/912345678", Some(ESTATE)) => (*id, expect_estate.clone()),
            ("/org/skd", Some(SKD_APP)) => (*id, expect_skd.clone()),
            _ => (*id, Vec::new()),
        })
        .collect();
    let by_subscription = |pushed: &Arc<Mutex<Vec<(String, String)>>>| -> HashMap<u64, Vec<String>> {
        let mut map: HashMap<u64, Vec<String>> = HashMap::new();
        for (n, id) in pushed.lock().unwrap().iter() {
            map.entry(n.parse().unwrap()).or_default().push(id.clone());
        }
        map
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = by_subscription(&pushed);
        if expected.iter().all(|(id, want)| got.get(id).map_or(0, Vec::len) >= want.len()) {
            break;
        }
        assert!(Instant::now() < deadline, "pushes after the cut-over: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = by_subscription(&pushed);
    for (id, want) in &expected {
        assert_eq!(got.get(id).cloned().unwrap_or_default(), *want, "subscription {id}");
    }
    assert!(got.keys().all(|id| expected.contains_key(id)), "nothing pushed to the others: {got:?}");

    // The cut-over run again (as after a kill, or by a second press) with
    // `head`, after one more row came: it keeps the point it was made at
    // (not the table's head now), and the new row, which Altinn never
    // pushed, is pushed here.
    let mut again = last[0].clone();
    again["id"] = json!(format!("{:08x}-cccc-4000-8000-{:012x}", 1, 1));
    insert_events(&db, &[again.clone()], true).await;
    let mut rerun =
        spawn_import(&endpoint, &dir.join("import-4.log"), &["--source", &source, "--deliver-after", "head"]);
    assert!(wait_exit(&mut rerun, Duration::from_secs(120)).success(), "the cut-over run again ends");
    let summary = std::fs::read_to_string(dir.join("import-4.log")).unwrap();
    assert!(summary.contains(&format!("pushed everything after sequenceno {cut}")), "{summary}");
    let deadline = Instant::now() + Duration::from_secs(60);
    for (id, want) in expected.iter().filter(|(_, want)| **want == expect_app) {
        let mut want = want.clone();
        want.push(again["id"].as_str().unwrap().to_owned());
        while by_subscription(&pushed).get(id).map_or(0, Vec::len) < want.len() {
            assert!(Instant::now() < deadline, "the row after the cut-over is pushed to {id}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(by_subscription(&pushed)[id], want, "subscription {id}");
    }

    // The rate, beside the API's publish rate in the same run.
    let p = progress(&store).await;
    let summary_1 = std::fs::read_to_string(dir.join("import-2.log")).unwrap();
    let requests_per_event = summary_1
        .lines()
        .find_map(|l| l.split("(").nth(1)?.strip_suffix(" per event imported this run)")?.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    println!(
        "cluster import: {imported} events imported in {:.1} s, killed once at sequenceno {killed_at} ({:.0} events/s \
         overall; the resumed run {resumed_events} events in {:.1} s, {:.0} events/s, {:.0} µs CPU per event in the \
         import process); publishing through the API in the same run: {:.0} events/s (32 concurrent), {:.0} µs CPU \
         per event in the pod; {:.2} Cosmos requests per imported event (the resumed run); {} rows skipped; {} \
         subscriptions",
        import_time.as_secs_f64(),
        imported as f64 / import_time.as_secs_f64(),
        resumed_time.as_secs_f64(),
        resumed_events as f64 / resumed_time.as_secs_f64(),
        importer_cpu / resumed_events as f64 * 1e6,
        publish_rate,
        publish_cpu * 1e6,
        requests_per_event,
        p.skipped_count,
        subscriptions.len(),
    );
    assert_eq!(p.skipped_count, (HISTORY / 1000) as u64, "the bad rows, each once: {:?}", p.skipped);
    assert!(p.skipped.iter().all(|s| !s.reason.is_empty()));
}

/// Publishes `total` events of skd/taxreport about party 1338 through the
/// API, `concurrency` at a time: their ids, and the rate.
async fn publish_skd(cluster: &Cluster, total: usize, concurrency: usize) -> (std::collections::HashSet<String>, f64) {
    let user = http_text(cluster, "/localtest/token/user?userId=1338&partyId=1338&authLevel=3").await;
    let access = http_text(cluster, "/localtest/token/platform?issuer=skd&app=taxreport").await;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, user, access, next, ids) = (
            cluster.http.clone(),
            cluster.pod(0).url("/events/api/v1/app"),
            user.clone(),
            access.clone(),
            next.clone(),
            ids.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= total {
                    return;
                }
                let body = json!({"specversion": "1.0", "type": "app.instance.created", "subject": "/party/1338",
                    "source": format!("https://skd.apps.altinn.no/skd/taxreport/instances/1338/{}", guid(500_000 + n))});
                let resp = http
                    .post(&url)
                    .header(AUTHORIZATION, format!("Bearer {user}"))
                    .header("PlatformAccessToken", &access)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 201);
                let id = resp.json::<String>().await.unwrap();
                ids.lock().unwrap().insert(id);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let ids = ids.lock().unwrap().clone();
    (ids, rate)
}

async fn http_text(cluster: &Cluster, path: &str) -> String {
    cluster.http.get(cluster.pod(0).url(path)).send().await.unwrap().text().await.unwrap()
}
