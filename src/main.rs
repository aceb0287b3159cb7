use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use altinn_events::config::{Config, Mode, Role};
use altinn_events::telemetry;

mod progress;

/// mimalloc: the service allocates and frees many small JSON values per
/// request; glibc's malloc spent a third of the benchmark's CPU on that and
/// fragments its arenas (RSS). See docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Altinn 3 Events on Azure Cosmos DB.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Optional TOML config file (then `EVENTS__*` environment variables).
    #[arg(long, global = true, env = "EVENTS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Production: everything from configuration.
    Serve {
        /// What this instance runs (overrides `role`): `api` (the HTTP API),
        /// `deliver` (push delivery; probes and metrics only), or `all`.
        #[arg(long, value_enum)]
        role: Option<Role>,
    },
    /// Local development: the whole platform on one port, no Azure needed.
    #[cfg(feature = "dev")]
    Dev {
        /// Address to listen on (overrides `listen_addr`).
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Copies a running Altinn Events' history and subscriptions into the
    /// store the pods use, resumably; `--follow` keeps copying new rows;
    /// `--deliver-after` switches push delivery over (docs/migration.md).
    Import {
        /// Altinn Events' PostgreSQL database,
        /// `postgres://user@host:5432/eventsdb?sslmode=require` (the password
        /// may come from `import.source_password` instead).
        #[arg(long, env = "EVENTS_IMPORT_SOURCE")]
        source: String,
        /// Keep importing new rows as Altinn writes them, until stopped.
        #[arg(long, conflicts_with = "deliver_after")]
        follow: bool,
        /// The cut-over: catch up to this `sequenceno` (or `head`: the
        /// table's head once caught up), then push the imported
        /// subscriptions everything after it (Altinn must not push it).
        #[arg(long, value_name = "SEQUENCENO|head")]
        deliver_after: Option<String>,
    },
    /// After a point-in-time restore, or a failover that lost acknowledged
    /// writes: starts the store's next generation, so that cursors issued
    /// before are refused instead of read from positions that now hold other
    /// events (docs/operations.md, "Recovery point").
    BumpGeneration {
        /// Why (kept in the store beside the generation).
        #[arg(long)]
        reason: String,
    },
    /// Upgrading a store from before the subscriptions container: moves
    /// the subscriptions and their delivery states out of the events
    /// container into it, with every instance stopped; resumable (the
    /// service refuses to start until it has finished; docs/deploy.md,
    /// "Upgrading").
    MoveSubscriptions,
    /// Exits 0 when the service at `--url` is live (for container probes).
    Healthcheck {
        /// Default: `/health/live` at the configured `listen_addr` (the
        /// same configuration and environment as `serve`; on 127.0.0.1
        /// when it listens on all addresses).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value_t = 3)]
        timeout_seconds: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Healthcheck { url, timeout_seconds } => healthcheck(cli.config, url, timeout_seconds).await,
        Command::Serve { role } => run(cli.config, Mode::Serve, None, role).await,
        Command::Import { source, follow, deliver_after } => import(cli.config, &source, follow, deliver_after).await,
        Command::BumpGeneration { reason } => bump_generation(cli.config, &reason).await,
        Command::MoveSubscriptions => move_subscriptions(cli.config).await,
        #[cfg(feature = "dev")]
        Command::Dev { addr } => run(cli.config, Mode::Dev, addr, None).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("altinn-events: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(file: Option<PathBuf>, url: Option<String>, timeout_seconds: u64) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url,
        None => {
            let addr = Config::load(file.as_deref())?.listen_addr;
            let ip = if addr.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { addr.ip() };
            format!("http://{}/health/live", SocketAddr::new(ip, addr.port()))
        }
    };
    let url = url.as_str();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(timeout_seconds)).build()?;
    let resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(resp.status().is_success(), "GET {url} answered {}", resp.status());
    Ok(())
}

