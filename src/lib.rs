//! altinn-events: the Altinn 3 Events API on Azure Cosmos DB.
//!
//! Wiring: `start` builds the app from [`Settings`] (a [`Config`] finalized) and serves it
//! on a listener the caller bound, so tests can bind port 0; every
//! background task runs in one supervised set (`supervise`). The layers,
//! top to bottom (imports point down only; `docs/architecture.md`):
//!
//! - wiring: this file;
//! - HTTP: [`api`], and the dev stand-ins [`localtest`];
//! - use cases: [`read`] (a page of a feed for a caller), [`publish`],
//!   [`subscribe`], and the background worker [`deliver`];
//! - platform clients: [`auth`], [`authz`], [`register`] over [`platform`],
//!   and [`webhooks`] (pushes to consumers);
//! - storage: [`feeds`];
//! - foundations: [`domain`], [`config`], [`telemetry`].

pub mod api;
pub mod auth;
pub mod authz;
pub mod config;
pub mod deliver;
pub mod domain;
pub mod feeds;
pub mod import;
#[cfg(feature = "dev")]
pub mod localtest;
pub mod platform;
pub mod publish;
pub mod read;
pub mod register;
pub mod secrets;
pub mod subscribe;
pub mod telemetry;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::api::AppState;
use crate::auth::{AccessTokenVerifier, OidcKeys, TokenValidator};
use crate::authz::Pdp;
pub use crate::config::{Config, Mode, Settings};
use crate::feeds::{FeedStore, Repairer};
use crate::platform::PlatformService;
use crate::publish::Publisher;
use crate::read::{FeedReader, ReadLimits, Waiters};
use crate::register::Register;
use crate::secrets::SharedSecret;
use crate::telemetry::Liveness;

mod secrets_reload;
pub mod supervise;

#[cfg(feature = "dev")]
use localtest::DevPlatform;
#[cfg(not(feature = "dev"))]
use no_dev::DevPlatform;

/// What tests (and only tests) may put in place of the defaults.
#[derive(Default)]
pub struct Overrides {
    /// Share one in-process Cosmos account between several app instances.
    pub emulator: Option<feeds::EmulatorAccount>,
}

/// A started service.
pub struct Running {
    pub addr: SocketAddr,
    pub base_url: Url,
    /// The app's feed store (for tests that check what was stored).
    pub feeds: FeedStore,
    /// Dev mode's local platform (and its folder, removed with the service).
    _dev: Option<DevPlatform>,
    waiters: Arc<Waiters>,
    delivery: Arc<deliver::Delivery>,
    liveness: Liveness,
    shutdown: watch::Sender<bool>,
    tasks: supervise::Tasks,
}

impl Running {
    /// Long-polling requests this instance holds right now.
    pub fn holding_waiters(&self) -> usize {
        self.waiters.holding()
    }

    /// Long-polling requests that found nothing and wait for an append.
    pub fn parked_waiters(&self) -> usize {
        self.waiters.parked()
    }

    /// How often a long-polling request parked since the start: a test can
    /// tell from it that a request waited at the head of its feed, or did
    /// not, without timing it.
    pub fn parks(&self) -> u64 {
        self.waiters.parks()
    }

    /// The subscriptions this instance pushes right now.
    pub fn delivering(&self) -> std::collections::HashSet<u64> {
        self.delivery.running()
    }

    /// The background tasks that ended unasked (the instance is then not
    /// live); empty while it is whole.
    pub fn ended_tasks(&self) -> Vec<&'static str> {
        self.liveness.ended()
    }

    /// Runs `task` beside the instance's own background tasks, under the
    /// same supervision: an early end is logged, counted and fails the
    /// liveness probe; shutdown waits for it. For an embedding binary's
    /// own work (and for tests of the supervision).
    pub fn spawn_supervised<F, T>(&mut self, name: &'static str, task: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: supervise::Outcome,
    {
        self.tasks.spawn(name, task);
    }

    /// Stops accepting connections and gives in-flight requests, pushes and
    /// every background task `grace` to finish (pushes store their
    /// checkpoints and hand their subscriptions over); what is still running
    /// after that is aborted.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        self.tasks.join(tokio::time::Instant::now() + grace).await;
        tracing::info!("stopped");
    }

    /// Stops as a crash would: nothing finishes, nothing is handed over
    /// (leases expire). For tests of what other instances do then.
    pub async fn kill(self) {
        self.tasks.abort_all().await;
    }
}

