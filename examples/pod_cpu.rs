//! What a pod spends: the service as its own process (the built binary in
//! dev mode, `cosmos.auth = key`) on the out-of-process emulator
//! (`.ci/cosmosdb-server`), each process's CPU time read from
//! `/proc/{pid}/stat` around each scenario. Wall-clock rates on two shared
//! cores say little; CPU per event says what a pod costs.
//!
//!     cargo build --release && cargo run --release --example pod_cpu
//!     cargo run --release --example pod_cpu -- --events 4000 --delay-ms 5
//!
//! Starts the emulator (`node .ci/cosmosdb-server/server.js`, with
//! `--delay-ms` before every Cosmos request), a dev-mode process that
//! stands in for the Altinn platform (tokens, PDP, Register) and the service
//! calling it, runs bounded scenarios over HTTP on 127.0.0.1, prints one
//! table, stops all three.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const COSMOS_KEY: &str = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

struct Args {
    events: usize,
    concurrency: usize,
    delay_ms: u64,
    bin: String,
    passes: usize,
}

fn args() -> Args {
    let mut a =
        Args { events: 4000, concurrency: 32, delay_ms: 0, bin: "target/release/altinn-events".into(), passes: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => a.events = value().parse().expect("--events N"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency N"),
            "--delay-ms" => a.delay_ms = value().parse().expect("--delay-ms N"),
            "--bin" => a.bin = value(),
            "--passes" => a.passes = value().parse().expect("--passes N"),
            "--bench" => {}
            other => {
                panic!("unknown argument {other}; use --events N --concurrency N --delay-ms N --bin PATH --passes N")
            }
        }
    }
    a
}

/// A process's CPU time (user + system) so far.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/{pid}/stat");
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    // getconf CLK_TCK; 100 on Linux unless configured otherwise.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_emulator(delay_ms: u64) -> (Killed, String) {
    let child = Command::new("node")
        .args([".ci/cosmosdb-server/server.js", "0"])
        .env("COSMOSDB_SERVER_DELAY_MS", delay_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node .ci/cosmosdb-server/server.js (run .ci/cosmosdb-server/run-test once to install it)");
    listening(child, "the emulator")
}

/// A child that prints `LISTENING {addr}` first, and the base URL there.
fn listening(mut child: Child, what: &str) -> (Killed, String) {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("LISTENING ").unwrap_or_else(|| panic!("{what} said {line:?}")).to_owned();
    (Killed(child), format!("http://{addr}/"))
}

/// The service (`platform: None`: its own dev stand-ins answer for the
/// platform) or, with `platform`, the service calling the stand-ins of
/// another process there, as a pod calls Altinn's PDP, Register and OIDC.
fn start_service(bin: &str, endpoint: &str, key_file: &std::path::Path, platform: Option<&str>) -> (Killed, String) {
    start_service_with(bin, endpoint, key_file, platform, &[])
}

/// As [`start_service`], with more environment (set after the defaults).
fn start_service_with(
    bin: &str,
    endpoint: &str,
    key_file: &std::path::Path,
    platform: Option<&str>,
    env: &[(&str, &str)],
) -> (Killed, String) {
    let port = free_port();
    let mut command = Command::new(bin);
    if let Some(platform) = platform {
        command.env("EVENTS__PLATFORM_URL", platform);
    }
    let child = command
        .args(["dev", "--addr", &format!("127.0.0.1:{port}")])
        // One token-signing key for both processes: the service verifies
        // the platform's tokens and platform access tokens.
        .env("EVENTS__LOCALTEST__KEY_FILE", key_file)
        .env("AZURE_COSMOS_BINARY_ENCODING_ENABLED", "false")
        // As the image sets it (Dockerfile): library errors capture no
        // backtraces. The Cosmos SDK builds one for every absent optional
        // header; with RUST_BACKTRACE=1 inherited, that is a quarter of a
        // publish's instructions.
        .env("RUST_LIB_BACKTRACE", "0")
        // Logs as deployed (helm: info, JSON): a line per request.
        .env("EVENTS__LOG_FILTER", "info")
        .env("EVENTS__LOG_FORMAT", "json")
        .env("EVENTS__COSMOS__AUTH", "key")
        .env("EVENTS__COSMOS__ENDPOINT", endpoint)
        .env("EVENTS__COSMOS__KEY", COSMOS_KEY)
        .env("EVENTS__COSMOS__PROVISION", "true")
        // Measured apart: the repairer and the deliverers follow the change
        // feed whatever the load (docs/performance.md).
        .env("EVENTS__COSMOS__REPAIR_INTERVAL_SECONDS", "0")
        .env("EVENTS__DELIVERY__ENABLED", "false")
        // The ring that seals stored webhook secrets: the same in every
        // process that stores or pushes subscriptions.
        .env("EVENTS__SUBSCRIPTION_SECRETS__KEYS__BENCH", "pod-cpu-webhook-secret-key-0123456789")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e} (build it: cargo build --release)"));
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

