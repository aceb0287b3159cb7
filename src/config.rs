//! Service configuration: built-in defaults, then an optional TOML file, then
//! environment variables `EVENTS__...` (`__` separates nesting levels), read
//! with figment and validated once at start with errors that name the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::secrets::KeyRing;

/// How the process runs. `Dev` mounts the local Altinn stand-ins and uses the
/// in-process Cosmos emulator; `Serve` never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Dev,
}

/// What an instance runs. Production runs the API and push delivery as two
/// Deployments: pushes go to arbitrary public endpoints, so they run with
/// their own identity and egress rules (`docs/deploy.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The API and push delivery (dev mode, small installations).
    All,
    /// The HTTP API and the feed repairer; no pushes.
    Api,
    /// Push delivery and validation pushes; serves only probes and metrics.
    Deliver,
}

impl Role {
    pub fn serves_api(self) -> bool {
        self != Self::Deliver
    }

    pub fn pushes(self) -> bool {
        self != Self::Api
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A configuration as the service runs it ([`Config::finalize`]): every
/// mode-dependent choice made and the key rings parsed, once, at load. The
/// rest of the configuration's values are read through it (`Deref`).
#[derive(Clone)]
pub struct Settings {
    pub config: Config,
    pub log_format: LogFormat,
    /// Whether webhooks may point at private addresses (dev mode's default).
    pub allow_private_endpoints: bool,
    /// The cursor key ring (`cursors.*`); empty when none is configured
    /// (only dev mode and the `deliver` role start so).
    pub cursor_ring: KeyRing,
    /// The instance access key ring (`instance_access.*`).
    pub instance_access_ring: KeyRing,
    /// The ring that seals the webhook signing secrets stored with the
    /// subscriptions (`subscription_secrets.*`); required wherever
    /// subscriptions are stored or pushed (dev mode makes one up).
    pub subscription_secret_ring: KeyRing,
}

impl std::fmt::Debug for Settings {
    /// The rings by their key ids only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids = |ring: &KeyRing| ring.keys.keys().cloned().collect::<Vec<_>>();
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("log_format", &self.log_format)
            .field("allow_private_endpoints", &self.allow_private_endpoints)
            .field("cursor_ring", &ids(&self.cursor_ring))
            .field("instance_access_ring", &ids(&self.instance_access_ring))
            .field("subscription_secret_ring", &ids(&self.subscription_secret_ring))
            .finish()
    }
}

impl std::ops::Deref for Settings {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// What this instance does (`serve --role`): the API, push delivery,
    /// or both.
    pub role: Role,
    /// A folder of files, one per setting (the file name is the setting's
    /// path with `__` between levels, e.g. `pdp__subscription_key`), read
    /// over the environment: Key Vault secrets mounted by the CSI driver.
    pub secrets_dir: Option<PathBuf>,
    /// How often `secrets_dir` is read again: key rings and subscription
    /// keys take a new value without a restart.
    pub secrets_reload_seconds: u64,
    /// The TOML file this configuration was read from (not a setting).
    #[serde(skip)]
    pub source_file: Option<PathBuf>,
    /// Address the HTTP listener binds.
    pub listen_addr: SocketAddr,
    /// Base URL of the Altinn platform (`{platform}/authentication/...`,
    /// `/authorization/...`, `/register/...`). In dev mode it defaults to the
    /// service's own address, where the local stand-ins answer.
    pub platform_url: Option<Url>,
    pub log_format: Option<LogFormat>,
    /// `tracing` filter directive, e.g. `info,altinn_events=debug`.
    pub log_filter: String,
    /// How long in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_seconds: u64,
    pub auth: AuthConfig,
    /// The PDP's decision endpoint; `{platform}/authorization/api/v1/decision` by default.
    pub pdp: PlatformServiceConfig,
    /// Register's party lookup; `{platform}/register/api/v1/parties/lookup` by default.
    pub register: PlatformServiceConfig,
    pub cosmos: CosmosConfig,
    pub limits: LimitsConfig,
    pub instance_access: InstanceAccessConfig,
    pub cursors: CursorConfig,
    pub subscription_secrets: SubscriptionSecretsConfig,
    pub server: ServerConfig,
    pub webhooks: WebhookConfig,
    pub delivery: DeliveryConfig,
    /// `altinn-events import`: copying Altinn Events' database.
    pub import: ImportConfig,
    pub telemetry: TelemetryConfig,
    pub localtest: LocalTestConfig,
    pub console: ConsoleConfig,
}

/// `[console]`: the webhook console at `/events/console`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve it (on API instances). It calls the public API only, with a
    /// token the user gives it, so it grants nothing by itself; switch it
    /// off where no one should be offered a page.
    pub enabled: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[telemetry]`: OpenTelemetry traces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An OTLP/HTTP collector (e.g. `http://otel-collector:4318`); spans go
    /// to `{otlp_endpoint}/v1/traces` as OTLP JSON. Off when not set. Trace
    /// context (W3C `traceparent`) is taken from requests and passed on to
    /// the PDP, Register and OIDC either way, and trace ids are logged.
    pub otlp_endpoint: Option<Url>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            role: Role::All,
            secrets_dir: None,
            secrets_reload_seconds: 60,
            source_file: None,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 5080)),
            platform_url: None,
            log_format: None,
            log_filter: "info".to_owned(),
            shutdown_grace_seconds: 20,
            auth: AuthConfig::default(),
            pdp: PlatformServiceConfig::default(),
            register: PlatformServiceConfig::default(),
            cosmos: CosmosConfig::default(),
            limits: LimitsConfig::default(),
            instance_access: InstanceAccessConfig::default(),
            cursors: CursorConfig::default(),
            subscription_secrets: SubscriptionSecretsConfig::default(),
            server: ServerConfig::default(),
            webhooks: WebhookConfig::default(),
            delivery: DeliveryConfig::default(),
            import: ImportConfig::default(),
            telemetry: TelemetryConfig::default(),
            localtest: LocalTestConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Clock skew tolerated on `exp` / `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Minimum time between two JWKS refetches triggered by an unknown `kid`.
    pub jwks_refetch_min_interval_seconds: u64,
    /// Directory of `{issuer}.pem` certificates (or public keys) that verify
    /// platform access tokens. Dev mode writes its own when unset.
    pub access_token_certs_dir: Option<PathBuf>,
    /// Timeout for OIDC discovery and JWKS requests, in milliseconds.
    pub http_timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            leeway_seconds: 30,
            jwks_refetch_min_interval_seconds: 60,
            access_token_certs_dir: None,
            http_timeout_ms: 5000,
        }
    }
}

/// An Altinn platform service this service calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformServiceConfig {
    /// The endpoint; a default under `platform_url` when unset.
    pub url: Option<Url>,
    /// Sent as `Ocp-Apim-Subscription-Key`.
    pub subscription_key: Option<SecretString>,
    pub timeout_ms: u64,
    /// Requests in flight from one instance at most; more wait up to
    /// `timeout_ms` for a slot, then fail closed (503).
    pub max_concurrent_requests: usize,
    /// The PDP's: how long its circuit breaker stays open after 5 failed
    /// calls in a row (then the next call is a probe). Register has none.
    pub circuit_open_seconds: u64,
}

impl Default for PlatformServiceConfig {
    fn default() -> Self {
        Self {
            url: None,
            subscription_key: None,
            timeout_ms: 2000,
            max_concurrent_requests: 64,
            circuit_open_seconds: 5,
        }
    }
}

/// How the service authenticates to Cosmos DB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CosmosAuth {
    /// The SDK's in-process emulator (dev builds only).
    Emulator,
    /// Account key (`cosmos.key`), for emulators and test accounts.
    Key,
    /// Azure workload identity in AKS (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`, injected by the webhook).
    WorkloadIdentity,
    /// A system- or user-assigned managed identity.
    ManagedIdentity,
    /// The developer's Azure CLI / azd login.
    DeveloperTools,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CosmosConfig {
    pub auth: Option<CosmosAuth>,
    pub endpoint: Option<Url>,
    pub key: Option<SecretString>,
    pub database: String,
    /// The events container: the feeds, the repairer's lease, the store's
    /// generation, the import's progress.
    pub container: String,
    /// The subscriptions container: subscriptions, their delivery states,
    /// the delivery buckets' leases and the instances' presences. Its own
    /// container so that the deliver pods' identity can write there and
    /// only read the events (`infra/modules/cosmos.bicep`).
    pub subscriptions_container: String,
    /// Create the database and containers at start (dev, tests). Production
    /// containers come from `infra/`.
    pub provision: Option<bool>,
    /// Events per feed segment (one logical partition each).
    pub segment_size: u64,
    /// A feed whose writer in this instance takes at least this many
    /// publishes per second is hot: its writer cuts its segments after
    /// `hot_segment_events` events, so that its writes move to a fresh
    /// logical partition (most likely another physical partition) that
    /// often instead of staying on one. 0: never.
    pub hot_feed_events_per_second: u64,
    /// How many events a hot feed's segment takes before its writer seals
    /// it and opens the next.
    pub hot_segment_events: u64,
    /// Container default TTL when provisioning (90 days).
    pub default_ttl_seconds: u32,
    /// Writers seal a segment whose head is older than this, so that no
    /// segment is still written when its first events expire. Default: half
    /// the container's TTL as read at start (never, without a TTL).
    pub segment_close_seconds: Option<u64>,
    /// How often the repairer follows the change feed (0 disables it).
    pub repair_interval_seconds: u64,
    /// Events younger than this are left to their publisher.
    pub repair_grace_seconds: u64,
    /// The one deadline of a publish's storage work: waiting in its feeds'
    /// queues, both appends, and every retry of a transient Cosmos failure
    /// (429, 503, timeouts), the SDK's own included. A publish that has not
    /// stored its event by then answers 503. (Read also under its former
    /// name, `append_retry_deadline_ms`.)
    #[serde(alias = "append_retry_deadline_ms")]
    pub publish_deadline_ms: u64,
    /// The longest one Cosmos DB operation may take, the SDK's retries of
    /// 429s included (its end-to-end timeout): a writer starts an attempt
    /// only when it can end before the publish's deadline.
    pub operation_timeout_ms: u64,
    /// Appends queued per feed in one instance at most; a publish beyond
    /// it is refused with 503 and `Retry-After` before anything is stored.
    pub max_queued_appends: usize,
}