/// Builds the app from `config` and serves it on `listener` until
/// [`Running::shutdown`]: the probes at once (and dev mode's platform),
/// the API once Cosmos DB is reached.
pub async fn start(
    mut config: Settings,
    mode: Mode,
    listener: TcpListener,
    overrides: Overrides,
) -> anyhow::Result<Running> {
    telemetry::prometheus();
    let addr = listener.local_addr().context("listener address")?;
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let base_url: Url = format!("http://{host}:{}/", addr.port()).parse().context("base URL")?;
    if mode == Mode::Dev && config.platform_url.is_none() {
        config.config.platform_url = Some(base_url.clone());
    }
    let platform = config.platform_base().context("platform_url is not set")?;
    let dev = (mode == Mode::Dev).then(|| DevPlatform::set_up(&mut config.config, &platform, addr)).transpose()?;
    let clients = PlatformClients::new(&config, &platform)?;

    // Serve from now on: the probes (live at once, ready once wired) and
    // dev mode's platform, while Cosmos DB is reached.
    let (shutdown, stop) = watch::channel(false);
    let liveness = Liveness::default();
    let mut tasks = supervise::Tasks::new(stop.clone(), liveness.clone());
    let extra = dev.as_ref().map(DevPlatform::router).unwrap_or_default();
    let gate = Arc::new(api::starting::Gate::new(liveness.clone()));
    // Not reached yet, from the first request on.
    gate.waiting_for("cosmos");
    let served = api::starting::router(gate.clone(), extra.clone());
    let limits = server_limits(&config.server);
    tasks.spawn("server", |stop| api::server::serve(listener, served, limits, stop));
    tracing::info!(%addr, ?mode, "listening");
    let feeds = match connect_cosmos(&config.cosmos, overrides.emulator).await {
        Ok(feeds) => feeds,
        Err(e) => {
            tasks.abort_all().await;
            return Err(e);
        }
    };

    // Before anything reads or stores a subscription.
    feeds.webhook_secrets().replace(&dev_key_when_empty(config.subscription_secret_ring.clone(), mode));
    let role = config.role;
    let services = Services::new(&config, &platform, &feeds, &clients, stop.clone())?;
    spawn_workers(&mut tasks, &config, &feeds, &services, &clients);
    let instance_keys = Arc::new(auth::instance_key::InstanceKeys::of(
        &dev_key_when_empty(config.instance_access_ring.clone(), mode),
        Duration::from_secs(config.instance_access.ttl_seconds),
    ));
    let cursors = Arc::new(api::cursor::Cursors::of(&dev_key_when_empty(config.cursor_ring.clone(), mode)));
    if let Some(dir) = config.secrets_dir.clone() {
        let reload = secrets_reload::Reload {
            dir,
            file: config.source_file.clone(),
            mode,
            role,
            pdp_key: clients.pdp_key.clone(),
            register_key: clients.register_key.clone(),
            cursors: cursors.clone(),
            instance_keys: instance_keys.clone(),
            webhook_secrets: feeds.webhook_secrets().clone(),
        };
        let seen = reload.apply_current().context("secrets_dir")?;
        let every = Duration::from_secs(config.secrets_reload_seconds);
        tasks.spawn("secrets_reload", |stop| reload.run(seen, every, stop));
    }
    let (waiters, delivery) = (services.waiters.clone(), services.delivery.clone());
    let state = AppState::new(api::state::Services {
        config: Arc::new(config.config),
        tokens: clients.tokens,
        access_tokens: clients.access_tokens,
        reader: services.reader,
        publisher: services.publisher,
        subscriptions: services.subscriptions,
        instance_keys,
        cursors,
        limiter: Arc::default(),
        pdp: clients.pdp,
        feeds: feeds.clone(),
        liveness: liveness.clone(),
    });
    gate.open(if role.serves_api() { api::router(state, extra, mode) } else { api::ops_router(state, extra) });
    tracing::info!(?role, "ready");
    Ok(Running { addr, base_url, feeds, _dev: dev, waiters, delivery, liveness, shutdown, tasks })
}

