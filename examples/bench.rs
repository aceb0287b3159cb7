//! Load benchmark of one service instance, in process, on 127.0.0.1.
//!
//!     cargo run --release --example bench [-- --events 4000 --concurrency 32]
//!
//! Starts the service in dev mode (in-process Cosmos emulator, local PDP and
//! token issuer), runs bounded scenarios over real HTTP, and prints one table.
//! Every scenario stops after its count or its time limit, whichever first.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use altinn_events::config::{Config, Mode};
use altinn_events::domain::EventRecord;
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Args {
    events: usize,
    concurrency: usize,
    limit: Duration,
    /// Stop after the baseline and ingest (for profiling the write path).
    ingest_only: bool,
    /// Only the delivery scenarios.
    delivery_only: bool,
}

/// mimalloc: the service allocates and frees many small JSON values per
/// request; glibc's malloc spent a third of the benchmark's CPU on that and
/// fragments its arenas (RSS). See docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn args() -> Args {
    let mut a = Args {
        events: 4000,
        concurrency: 32,
        limit: Duration::from_secs(30),
        ingest_only: false,
        delivery_only: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--events", Some(v)) => a.events = v as usize,
            ("--concurrency", Some(v)) => a.concurrency = v as usize,
            ("--limit-seconds", Some(v)) => a.limit = Duration::from_secs(v),
            ("--ingest-only", _) => {
                a.ingest_only = true;
                i += 1;
                continue;
            }
            ("--delivery-only", _) => {
                a.delivery_only = true;
                i += 1;
                continue;
            }
            ("--bench", _) => {
                i += 1;
                continue;
            }
            (other, _) => {
                panic!(
                    "unknown argument {other}; use --events N --concurrency N --limit-seconds N --ingest-only --delivery-only"
                )
            }
        }
        i += 2;
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

struct Row {
    scenario: String,
    count: usize,
    per_second: f64,
    unit: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    note: String,
}

impl Row {
    /// A row for `lat` (sorted latencies) at `per_second`.
    fn of(scenario: String, lat: &[Duration], per_second: f64, unit: &'static str, note: String) -> Self {
        Self {
            scenario,
            count: lat.len(),
            per_second,
            unit,
            p50_ms: percentile(lat, 0.5),
            p99_ms: percentile(lat, 0.99),
            note,
        }
    }

    /// A row with a count and a rate but no latencies (throughput rows).
    fn rate(scenario: String, count: usize, per_second: f64, unit: &'static str, note: String) -> Self {
        Self { scenario, count, per_second, unit, p50_ms: f64::NAN, p99_ms: f64::NAN, note }
    }
}

/// Sum of a Prometheus metric family (all label sets) matching `filter`.
fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// A memory figure of this process from `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct Bench {
    base: String,
    http: reqwest::Client,
    user_tokens: HashMap<u64, String>,
    access: HashMap<&'static str, String>,
}

const APPS: [(&str, &str); 2] = [("ttd", "apps-test"), ("skd", "taxreport")];

impl Bench {
    async fn text(&self, path: &str) -> String {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().text().await.unwrap()
    }

    async fn pdp_requests(&self) -> u64 {
        let v: Value =
            self.http.get(format!("{}/localtest/stats", self.base)).send().await.unwrap().json().await.unwrap();
        v["pdp_requests"].as_u64().unwrap_or(0)
    }

    fn event(org: &str, app: &str, party: u64, n: usize) -> Value {
        json!({"specversion": "1.0", "type": "app.instance.process.completed", "subject": format!("/party/{party}"),
            "source": format!("https://{org}.apps.altinn.no/{org}/{app}/instances/{party}/00000000-0000-4000-8000-{n:012}"),
            "data": {"n": n}})
    }