impl Default for CosmosConfig {
    fn default() -> Self {
        Self {
            auth: None,
            endpoint: None,
            key: None,
            database: "events".to_owned(),
            container: "events".to_owned(),
            subscriptions_container: "subscriptions".to_owned(),
            provision: None,
            // A logical partition holds at most 20 GB: 50 000 events of the
            // largest body accepted (256 KiB) stay well below it.
            segment_size: 50_000,
            // docs/capacity.md, "One feed's ceiling": well below a feed's
            // single-partition ceiling at Altinn's partition count.
            hot_feed_events_per_second: 10,
            hot_segment_events: 16,
            default_ttl_seconds: 90 * 24 * 3600,
            segment_close_seconds: None,
            repair_interval_seconds: 10,
            // Well above a publish's deadline.
            repair_grace_seconds: 120,
            // Below the shutdown grace (20 s): a stopping instance outlasts
            // every publish it accepted.
            publish_deadline_ms: 15_000,
            operation_timeout_ms: 5_000,
            max_queued_appends: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// A query page scans at most `size` x this many events (at least 100)
    /// while filling itself with permitted events.
    pub scan_budget_factor: u64,
    /// Long-polling requests one instance holds at once (503 beyond).
    pub max_waiters: usize,
    /// Of those, how many one caller may hold (429 beyond).
    pub max_waiters_per_caller: usize,
    /// Publishes one instance works on at once; more are refused at once
    /// with 503 and `Retry-After` (shed, not queued).
    pub max_publishes_in_flight: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            scan_budget_factor: 10,
            max_waiters: 1000,
            max_waiters_per_caller: 10,
            max_publishes_in_flight: 256,
        }
    }
}