struct Pod {
    http: reqwest::Client,
    base: String,
    /// Where tokens come from (the platform process).
    platform: String,
    service: u32,
    emulator: u32,
    platform_pid: u32,
}

impl Pod {
    /// A GET of the platform's stand-ins (tokens).
    async fn text(&self, path: &str) -> String {
        self.http.get(format!("{}{path}", self.platform)).send().await.unwrap().text().await.unwrap()
    }

    async fn metric(&self, name: &str) -> f64 {
        let url = format!("{}/metrics", self.base);
        let text = self.http.get(url).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn cpu(&self) -> (Duration, Duration) {
        (cpu(self.service), cpu(self.emulator))
    }

    /// A `next` link (on the platform's host, as Altinn's are) sent to the
    /// service.
    fn here(&self, next: &str) -> String {
        next.replacen(&self.platform, &self.base, 1)
    }

    fn platform_cpu(&self) -> Duration {
        cpu(self.platform_pid)
    }
}

struct Row {
    work: String,
    count: usize,
    unit: &'static str,
    rate: f64,
    service_us: f64,
    emulator_us: f64,
    /// The platform process (PDP, Register, OIDC stand-ins), per unit.
    platform_us: f64,
    note: String,
}

fn per(cpu: Duration, n: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

/// `count` publishes to one hot feed (one app, one party) from
/// `concurrency` tasks.
async fn hot_feed(pod: &Arc<Pod>, user: &str, access: &str, count: usize, concurrency: usize, offset: usize) -> Row {
    let next = Arc::new(AtomicUsize::new(0));
    let (cpu0, emu0) = pod.cpu();
    let batches0 = (pod.metric("feed_batch_events_count").await, pod.metric("feed_batch_events_sum").await);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pod, next, user, access) = (pod.clone(), next.clone(), user.to_owned(), access.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return lat;
                }
                let body = json!({"specversion": "1.0", "type": "app.instance.process.completed", "subject": "/party/1337",
                    "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/00000000-0000-4000-8000-{:012}", n + offset),
                    "data": {"n": n}});
                let t = Instant::now();
                let resp = pod
                    .http
                    .post(format!("{}/events/api/v1/app", pod.base))
                    .bearer_auth(&user)
                    .header("PlatformAccessToken", &access)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 201, "publish: {}", resp.text().await.unwrap_or_default());
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let (cpu1, emu1) = pod.cpu();
    let batches1 = (pod.metric("feed_batch_events_count").await, pod.metric("feed_batch_events_sum").await);
    lat.sort();
    let per_write = (batches1.1 - batches0.1) / (batches1.0 - batches0.0).max(1.0);
    Row {
        work: format!("POST /app, one hot feed, {concurrency} concurrent"),
        count,
        unit: "event",
        rate: count as f64 / elapsed.as_secs_f64(),
        service_us: per(cpu1 - cpu0, count),
        emulator_us: per(emu1 - emu0, count),
        platform_us: 0.0,
        note: format!(
            "p50 {:.1} ms, p99 {:.1} ms; {per_write:.1} events per write",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        ),
    }
}

