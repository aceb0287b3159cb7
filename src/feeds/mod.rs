//! The store on Cosmos DB (design: `docs/storage.md`): two containers
//! (events; subscriptions with what delivery writes), three aggregates,
//! each in its own module:
//!
//! - [`events`]: the event feeds ([`FeedStore`]): appends, reads, the
//!   repairer;
//! - [`subscriptions`]: subscriptions and their delivery states;
//! - [`coordination`]: what instances share to divide work and hear of
//!   each other's changes: bucket leases, presences, the change feed;
//!
//! and [`import`], the progress of `altinn-events import`.
//!
//! Storage layer: the only module that uses the Cosmos SDK; no Cosmos type
//! leaves it ([`StoreError`] is the one error of all of it). It imports
//! domain types and configuration only.

pub mod coordination;
mod cosmos;
#[cfg(feature = "dev")]
pub mod emulator;
pub mod events;
pub mod import;
pub mod subscriptions;

use std::time::Instant;

pub use cosmos::Cosmos;
#[cfg(feature = "dev")]
pub use emulator::EmulatorAccount;
pub use events::{
    Appended, Clock, FeedStats, FeedStore, IdSource, ReadPage, RepairReport, Repairer, SegmentKey, StoredEvent,
    StoredOrigins,
};

/// Which container (tests look at what is stored where).
#[cfg(feature = "dev")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredIn {
    Events,
    Subscriptions,
}

/// A build without feature `dev` has no in-process emulator: there is no
/// account to pass, and `cosmos.auth = emulator` is refused.
#[cfg(not(feature = "dev"))]
#[derive(Debug, Clone)]
pub enum EmulatorAccount {}

/// What went wrong in the store, whichever aggregate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Refused for what the configuration says (not a failure to reach
    /// Cosmos DB: trying again cannot help).
    #[error("cosmos configuration: {0}")]
    Config(String),
    #[error("azure identity")]
    Identity(#[source] azure_core::Error),
    #[error("cosmos {operation}")]
    Cosmos {
        operation: &'static str,
        #[source]
        source: azure_data_cosmos::CosmosError,
    },
    #[error("a Cosmos response had no ETag")]
    MissingEtag,
    #[error("a segment head disappeared")]
    HeadVanished,
    #[error("the feed writer stopped")]
    WriterGone,
    #[error("transient failure: {0}")]
    Transient(String),
    #[error("refused: {0}")]
    Rejected(String),
    #[error("event id {id} is already used by another source in this feed")]
    IdTaken { id: String },
    #[error("the feed's append queue is full")]
    Overloaded,
}

impl StoreError {
    /// An SDK error of `operation`, counted in `cosmos_request_errors_total`.
    pub(crate) fn cosmos(operation: &'static str) -> impl FnOnce(azure_data_cosmos::CosmosError) -> Self {
        move |source| {
            let status = source.status();
            let status = if status.is_transport_generated_503() {
                "transport".to_owned()
            } else {
                u16::from(status).to_string()
            };
            metrics::counter!("cosmos_request_errors_total", "operation" => operation, "status" => status).increment(1);
            Self::Cosmos { operation, source }
        }
    }

    /// Whether the caller's input caused it (4xx), as opposed to the store.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::IdTaken { .. } | Self::Rejected(_))
    }

    /// Whether the configuration is wrong in itself: trying again cannot
    /// help.
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}

/// The outcome of a change guarded by the document's ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed<T> {
    Done(T),
    /// Someone else changed (or deleted) it since it was read.
    Stale,
}

/// The RU charge a response reports.
pub(crate) fn charge(headers: &azure_data_cosmos::models::ResponseHeaders) -> Option<f64> {
    headers.request_charge().map(|c| f64::from(*c))
}

