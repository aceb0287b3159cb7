//! Altinn Events' PostgreSQL database, read only: the event rows
//! (`events.events`) in `sequenceno` order and the subscriptions
//! (`events.subscription`), as Altinn's migrations (`src/Events/Migration`,
//! v0.21 on) built them. Platform-client layer of the importer.
//!
//! Invariants it keeps:
//! - **Bounded memory**: a read of events stops at `limit` rows or
//!   `max_bytes` of CloudEvent text, whichever comes first; a row larger
//!   than `max_row_bytes` is not transferred at all (it comes back without
//!   its CloudEvent, to be skipped).
//! - **The database's clock** decides whether a row is settled (registered
//!   at least `settle` ago): the importer compares nothing with its own.
//! - TLS as the URL's `sslmode` says (Azure Database for PostgreSQL wants
//!   `require`), verified against the platform's roots; the password may
//!   come apart from the URL (a secret file).

use std::time::Duration;

use futures::{StreamExt, pin_mut};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the source URL is not a PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("TLS settings")]
    Tls(#[source] rustls::Error),
    #[error("connecting to the source database")]
    Connect(#[source] tokio_postgres::Error),
    #[error("querying the source database ({0})")]
    Query(&'static str, #[source] tokio_postgres::Error),
}

/// One row of `events.events`.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub sequenceno: u64,
    /// `registeredtime` in Unix microseconds (`None` for a row without one).
    pub registered_us: Option<i64>,
    /// Registered at least `settle` ago, by the database's clock.
    pub settled: bool,
    /// Registered within the gap window (a gap just before it may still fill).
    pub recent: bool,
    /// The CloudEvent as text; `None` when larger than `max_row_bytes`.
    pub cloudevent: Option<String>,
    pub bytes: usize,
}

/// One row of `events.subscription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub id: u64,
    pub resourcefilter: Option<String>,
    pub sourcefilter: Option<String>,
    pub subjectfilter: Option<String>,
    pub typefilter: Option<String>,
    pub consumer: String,
    pub endpointurl: String,
    pub createdby: String,
    pub validated: bool,
    /// `time` in Unix microseconds.
    pub created_us: i64,
    pub includesubunits: bool,
}

/// How event reads are bounded and judged.
#[derive(Debug, Clone, Copy)]
pub struct ReadBounds {
    pub limit: usize,
    pub max_bytes: usize,
    pub max_row_bytes: usize,
    pub settle: Duration,
    pub gap_window: Duration,
}

pub struct AltinnDb {
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for AltinnDb {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

const EVENT_COLUMNS: &str = "e.sequenceno, \
    (extract(epoch from e.registeredtime) * 1000000)::bigint, \
    coalesce(e.registeredtime <= now() - make_interval(secs => $2::float8), true), \
    coalesce(e.registeredtime > now() - make_interval(secs => $3::float8), false), \
    CASE WHEN octet_length(e.cloudevent::text) > $4::bigint THEN NULL ELSE e.cloudevent::text END, \
    octet_length(e.cloudevent::text)::bigint";

impl AltinnDb {
    /// Connects to `url` (`postgres://user@host:5432/db?sslmode=require`),
    /// with `password` when the URL has none.
    pub async fn connect(url: &str, password: Option<&SecretString>) -> Result<Self, DbError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(DbError::Url)?;
        if config.get_password().is_none()
            && let Some(password) = password
        {
            config.password(password.expose_secret());
        }
        config.application_name("altinn-events import");
        let (client, connection) = if config.get_ssl_mode() == SslMode::Disable {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(DbError::Connect)?;
            (client, tokio::spawn(async move { log_end(connection.await) }))
        } else {
            use rustls_platform_verifier::ConfigVerifierExt;
            let tls = rustls::ClientConfig::with_platform_verifier().map_err(DbError::Tls)?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            let (client, connection) = config.connect(tls).await.map_err(DbError::Connect)?;
            (client, tokio::spawn(async move { log_end(connection.await) }))
        };
        Ok(Self { client, connection })
    }

    /// The highest `sequenceno` (0 for an empty table).
    pub async fn head(&self) -> Result<u64, DbError> {
        let row = self
            .client
            .query_one("SELECT coalesce(max(sequenceno), 0)::bigint FROM events.events", &[])
            .await
            .map_err(|e| DbError::Query("head", e))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Event rows after `after`, in `sequenceno` order, within `bounds`.
    pub async fn events_after(&self, after: u64, bounds: &ReadBounds) -> Result<Vec<EventRow>, DbError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events.events e WHERE e.sequenceno > $1 ORDER BY e.sequenceno LIMIT {}",
            bounds.limit.max(1)
        );
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.events(&sql, &after, bounds).await
    }

    /// Event rows whose `sequenceno` lies in one of `gaps` (`from..=to`),
    /// in `sequenceno` order, within `bounds`.
    pub async fn events_in(&self, gaps: &[(u64, u64)], bounds: &ReadBounds) -> Result<Vec<EventRow>, DbError> {
        if gaps.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<String> = gaps.iter().map(|(from, to)| format!("({from},{to})")).collect();
        // The bounds are numbers this importer made, not input: no injection.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events.events e JOIN (VALUES {}) AS g(lo, hi) \
             ON e.sequenceno BETWEEN g.lo AND g.hi WHERE $1::bigint >= 0 ORDER BY e.sequenceno LIMIT {}",
            pairs.join(","),
            bounds.limit.max(1)
        );
        self.events(&sql, &0i64, bounds).await
    }

    async fn events(&self, sql: &str, first: &i64, bounds: &ReadBounds) -> Result<Vec<EventRow>, DbError> {
        let settle = bounds.settle.as_secs_f64();
        let window = bounds.gap_window.as_secs_f64();
        let max_row = i64::try_from(bounds.max_row_bytes).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 4] = [first, &settle, &window, &max_row];
        let rows = self.client.query_raw(sql, params).await.map_err(|e| DbError::Query("events", e))?;
        pin_mut!(rows);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| DbError::Query("events", e))?;
            let cloudevent: Option<String> = row.get(4);
            let size = usize::try_from(row.get::<_, Option<i64>>(5).unwrap_or(0)).unwrap_or(usize::MAX);
            bytes += cloudevent.as_ref().map_or(0, String::len);
            out.push(EventRow {
                sequenceno: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                registered_us: row.get(1),
                settled: row.get(2),
                recent: row.get(3),
                cloudevent,
                bytes: size,
            });
            // The rest of the result is dropped unread; the next read
            // starts after the last row taken.
            if bytes >= bounds.max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Every subscription, by id.
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionRow>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT id, resourcefilter, sourcefilter, subjectfilter, typefilter, consumer, endpointurl, createdby, \
                 validated, (extract(epoch from \"time\") * 1000000)::bigint, coalesce(includesubunits, false) \
                 FROM events.subscription ORDER BY id",
                &[],
            )
            .await
            .map_err(|e| DbError::Query("subscriptions", e))?;
        Ok(rows
            .iter()
            .map(|r| SubscriptionRow {
                id: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                resourcefilter: r.get(1),
                sourcefilter: r.get(2),
                subjectfilter: r.get(3),
                typefilter: r.get(4),
                consumer: r.get(5),
                endpointurl: r.get(6),
                createdby: r.get(7),
                validated: r.get(8),
                created_us: r.get(9),
                includesubunits: r.get(10),
            })
            .collect())
    }
}

fn log_end(ended: Result<(), tokio_postgres::Error>) {
    if let Err(e) = ended {
        tracing::warn!(error.chain = %crate::telemetry::error_chain(&e), "the source database connection ended");
    }
}