/// The Altinn platform's services as this instance calls them: token
/// keys, the PDP, Register (their subscription keys shared with the
/// secrets reload).
struct PlatformClients {
    tokens: Arc<TokenValidator>,
    access_tokens: Arc<AccessTokenVerifier>,
    register: Arc<Register>,
    pdp: Arc<Pdp>,
    pdp_key: SharedSecret,
    register_key: SharedSecret,
}

impl PlatformClients {
    fn new(config: &Config, platform: &Url) -> anyhow::Result<Self> {
        let http = platform::http_client().context("building the platform HTTP client")?;
        let discovery = platform.join(auth::OIDC_DISCOVERY_PATH).context("OIDC discovery URL")?;
        let keys = OidcKeys::new(
            http.clone(),
            discovery,
            Duration::from_millis(config.auth.http_timeout_ms),
            Duration::from_secs(config.auth.jwks_refetch_min_interval_seconds),
        );
        let tokens = TokenValidator::new(Arc::new(keys), config.auth.leeway_seconds);
        let certs_dir = config.auth.access_token_certs_dir.clone().context("auth.access_token_certs_dir is not set")?;
        let access_tokens = AccessTokenVerifier::new(certs_dir, config.auth.leeway_seconds);
        // Register: `register.url` is the base of its API (`{platform}/register/api/`).
        let register_base = match &config.register.url {
            Some(url) if url.path().ends_with('/') => url.clone(),
            Some(url) => format!("{url}/").parse().context("register.url")?,
            None => platform.join("register/api/").context("Register URL")?,
        };
        let pdp_key = SharedSecret::new(config.pdp.subscription_key.clone());
        let register_key = SharedSecret::new(config.register.subscription_key.clone());
        let register_at = |path: &str| -> anyhow::Result<PlatformService> {
            let settings = config::PlatformServiceConfig { url: None, ..config.register.clone() };
            Ok(PlatformService::new(http.clone(), &settings, register_base.join(path).context("Register URL")?)
                .with_key(register_key.clone()))
        };
        let register = Arc::new(Register::new(
            register_at("v1/parties/lookup")?,
            register_at("v2/internal/parties/query?fields=identifiers")?,
        ));
        let pdp_url = platform.join("authorization/api/v1/decision").context("PDP URL")?;
        let pdp = Arc::new(Pdp::new(
            PlatformService::new(http, &config.pdp, pdp_url).with_key(pdp_key.clone()),
            register.clone(),
            Duration::from_secs(config.pdp.circuit_open_seconds),
        ));
        Ok(Self {
            tokens: Arc::new(tokens),
            access_tokens: Arc::new(access_tokens),
            register,
            pdp,
            pdp_key,
            register_key,
        })
    }
}

/// The use cases, over the store and the platform's services.
struct Services {
    waiters: Arc<Waiters>,
    reader: Arc<FeedReader>,
    publisher: Arc<Publisher>,
    delivery: Arc<deliver::Delivery>,
    subscriptions: Arc<subscribe::Subscriptions>,
}