async fn run(file: Option<PathBuf>, mode: Mode, addr: Option<SocketAddr>, role: Option<Role>) -> anyhow::Result<()> {
    let mut config = Config::load(file.as_deref())?;
    if let Some(addr) = addr {
        config.listen_addr = addr;
    }
    if let Some(role) = role {
        config.role = role;
    }
    let config = config.finalize(mode)?;
    let traces =
        telemetry::init_tracing(config.log_format, &config.log_filter, config.telemetry.otlp_endpoint.as_ref())?;
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    // The probes answer while `start` waits for Cosmos DB; a stop signal
    // then ends the wait (nothing is running yet that needs a grace period).
    // One signal listener for the whole life of the process, so that no
    // signal falls between two.
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let running = tokio::select! {
        running = altinn_events::start(config, mode, listener, Default::default()) => running?,
        () = &mut stop => {
            tracing::info!("shutdown signal received while starting");
            return Ok(());
        }
    };
    #[cfg(feature = "dev")]
    if mode == Mode::Dev {
        print_dev_banner(running.base_url.as_str());
    }
    stop.await;
    tracing::info!("shutdown signal received");
    running.shutdown(grace).await;
    traces.shutdown().await;
    Ok(())
}

async fn import(
    file: Option<PathBuf>,
    source: &str,
    follow: bool,
    deliver_after: Option<String>,
) -> anyhow::Result<()> {
    use altinn_events::import::Until;
    let until = match (follow, deliver_after.as_deref()) {
        (true, _) => Until::Stopped,
        (false, Some("head")) => Until::CutOver(None),
        (false, Some(n)) => {
            Until::CutOver(Some(n.parse().with_context(|| format!("--deliver-after {n}: a sequenceno or `head`"))?))
        }
        (false, None) => Until::CaughtUp,
    };
    let config = Config::load(file.as_deref())?.finalize_import()?;
    let _traces = telemetry::init_tracing(config.log_format, &config.log_filter, None)?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stop signal: the import stops after its batch (start it again to continue)");
        let _ = stop_tx.send(true);
    });
    let display = progress::Display::new();
    let report = altinn_events::import(config, source, until, stop, &|s| display.show(s)).await?;
    display.finish();
    progress::summary(&report);
    Ok(())
}

async fn bump_generation(file: Option<PathBuf>, reason: &str) -> anyhow::Result<()> {
    let config = Config::load(file.as_deref())?.finalize_import()?;
    let _traces = telemetry::init_tracing(config.log_format, &config.log_filter, None)?;
    let generation = altinn_events::bump_generation(&config, reason).await?;
    println!(
        "the store is at generation {generation}: cursors of earlier generations are refused once each instance \
         has read it (within 30 s; restart them to make it at once)"
    );
    Ok(())
}

async fn move_subscriptions(file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(file.as_deref())?.finalize_import()?;
    let _traces = telemetry::init_tracing(config.log_format, &config.log_filter, None)?;
    let moved = altinn_events::move_subscriptions(&config).await?;
    println!(
        "moved to {}: {} subscription documents (tombstones included) and {} delivery states; {} found there \
         already; {} documents deleted from {}. The service can start.",
        config.cosmos.subscriptions_container,
        moved.subscriptions,
        moved.delivery_states,
        moved.copied_before,
        moved.deleted,
        config.cosmos.container
    );
    Ok(())
}

#[cfg(feature = "dev")]
fn print_dev_banner(base: &str) {
    let base = base.trim_end_matches('/');
    println!(
        r#"
altinn-events dev mode: the Events API and a local Altinn platform at {base}

Try it (copy and paste): publish as the app ttd/apps-test, read as user 1337
  TOKEN=$(curl -s '{base}/localtest/token/user?userId=1337&partyId=1337&authLevel=2')
  ACCESS=$(curl -s '{base}/localtest/token/platform?issuer=ttd&app=apps-test')
  curl -s -X POST {base}/events/api/v1/app -H "Authorization: Bearer $TOKEN" -H "PlatformAccessToken: $ACCESS" \
    -H 'Content-Type: application/json' \
    -d '{{"specversion":"1.0","type":"app.instance.created","subject":"/party/1337","source":"https://ttd.apps.altinn.no/ttd/apps-test/instances/1337/6fb3f738-6800-4f29-9f3e-1c66862656cd"}}'
  curl -s -H "Authorization: Bearer $TOKEN" '{base}/events/api/v1/app/party?party=1337&after=0'

More: docs/api.md. Press Ctrl+C to stop.
"#
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
