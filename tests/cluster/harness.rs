//! The pieces of a cluster: one out-of-process Cosmos emulator
//! (`.ci/cosmosdb-server/server.js`, a Node process) and N service processes
//! (`altinn-events dev`, the built binary) that share it, one token-signing
//! key, one cursor key and one Altinn platform (pod 0's dev stand-ins, as
//! production pods share Altinn's). Everything listens on 127.0.0.1 and is
//! killed when dropped.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use altinn_events::config::{CosmosAuth, CosmosConfig};
use altinn_events::domain::{FeedId, Filters};
use altinn_events::feeds::FeedStore;
use reqwest::header::AUTHORIZATION;
use secrecy::SecretString;
use serde_json::{Value, json};

/// The server accepts any key; the SDK wants one that decodes as base64.
pub const COSMOS_KEY: &str = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";
pub const RESOURCE: &str = "urn:altinn:resource:app_ttd_apps-test";
pub const APP_SOURCE: &str = "https://ttd.apps.altinn.no/ttd/apps-test";
pub const PARTY: &str = "/party/1337";

/// A process's CPU time (user + system) so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return 0.0 };
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<u64>().ok())
        .unwrap_or(100);
    ticks as f64 / per_second as f64
}

/// The ring that seals the pods' stored webhook secrets (and the import's).
pub const WEBHOOK_SECRET_KEY: &str = "cluster-webhook-secret-key-0123456789abcdef";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A scratch folder for keys and logs, removed at the end (kept, and
/// named, when the test fails).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("altinn-events-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("cluster logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `@vercel/cosmosdb-server` with our fixes, on `port` (0: any).
pub struct Emulator {
    child: Child,
    pub port: u16,
}

impl Emulator {
    pub fn start(port: u16, dir: &Path) -> Self {
        Self::start_with(port, dir, &[])
    }

    /// With environment variables for the server (`COSMOSDB_SERVER_*`,
    /// documented at the top of server.js).
    pub fn start_with(port: u16, dir: &Path, env: &[(String, String)]) -> Self {
        let server = std::env::var("EVENTS_TEST_COSMOSDB_SERVER")
            .expect("EVENTS_TEST_COSMOSDB_SERVER is not set: run the cluster tests with .ci/cosmosdb-server/run-test");
        let mut child = Command::new("node")
            .arg(server)
            .arg(port.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("cosmosdb-server.log")).unwrap())
            .spawn()
            .expect("node runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cosmosdb-server said {line:?}"));
        Self { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The server's request units and 429s so far (`GET /_sim/stats`).
    pub async fn stats(&self, http: &reqwest::Client) -> Value {
        http.get(format!("{}_sim/stats", self.endpoint())).send().await.unwrap().json().await.unwrap()
    }

    /// The feed store as the pods see it, for checks below the API.
    pub async fn store(&self) -> FeedStore {
        self.store_with(SEGMENT_SIZE).await
    }

    /// The same, for pods that were given another segment size.
    pub async fn store_with(&self, segment_size: u64) -> FeedStore {
        let config = CosmosConfig {
            auth: Some(CosmosAuth::Key),
            endpoint: Some(self.endpoint().parse().unwrap()),
            key: Some(SecretString::from(COSMOS_KEY)),
            provision: Some(true),
            segment_size,
            ..CosmosConfig::default()
        };
        // The SDK's first request can meet a closed connection (its HTTP/2
        // probe against Node): try again, as the service does.
        let mut attempts = 0;
        loop {
            match FeedStore::connect(
                &config,
                #[cfg(feature = "dev")]
                None,
            )
            .await
            {
                Ok(store) => return store,
                Err(e) if attempts < 10 => {
                    attempts += 1;
                    eprintln!("connecting to the emulator (attempt {attempts}): {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the emulator does not answer: {e:?}"),
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Segments of 50 events: the loads below roll over several times, with
/// every pod writing.
pub const SEGMENT_SIZE: u64 = 50;

/// One service process.
pub struct Pod {
    pub index: usize,
    pub base: String,
    child: Child,
    pub log: PathBuf,
}

/// What the pods share.
pub struct Shared {
    pub cosmos_endpoint: String,
    pub key_file: PathBuf,
    pub dir: PathBuf,
    /// Pod 0's base URL: the Altinn platform of every pod.
    pub platform: Option<String>,
    pub extra_env: Vec<(String, String)>,
}

impl Shared {
    pub fn new(cosmos_endpoint: String, dir: &Path) -> Self {
        let key_file = dir.join("issuer-key.pem");
        std::fs::write(&key_file, altinn_events::localtest::keys::generate_pem().unwrap()).unwrap();
        Self { cosmos_endpoint, key_file, dir: dir.to_owned(), platform: None, extra_env: Vec::new() }
    }
}

impl Pod {
    pub fn spawn(index: usize, shared: &Shared) -> Self {
        let port = free_port();
        let log = shared.dir.join(format!("pod-{index}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_altinn-events"));
        command
            .args(["dev", "--addr", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("RUST_LIB_BACKTRACE", "0")
            .env("AZURE_COSMOS_BINARY_ENCODING_ENABLED", "false")
            .env("EVENTS__LOG_FILTER", "info,altinn_events=info")
            .env("EVENTS__COSMOS__AUTH", "key")
            .env("EVENTS__COSMOS__ENDPOINT", &shared.cosmos_endpoint)
            .env("EVENTS__COSMOS__KEY", COSMOS_KEY)
            .env("EVENTS__COSMOS__PROVISION", "true")
            .env("EVENTS__COSMOS__SEGMENT_SIZE", SEGMENT_SIZE.to_string())
            .env("EVENTS__COSMOS__REPAIR_INTERVAL_SECONDS", "1")
            .env("EVENTS__COSMOS__REPAIR_GRACE_SECONDS", "3")
            .env("EVENTS__LOCALTEST__KEY_FILE", &shared.key_file)
            .env("EVENTS__CURSORS__KEYS__CLUSTER", "cluster-cursor-key-0123456789abcdef0123456789")
            .env("EVENTS__SUBSCRIPTION_SECRETS__KEYS__CLUSTER", WEBHOOK_SECRET_KEY)
            .env("EVENTS__DELIVERY__LEASE_SECONDS", "6")
            .env("EVENTS__DELIVERY__CHANGE_FEED_POLL_MS", "100")
            .env("EVENTS__DELIVERY__FLUSH_MS", "200")
            .env("EVENTS__SHUTDOWN_GRACE_SECONDS", "10")
            // One deadline for a publish, within the grace (checked at start).
            .env("EVENTS__COSMOS__PUBLISH_DEADLINE_MS", "8000")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        if let Some(platform) = &shared.platform {
            command.env("EVENTS__PLATFORM_URL", platform);
        }
        for (k, v) in &shared.extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("the service binary runs");
        Self { index, base: format!("http://127.0.0.1:{port}"), child, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/health/live` answers 200, then `/health/ready` does.
    pub async fn until_ready(&mut self, http: &reqwest::Client, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = http.get(self.url("/health/ready")).send().await
                && r.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pod {} exited at start ({status}): {}", self.index, self.tail());
            }
            assert!(Instant::now() < deadline, "pod {} not ready within {within:?}: {}", self.index, self.tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of the pod's log, for failure messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The process's peak resident memory so far (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL: a crash; nothing finishes.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful stop Kubernetes asks for.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its status and how long it took.
    pub async fn exited(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < within, "pod {} still runs after {within:?}", self.index);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of a Prometheus counter or gauge over all its labels.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        let Ok(resp) = http.get(self.url("/metrics")).send().await else { return 0.0 };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An emulator and N pods on it; pod 0 is every pod's Altinn platform.
pub struct Cluster {
    pub emulator: Emulator,
    pub pods: Vec<Option<Pod>>,
    pub http: reqwest::Client,
    pub _scratch: Scratch,
    pub tokens: Tokens,
}

#[derive(Clone)]
pub struct Tokens {
    pub user: String,
    pub platform: String,
    pub owner: String,
}

impl Cluster {
    pub async fn start(name: &str, n: usize, extra_env: Vec<(String, String)>) -> Self {
        Self::start_with(name, n, extra_env, &[]).await
    }

    /// With environment variables for the emulator as well.
    pub async fn start_with(
        name: &str,
        n: usize,
        extra_env: Vec<(String, String)>,
        emulator_env: &[(String, String)],
    ) -> Self {
        let scratch = Scratch::new(name);
        let emulator = Emulator::start_with(0, &scratch.0, emulator_env);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut shared = Shared::new(emulator.endpoint(), &scratch.0);
        shared.extra_env = extra_env;
        let mut first = Pod::spawn(0, &shared);
        first.until_ready(&http, Duration::from_secs(60)).await;
        shared.platform = Some(format!("{}/", first.base));
        let mut pods = vec![Some(first)];
        for i in 1..n {
            pods.push(Some(Pod::spawn(i, &shared)));
        }
        for pod in pods.iter_mut().flatten() {
            pod.until_ready(&http, Duration::from_secs(60)).await;
        }
        let platform = pods[0].as_ref().unwrap();
        let get = |path: &str| {
            let url = platform.url(path);
            let http = http.clone();
            async move { http.get(url).send().await.unwrap().text().await.unwrap() }
        };
        let tokens = Tokens {
            user: get("/localtest/token/user?userId=1337&partyId=1337&authLevel=2").await,
            platform: get("/localtest/token/platform?issuer=ttd&app=apps-test").await,
            owner: get("/localtest/token/org?org=ttd&scope=altinn%3Aevents%2Fttd%2Fapps-test").await,
        };
        Self { emulator, pods, http, _scratch: scratch, tokens }
    }

    pub fn pod(&self, i: usize) -> &Pod {
        self.pods[i].as_ref().expect("a live pod")
    }

    pub fn live(&self) -> Vec<&Pod> {
        self.pods.iter().flatten().collect()
    }

    /// The base URLs of the pods that publishers and readers use.
    pub fn bases(&self) -> Vec<String> {
        self.live().iter().map(|p| p.base.clone()).collect()
    }

    /// A counter summed over the live pods.
    pub async fn metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for pod in self.live() {
            sum += pod.metric(&self.http, name).await;
        }
        sum
    }
}

/// What a load acknowledged and what failed.
#[derive(Default)]
pub struct Load {
    /// Event ids answered 201, in acknowledgement order.
    pub acked: Vec<String>,
    /// Publishes that got no 201 (a refused connection, a reset, a 5xx).
    pub failed: usize,
    pub statuses: HashMap<u16, usize>,
    pub elapsed: Duration,
    /// Latencies of the 201s, milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Requests that got no HTTP answer: the pod and when it was sent.
    pub transport_failures: Vec<(String, Instant)>,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.acked.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p99_ms(&self) -> f64 {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        l.get((l.len() * 99 / 100).min(l.len().saturating_sub(1))).copied().unwrap_or(0.0)
    }
}

/// Publishes `total` app events about party 1337 from `concurrency`
/// publishers, each request to the next pod of `targets()` (read at each
/// request, so that a test can take a pod out), one try each.
pub async fn publish(
    http: &reqwest::Client,
    tokens: &Tokens,
    targets: Arc<Mutex<Vec<String>>>,
    total: usize,
    concurrency: usize,
    progress: Arc<std::sync::atomic::AtomicUsize>,
) -> Load {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = Arc::new(Mutex::new(Load::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, tokens, targets, next, load, progress) =
            (http.clone(), tokens.clone(), targets.clone(), next.clone(), load.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= total {
                    return;
                }
                let base = {
                    let t = targets.lock().unwrap();
                    t[n % t.len()].clone()
                };
                let body = json!({"specversion": "1.0", "type": "app.instance.created", "subject": PARTY,
                    "source": format!("{APP_SOURCE}/instances/1337/{:08x}-0000-4000-8000-{:012x}", n, std::process::id())});
                let sent = Instant::now();
                let resp = http
                    .post(format!("{base}/events/api/v1/app"))
                    .header(AUTHORIZATION, format!("Bearer {}", tokens.user))
                    .header("PlatformAccessToken", &tokens.platform)
                    .json(&body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => {
                        let latency = sent.elapsed().as_secs_f64() * 1000.0;
                        match r.json::<String>().await {
                            Ok(id) => {
                                let mut load = load.lock().unwrap();
                                load.acked.push(id);
                                load.latencies_ms.push(latency);
                                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            // 201 without its body: stored, not known here.
                            Err(_) => load.lock().unwrap().failed += 1,
                        }
                    }
                    Ok(r) => {
                        let mut load = load.lock().unwrap();
                        *load.statuses.entry(r.status().as_u16()).or_default() += 1;
                        load.failed += 1;
                    }
                    Err(_) => {
                        let mut load = load.lock().unwrap();
                        load.failed += 1;
                        load.transport_failures.push((base, sent));
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut load = Arc::try_unwrap(load).ok().unwrap().into_inner().unwrap();
    load.elapsed = started.elapsed();
    load
}

/// The pages of a feed through `base`, from the start to the head; `path`
/// is the first request (with `after=0`). `next` links are followed on the
/// same pod.
pub async fn read_feed(http: &reqwest::Client, base: &str, path: &str, token: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut url = format!("{base}{path}");
    loop {
        let resp = http.get(&url).bearer_auth(token).send().await.map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            return Err(format!("GET {url}: {}", resp.status()));
        }
        let next = resp.headers().get("next").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let page: Vec<Value> = resp.json().await.map_err(|e| e.to_string())?;
        if page.is_empty() {
            return Ok(ids);
        }
        ids.extend(page.iter().map(|e| e["id"].as_str().unwrap_or_default().to_owned()));
        let next = next.ok_or("a page without next")?;
        url = on(base, &next);
    }
}

/// `link` (a `next` URL) sent to `base` instead.
pub fn on(base: &str, link: &str) -> String {
    let u: url::Url = link.parse().unwrap();
    format!("{base}{}?{}", u.path(), u.query().unwrap_or_default())
}

pub const RESOURCE_FEED: &str = "/events/api/v1/app/ttd/apps-test?after=0&size=1000";
pub const PARTY_FEED: &str = "/events/api/v1/app/party?party=1337&after=0&size=1000";

/// Every event of `feed` in the store, from position 0; asserts the
/// positions dense but for the numbers a seal closed.
pub async fn stored(store: &FeedStore, feed: &FeedId) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut last: Option<u64> = None;
    loop {
        let page = store.read(feed, pos, &Filters::default(), 1000, u64::MAX, false).await.expect("read");
        for e in &page.events {
            // Dense but for the numbers after a seal, never used: a hot
            // feed's writers cut its segments short.
            let dense = e.seq == last.map_or(0, |l| l + 1);
            let cut = last.is_some_and(|l| e.seq > l) && e.seq % store.segment_size() == 0;
            assert!(dense || cut, "{feed}: a gap or disorder at {} after {last:?}", e.seq);
            last = Some(e.seq);
            out.push(e.record.id.clone());
        }
        pos = page.next;
        if page.at_end {
            return out;
        }
    }
}

/// What the checks found: the resource and the party feed, as every pod
/// reads them.
pub struct Feeds {
    pub resource: Vec<String>,
    pub party: Vec<String>,
}

/// Waits (`within`, for repairs) until every live pod reads the same
/// resource feed and the same party feed, each event once, each event of
/// one also in the other; then asserts every acknowledged event is there,
/// and that the store's positions are dense and in the same order.
pub async fn check_feeds(cluster: &Cluster, acked: &[String], within: Duration) -> Feeds {
    let deadline = Instant::now() + within;
    let (resource, party) = loop {
        let mut problem = None;
        let mut views = Vec::new();
        for pod in cluster.live() {
            let r = read_feed(&cluster.http, &pod.base, RESOURCE_FEED, &cluster.tokens.owner).await;
            let p = read_feed(&cluster.http, &pod.base, PARTY_FEED, &cluster.tokens.user).await;
            match (r, p) {
                (Ok(r), Ok(p)) => views.push((pod.index, r, p)),
                (Err(e), _) | (_, Err(e)) => problem = Some(format!("pod {}: {e}", pod.index)),
            }
        }
        if problem.is_none() {
            let (_, r0, p0) = &views[0];
            let dup = |v: &Vec<String>| v.len() != v.iter().collect::<HashSet<_>>().len();
            problem = if views.iter().any(|(_, r, p)| r != r0 || p != p0) {
                let diverge = |a: &Vec<String>, b: &Vec<String>| a.iter().zip(b).position(|(x, y)| x != y);
                Some(format!(
                    "the pods read different feeds: {:?}",
                    views
                        .iter()
                        .map(|(i, r, p)| (i, r.len(), p.len(), diverge(r, r0), diverge(p, p0)))
                        .collect::<Vec<_>>()
                ))
            } else if dup(r0) || dup(p0) {
                let twice = |v: &Vec<String>| {
                    let mut seen = HashMap::new();
                    v.iter()
                        .enumerate()
                        .filter_map(|(i, id)| seen.insert(id.clone(), i).map(|first| (first, i)))
                        .take(3)
                        .collect::<Vec<_>>()
                };
                Some(format!(
                    "an event twice in a feed: resource {:?} of {}, party {:?} of {}",
                    twice(r0),
                    r0.len(),
                    twice(p0),
                    p0.len()
                ))
            } else if r0.iter().collect::<HashSet<_>>() != p0.iter().collect::<HashSet<_>>() {
                Some(format!("the feeds differ: {} in the resource feed, {} in the party feed", r0.len(), p0.len()))
            } else {
                None
            };
        }
        match problem {
            None => {
                let (_, r, p) = views.swap_remove(0);
                break (r, p);
            }
            Some(p) if Instant::now() > deadline => panic!("after {within:?}: {p}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let have: HashSet<&String> = resource.iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost: {lost:?}", lost.len());
    let store = cluster.emulator.store().await;
    assert_eq!(stored(&store, &FeedId::Resource(RESOURCE.into())).await, resource, "resource feed in the store");
    assert_eq!(stored(&store, &FeedId::Subject(PARTY.into())).await, party, "party feed in the store");
    Feeds { resource, party }
}

/// Readers that follow the resource feed's `next` while a load runs, each
/// through another pod than the one it started on (pods from `targets`,
/// switched when one goes away): what each saw, in order.
pub struct Readers {
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
    want: Arc<std::sync::atomic::AtomicUsize>,
}

impl Readers {
    pub fn start(http: &reqwest::Client, token: &str, targets: Arc<Mutex<Vec<String>>>, n: usize) -> Self {
        let want = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
        let tasks = (0..n)
            .map(|i| {
                let (http, token, targets, want) = (http.clone(), token.to_owned(), targets.clone(), want.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut path = format!("{RESOURCE_FEED}&wait=1");
                    let mut turn = i + 1;
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while seen.len() < want.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                        let base = {
                            let t = targets.lock().unwrap();
                            t[turn % t.len()].clone()
                        };
                        // Every page from the next pod: cursors work on all.
                        turn += 1;
                        let resp = match http.get(format!("{base}{path}")).bearer_auth(&token).send().await {
                            Ok(resp) if resp.status() == 200 => resp,
                            _ => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        let next = resp.headers().get("next").and_then(|v| v.to_str().ok()).map(str::to_owned);
                        let Ok(page) = resp.json::<Vec<Value>>().await else { continue };
                        seen.extend(page.iter().map(|e| e["id"].as_str().unwrap_or_default().to_owned()));
                        if let Some(next) = next {
                            let u: url::Url = next.parse().unwrap();
                            path = format!("{}?{}", u.path(), u.query().unwrap_or_default());
                            if !path.contains("wait=") {
                                path.push_str("&wait=1");
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        Self { tasks, want }
    }

    /// Each reader reads until it has seen `feed`'s length; asserts each
    /// saw exactly `feed`, in its order.
    pub async fn saw(self, feed: &[String]) {
        self.want.store(feed.len(), std::sync::atomic::Ordering::SeqCst);
        for (i, task) in self.tasks.into_iter().enumerate() {
            let seen = task.await.unwrap();
            assert_eq!(seen.len(), feed.len(), "reader {i} saw {} of {}", seen.len(), feed.len());
            assert!(seen == feed, "reader {i} saw another order");
        }
    }
}