/// The container an operation of the store works on, by its name: the
/// subscriptions container's are named for what they touch (a test keeps
/// every name of the store to its container). The RU alert compares each
/// container's spending with its own autoscale maximum. (The label is
/// `cosmos_container`: a PodMonitor's scrape sets `container` to the
/// Kubernetes container's name and would rename ours.)
pub(crate) fn container_of(operation: &str) -> &'static str {
    const SUBSCRIPTIONS: [&str; 5] = ["subscription", "delivery_", "bucket_", "instance", "change_feed_subscriptions"];
    if SUBSCRIPTIONS.iter().any(|p| operation.starts_with(p)) { "subscriptions" } else { "events" }
}

/// Records one Cosmos round trip: latency and request charge per kind
/// (and its container).
pub(crate) fn observe(kind: &'static str, started: Instant, charge: Option<f64>) {
    let container = container_of(kind);
    metrics::histogram!("cosmos_request_duration_seconds", "operation" => kind, "cosmos_container" => container)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("cosmos_requests_total", "operation" => kind, "cosmos_container" => container).increment(1);
    if let Some(ru) = charge {
        metrics::histogram!("cosmos_request_charge_ru", "operation" => kind, "cosmos_container" => container)
            .record(ru);
    }
    crate::telemetry::cosmos_request(kind, started.elapsed(), charge);
}

/// Counts the 429s Cosmos DB answered, per SDK operation (`create_item`,
/// `execute_transactional_batch`, `query_items`, ...), in
/// `cosmos_throttled_requests_total`: the ones the SDK waited out and sent
/// again by itself (its throttle retry honours `x-ms-retry-after-ms`), which
/// no response the store sees reports, as well as the last one of an
/// operation that gave up (also in `cosmos_request_errors_total{status="429"}`).
/// The SDK calls it once per operation, with every attempt's status; under
/// a retry storm it keeps a count per run of equal statuses.
pub(crate) struct ThrottleCounter;

impl azure_data_cosmos::diagnostics::DiagnosticsHandler for ThrottleCounter {
    fn handle(
        &self,
        diagnostics: &azure_data_cosmos::diagnostics::DiagnosticsContext,
        _: &azure_core::http::Context<'_>,
    ) {
        let throttled = match diagnostics.compaction() {
            Some(compacted) => compacted.runs.iter().filter(|r| r.status.is_throttled()).map(|r| r.count).sum(),
            None => diagnostics.requests().iter().filter(|r| r.status().is_throttled()).count(),
        };
        if throttled > 0 {
            let operation = diagnostics.operation_name().unwrap_or("other").to_owned();
            metrics::counter!("cosmos_throttled_requests_total", "operation" => operation).increment(throttled as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The snake_case string literals of a source file's code (not its
    /// tests or comments): the operation names it records, among others.
    fn names_in(source: &str) -> Vec<String> {
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut names = Vec::new();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for part in line.split('"').skip(1).step_by(2) {
                let snake = part.contains('_')
                    && !part.starts_with('_')
                    && part.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                if snake {
                    names.push(part.to_owned());
                }
            }
        }
        names
    }

    /// Every operation name recorded by the code of one container's store
    /// is counted under that container (`container_of`): the RU alert of
    /// each container counts its own.
    #[test]
    fn each_operation_is_counted_under_its_container() {
        let subscriptions = [
            include_str!("subscriptions/mod.rs"),
            include_str!("subscriptions/delivery.rs"),
            include_str!("coordination/leases.rs"),
        ];
        let events = [
            include_str!("events/reader.rs"),
            include_str!("events/segment.rs"),
            include_str!("events/writer.rs"),
            include_str!("events/repairer.rs"),
            include_str!("events/generation.rs"),
            include_str!("import.rs"),
        ];
        for (sources, container) in [(&subscriptions[..], "subscriptions"), (&events[..], "events")] {
            let names: Vec<String> = sources.iter().flat_map(|s| names_in(s)).collect();
            assert!(names.len() > 5, "the scan found the names: {names:?}");
            for name in names {
                assert_eq!(super::container_of(&name), container, "{name}");
            }
        }
        assert_eq!(super::container_of("change_feed"), "events");
        assert_eq!(super::container_of("change_feed_subscriptions"), "subscriptions");
        assert_eq!(super::container_of("instances"), "subscriptions");
    }
}