/// Instance access keys (anonymous follow-up of one instance's events).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceAccessConfig {
    /// Key id → secret (`EVENTS__INSTANCE_ACCESS__KEYS__K1=...`). Several
    /// ids verify; `signing_key` signs new keys. Dev mode makes one up when
    /// empty; without keys `serve` does not issue or accept any.
    pub keys: std::collections::HashMap<String, SecretString>,
    pub signing_key: Option<String>,
    /// The ring in one setting instead (a Key Vault secret): `id:secret`
    /// entries separated by white space, the first signs. Not with `keys`.
    pub key_ring: Option<SecretString>,
    /// How long an issued key is valid (30 days).
    pub ttl_seconds: u64,
    /// Anonymous requests per minute from one client address.
    pub rate_per_minute_per_client: u32,
    /// Anonymous requests per minute for one instance.
    pub rate_per_minute_per_instance: u32,
    /// Header that carries the client address when trusted proxies sit in
    /// front (e.g. `x-forwarded-for`). Unset: the TCP peer.
    pub client_ip_header: Option<String>,
    /// How many proxies in front append to that header: the address
    /// `trusted_proxy_hops` entries from its right counts (what a client
    /// writes on the left is not trusted).
    pub trusted_proxy_hops: usize,
}

impl Default for InstanceAccessConfig {
    fn default() -> Self {
        Self {
            keys: std::collections::HashMap::new(),
            signing_key: None,
            key_ring: None,
            ttl_seconds: 30 * 24 * 3600,
            rate_per_minute_per_client: 60,
            rate_per_minute_per_instance: 120,
            client_ip_header: None,
            trusted_proxy_hops: 1,
        }
    }
}

/// Pushes to subscribers' endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Allow `http` and loopback or private addresses as endpoints (dev:
    /// `true`, to push to `http://127.0.0.1:...`; serve: `false`).
    pub allow_private_endpoints: Option<bool>,
    /// How long a push waits for the endpoint's answer.
    pub timeout_seconds: u64,
    /// At most this much of an endpoint's answer is read.
    pub max_response_bytes: usize,
    /// Hosts (and their subdomains) whose sources are apps': a subscription
    /// with such a source filter is an app subscription.
    pub apps_domains: Vec<String>,
    /// Waits between validation attempts of a new subscription; after the
    /// last one it is `failing` until validated again.
    pub validation_retry_seconds: Vec<u64>,
    /// How often each instance looks for validation attempts that are due
    /// and that no instance has claimed (an instance that made them died);
    /// its own attempts it runs when they are due, without waiting for this.
    pub validation_sweep_seconds: u64,
    /// Ports an endpoint may use (unless `allow_private_endpoints`): the
    /// chart renders the same list into the deliver pods' network policy.
    pub allowed_ports: Vec<u16>,
    /// Subscriptions one consumer may hold (`400` beyond).
    pub max_subscriptions_per_consumer: usize,
    /// Validation pushes one instance runs at once, and of those, for one
    /// consumer (the rest wait their turn, unclaimed).
    pub max_concurrent_validations: usize,
    pub max_validations_per_consumer: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private_endpoints: None,
            timeout_seconds: 45,
            max_response_bytes: 64 * 1024,
            apps_domains: vec!["apps.altinn.no".into(), "apps.tt02.altinn.no".into(), "apps.local.altinn.cloud".into()],
            validation_retry_seconds: vec![1, 5, 30, 120, 600],
            validation_sweep_seconds: 30,
            allowed_ports: vec![443],
            max_subscriptions_per_consumer: 100,
            max_concurrent_validations: 64,
            max_validations_per_consumer: 2,
        }
    }
}