    /// Publishes `count` events from `concurrency` tasks; returns latencies
    /// and (id, acknowledged at) pairs.
    async fn ingest(
        self: &Arc<Self>,
        count: usize,
        concurrency: usize,
        limit: Duration,
        pick: impl Fn(usize) -> (usize, u64) + Send + Sync + 'static,
        acks: Option<Arc<Mutex<HashMap<String, Instant>>>>,
    ) -> (Vec<Duration>, Duration) {
        let next = Arc::new(AtomicUsize::new(0));
        let pick = Arc::new(pick);
        let started = Instant::now();
        let deadline = started + limit;
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (b, next, pick, acks) = (self.clone(), next.clone(), pick.clone(), acks.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count || Instant::now() > deadline {
                        return lat;
                    }
                    let (app, party) = pick(n);
                    let (org, name) = APPS[app];
                    let t = Instant::now();
                    let resp = b
                        .http
                        .post(format!("{}/events/api/v1/app", b.base))
                        .bearer_auth(&b.user_tokens[&1337])
                        .header("PlatformAccessToken", &b.access[org])
                        .json(&Self::event(org, name, party, n))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 201, "publish failed");
                    let id: String = resp.json().await.unwrap();
                    let done = Instant::now();
                    lat.push(done - t);
                    if let Some(acks) = &acks {
                        acks.lock().await.insert(id, done);
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed();
        all.sort();
        (all, elapsed)
    }

    /// Pages through a feed from the start with `token`; returns per-page
    /// latencies, events seen, elapsed time, and per page the service's own
    /// time: the server's time for the request less the time it spent
    /// waiting for Cosmos DB and the PDP (from the service's metrics; pages
    /// are read one at a time, so the deltas belong to that page).
    async fn page_through(
        &self,
        first: String,
        token: &str,
        headers: &[(&str, &str)],
        limit: Duration,
    ) -> (Vec<Duration>, usize, Duration, Vec<Duration>) {
        let started = Instant::now();
        let mut url = first;
        let mut lat = Vec::new();
        let mut own = Vec::new();
        let mut events = 0;
        let waits = || {
            let text = altinn_events::telemetry::prometheus().render();
            let server = metric_sum(&text, "http_request_duration_seconds_sum", "route=\"/events/api/v1/app");
            let cosmos = metric_sum(&text, "cosmos_request_duration_seconds_sum", "");
            let pdp = metric_sum(&text, "pdp_request_duration_seconds_sum", "");
            (server, cosmos + pdp)
        };
        while started.elapsed() < limit {
            let before = waits();
            let t = Instant::now();
            let mut req = self.http.get(&url).bearer_auth(token);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = req.send().await.unwrap();
            if resp.status() != 200 {
                panic!("GET {url}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
            }
            let next = resp.headers()["next"].to_str().unwrap().to_owned();
            let page: Vec<Value> = resp.json().await.unwrap();
            lat.push(t.elapsed());
            let after = waits();
            own.push(Duration::from_secs_f64(((after.0 - before.0) - (after.1 - before.1)).max(0.0)));
            if page.is_empty() {
                break;
            }
            events += page.len();
            url = next;
        }
        let elapsed = started.elapsed();
        lat.sort();
        own.sort();
        (lat, events, elapsed, own)
    }
}

/// The raw SDK storing `count` events from `concurrency` tasks, each event
/// as the documents `docs(n, party)` names (partition suffix, seq); returns
/// per-event latencies, the RU charged and the elapsed time.
async fn raw_sdk(
    feeds: &altinn_events::feeds::FeedStore,
    count: usize,
    concurrency: usize,
    limit: Duration,
    docs: impl Fn(usize, &str) -> Vec<(String, u64)> + Send + Sync + 'static,
) -> (Vec<Duration>, f64, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let docs = Arc::new(docs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (feeds, next, docs) = (feeds.clone(), next.clone(), docs.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ru = 0.0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count || started.elapsed() > limit {
                    return (lat, ru);
                }
                let body = Bench::event("ttd", "apps-test", 1000 + (n % 200) as u64, n);
                let record = EventRecord {
                    id: uuid::Uuid::new_v4().to_string(),
                    source: body["source"].as_str().unwrap().to_owned(),
                    subject: body["subject"].as_str().unwrap().to_owned(),
                    resource: "urn:altinn:resource:app_ttd_apps-test".into(),
                    event_type: "app.instance.process.completed".into(),
                    time: altinn_events::domain::server_time(),
                    alternativesubject: None,
                    resourceinstance: None,
                    cloud_event: body,
                    origin: None,
                };
                let t = Instant::now();
                for (partition, seq) in docs(n, &record.subject) {
                    ru += feeds.baseline_create(&record.cloud_event, &partition, seq).await.unwrap();
                }
                lat.push(t.elapsed());
            }
        }));
    }
    let (mut lat, mut ru) = (Vec::new(), 0.0);
    for t in tasks {
        let (l, r) = t.await.unwrap();
        lat.extend(l);
        ru += r;
    }
    let elapsed = started.elapsed();
    lat.sort();
    (lat, ru, elapsed)
}