/// Publish-to-visible under load: `concurrency` tasks publish `count`
/// events (one hot feed, as above) while the app owner long-polls the app
/// feed from its end (`wait=10`, pages of 1000). For each event, the time
/// from its publish's 201 to the answer of the long-poll that shows it.
async fn mixed(pod: &Arc<Pod>, owner: &str, user: &str, access: &str, count: usize, concurrency: usize) -> Row {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let acks: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    // The reader's cursor at the end of the feed.
    let mut url = format!("{}/events/api/v1/app/ttd/apps-test?after=0&size=1000", pod.base);
    loop {
        let resp = pod.http.get(&url).bearer_auth(owner).send().await.unwrap();
        url = pod.here(resp.headers()["next"].to_str().unwrap());
        if resp.json::<Vec<Value>>().await.unwrap().is_empty() {
            break;
        }
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (pod, owner, acks, done) = (pod.clone(), owner.to_owned(), acks.clone(), done.clone());
        tokio::spawn(async move {
            let mut url = format!("{url}&wait=10");
            let (mut delays, mut seen) = (Vec::new(), 0);
            while !done.load(Ordering::Relaxed) || seen < count {
                let resp = pod.http.get(&url).bearer_auth(&owner).send().await.unwrap();
                let at = Instant::now();
                let next = pod.here(resp.headers()["next"].to_str().unwrap());
                let page: Vec<Value> = resp.json().await.unwrap();
                let acked = acks.lock().unwrap();
                for e in &page {
                    seen += 1;
                    // A 201 not yet recorded: the event showed before its
                    // publisher saw the answer (counted as 0).
                    let t = e["id"].as_str().and_then(|id| acked.get(id)).copied().unwrap_or(at);
                    delays.push(at.saturating_duration_since(t));
                }
                url = if next.contains("wait=") { next } else { format!("{next}&wait=10") };
                if done.load(Ordering::Relaxed) && page.is_empty() {
                    break;
                }
            }
            delays
        })
    };
    let next = Arc::new(AtomicUsize::new(0));
    let (cpu0, emu0) = pod.cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pod, next, user, access, acks) =
            (pod.clone(), next.clone(), user.to_owned(), access.to_owned(), acks.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let body = json!({"specversion": "1.0", "type": "app.instance.process.completed", "subject": "/party/1337",
                    "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/00000000-0000-4000-8000-{:012}", n + 30_000_000),
                    "data": {"n": n}});
                let resp = pod
                    .http
                    .post(format!("{}/events/api/v1/app", pod.base))
                    .bearer_auth(&user)
                    .header("PlatformAccessToken", &access)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let at = Instant::now();
                assert_eq!(resp.status(), 201);
                let id = resp.json::<Value>().await.unwrap_or_default();
                if let Some(id) = id.as_str() {
                    acks.lock().unwrap().insert(id.to_owned(), at);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut delays = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("reader").unwrap();
    let (cpu1, emu1) = pod.cpu();
    delays.sort();
    Row {
        work: format!("mixed: {concurrency} publishers + 1 long-polling reader"),
        count,
        unit: "event",
        rate: count as f64 / elapsed.as_secs_f64(),
        service_us: per(cpu1 - cpu0, count),
        emulator_us: per(emu1 - emu0, count),
        platform_us: 0.0,
        note: format!(
            "publish-to-visible p50 {:.1} ms, p99 {:.1} ms ({} seen)",
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            delays.len()
        ),
    }
}

/// The floor under every request: `count` GETs of `url` from `concurrency`
/// tasks, with the CPU of process `pid` (the service's `/health/live`, which
/// does nothing but goes through the service's layers and logs its line; or
/// a bare axum server, which is only hyper and tokio).
async fn floor(pod: &Arc<Pod>, work: &str, url: &str, pid: u32, count: usize, concurrency: usize) -> Row {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (pod, next, url) = (pod.clone(), next.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let resp = pod.http.get(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200, "{url}");
                resp.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    Row {
        work: format!("{work}, {concurrency} concurrent"),
        count,
        unit: "request",
        rate: count as f64 / elapsed.as_secs_f64(),
        service_us: per(cpu(pid) - cpu0, count),
        emulator_us: 0.0,
        platform_us: 0.0,
        note: "the floor of a request on this machine".into(),
    }
}

/// `--bare-server`: an axum server that answers `GET /` with `ok` and does
/// nothing else, on the runtime the service uses (tokio's default, a worker
/// per CPU): what hyper, tokio and the kernel cost per request, apart from
/// the service.
async fn bare_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    axum::serve(listener, app).await.unwrap();
}