impl Services {
    fn new(
        config: &Settings,
        platform: &Url,
        feeds: &FeedStore,
        clients: &PlatformClients,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let (pdp, register) = (&clients.pdp, &clients.register);
        // The breaker's time is the store's clock (tests move it).
        pdp.measure_by(feeds.clock().clone());
        let waiters = Arc::new(Waiters::new(config.limits.max_waiters, config.limits.max_waiters_per_caller));
        let limits = ReadLimits { scan_budget_factor: config.limits.scan_budget_factor };
        let reader =
            Arc::new(FeedReader::new(feeds.clone(), pdp.clone(), register.clone(), limits, waiters.clone(), stop));
        let publisher = Publisher::new(feeds.clone(), pdp.clone()).admitting(config.limits.max_publishes_in_flight);
        let sender = Arc::new(webhooks::Sender::new(sender_settings(config)).context("building the webhook client")?);
        let delivery = Arc::new(deliver::Delivery::new(
            feeds.clone(),
            reader.clone(),
            sender.clone(),
            deliver::DeliverySettings {
                buckets: config.delivery.buckets,
                lease: Duration::from_secs(config.delivery.lease_seconds),
                retry: config.delivery.retry_schedule_seconds.iter().map(|s| Duration::from_secs(*s)).collect(),
                page_size: config.delivery.page_size,
                flush_every: Duration::from_millis(config.delivery.flush_ms),
            },
        ));
        let webhooks = &config.webhooks;
        let subscriptions = Arc::new(subscribe::Subscriptions::new(
            feeds::subscriptions::SubscriptionStore::new(feeds),
            feeds.clone(),
            pdp.clone(),
            register.clone(),
            sender,
            subscribe::SubscriptionSettings {
                apps_domains: webhooks.apps_domains.clone(),
                validation_retry: webhooks.validation_retry_seconds.iter().map(|s| Duration::from_secs(*s)).collect(),
                validation_sweep: Duration::from_secs(webhooks.validation_sweep_seconds),
                platform_base: platform.clone(),
                max_per_consumer: webhooks.max_subscriptions_per_consumer,
                max_concurrent_validations: webhooks.max_concurrent_validations,
                max_validations_per_consumer: webhooks.max_validations_per_consumer,
            },
            {
                let delivery = delivery.clone();
                Arc::new(move |id| delivery.changed(id))
            },
        ));
        Ok(Self { waiters, reader, publisher: Arc::new(publisher), delivery, subscriptions })
    }
}

fn sender_settings(config: &Settings) -> webhooks::SenderSettings {
    webhooks::SenderSettings {
        allow_private_endpoints: config.allow_private_endpoints,
        allowed_ports: config.webhooks.allowed_ports.clone(),
        timeout: Duration::from_secs(config.webhooks.timeout_seconds),
        max_response_bytes: config.webhooks.max_response_bytes,
        slots: webhooks::SlotLimits {
            total: config.delivery.max_concurrent_pushes,
            per_consumer: config.delivery.max_pushes_per_consumer,
            per_host: config.delivery.max_pushes_per_host,
        },
    }
}

fn server_limits(server: &config::ServerConfig) -> api::server::ServerLimits {
    api::server::ServerLimits {
        header_read_timeout: Duration::from_secs(server.header_read_timeout_seconds),
        body_read_timeout: Duration::from_secs(server.body_read_timeout_seconds),
        idle_timeout: Duration::from_secs(server.idle_timeout_seconds),
        max_connections: server.max_connections,
    }
}