/// Push delivery of subscriptions' events.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Run deliverers in this instance.
    pub enabled: bool,
    /// Subscriptions are divided among instances in this many buckets.
    pub buckets: u64,
    /// An instance's hold on a bucket lasts this long unless renewed (a
    /// dead instance's subscriptions move on within about this).
    pub lease_seconds: u64,
    /// Waits after the 1st, 2nd, ... failed push of an event (Altinn's);
    /// after the last, the subscription is disabled.
    pub retry_schedule_seconds: Vec<u64>,
    /// Events read per page of a subscription's feed.
    pub page_size: usize,
    /// Checkpoints are stored at most this far apart while delivering.
    pub flush_ms: u64,
    /// Pushes in flight at once per instance (validation pushes included).
    pub max_concurrent_pushes: usize,
    /// Of those, for one consumer, and to one endpoint host (and port).
    pub max_pushes_per_consumer: usize,
    pub max_pushes_per_host: usize,
    /// How often the change feed is read (appends and changes made by other
    /// instances) while it has changes.
    pub change_feed_poll_ms: u64,
    /// While it has none, the wait doubles after each empty read up to this
    /// (at least `change_feed_poll_ms`): the idle cost per pod, and how late
    /// the first change after a quiet spell may be seen.
    pub change_feed_idle_poll_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            buckets: 16,
            lease_seconds: 30,
            retry_schedule_seconds: vec![10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200, 43200],
            page_size: 50,
            flush_ms: 1000,
            max_concurrent_pushes: 256,
            max_pushes_per_consumer: 16,
            max_pushes_per_host: 64,
            change_feed_poll_ms: 250,
            change_feed_idle_poll_ms: 2000,
        }
    }
}

/// `altinn-events import` (docs/migration.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportConfig {
    /// The source database's password, when the `--source` URL has none
    /// (a secret file `import__source_password`).
    pub source_password: Option<SecretString>,
    /// Event rows read (and appended) at a time, and their CloudEvents'
    /// bytes at most.
    pub batch_rows: usize,
    pub batch_bytes: usize,
    /// A row is imported once registered at least this long ago (by the
    /// database's clock): rows committed out of order have settled by
    /// then (Altinn's own readers wait 30 s).
    pub settle_seconds: u64,
    /// Missing numbers below imported rows are looked at again this long
    /// (a transaction that commits late).
    pub gap_window_seconds: u64,
    /// `--follow`: the wait when caught up, and how often subscriptions
    /// are compared with Altinn's.
    pub poll_ms: u64,
    pub subscription_sync_seconds: u64,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            source_password: None,
            batch_rows: 2000,
            batch_bytes: 16 * 1024 * 1024,
            settle_seconds: 30,
            gap_window_seconds: 600,
            poll_ms: 2000,
            subscription_sync_seconds: 30,
        }
    }
}

/// Connection limits of the HTTP listener (defaults a proxy would use).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// A request head (or a new connection's first request) must arrive
    /// within this many seconds of its first byte (of the connection).
    pub header_read_timeout_seconds: u64,
    /// A request body must arrive within this many seconds of its head (408).
    pub body_read_timeout_seconds: u64,
    /// A keep-alive connection with no request running is closed after this
    /// many seconds (keep it above the proxy's idle timeout).
    pub idle_timeout_seconds: u64,
    /// Open connections per instance; one more is answered 503.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 30,
            idle_timeout_seconds: 60,
            max_connections: 4096,
        }
    }
}

/// The keys that seal the cursors of `next` links (encrypted, bound to
/// their feed). Every instance of a deployment needs the same ring.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CursorConfig {
    /// Key id → secret (`EVENTS__CURSORS__KEYS__C1=...`). Several ids open
    /// cursors; `signing_key` seals new ones. Dev mode makes one up when
    /// empty; `serve` requires at least one.
    pub keys: std::collections::HashMap<String, SecretString>,
    pub signing_key: Option<String>,
    /// The ring in one setting instead (a Key Vault secret): `id:secret`
    /// entries separated by white space, the first seals. Not with `keys`.
    pub key_ring: Option<SecretString>,
}

/// The keys that seal each subscription's webhook signing secrets in the
/// store (encrypted and bound to their subscription, never in plain text).
/// Every instance, and the import, needs the same ring; rotate it like the
/// cursors' (a new first key seals, the old ones still open).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionSecretsConfig {
    /// Key id → secret (`EVENTS__SUBSCRIPTION_SECRETS__KEYS__W1=...`);
    /// `signing_key` seals new ones. Dev mode makes one up when empty;
    /// `serve` and the import require one.
    pub keys: std::collections::HashMap<String, SecretString>,
    pub signing_key: Option<String>,
    /// The ring in one setting instead (a Key Vault secret): `id:secret`
    /// entries separated by white space, the first seals. Not with `keys`.
    pub key_ring: Option<SecretString>,
}

/// Settings of the dev-mode stand-ins (ignored by `serve`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LocalTestConfig {
    /// Demo dataset (TOML); the embedded `dev/dataset.toml` when unset.
    pub dataset: Option<PathBuf>,
    /// PKCS#8 PEM RSA key that signs local tokens; generated at start when unset.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Read(#[from] Box<figment::Error>),
    #[error("invalid setting `{setting}` (env {env}): {message}")]
    Invalid { setting: &'static str, env: &'static str, message: String },
}

fn invalid(setting: &'static str, env: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting, env, message: message.into() }
}

/// The names a key ring's settings go by, for error messages.
struct RingNames {
    section: &'static str,
    key_ring: (&'static str, &'static str),
    signing_key: (&'static str, &'static str),
    /// Several keys without a signing one only verify (instance access
    /// keys); otherwise that is an error (cursors must be sealed).
    verify_only: bool,
}

const CURSOR_RING: RingNames = RingNames {
    section: "cursors",
    key_ring: ("cursors.key_ring", "EVENTS__CURSORS__KEY_RING"),
    signing_key: ("cursors.signing_key", "EVENTS__CURSORS__SIGNING_KEY"),
    verify_only: false,
};