fn start_bare_server() -> (Killed, String) {
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--bare-server")
        .stdout(Stdio::piped())
        .spawn()
        .expect("pod_cpu --bare-server");
    listening(child, "the bare server")
}

/// Reads the app feed from the start `passes` times in pages of `size`.
async fn app_feed(pod: &Pod, owner: &str, size: usize, passes: usize) -> Row {
    let (cpu0, emu0) = pod.cpu();
    let started = Instant::now();
    let (mut pages, mut events) = (0, 0);
    let mut lat = Vec::new();
    for _ in 0..passes {
        let mut url = format!("{}/events/api/v1/app/ttd/apps-test?after=0&size={size}", pod.base);
        loop {
            let t = Instant::now();
            let resp = pod.http.get(&url).bearer_auth(owner).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let next = resp.headers()["next"].to_str().unwrap().to_owned();
            let page: Vec<Value> = resp.json().await.unwrap();
            lat.push(t.elapsed());
            if page.is_empty() {
                break;
            }
            pages += 1;
            events += page.len();
            url = pod.here(&next);
        }
    }
    let elapsed = started.elapsed();
    let (cpu1, emu1) = pod.cpu();
    lat.sort();
    Row {
        work: format!("app feed, pages of {size}"),
        count: pages,
        unit: "page",
        rate: pages as f64 / elapsed.as_secs_f64(),
        service_us: per(cpu1 - cpu0, pages),
        emulator_us: per(emu1 - emu0, pages),
        platform_us: 0.0,
        note: format!(
            "{:.1} µs per event; p50 {:.1} ms, p99 {:.1} ms",
            per(cpu1 - cpu0, events),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        ),
    }
}

fn print(rows: &[Row], delay_ms: u64) {
    println!("\nCosmos delay {delay_ms} ms per request; CPU from /proc (service | emulator | platform stand-ins)\n");
    println!("| work | count | rate | service CPU | emulator CPU | platform CPU | note |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let plural = if r.unit.ends_with("sh") { "es" } else { "s" };
        println!(
            "| {} | {} {}{plural} | {:.0}/s | {:.1} µs per {} | {:.0} µs per {} | {:.0} µs per {} | {} |",
            r.work, r.count, r.unit, r.rate, r.service_us, r.unit, r.emulator_us, r.unit, r.platform_us, r.unit, r.note
        );
    }
}