/// The background workers this instance's role runs, supervised: the
/// repairer (API), the deliverers and the validator (pushing), the change
/// feed follower and the dependency watch (all).
fn spawn_workers(
    tasks: &mut supervise::Tasks,
    config: &Config,
    feeds: &FeedStore,
    services: &Services,
    clients: &PlatformClients,
) {
    let role = config.role;
    if role.serves_api() && config.cosmos.repair_interval_seconds > 0 {
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
        let every = Duration::from_secs(config.cosmos.repair_interval_seconds);
        let repairer =
            Repairer::new(feeds.clone(), owner, every * 3, Duration::from_secs(config.cosmos.repair_grace_seconds));
        tasks.spawn("repairer", |stop| repairer.run(every, stop));
    }
    let delivering = role.pushes() && config.delivery.enabled;
    if delivering {
        let delivery = services.delivery.clone();
        tasks.spawn("delivery", |stop| delivery.run(stop));
    }
    if role.pushes() {
        let subscriptions = services.subscriptions.clone();
        tasks.spawn("validator", |stop| subscriptions.run_validator(stop));
    }
    // The change feed, followed once per instance: other instances' appends
    // wake this one's long-polls and deliverers; subscription and delivery
    // changes reach the deliverers and the validator.
    let delivery = delivering.then(|| services.delivery.clone());
    let validator = role.pushes().then(|| services.subscriptions.clone());
    let sink = move |change: feeds::coordination::changes::Change| {
        if let (feeds::coordination::changes::Change::Subscription(..), Some(validator)) = (&change, &validator) {
            validator.wake_validator();
        }
        if let Some(delivery) = &delivery {
            delivery.on_change(change);
        }
    };
    let poll = feeds::coordination::changes::Polling {
        busy: Duration::from_millis(config.delivery.change_feed_poll_ms),
        idle: Duration::from_millis(config.delivery.change_feed_idle_poll_ms),
    };
    // Deliverers need the events all the time, long-polls only while
    // there are some; subscription, state and lease changes go to the
    // deliverers and the validator of an instance that delivers (with
    // delivery off, its validator relies on its sweep: an instance that
    // makes no request while idle).
    let store = feeds.clone();
    tasks.spawn("change_feed", move |stop| {
        feeds::coordination::changes::follow(store, poll, sink, delivering, delivering, stop)
    });
    let (store, pdp) = (feeds.clone(), clients.pdp.clone());
    tasks.spawn("dependency_watch", |stop| watch_dependencies(store, pdp, stop));
}

/// `altinn-events import`: copies Altinn Events' database at `source` into
/// the store `config` names, through the same feed writer the API uses, and
/// does what `until` says when caught up (docs/migration.md). `status` is
/// told how it goes after every batch; `stop` ends it between batches.
pub async fn import(
    config: Settings,
    source: &str,
    until: import::Until,
    stop: watch::Receiver<bool>,
    status: &(dyn Fn(&import::Status) + Sync),
) -> anyhow::Result<import::Report> {
    let db = import::AltinnDb::connect(source, config.import.source_password.as_ref())
        .await
        .context("connecting to Altinn Events' database")?;
    let feeds = connect_cosmos(&config.cosmos, None).await?;
    feeds.webhook_secrets().replace(&config.subscription_secret_ring);
    let settings = import::ImportSettings {
        bounds: import::ReadBounds {
            limit: config.import.batch_rows,
            max_bytes: config.import.batch_bytes,
            max_row_bytes: config.limits.max_body_bytes,
            settle: Duration::from_secs(config.import.settle_seconds),
            gap_window: Duration::from_secs(config.import.gap_window_seconds),
        },
        poll: Duration::from_millis(config.import.poll_ms),
        subscription_sync: Duration::from_secs(config.import.subscription_sync_seconds),
        apps_domains: config.webhooks.apps_domains.clone(),
    };
    let importer = import::Importer::new(db, feeds, settings);
    Ok(importer.run(until, stop, status).await?)
}

/// `altinn-events bump-generation`: starts the store's next generation
/// (`feeds/events/generation.rs`); the generation it started.
pub async fn bump_generation(config: &Settings, reason: &str) -> anyhow::Result<u32> {
    // The generation is in the events container: whether the subscriptions
    // were moved yet (after a restore to before that) does not matter here.
    let feeds = FeedStore::connect_to_move(&config.cosmos, None).await.context("connecting to Cosmos DB")?;
    feeds.bump_generation(reason).await.context("bumping the store's generation")
}