const SUBSCRIPTION_SECRET_RING: RingNames = RingNames {
    section: "subscription_secrets",
    key_ring: ("subscription_secrets.key_ring", "EVENTS__SUBSCRIPTION_SECRETS__KEY_RING"),
    signing_key: ("subscription_secrets.signing_key", "EVENTS__SUBSCRIPTION_SECRETS__SIGNING_KEY"),
    verify_only: false,
};

const INSTANCE_ACCESS_RING: RingNames = RingNames {
    section: "instance_access",
    key_ring: ("instance_access.key_ring", "EVENTS__INSTANCE_ACCESS__KEY_RING"),
    signing_key: ("instance_access.signing_key", "EVENTS__INSTANCE_ACCESS__SIGNING_KEY"),
    verify_only: true,
};

/// A key ring from its one-string form or from the map and signing id
/// (one of them; the signing id must name a key; several keys need one
/// unless they may only verify).
fn ring(
    keys: &std::collections::HashMap<String, SecretString>,
    signing: Option<&String>,
    one: Option<&SecretString>,
    names: &RingNames,
) -> Result<KeyRing, ConfigError> {
    use secrecy::ExposeSecret;
    let section = names.section;
    let (setting, env) = names.key_ring;
    if let Some(one) = one {
        if !keys.is_empty() || signing.is_some() {
            return Err(invalid(setting, env, format!("set either {section}.key_ring or {section}.keys, not both")));
        }
        return KeyRing::parse(one.expose_secret()).map_err(|m| invalid(setting, env, m));
    }
    let keys: std::collections::HashMap<String, SecretString> =
        keys.iter().map(|(id, s)| (id.to_ascii_lowercase(), s.clone())).collect();
    let (setting, env) = names.signing_key;
    let signing = match signing {
        Some(id) if keys.contains_key(&id.to_ascii_lowercase()) => Some(id.to_ascii_lowercase()),
        Some(_) => return Err(invalid(setting, env, format!("names no key in {section}.keys"))),
        None if keys.len() == 1 => keys.keys().next().cloned(),
        None if keys.is_empty() || names.verify_only => None,
        None => return Err(invalid(setting, env, format!("required when {section}.keys holds several keys"))),
    };
    Ok(KeyRing { signing, keys })
}