fn main() {
    // With RUST_BACKTRACE set (as on some machines) and RUST_LIB_BACKTRACE
    // not, every azure_core error captures a stack trace, and the SDK makes
    // one for each optional header a request or response lacks: that
    // multiplies the emulator's cost per request several times. Measure
    // the service as it is deployed (the Dockerfile sets
    // RUST_LIB_BACKTRACE=0): rerun with library backtraces off.
    let lib = std::env::var_os("RUST_LIB_BACKTRACE");
    let any = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    if lib.is_none() && any {
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(std::env::args_os().skip(1))
            .env("RUST_LIB_BACKTRACE", "0")
            .status()
            .expect("rerun the benchmark");
        std::process::exit(status.code().unwrap_or(1));
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime").block_on(run());
}

async fn run() {
    let a = args();
    // BENCH_LOG=info,altinn_events=debug shows the service's logs.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        let _traces = altinn_events::telemetry::init_tracing(altinn_events::config::LogFormat::Pretty, &filter, None)
            .expect("logs");
    }
    // No repairer: it would add change-feed reads to what is measured.
    // Segments of 1000 events, and 16 physical partitions (below): the SDK's
    // in-process emulator copies a whole physical partition's documents for
    // every transactional batch (its rollback snapshot), so one big
    // partition would make every batch cost O(all events stored). Real
    // Cosmos DB charges a batch by its operations; see docs/performance.md.
    let mut config = Config {
        cosmos: altinn_events::config::CosmosConfig {
            repair_interval_seconds: 0,
            // BENCH_SEGMENT_SIZE: another layout (docs/capacity.md, one feed's ceiling).
            segment_size: std::env::var("BENCH_SEGMENT_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(1000),
            ..Default::default()
        },
        ..Config::default()
    };
    // One consumer (the app owner) holds every subscription of the delivery rows.
    config.webhooks.max_subscriptions_per_consumer = 2000;
    // BENCH_CHANGE_FEED_IDLE_POLL_MS=250 (the busy poll): the change feed
    // without backing off while idle, as before it did (the idle row's "before").
    if let Some(ms) = std::env::var("BENCH_CHANGE_FEED_IDLE_POLL_MS").ok().and_then(|v| v.parse().ok()) {
        config.delivery.change_feed_idle_poll_ms = ms;
    }
    let config = config.finalize(Mode::Dev).expect("config");
    let account = altinn_events::feeds::emulator::EmulatorAccount::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let overrides = altinn_events::Overrides { emulator: Some(account.clone()) };
    let running = altinn_events::start(config, Mode::Dev, listener, overrides).await.expect("start");
    let store = account.store();
    let mut partitions = vec![0u32];
    for _ in 0..4 {
        let mut children = Vec::new();
        for p in partitions {
            let epk = store.midpoint_split_epk("events", "events", p).expect("partition");
            children.extend(
                store.split_partition_and_wait("events", "events", p, epk, Duration::ZERO).await.expect("split"),
            );
        }
        partitions = children;
    }
    let base = running.base_url.as_str().trim_end_matches('/').to_owned();
    // Idle connections are dropped before the service's idle timeout (60 s)
    // closes them under a request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut bench = Bench { base, http, user_tokens: HashMap::new(), access: HashMap::new() };
    for (user, level) in [(1337u64, 2u8), (1338, 2)] {
        let t = bench.text(&format!("/localtest/token/user?userId={user}&partyId={user}&authLevel={level}")).await;
        bench.user_tokens.insert(user, t);
    }
    for (org, app) in APPS {
        let t = bench.text(&format!("/localtest/token/platform?issuer={org}&app={app}")).await;
        bench.access.insert(org, t);
    }
    let owner = bench.text("/localtest/token/org?org=ttd&scope=altinn:events/ttd/apps-test").await;
    let bench = Arc::new(bench);
    // The process before any scenario: service, emulator (empty), client.
    let start_rss = status_mib("VmRSS:");
    let feeds = running.feeds.clone();
    let mut rows = Vec::new();
    let metrics = || altinn_events::telemetry::prometheus().render();
    if a.delivery_only {
        delivery_rows(&bench, &owner, &a, &mut rows).await;
        print_rows(&rows);
        running.shutdown(Duration::from_secs(5)).await;
        return;
    }

    // 1. Ingest: POST /app, many parties, two apps.
    let before = metrics();
    let (lat, elapsed) =
        bench.ingest(a.events, a.concurrency, a.limit, |n| (n % 2, 1000 + (n % 200) as u64), None).await;
    let after = metrics();
    // Every Cosmos request of the publishes: creates, batches, head reads,
    // segment-length queries, segments opened.
    let ru = metric_sum(&after, "cosmos_request_charge_ru_sum", "")
        - metric_sum(&before, "cosmos_request_charge_ru_sum", "");
    let writes = metric_sum(&after, "cosmos_requests_total", "operation=\"append_")
        - metric_sum(&before, "cosmos_requests_total", "operation=\"append_");
    let rate = lat.len() as f64 / elapsed.as_secs_f64();
    rows.push(Row {
        scenario: format!("ingest: POST /app x{}", a.concurrency),
        count: lat.len(),
        per_second: rate,
        unit: "events/s",
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        note: String::new(), // completed with the baseline's numbers below
    });
    let (ingest_rate, ingest_ru, ingest_per_write) =
        (rate, ru / lat.len() as f64, 2.0 * lat.len() as f64 / writes.max(1.0));

    // 2. App feed: the owner pages through ttd/apps-test.
    for size in [50, 1000] {
        if a.ingest_only {
            break;
        }
        let before = metrics();
        let first = format!("{}/events/api/v1/app/ttd/apps-test?after=0&size={size}", bench.base);
        let (lat, events, elapsed, own) = bench.page_through(first, &owner, &[], a.limit).await;
        let after = metrics();
        let queries = metric_sum(&after, "cosmos_requests_total", "query_feed")
            - metric_sum(&before, "cosmos_requests_total", "query_feed");
        rows.push(Row::of(
            format!("app feed, size {size}"),
            &lat,
            lat.len() as f64 / elapsed.as_secs_f64(),
            "pages/s",
            format!(
                "{:.0} events/s; {:.2} Cosmos queries/page; service beyond Cosmos: p50 {:.2} ms, p99 {:.2} ms",
                events as f64 / elapsed.as_secs_f64(),
                queries / lat.len() as f64,
                percentile(&own, 0.5),
                percentile(&own, 0.99)
            ),
        ));
    }

    if !a.ingest_only {
        // 3. Party feeds read by user 1337 (level 2): its own party, all ttd
        // events (permitted); and party 500000 (a role), where 4 of 5 events are
        // skd's, which need level 3 (denied).
        let mixes: [(&str, u64, usize); 2] = [("mostly permitted", 1337, 0), ("mostly denied (4 of 5)", 500000, 4)];
        for (label, party, denied_per_permitted) in mixes {
            let count = (a.events / 4).max(100);
            let period = denied_per_permitted + 1;
            let _ = bench
                .ingest(count, a.concurrency, a.limit, move |n| (usize::from(n % period != period - 1), party), None)
                .await;
            let before_pdp = bench.pdp_requests().await;
            let first = format!("{}/events/api/v1/app/party?party={party}&after=0&size=50", bench.base);
            let (lat, events, elapsed, own) = bench.page_through(first, &bench.user_tokens[&1337], &[], a.limit).await;
            let pdp = bench.pdp_requests().await - before_pdp;
            rows.push(Row::of(
                format!("party feed, {label}"),
                &lat,
                lat.len() as f64 / elapsed.as_secs_f64(),
                "pages/s",
                format!(
                    "{events} events; {:.2} PDP requests/page; service beyond Cosmos+PDP: p50 {:.2} ms, p99 {:.2} ms",
                    pdp as f64 / lat.len() as f64,
                    percentile(&own, 0.5),
                    percentile(&own, 0.99)
                ),
            ));
        }

        // 4. Mixed: ingest while a reader follows the app feed from its head;
        // publish-to-visible = first page that shows an event - its 201.
        let acks: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
        // The reader long-polls (wait=5): it is answered as soon as events arrive.
        let head_page = format!("{}/events/api/v1/app/ttd/apps-test?after=0&size=1000&wait=5", bench.base);
        // Move the reader's cursor to the current end first.
        let mut url = head_page;
        loop {
            let resp = bench.http.get(&url).bearer_auth(&owner).send().await.unwrap();
            let next = resp.headers()["next"].to_str().unwrap().to_owned();
            let page: Vec<Value> = resp.json().await.unwrap();
            url = next;
            if page.is_empty() {
                break;
            }
        }
        let reader_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (b, acks, owner, done) = (bench.clone(), acks.clone(), owner.clone(), reader_done.clone());
            tokio::spawn(async move {
                let mut url = url;
                let mut delays = Vec::new();
                let mut pages = 0;
                while !done.load(Ordering::Relaxed) {
                    let resp = b.http.get(&url).bearer_auth(&owner).send().await.unwrap();
                    let seen_at = Instant::now();
                    let next = resp.headers()["next"].to_str().unwrap().to_owned();
                    let page: Vec<Value> = resp.json().await.unwrap();
                    pages += 1;
                    let acks = acks.lock().await;
                    for e in &page {
                        if let Some(acked) = e["id"].as_str().and_then(|id| acks.get(id)) {
                            delays.push(seen_at.saturating_duration_since(*acked));
                        }
                    }
                    url = next;
                }
                (delays, pages)
            })
        };
        let (lat, elapsed) = bench
            .ingest(a.events / 2, a.concurrency, a.limit, |n| (0, 1000 + (n % 200) as u64), Some(acks.clone()))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        reader_done.store(true, Ordering::Relaxed);
        let (mut delays, reader_pages) = reader.await.unwrap();
        delays.sort();
        rows.push(Row {
            scenario: "mixed: ingest + 1 reader at the head".into(),
            count: lat.len(),
            per_second: lat.len() as f64 / elapsed.as_secs_f64(),
            unit: "events/s",
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            note: format!(
                "publish-to-visible p50 {:.1} ms, p99 {:.1} ms ({} events seen, {reader_pages} reader pages)",
                percentile(&delays, 0.5),
                percentile(&delays, 0.99),
                delays.len()
            ),
        });
    }

    // 5. Push delivery.
    if !a.ingest_only {
        delivery_rows(&bench, &owner, &a, &mut rows).await;
    }

    // Peak RSS so far: the service under the scenarios above, with the
    // emulator's copy of every document stored so far, and this client.
    let scenarios_rss = peak_rss_mib();
    // How much of that is the emulator's copy of the stored documents: the
    // event documents and heads the scenarios stored, and the RSS that the
    // raw-SDK rows' documents (only stored, nothing else) add per document.
    let text = metrics();
    let stored_docs =
        metric_sum(&text, "feed_batch_events_sum", "") + metric_sum(&text, "cosmos_requests_total", "create_head");
    let rss_before_raw = status_mib("VmRSS:");

    // 5. Baseline, measured last so that its documents (in scratch
    // partitions of the same container) do not weigh on the scenarios
    // above: the raw SDK storing one document per event, same account,
    // same concurrency.
    let mut head_rows = Vec::new();
    let (lat, baseline_ru, baseline_elapsed) =
        raw_sdk(&feeds, a.events, a.concurrency, a.limit, |n, party| vec![(party.to_string(), n as u64)]).await;
    let baseline_rate = lat.len() as f64 / baseline_elapsed.as_secs_f64();
    let baseline_ru_per_doc = baseline_ru / lat.len() as f64;
    head_rows.push(Row {
        scenario: "baseline: raw SDK, 1 document per event".into(),
        count: lat.len(),
        per_second: baseline_rate,
        unit: "docs/s",
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        note: format!("{baseline_ru_per_doc:.2} RU/doc (no HTTP)"),
    });
    // The emulator's floor for what a publish stores: the raw SDK creating
    // the two event documents per event into partitions laid out like the
    // feeds' segments (1000 per app, the party's own), where the emulator
    // checks the unique key on seq by scanning the partition.
    let (lat, _, elapsed) = raw_sdk(&feeds, a.events, a.concurrency, a.limit, |n, party| {
        vec![(format!("r|{}|{}", n % 2, (n / 2) / 1000), n as u64), (format!("s|{party}"), n as u64)]
    })
    .await;
    head_rows.push(Row {
        scenario: "floor: raw SDK, the 2 documents of a publish".into(),
        count: lat.len(),
        per_second: lat.len() as f64 / elapsed.as_secs_f64(),
        unit: "events/s",
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        note: "segment-sized partitions with the unique key; no HTTP, auth or writer".into(),
    });

    rows[0].note = format!(
        "{:.2}x baseline; {:.2} RU/event ({:.2}x 1 doc); {:.2} events/write",
        ingest_rate / baseline_rate,
        ingest_ru,
        ingest_ru / baseline_ru_per_doc,
        ingest_per_write
    );
    rows.splice(0..0, head_rows);
    let raw_docs = 3.0 * a.events as f64; // baseline 1 + floor 2 per event
    let mib_per_doc = (status_mib("VmRSS:") - rss_before_raw).max(0.0) / raw_docs;

    print_rows(&rows);
    println!(
        "RSS {start_rss:.0} MiB at start; peak RSS {scenarios_rss:.0} MiB through the mixed load and deliveries \
         ({:.0} MiB after the baseline's documents); \
         the emulator holds {stored_docs:.0} documents stored by the scenarios, at {:.1} KiB of RSS each \
         (measured on the raw-SDK rows): ~{:.0} MiB of the peak; \
         {} physical partitions; {} cores; events {}, concurrency {}",
        peak_rss_mib(),
        mib_per_doc * 1024.0,
        stored_docs * mib_per_doc,
        partitions.len(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        a.events,
        a.concurrency
    );
    running.shutdown(Duration::from_secs(5)).await;
}

fn print_rows(rows: &[Row]) {
    let num = |v: f64, digits: usize| if v.is_nan() { "-".to_owned() } else { format!("{v:.digits$}") };
    println!();
    println!("| scenario | n | rate | p50 ms | p99 ms | notes |");
    println!("|---|---:|---:|---:|---:|---|");
    for r in rows {
        let rate = if r.per_second.is_nan() { "-".to_owned() } else { format!("{:.0} {}", r.per_second, r.unit) };
        println!(
            "| {} | {} | {rate} | {} | {} | {} |",
            r.scenario,
            r.count,
            num(r.p50_ms, 2),
            num(r.p99_ms, 2),
            r.note
        );
    }
    println!();
}

/// What the benchmark's webhook receiver got: per push, the receiving hook,
/// the event id and when it arrived.
#[derive(Default)]
struct Hooks {
    got: std::sync::Mutex<Vec<(String, String, Instant)>>,
    validations: AtomicUsize,
    events: AtomicUsize,
}

/// A webhook receiver on 127.0.0.1 that answers 200 to every push:
/// `POST /hook/{group}/{n}`. Returns its base URL.
async fn start_receiver(hooks: Arc<Hooks>) -> String {
    let app = axum::Router::new().route(
        "/hook/{group}/{n}",
        axum::routing::post(
            move |axum::extract::Path((group, _n)): axum::extract::Path<(String, u32)>, body: axum::body::Bytes| {
                let hooks = hooks.clone();
                async move {
                    let at = Instant::now();
                    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if event["type"] == "platform.events.validatesubscription" {
                        hooks.validations.fetch_add(1, Ordering::SeqCst);
                    } else {
                        let id = event["id"].as_str().unwrap_or_default().to_owned();
                        hooks.got.lock().expect("hooks lock").push((group, id, at));
                        hooks.events.fetch_add(1, Ordering::SeqCst);
                    }
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Waits until `done` holds or `limit` passes; `false` then.
async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Operations of the instance's background work, whatever the number of
/// subscriptions and events: following the change feed, bucket leases,
/// presence.
const BACKGROUND: [&str; 6] =
    ["change_feed", "change_feed_subscriptions", "bucket_lease", "bucket_leases", "instance_presence", "instances"];

/// Cosmos requests of the deliverers: every operation but a publish's own
/// writes and the background work (so their reads, checkpoints, subscription
/// reads; a head read of the writer's counts here too).
fn deliverer_requests(text: &str) -> f64 {
    let all = metric_sum(text, "cosmos_requests_total", "");
    let other: f64 = ["append_batch", "append_create", "create_head", "seal", "read_event"]
        .iter()
        .chain(BACKGROUND.iter())
        .map(|op| metric_sum(text, "cosmos_requests_total", &format!("operation=\"{op}\"")))
        .sum();
    all - other
}

impl Bench {
    /// Creates `count` subscriptions of the ttd/apps-test owner to party
    /// `party`'s events, each to its own hook of group `group`, and waits
    /// until every one is validated.
    async fn subscriptions(&self, hooks: &Hooks, receiver: &str, owner: &str, group: &str, party: u64, count: usize) {
        let before = hooks.validations.load(Ordering::SeqCst);
        for n in 0..count {
            let body = json!({"endPoint": format!("{receiver}/hook/{group}/{n}"), "subjectFilter": format!("/party/{party}"),
                "sourceFilter": "https://ttd.apps.altinn.no/ttd/apps-test"});
            loop {
                let resp = self
                    .http
                    .post(format!("{}/events/api/v1/subscriptions", self.base))
                    .bearer_auth(owner)
                    .json(&body)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("subscription {n} of {group}: {e:?}"));
                match resp.status().as_u16() {
                    201 => break,
                    429 => tokio::time::sleep(Duration::from_millis(100)).await,
                    s => panic!("subscribing failed: {s} {}", resp.text().await.unwrap_or_default()),
                }
            }
        }
        let validated =
            wait_for(Duration::from_secs(120), || hooks.validations.load(Ordering::SeqCst) >= before + count).await;
        assert!(validated, "{count} subscriptions were not validated in 2 minutes");
        // The validators store the outcome, the deliverers learn of it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

/// Delivery scenarios: publish-to-delivery latency with one subscription;
/// deliveries per second with 1, 100 and 1000 subscriptions on one feed;
/// Cosmos requests per delivered event; what 1000 idle subscriptions cost.
async fn delivery_rows(bench: &Arc<Bench>, owner: &str, a: &Args, rows: &mut Vec<Row>) {
    let metrics = || altinn_events::telemetry::prometheus().render();
    let hooks = Arc::new(Hooks::default());
    let receiver = start_receiver(hooks.clone()).await;

    // 1. Latency: one subscription; events published 4 at a time.
    bench.subscriptions(&hooks, &receiver, owner, "latency", 7001, 1).await;
    let acks: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let count = 400.min(a.events);
    let first = hooks.events.load(Ordering::SeqCst);
    let (publish_lat, _) = bench.ingest(count, 4, a.limit, |_| (0, 7001), Some(acks.clone())).await;
    wait_for(Duration::from_secs(30), || hooks.events.load(Ordering::SeqCst) >= first + publish_lat.len()).await;
    let acks = acks.lock().await;
    let mut delays: Vec<Duration> = hooks
        .got
        .lock()
        .expect("hooks lock")
        .iter()
        .filter(|(group, _, _)| group == "latency")
        .filter_map(|(_, id, at)| acks.get(id).map(|acked| at.saturating_duration_since(*acked)))
        .collect();
    delays.sort();
    rows.push(Row::of(
        "delivery: publish to 2xx, 1 subscription".into(),
        &delays,
        f64::NAN,
        "",
        format!(
            "{} of {} events delivered; latency from the publish's 201 to the receiver (0 when the push came first)",
            delays.len(),
            publish_lat.len()
        ),
    ));

    // 2. Catching up: one subscription replays a feed of `a.events` events
    // from its start (after an outage, an `enable` or a replay).
    let party = 7050;
    let _ = bench.ingest(a.events, a.concurrency, a.limit, move |_| (0, party), None).await;
    bench.subscriptions(&hooks, &receiver, owner, "catchup", party, 1).await;
    let before = metrics();
    let first = hooks.events.load(Ordering::SeqCst);
    let started = Instant::now();
    let list: Value = bench
        .http
        .get(format!("{}/events/api/v1/subscriptions", bench.base))
        .bearer_auth(owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["subscriptions"].as_array().unwrap().last().unwrap()["id"].as_u64().unwrap();
    let resp = bench
        .http
        .post(format!("{}/events/api/v1/subscriptions/{id}/replay", bench.base))
        .bearer_auth(owner)
        .json(&json!({"after": "0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "replay");
    let caught_up = wait_for(a.limit * 2, || hooks.events.load(Ordering::SeqCst) >= first + a.events).await;
    let elapsed = started.elapsed();
    let after = metrics();
    let got = hooks.events.load(Ordering::SeqCst) - first;
    let push = |m: &str| metric_sum(&after, m, "") - metric_sum(&before, m, "");
    rows.push(Row::rate(
        format!("delivery: 1 subscription catching up {} events", a.events),
        got,
        got as f64 / elapsed.as_secs_f64(),
        "deliveries/s",
        format!(
            "{}one push at a time (the order): mean push {:.2} ms; {:.2} Cosmos requests per delivered event",
            if caught_up { String::new() } else { "INCOMPLETE; ".to_owned() },
            1000.0 * push("delivery_push_duration_seconds_sum") / push("delivery_push_duration_seconds_count").max(1.0),
            (deliverer_requests(&after) - deliverer_requests(&before)) / got.max(1) as f64,
        ),
    ));

    // 3. Throughput: `subs` subscriptions on one party's feed, `per_sub`
    // events each; from the first publish to the last push.
    let mut last_subs = 0;
    for (k, subs) in [1usize, 100, 1000].into_iter().enumerate() {
        let party = 7100 + k as u64;
        let group = format!("t{subs}");
        bench.subscriptions(&hooks, &receiver, owner, &group, party, subs).await;
        let per_sub = (4000 / subs).max(4).min(a.events);
        let expected = subs * per_sub;
        let first = hooks.events.load(Ordering::SeqCst);
        let before = metrics();
        let started = Instant::now();
        let (publish_lat, publish_elapsed) =
            bench.ingest(per_sub, a.concurrency, a.limit, move |_| (0, party), None).await;
        let delivered =
            wait_for(a.limit * 2, || hooks.events.load(Ordering::SeqCst) >= first + subs * publish_lat.len()).await;
        let elapsed = started.elapsed();
        let after = metrics();
        let got = hooks.events.load(Ordering::SeqCst) - first;
        let requests = deliverer_requests(&after) - deliverer_requests(&before);
        let pdp = metric_sum(&after, "pdp_request_duration_seconds_count", "")
            - metric_sum(&before, "pdp_request_duration_seconds_count", "");
        rows.push(Row::rate(
            format!("delivery: {subs} subscription(s), {per_sub} events"),
            got,
            got as f64 / elapsed.as_secs_f64(),
            "deliveries/s",
            format!(
                "{}{:.2} Cosmos requests per delivered event (deliverers' reads and checkpoints); {:.2} PDP requests per event; \
                 publishing took {:.0} ms of {:.0} ms",
                if delivered { String::new() } else { format!("INCOMPLETE ({got} of {expected}); ") },
                requests / got.max(1) as f64,
                pdp / got.max(1) as f64,
                publish_elapsed.as_secs_f64() * 1000.0,
                elapsed.as_secs_f64() * 1000.0,
            ),
        ));
        if std::env::var_os("BENCH_LOG").is_some() {
            let ops: std::collections::BTreeMap<String, f64> = after
                .lines()
                .filter(|l| l.starts_with("cosmos_requests_total{"))
                .filter_map(|l| {
                    let op = l.split("operation=\"").nth(1)?.split('"').next()?.to_owned();
                    let filter = format!("operation=\"{op}\"");
                    let delta = metric_sum(&after, "cosmos_requests_total", &filter)
                        - metric_sum(&before, "cosmos_requests_total", &filter);
                    Some((op, delta))
                })
                .collect();
            let push = |m: &str| metric_sum(&after, m, "") - metric_sum(&before, m, "");
            eprintln!(
                "{subs} subscriptions: mean push {:.3} ms; Cosmos requests by operation {ops:?}",
                1000.0 * push("delivery_push_duration_seconds_sum") / push("delivery_push_duration_seconds_count")
            );
        }
        last_subs = subs;
    }

    // 4. Idle: the instance with every subscription above caught up.
    // A whole lease renewal period (a third of the lease, 10 s).
    let idle_window = Duration::from_secs(10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = metrics();
    tokio::time::sleep(idle_window).await;
    let after = metrics();
    let idle_all = (metric_sum(&after, "cosmos_requests_total", "") - metric_sum(&before, "cosmos_requests_total", ""))
        / idle_window.as_secs_f64();
    let per_op: Vec<(&str, f64)> = BACKGROUND
        .iter()
        .map(|op| {
            let f = format!("operation=\"{op}\"");
            let rate = (metric_sum(&after, "cosmos_requests_total", &f)
                - metric_sum(&before, "cosmos_requests_total", &f))
                / idle_window.as_secs_f64();
            (*op, rate)
        })
        .collect();
    let background_rate: f64 = per_op.iter().map(|(_, r)| r).sum();
    let background: Vec<String> = per_op.iter().map(|(op, r)| format!("{op} {r:.1}/s")).collect();
    rows.push(Row::rate(
        format!("delivery: idle, {} subscriptions", 1 + 1 + 1 + 100 + last_subs),
        0,
        idle_all,
        "Cosmos requests/s",
        format!(
            "{:.1} requests/s of the subscriptions' deliverers; the rest is the instance's background, whatever the number of subscriptions: {}",
            idle_all - background_rate,
            background.join(", ")
        ),
    ));
}