/// `altinn-events move-subscriptions`: moves the subscriptions of a store
/// from before the subscriptions container into it
/// (`feeds/subscriptions/moved.rs`).
pub async fn move_subscriptions(config: &Settings) -> anyhow::Result<feeds::subscriptions::MoveReport> {
    let feeds = FeedStore::connect_to_move(&config.cosmos, None).await.context("connecting to Cosmos DB")?;
    feeds::subscriptions::move_from_events_container(&feeds).await.context("moving the subscriptions")
}

/// The wait before the next try to reach Cosmos DB at start, after
/// `backoff`: doubling from 0.5 s, never more than 4 s.
fn next_connect_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(Duration::from_secs(4))
}

/// Connects to Cosmos DB, trying again with backoff (0.5 s doubling to
/// 4 s, [`next_connect_backoff`]) while it cannot be reached: at start on AKS,
/// Cosmos or the network may be slow, and a crash loop would only add to
/// it. The cap is short, so that a pod is ready within seconds of Cosmos DB
/// coming back, however long it was away (a try costs one connection). `/health/ready` says
/// what is missing meanwhile. A configuration that is wrong in itself (a
/// missing setting, a container without the unique key) is an error at
/// once; everything else (unreachable, throttled, not yet authorized, no
/// container yet) is tried again.
async fn connect_cosmos(
    config: &config::CosmosConfig,
    emulator: Option<feeds::EmulatorAccount>,
) -> anyhow::Result<FeedStore> {
    let mut backoff = Duration::from_millis(500);
    let mut attempts = 0u32;
    loop {
        let connected = FeedStore::connect(config, emulator.clone()).await;
        match connected {
            Ok(feeds) => {
                if attempts > 0 {
                    tracing::info!(attempts, "reached Cosmos DB");
                }
                return Ok(feeds);
            }
            Err(e) if e.is_configuration() => return Err(e).context("connecting to Cosmos DB"),
            Err(e) => {
                attempts += 1;
                tracing::warn!(error.chain = %telemetry::error_chain(&e), attempts, retry_in_ms = backoff.as_millis() as u64, "Cosmos DB not reached; trying again");
                metrics::counter!("startup_connect_failures_total", "dependency" => "cosmos").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = next_connect_backoff(backoff);
            }
        }
    }
}

/// Dev mode makes a key up when none is configured (`serve` refuses to
/// start the API without a cursor ring, and any role without a
/// subscription secret ring).
fn dev_key_when_empty(mut ring: secrets::KeyRing, mode: Mode) -> secrets::KeyRing {
    if ring.keys.is_empty() && mode == Mode::Dev {
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        ring.keys.insert("dev".into(), secrecy::SecretString::from(secret));
        ring.signing = Some("dev".into());
    }
    ring
}

/// Every 30 s: whether Cosmos DB and the PDP answer (`dependency_up`, for
/// alerts; readiness does not depend on it).
async fn watch_dependencies(feeds: FeedStore, pdp: Arc<Pdp>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        api::health::check_dependencies(&feeds, &pdp).await;
    }
}

/// A build without feature `dev`: no dev mode, no local platform.
#[cfg(not(feature = "dev"))]
mod no_dev {
    use std::net::SocketAddr;

    use url::Url;

    use crate::config::Config;

    pub enum DevPlatform {}

    impl DevPlatform {
        pub fn set_up(_: &mut Config, _: &Url, _: SocketAddr) -> anyhow::Result<Self> {
            anyhow::bail!("this build has no dev mode (built without feature `dev`)")
        }

        pub fn router(&self) -> axum::Router {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// However long Cosmos DB was away, a starting pod tries again within
    /// seconds: it is ready soon after Cosmos DB is back.
    #[test]
    fn the_wait_between_tries_to_reach_cosmos_stays_short() {
        let mut backoff = Duration::from_millis(500);
        let mut waits = vec![backoff];
        for _ in 0..20 {
            backoff = super::next_connect_backoff(backoff);
            waits.push(backoff);
        }
        assert_eq!(waits[..5], [500, 1000, 2000, 4000, 4000].map(Duration::from_millis));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(4)), "{waits:?}");
    }
}