impl Config {
    /// Defaults → optional TOML file → `EVENTS__*` environment → the files
    /// of `secrets_dir`, when set.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_secrets(file, None)
    }

    /// As [`Config::load`], with the files of `secrets_dir` when given
    /// (else of the configured one).
    pub fn load_with_secrets(file: Option<&Path>, secrets_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("EVENTS__").split("__"));
        let dir: Option<PathBuf> = match secrets_dir {
            Some(dir) => Some(dir.to_owned()),
            None => figment.extract_inner("secrets_dir").ok().flatten().filter(|d: &PathBuf| !d.as_os_str().is_empty()),
        };
        if let Some(dir) = dir {
            let files = crate::secrets::read_dir(&dir).map_err(|message| ConfigError::Invalid {
                setting: "secrets_dir",
                env: "EVENTS__SECRETS_DIR",
                message,
            })?;
            figment = figment.merge(figment::providers::Serialized::defaults(crate::secrets::as_dict(&files)));
        }
        let mut config = figment.extract::<Config>().map_err(|e| ConfigError::Read(Box::new(e)))?;
        config.source_file = file.map(Path::to_path_buf);
        Ok(config)
    }

    /// The cursor key ring, from `cursors.key_ring` or `cursors.keys`.
    pub fn cursor_ring(&self) -> Result<KeyRing, ConfigError> {
        ring(&self.cursors.keys, self.cursors.signing_key.as_ref(), self.cursors.key_ring.as_ref(), &CURSOR_RING)
    }

    /// The ring that seals stored webhook secrets, from
    /// `subscription_secrets.key_ring` or `subscription_secrets.keys`.
    pub fn subscription_secret_ring(&self) -> Result<KeyRing, ConfigError> {
        ring(
            &self.subscription_secrets.keys,
            self.subscription_secrets.signing_key.as_ref(),
            self.subscription_secrets.key_ring.as_ref(),
            &SUBSCRIPTION_SECRET_RING,
        )
    }

    /// The subscription secret ring, which storing or pushing subscriptions
    /// (every role of `serve`, and the import) cannot do without.
    fn required_subscription_secret_ring(&self, what: &str) -> Result<KeyRing, ConfigError> {
        let ring = self.subscription_secret_ring()?;
        if ring.keys.is_empty() {
            return Err(invalid(
                "subscription_secrets.key_ring",
                "EVENTS__SUBSCRIPTION_SECRETS__KEY_RING (or EVENTS__SUBSCRIPTION_SECRETS__KEYS__<ID>)",
                format!(
                    "required {what}: at least one secret that seals the subscriptions' webhook signing secrets (the same on every instance and for the import)"
                ),
            ));
        }
        Ok(ring)
    }

    /// The instance access key ring, from `instance_access.key_ring` or
    /// `instance_access.keys`.
    pub fn instance_access_ring(&self) -> Result<KeyRing, ConfigError> {
        ring(
            &self.instance_access.keys,
            self.instance_access.signing_key.as_ref(),
            self.instance_access.key_ring.as_ref(),
            &INSTANCE_ACCESS_RING,
        )
    }

    /// Decides mode-dependent defaults and parses what is parsed once (parse,
    /// don't validate): the settings the service starts with, or the first
    /// thing that is wrong, named by its setting and variable.
    pub fn finalize(mut self, mode: Mode) -> Result<Settings, ConfigError> {
        self.decide_for(mode)?;
        self.check_store()?;
        let instance_access_ring = self.instance_access_ring()?;
        let cursor_ring = self.cursor_ring()?;
        if mode == Mode::Serve && self.role.serves_api() && cursor_ring.keys.is_empty() {
            return Err(invalid(
                "cursors.key_ring",
                "EVENTS__CURSORS__KEY_RING (or EVENTS__CURSORS__KEYS__<ID>)",
                "required in serve mode for the API: at least one secret that seals the cursors of next links (the same on every instance)",
            ));
        }
        let subscription_secret_ring = match mode {
            Mode::Serve => self.required_subscription_secret_ring("in serve mode")?,
            _ => self.subscription_secret_ring()?,
        };
        self.check_limits()?;
        Ok(Settings {
            log_format: self.log_format.unwrap_or(LogFormat::Json),
            allow_private_endpoints: self.webhooks.allow_private_endpoints.unwrap_or(false),
            cursor_ring,
            instance_access_ring,
            subscription_secret_ring,
            config: self,
        })
    }

    /// The defaults that depend on the mode, and what serve mode requires.
    fn decide_for(&mut self, mode: Mode) -> Result<(), ConfigError> {
        if self.log_format.is_none() {
            self.log_format = Some(match mode {
                Mode::Serve => LogFormat::Json,
                Mode::Dev => LogFormat::Pretty,
            });
        }
        match mode {
            Mode::Dev => {
                self.cosmos.auth.get_or_insert(CosmosAuth::Emulator);
                self.cosmos.provision.get_or_insert(true);
                self.webhooks.allow_private_endpoints.get_or_insert(true);
            }
            Mode::Serve => {
                if self.platform_url.is_none() {
                    return Err(invalid(
                        "platform_url",
                        "EVENTS__PLATFORM_URL",
                        "required in serve mode, e.g. https://platform.altinn.no",
                    ));
                }
                if self.cosmos.auth == Some(CosmosAuth::Emulator) {
                    return Err(invalid(
                        "cosmos.auth",
                        "EVENTS__COSMOS__AUTH",
                        "the in-process emulator is for dev mode only",
                    ));
                }
                self.cosmos.auth.get_or_insert(CosmosAuth::WorkloadIdentity);
                self.cosmos.provision.get_or_insert(false);
                self.webhooks.allow_private_endpoints.get_or_insert(false);
                if self.auth.access_token_certs_dir.is_none() {
                    return Err(invalid(
                        "auth.access_token_certs_dir",
                        "EVENTS__AUTH__ACCESS_TOKEN_CERTS_DIR",
                        "required in serve mode: a directory of {issuer}.pem certificates",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The store: how it is reached, and its names and segment size.
    fn check_store(&self) -> Result<(), ConfigError> {
        let auth = self.cosmos.auth.unwrap_or(CosmosAuth::Emulator);
        if auth != CosmosAuth::Emulator && self.cosmos.endpoint.is_none() {
            return Err(invalid(
                "cosmos.endpoint",
                "EVENTS__COSMOS__ENDPOINT",
                "required unless cosmos.auth = emulator",
            ));
        }
        if auth == CosmosAuth::Key && self.cosmos.key.is_none() {
            return Err(invalid("cosmos.key", "EVENTS__COSMOS__KEY", "required when cosmos.auth = key"));
        }
        if auth == CosmosAuth::Emulator && !cfg!(feature = "dev") {
            return Err(invalid(
                "cosmos.auth",
                "EVENTS__COSMOS__AUTH",
                "this build has no in-process emulator (built without feature `dev`)",
            ));
        }
        if self.cosmos.segment_size == 0 {
            return Err(invalid("cosmos.segment_size", "EVENTS__COSMOS__SEGMENT_SIZE", "must be at least 1"));
        }
        if self.cosmos.hot_feed_events_per_second > 0 && self.cosmos.hot_segment_events == 0 {
            return Err(invalid(
                "cosmos.hot_segment_events",
                "EVENTS__COSMOS__HOT_SEGMENT_EVENTS",
                "must be at least 1 (or cosmos.hot_feed_events_per_second 0: never cut)",
            ));
        }
        self.check_attempt_fits()?;
        if self.cosmos.publish_deadline_ms >= self.shutdown_grace_seconds.saturating_mul(1000) {
            return Err(invalid(
                "cosmos.publish_deadline_ms",
                "EVENTS__COSMOS__PUBLISH_DEADLINE_MS",
                "below shutdown_grace_seconds: a stopping instance must outlast the publishes it accepted",
            ));
        }
        self.check_container_names()
    }

    /// The database and both containers are named, and the containers
    /// differ (the deliver pods write only the subscriptions container;
    /// `move-subscriptions` would delete what it copied onto itself).
    fn check_container_names(&self) -> Result<(), ConfigError> {
        if self.cosmos.database.is_empty()
            || self.cosmos.container.is_empty()
            || self.cosmos.subscriptions_container.is_empty()
        {
            return Err(invalid(
                "cosmos.database / cosmos.container / cosmos.subscriptions_container",
                "EVENTS__COSMOS__DATABASE / EVENTS__COSMOS__CONTAINER / EVENTS__COSMOS__SUBSCRIPTIONS_CONTAINER",
                "must not be empty",
            ));
        }
        if self.cosmos.subscriptions_container == self.cosmos.container {
            return Err(invalid(
                "cosmos.subscriptions_container",
                "EVENTS__COSMOS__SUBSCRIPTIONS_CONTAINER",
                "must name another container than cosmos.container (the deliver pods write only there)",
            ));
        }
        Ok(())
    }

    /// One Cosmos operation fits in an append's deadline (a writer starts
    /// an attempt only when it ends before it).
    fn check_attempt_fits(&self) -> Result<(), ConfigError> {
        if self.cosmos.operation_timeout_ms < 1000
            || self.cosmos.operation_timeout_ms >= self.cosmos.publish_deadline_ms
        {
            return Err(invalid(
                "cosmos.operation_timeout_ms",
                "EVENTS__COSMOS__OPERATION_TIMEOUT_MS",
                "at least 1000, and below cosmos.publish_deadline_ms (an attempt must fit in an append's deadline)",
            ));
        }
        Ok(())
    }

    /// The bounds: each at least what the service can work with.
    fn check_limits(&self) -> Result<(), ConfigError> {
        if self.secrets_reload_seconds == 0 {
            return Err(invalid("secrets_reload_seconds", "EVENTS__SECRETS_RELOAD_SECONDS", "must be at least 1"));
        }
        if self.delivery.buckets == 0 || self.delivery.page_size == 0 || self.delivery.lease_seconds < 3 {
            return Err(invalid(
                "delivery.buckets / delivery.page_size / delivery.lease_seconds",
                "EVENTS__DELIVERY__...",
                "buckets and page_size must be at least 1, lease_seconds at least 3",
            ));
        }
        if self.webhooks.allowed_ports.is_empty() || self.webhooks.allowed_ports.contains(&0) {
            return Err(invalid(
                "webhooks.allowed_ports",
                "EVENTS__WEBHOOKS__ALLOWED_PORTS",
                "at least one port, each 1 to 65535 (e.g. [443])",
            ));
        }
        let at_least_one = [
            (
                self.webhooks.max_subscriptions_per_consumer,
                "webhooks.max_subscriptions_per_consumer",
                "EVENTS__WEBHOOKS__MAX_SUBSCRIPTIONS_PER_CONSUMER",
            ),
            (
                self.webhooks.max_concurrent_validations,
                "webhooks.max_concurrent_validations",
                "EVENTS__WEBHOOKS__MAX_CONCURRENT_VALIDATIONS",
            ),
            (
                self.webhooks.max_validations_per_consumer,
                "webhooks.max_validations_per_consumer",
                "EVENTS__WEBHOOKS__MAX_VALIDATIONS_PER_CONSUMER",
            ),
            (
                self.delivery.max_concurrent_pushes,
                "delivery.max_concurrent_pushes",
                "EVENTS__DELIVERY__MAX_CONCURRENT_PUSHES",
            ),
            (
                self.delivery.max_pushes_per_consumer,
                "delivery.max_pushes_per_consumer",
                "EVENTS__DELIVERY__MAX_PUSHES_PER_CONSUMER",
            ),
            (
                self.delivery.max_pushes_per_host,
                "delivery.max_pushes_per_host",
                "EVENTS__DELIVERY__MAX_PUSHES_PER_HOST",
            ),
        ];
        if let Some((_, name, env)) = at_least_one.into_iter().find(|(v, _, _)| *v == 0) {
            return Err(invalid(name, env, "must be at least 1"));
        }
        if self.pdp.circuit_open_seconds == 0 {
            return Err(invalid("pdp.circuit_open_seconds", "EVENTS__PDP__CIRCUIT_OPEN_SECONDS", "must be at least 1"));
        }
        if self.webhooks.validation_sweep_seconds == 0 {
            return Err(invalid(
                "webhooks.validation_sweep_seconds",
                "EVENTS__WEBHOOKS__VALIDATION_SWEEP_SECONDS",
                "must be at least 1",
            ));
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(invalid("limits.max_body_bytes", "EVENTS__LIMITS__MAX_BODY_BYTES", "must be at least 1024"));
        }
        Ok(())
    }

    /// Checks what `altinn-events import` needs: the store the pods use
    /// (not the in-process emulator, which no other process sees).
    pub fn finalize_import(mut self) -> Result<Settings, ConfigError> {
        self.log_format.get_or_insert(LogFormat::Pretty);
        self.cosmos.auth.get_or_insert(CosmosAuth::WorkloadIdentity);
        self.cosmos.provision.get_or_insert(false);
        let auth = self.cosmos.auth.unwrap_or(CosmosAuth::WorkloadIdentity);
        if auth == CosmosAuth::Emulator {
            return Err(invalid(
                "cosmos.auth",
                "EVENTS__COSMOS__AUTH",
                "the import writes to the store the pods use; the in-process emulator is no one else's",
            ));
        }
        if self.cosmos.endpoint.is_none() {
            return Err(invalid("cosmos.endpoint", "EVENTS__COSMOS__ENDPOINT", "required for the import"));
        }
        if auth == CosmosAuth::Key && self.cosmos.key.is_none() {
            return Err(invalid("cosmos.key", "EVENTS__COSMOS__KEY", "required when cosmos.auth = key"));
        }
        if self.cosmos.segment_size == 0 {
            return Err(invalid("cosmos.segment_size", "EVENTS__COSMOS__SEGMENT_SIZE", "must be at least 1"));
        }
        self.check_attempt_fits()?;
        self.check_container_names()?;
        if self.import.batch_rows == 0 || self.import.batch_bytes < 1024 * 1024 {
            return Err(invalid(
                "import.batch_rows / import.batch_bytes",
                "EVENTS__IMPORT__BATCH_ROWS / EVENTS__IMPORT__BATCH_BYTES",
                "at least 1 row and 1 MiB",
            ));
        }
        let subscription_secret_ring = self.required_subscription_secret_ring("for the import")?;
        Ok(Settings {
            log_format: self.log_format.unwrap_or(LogFormat::Pretty),
            allow_private_endpoints: false,
            cursor_ring: KeyRing::default(),
            instance_access_ring: KeyRing::default(),
            subscription_secret_ring,
            config: self,
        })
    }

    /// The platform base URL with a trailing slash, so that `join` appends.
    pub fn platform_base(&self) -> Option<Url> {
        self.platform_url.clone().map(|mut u| {
            if !u.path().ends_with('/') {
                let p = format!("{}/", u.path());
                u.set_path(&p);
            }
            u
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_requires_platform_url_and_names_it() {
        let err = Config::default().finalize(Mode::Serve).unwrap_err().to_string();
        assert!(err.contains("EVENTS__PLATFORM_URL"), "{err}");
    }

    #[test]
    fn serve_rejects_emulator() {
        let c = Config {
            platform_url: Some("https://platform.altinn.no".parse().unwrap()),
            cosmos: CosmosConfig { auth: Some(CosmosAuth::Emulator), ..CosmosConfig::default() },
            ..Config::default()
        };
        let err = c.finalize(Mode::Serve).unwrap_err().to_string();
        assert!(err.contains("cosmos.auth"), "{err}");
    }

    #[test]
    fn every_role_and_the_import_need_the_ring_that_seals_webhook_secrets() {
        let serving = |role: Role| Config {
            platform_url: Some("https://platform.altinn.no".parse().unwrap()),
            cosmos: CosmosConfig {
                endpoint: Some("https://x.documents.azure.com/".parse().unwrap()),
                ..CosmosConfig::default()
            },
            cursors: CursorConfig {
                key_ring: Some(SecretString::from("c1:cursor-secret-0123456789")),
                ..CursorConfig::default()
            },
            auth: AuthConfig { access_token_certs_dir: Some(std::env::temp_dir()), ..AuthConfig::default() },
            role,
            ..Config::default()
        };
        for role in [Role::All, Role::Api, Role::Deliver] {
            let err = serving(role).finalize(Mode::Serve).unwrap_err().to_string();
            assert!(err.contains("subscription_secrets.key_ring"), "{role:?}: {err}");
            let mut c = serving(role);
            c.subscription_secrets.key_ring = Some(SecretString::from("w1:webhook-secret-0123456789"));
            let settings = c.finalize(Mode::Serve).unwrap();
            assert_eq!(settings.subscription_secret_ring.signing.as_deref(), Some("w1"));
        }
        let import = Config { cosmos: serving(Role::All).cosmos, ..Config::default() };
        let err = import.finalize_import().unwrap_err().to_string();
        assert!(err.contains("subscription_secrets.key_ring") && err.contains("import"), "{err}");
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail fixes the closure's error type")]
    fn env_nesting_and_bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTS__COSMOS__SEGMENT_SIZE", "4");
            jail.set_env("EVENTS__PDP__TIMEOUT_MS", "150");
            let c = Config::load(None).unwrap();
            assert_eq!(c.cosmos.segment_size, 4);
            assert_eq!(c.pdp.timeout_ms, 150);
            // Lists as the Helm chart writes them.
            jail.set_env("EVENTS__DELIVERY__RETRY_SCHEDULE_SECONDS", "[1, 2, 3]");
            assert_eq!(Config::load(None).unwrap().delivery.retry_schedule_seconds, [1, 2, 3]);
            jail.set_env("EVENTS__COSMOS__SEGMENT_SIZE", "many");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("cosmos.segment_size"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail fixes the closure's error type")]
    fn the_publish_deadline_is_read_under_its_former_name_and_fits_in_the_grace() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTS__COSMOS__APPEND_RETRY_DEADLINE_MS", "9000");
            let c = Config::load(None).unwrap();
            assert_eq!(c.cosmos.publish_deadline_ms, 9000);
            assert!(c.clone().finalize(Mode::Dev).is_ok());
            jail.set_env("EVENTS__SHUTDOWN_GRACE_SECONDS", "9");
            let err = Config::load(None).unwrap().finalize(Mode::Dev).unwrap_err().to_string();
            assert!(err.contains("EVENTS__COSMOS__PUBLISH_DEADLINE_MS"), "{err}");
            jail.set_env("EVENTS__SHUTDOWN_GRACE_SECONDS", "20");
            jail.set_env("EVENTS__COSMOS__OPERATION_TIMEOUT_MS", "9000");
            let err = Config::load(None).unwrap().finalize(Mode::Dev).unwrap_err().to_string();
            assert!(err.contains("EVENTS__COSMOS__OPERATION_TIMEOUT_MS"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail fixes the closure's error type")]
    fn secrets_do_not_debug_print() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTS__PDP__SUBSCRIPTION_KEY", "very-secret-value");
            let c = Config::load(None).unwrap();
            assert!(!format!("{c:?}").contains("very-secret-value"));
            Ok(())
        });
    }
}