/// A webhook endpoint on 127.0.0.1 that answers 200 and counts the pushes
/// (the validation push included).
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let got = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let counter = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// Push delivery, measured on a deliver pod of its own (`role = deliver`,
/// the chart's deliver Deployment): one subscription to the app's events,
/// `count` events published through the API pod, the deliver pod's CPU
/// from the first publish until the endpoint has them all (reading its
/// feed, asking the PDP, signing, pushing, storing its checkpoint and
/// attempts).
async fn deliveries(pod: &Arc<Pod>, deliver_pid: u32, owner: &str, user: &str, access: &str, count: usize) -> Row {
    let (url, got) = receiver().await;
    let resp = pod
        .http
        .post(format!("{}/events/api/v1/subscriptions", pod.base))
        .bearer_auth(owner)
        .json(&json!({"endPoint": url, "sourceFilter": "https://ttd.apps.altinn.no/ttd/apps-test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "subscribe: {}", resp.text().await.unwrap_or_default());
    let waited = Instant::now();
    while got.load(Ordering::Relaxed) == 0 {
        assert!(waited.elapsed() < Duration::from_secs(60), "no validation push");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The validation's answer stored, the deliverer started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let validated = got.load(Ordering::Relaxed);
    let (deliver0, emu0) = (cpu(deliver_pid), cpu(pod.emulator));
    let started = Instant::now();
    for n in 0..count {
        let body = json!({"specversion": "1.0", "type": "app.instance.created", "subject": "/party/1337",
            "source": format!("https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/00000000-0000-4000-9000-{n:012}")});
        let resp = pod
            .http
            .post(format!("{}/events/api/v1/app", pod.base))
            .bearer_auth(user)
            .header("PlatformAccessToken", access)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    while got.load(Ordering::Relaxed) < validated + count {
        assert!(started.elapsed() < Duration::from_secs(300), "pushes missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let (deliver1, emu1) = (cpu(deliver_pid), cpu(pod.emulator));
    Row {
        work: "push delivery, one subscription (the deliver pod)".into(),
        count,
        unit: "push",
        rate: count as f64 / elapsed.as_secs_f64(),
        service_us: per(deliver1 - deliver0, count),
        emulator_us: per(emu1 - emu0, count),
        platform_us: 0.0,
        note: "events published one at a time through the API pod; the deliver pod's CPU from the first publish to the last push".into(),
    }
}

/// Runs a scenario and adds the platform process's CPU per unit to its row.
async fn with_platform(pod: &Pod, scenario: impl std::future::Future<Output = Row>) -> Row {
    let before = pod.platform_cpu();
    let mut row = scenario.await;
    row.platform_us = per(pod.platform_cpu() - before, row.count);
    row
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--bare-server") {
        return bare_server().await;
    }
    let a = args();
    let (emulator, endpoint) = start_emulator(a.delay_ms);
    let key_file = std::env::temp_dir().join(format!("pod-cpu-key-{}.pem", std::process::id()));
    std::fs::write(&key_file, altinn_events::localtest::keys::generate_pem().expect("a key")).expect("key file");
    // The platform (token issuer, PDP, Register) in a process of its own, as
    // Altinn's is: the service's CPU is then the service's alone.
    let (platform, platform_base) = start_service(&a.bin, &endpoint, &key_file, None);
    let (service, base) = start_service(&a.bin, &endpoint, &key_file, Some(&format!("{platform_base}/")));
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let ready = Instant::now();
    for b in [&platform_base, &base] {
        while !http.get(format!("{b}/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(ready.elapsed() < Duration::from_secs(60), "{b} did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let pod = Arc::new(Pod {
        http,
        base,
        platform: platform_base,
        service: service.0.id(),
        emulator: emulator.0.id(),
        platform_pid: platform.0.id(),
    });
    let user = pod.text("/localtest/token/user?userId=1337&partyId=1337&authLevel=2").await;
    let access = pod.text("/localtest/token/platform?issuer=ttd&app=apps-test").await;
    let owner = pod.text("/localtest/token/org?org=ttd&scope=altinn:events/ttd/apps-test").await;

    // Warm-up: connections, token caches, the feed's first segment.
    hot_feed(&pod, &user, &access, 200, a.concurrency, 10_000_000).await;
    let mut rows = vec![with_platform(&pod, hot_feed(&pod, &user, &access, a.events, a.concurrency, 0)).await];
    rows.push(with_platform(&pod, hot_feed(&pod, &user, &access, a.events, 64, 20_000_000)).await);
    rows.push(with_platform(&pod, app_feed(&pod, &owner, 1000, a.passes)).await);
    rows.push(with_platform(&pod, app_feed(&pod, &owner, 50, 1)).await);
    rows.push(with_platform(&pod, mixed(&pod, &owner, &user, &access, a.events / 2, a.concurrency)).await);
    let live = format!("{}/health/live", pod.base);
    // Ten times the events: a request is short, and /proc counts CPU in
    // 10 ms ticks.
    rows.push(floor(&pod, "GET /health/live", &live, pod.service, a.events * 10, a.concurrency).await);
    let (bare, bare_url) = start_bare_server();
    rows.push(
        floor(
            &pod,
            "GET / of a bare axum server (its own process)",
            &bare_url,
            bare.0.id(),
            a.events * 10,
            a.concurrency,
        )
        .await,
    );
    drop(bare);
    // A deliver pod of its own, as the chart runs them.
    let (deliver, deliver_base) = start_service_with(
        &a.bin,
        &endpoint,
        &key_file,
        Some(&format!("{}/", pod.platform)),
        &[("EVENTS__DELIVERY__ENABLED", "true"), ("EVENTS__ROLE", "deliver")],
    );
    let ready = Instant::now();
    while !pod.http.get(format!("{deliver_base}/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(ready.elapsed() < Duration::from_secs(60), "the deliver pod did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rows.push(
        with_platform(&pod, deliveries(&pod, deliver.0.id(), &owner, &user, &access, (a.events / 4).max(100))).await,
    );
    drop(deliver);
    print(&rows, a.delay_ms);
    drop(service);
    drop(platform);
    drop(emulator);
    let _ = std::fs::remove_file(&key_file);
}
