//! Cosmos client construction in one place: the in-process emulator (dev),
//! account key, or Entra ID (workload identity, managed identity, developer
//! tools), and optional provisioning of the database and container.

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_data_cosmos::models::{
    ContainerProperties, IndexingMode, IndexingPolicy, PropertyPath, UniqueKey, UniqueKeyPolicy,
};
use azure_data_cosmos::{AccountReference, ContainerClient, CosmosClient, RoutingStrategy};
use secrecy::ExposeSecret;

use super::StoreError;
use crate::config::{CosmosAuth, CosmosConfig};

/// The connected containers.
#[derive(Clone)]
pub struct Cosmos {
    /// The events container (`cosmos.container`): feeds and what the API
    /// and the import alone write.
    pub(crate) container: ContainerClient,
    /// The subscriptions container (`cosmos.subscriptions_container`):
    /// everything the deliver pods write.
    pub(crate) subscriptions: ContainerClient,
    pub(crate) config: CosmosConfig,
    /// The container's default TTL in seconds, as read at start (`None`:
    /// items do not expire by default).
    pub(crate) ttl_seconds: Option<u32>,
}

impl Cosmos {
    /// Connects as configured. `emulator` is the shared in-process account to
    /// use when `cosmos.auth = emulator` (a fresh one when `None`).
    pub async fn connect(config: &CosmosConfig, emulator: Option<super::EmulatorAccount>) -> Result<Self, StoreError> {
        let auth = config.auth.unwrap_or(CosmosAuth::Emulator);
        let options = operation_options(config);
        let client = match auth {
            CosmosAuth::Emulator => {
                #[cfg(feature = "dev")]
                {
                    let account = emulator.unwrap_or_default();
                    account.client_with(options).await.map_err(StoreError::cosmos("connect to emulator"))?
                }
                #[cfg(not(feature = "dev"))]
                {
                    let _: (Option<super::EmulatorAccount>, _) = (emulator, options);
                    return Err(StoreError::Config("this build has no in-process emulator".into()));
                }
            }
            other => {
                let endpoint =
                    config.endpoint.clone().ok_or_else(|| StoreError::Config("cosmos.endpoint is required".into()))?;
                let account = match other {
                    CosmosAuth::Key => {
                        let key =
                            config.key.as_ref().ok_or_else(|| StoreError::Config("cosmos.key is required".into()))?;
                        AccountReference::with_authentication_key(
                            endpoint.into(),
                            Secret::new(key.expose_secret().to_owned()),
                        )
                    }
                    _ => AccountReference::with_credential(endpoint.into(), credential(other)?),
                };
                CosmosClient::builder()
                    .with_diagnostics_handler(Arc::new(super::ThrottleCounter))
                    .with_default_operation_options(options)
                    .build(account, RoutingStrategy::PreferredRegions(vec![]))
                    .await
                    .map_err(StoreError::cosmos("build client"))?
            }
        };
        if config.provision.unwrap_or(false) {
            provision(&client, config).await?;
        }
        let database = client.database_client(config.database.as_str());
        let container = database
            .container_client(config.container.as_str(), None)
            .await
            .map_err(StoreError::cosmos("resolve container"))?;
        let subscriptions = database
            .container_client(config.subscriptions_container.as_str(), None)
            .await
            .map_err(StoreError::cosmos("resolve subscriptions container"))?;
        let props = check_unique_key(&container).await?;
        check_unique_key(&subscriptions).await?;
        let ttl_seconds = match props.default_ttl {
            azure_data_cosmos::models::TimeToLive::Seconds(s) => Some(s),
            _ => None,
        };
        Ok(Self { container, subscriptions, config: config.clone(), ttl_seconds })
    }
}

/// Every document of logical partition `pk` of `container`, as stored;
/// `what` names the read in errors.
pub(crate) async fn partition_documents(
    container: &ContainerClient,
    pk: &str,
    what: &'static str,
) -> Result<Vec<serde_json::Value>, StoreError> {
    use futures::StreamExt;
    let q = azure_data_cosmos::Query::from("SELECT * FROM c");
    let mut pages = container
        .query_items::<serde_json::Value>(q, azure_data_cosmos::FeedScope::partition(pk.to_owned()), None)
        .await
        .map_err(StoreError::cosmos(what))?
        .into_pages();
    let mut docs = Vec::new();
    while let Some(page) = pages.next().await {
        docs.extend(page.map_err(StoreError::cosmos(what))?.into_items());
    }
    Ok(docs)
}

/// The partition that held the subscriptions when they lived in the events
/// container (and holds them in the subscriptions container).
pub(crate) const SUBSCRIPTIONS_PK: &str = "subscriptions";

impl Cosmos {
    /// Whether the events container still holds subscriptions: they lived
    /// there before the subscriptions container existed, and
    /// `altinn-events move-subscriptions` moves them (removing them there
    /// last). One single-partition query.
    pub(crate) async fn subscriptions_left_in_events(&self) -> Result<bool, StoreError> {
        use futures::StreamExt;
        let q = azure_data_cosmos::Query::from("SELECT TOP 1 VALUE c.id FROM c");
        let mut pages = self
            .container
            .query_items::<serde_json::Value>(q, azure_data_cosmos::FeedScope::partition(SUBSCRIPTIONS_PK), None)
            .await
            .map_err(StoreError::cosmos("look for subscriptions"))?
            .into_pages();
        while let Some(page) = pages.next().await {
            if !page.map_err(StoreError::cosmos("look for subscriptions"))?.items().is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Every operation ends within `cosmos.operation_timeout_ms`, the SDK's
/// retries of 429s included (its own default would wait up to 30 s on
/// them): a publish's writer can then start an attempt knowing it ends
/// before the publish's deadline.
fn operation_options(config: &CosmosConfig) -> azure_data_cosmos::options::OperationOptions {
    use azure_data_cosmos::options::{
        EndToEndOperationLatencyPolicy, OperationOptionsBuilder, ThrottlingRetryOptionsBuilder,
    };
    let attempt = std::time::Duration::from_millis(config.operation_timeout_ms);
    OperationOptionsBuilder::new()
        .with_end_to_end_latency_policy(EndToEndOperationLatencyPolicy::new(attempt))
        .with_throttling_retry_options(ThrottlingRetryOptionsBuilder::new().with_max_retry_wait_time(attempt).build())
        .build()
}

fn credential(auth: CosmosAuth) -> Result<Arc<dyn TokenCredential>, StoreError> {
    Ok(match auth {
        CosmosAuth::WorkloadIdentity => {
            azure_identity::WorkloadIdentityCredential::new(None).map_err(StoreError::Identity)?
        }
        CosmosAuth::ManagedIdentity => {
            azure_identity::ManagedIdentityCredential::new(None).map_err(StoreError::Identity)?
        }
        CosmosAuth::DeveloperTools => {
            azure_identity::DeveloperToolsCredential::new(None).map_err(StoreError::Identity)?
        }
        CosmosAuth::Key | CosmosAuth::Emulator => {
            return Err(StoreError::Config("not a credential-based auth mode".into()));
        }
    })
}

/// Every document field a query of the events container filters or orders
/// on (`c.<field>` in `events/reader.rs`, `filter_sql.rs` and `segment.rs`),
/// and so every field it indexes; everything else (`/*`, the event's data)
/// is not. `infra/modules/cosmos.bicep` lists the same paths: a test
/// compares them.
pub const QUERIED_FIELDS: &[&str] = &[
    "seq",
    "type",
    "source",
    "subject",
    "alternativesubject",
    "time",
    "resource",
    "resourceinstance",
    "sealed",
    "eid",
    // Imported from Altinn Events (`altinn-events import`).
    "aseq",
];

/// The same for the subscriptions container (`subscriptions/mod.rs`; the
/// leases' queries filter on `seq` only).
pub const SUBSCRIPTIONS_QUERIED_FIELDS: &[&str] = &["seq", "consumer", "kind", "dueMs", "importedRow"];

/// The indexing policy of the design: only what queries filter or order on.
pub(crate) fn indexing_policy(fields: &[&str]) -> IndexingPolicy {
    let mut policy = IndexingPolicy::default().with_indexing_mode(IndexingMode::Consistent);
    policy.automatic = true;
    for field in fields {
        policy = policy.with_included_path(PropertyPath::default().with_path(format!("/{field}/?")));
    }
    policy.with_excluded_path(PropertyPath::default().with_path("/*"))
}

/// `seq` is unique in each logical partition (a feed segment): a sequence
/// number is taken by the first create that stores it.
pub(crate) fn unique_key_policy() -> UniqueKeyPolicy {
    UniqueKeyPolicy::default().with_unique_key(UniqueKey::default().with_path("/seq"))
}

/// Appends are only correct on a container whose `seq` is unique per
/// partition; refuse to start on one without it (unique keys cannot be
/// added to an existing container: create a new one, see docs/deploy.md).
async fn check_unique_key(container: &ContainerClient) -> Result<ContainerProperties, StoreError> {
    let props: ContainerProperties = container
        .read(None)
        .await
        .map_err(StoreError::cosmos("read container"))?
        .into_model()
        .map_err(StoreError::cosmos("decode container"))?;
    let has_seq = props
        .unique_key_policy
        .as_ref()
        .is_some_and(|p| p.unique_keys.iter().any(|k| k.paths.iter().map(String::as_str).eq(["/seq"])));
    if has_seq {
        Ok(props)
    } else {
        Err(StoreError::Config(format!(
            "container {} has no unique key on /seq; the feed store needs one (create the container with \
             uniqueKeyPolicy {{ uniqueKeys: [{{ paths: [\"/seq\"] }}] }}, as infra/ does)",
            props.id
        )))
    }
}

async fn provision(client: &CosmosClient, config: &CosmosConfig) -> Result<(), StoreError> {
    match client.create_database(&config.database, None).await {
        Ok(_) => {}
        Err(e) if e.status().is_conflict() => {}
        Err(e) => return Err(StoreError::Cosmos { operation: "create database", source: e }),
    }
    let events = ContainerProperties::new(config.container.clone(), "/pk".into())
        .with_indexing_policy(indexing_policy(QUERIED_FIELDS))
        .with_unique_key_policy(unique_key_policy())
        .with_default_ttl(config.default_ttl_seconds);
    // Subscriptions and delivery states never expire; presences do, by
    // their own `ttl`.
    let subscriptions = ContainerProperties::new(config.subscriptions_container.clone(), "/pk".into())
        .with_indexing_policy(indexing_policy(SUBSCRIPTIONS_QUERIED_FIELDS))
        .with_unique_key_policy(unique_key_policy())
        .with_default_ttl(azure_data_cosmos::models::TimeToLive::NoDefault);
    for props in [events, subscriptions] {
        match client.database_client(config.database.as_str()).create_container(props, None).await {
            Ok(_) => {}
            Err(e) if e.status().is_conflict() => {}
            Err(e) => return Err(StoreError::Cosmos { operation: "create container", source: e }),
        }
    }
    Ok(())
}

/// One pass over the container's change feed from a continuation: the pages
/// with changes, until every physical partition range has said it is caught
/// up (the stream never ends by itself: a caught-up range answers an empty
/// page). The ranges come from the SDK's routing cache (no request) and are
/// read at each pass, so a split is followed at once.
pub(crate) struct ChangeRound {
    pages:
        azure_data_cosmos::feed::ChangeFeedPageIterator<azure_data_cosmos::models::ChangeFeedItem<serde_json::Value>>,
    ranges: usize,
    empty_streak: usize,
    /// The metric operation each page is counted under, if any.
    observed: Option<&'static str>,
    /// Pages read so far, empty ones included.
    pub read: usize,
}

impl ChangeRound {
    pub(crate) async fn open(
        container: &ContainerClient,
        start: azure_data_cosmos::options::ChangeFeedStartFrom,
        continuation: Option<String>,
        page_size: u32,
        observed: Option<&'static str>,
    ) -> Result<Self, StoreError> {
        use azure_data_cosmos::options::{ChangeFeedOptions, MaxItemCountHint};
        let size = std::num::NonZeroU32::new(page_size.max(1)).expect("at least 1");
        let mut options = ChangeFeedOptions::default().with_max_item_count(MaxItemCountHint::Limit(size));
        if let Some(token) = continuation {
            options = options.with_continuation_token(azure_data_cosmos::feed::ContinuationToken::from_string(token));
        }
        let pages = container
            .query_change_feed(azure_data_cosmos::FeedScope::full_container(), start, Some(options))
            .await
            .map_err(StoreError::cosmos("change feed"))?;
        let ranges = container.read_feed_ranges(None).await.map_err(StoreError::cosmos("feed ranges"))?.len().max(1);
        Ok(Self { pages, ranges, empty_streak: 0, observed, read: 0 })
    }

    /// The documents of the next page with changes; `None` when every range
    /// is caught up.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<serde_json::Value>>, StoreError> {
        use futures::StreamExt;
        while self.empty_streak < self.ranges {
            let started = std::time::Instant::now();
            let Some(page) = self.pages.next().await else { return Ok(None) };
            let page = page.map_err(StoreError::cosmos("change feed"))?;
            self.read += 1;
            if let Some(operation) = self.observed {
                super::observe(operation, started, super::charge(page.headers()));
            }
            if page.items().is_empty() {
                self.empty_streak += 1;
                continue;
            }
            self.empty_streak = 0;
            return Ok(Some(page.into_items().into_iter().filter_map(|item| item.current().cloned()).collect()));
        }
        Ok(None)
    }

    /// Where the next pass starts: after the last page returned.
    pub(crate) fn continuation(&self) -> Result<String, StoreError> {
        let token = self.pages.to_continuation_token().map_err(StoreError::cosmos("change feed continuation"))?;
        Ok(token.as_str().to_owned())
    }
}

/// One document read with its ETag; `None` when there is none. `what`
/// names the read in errors.
pub(crate) async fn read_versioned<T: serde::de::DeserializeOwned>(
    container: &ContainerClient,
    pk: &str,
    id: &str,
    what: &'static str,
) -> Result<Option<(T, String)>, StoreError> {
    match container.read_item(pk.to_owned(), id, None).await {
        Ok(resp) => {
            let etag = resp.headers().etag().map(|e| e.to_string()).ok_or(StoreError::MissingEtag)?;
            let doc: T = resp.into_model().map_err(StoreError::cosmos(what))?;
            Ok(Some((doc, etag)))
        }
        Err(e) if e.status().is_not_found() => Ok(None),
        Err(e) => Err(StoreError::cosmos(what)(e)),
    }
}

/// Creates `doc` (`etag` `None`: there was none) or replaces it if it is
/// still the version `etag` names: its new ETag, or `Stale` when another
/// writer got there first (a create that conflicts, a replace whose ETag no
/// longer matches). `what` names the write in errors.
pub(crate) async fn write_versioned<T: serde::Serialize>(
    container: &ContainerClient,
    pk: &str,
    id: &str,
    doc: &T,
    etag: Option<&str>,
    what: &'static str,
) -> Result<super::Changed<String>, StoreError> {
    use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
    let written = match etag {
        Some(etag) => {
            let options = ItemWriteOptions::default().with_precondition(Precondition::IfMatch(etag.to_owned().into()));
            container.replace_item(pk.to_owned(), id, doc, Some(options)).await
        }
        None => container.create_item(pk.to_owned(), id, doc, None).await,
    };
    match written {
        Ok(resp) => {
            Ok(super::Changed::Done(resp.headers().etag().map(|e| e.to_string()).ok_or(StoreError::MissingEtag)?))
        }
        Err(e)
            if e.status().is_conflict()
                || e.status().status_code() == azure_core::http::StatusCode::PreconditionFailed =>
        {
            Ok(super::Changed::Stale)
        }
        Err(e) => Err(StoreError::cosmos(what)(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{QUERIED_FIELDS, SUBSCRIPTIONS_QUERIED_FIELDS};

    /// `c.<field>` references inside the string literals (the query texts)
    /// of a source file.
    fn fields_in(source: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for line in source.lines() {
            for (i, _) in line.match_indices("c.") {
                let in_string = line[..i].matches('"').count() % 2 == 1;
                let before = line[..i].chars().next_back();
                if !in_string || before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let field: String =
                    line[i + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !field.is_empty() {
                    out.insert(field);
                }
            }
        }
        out
    }

    /// The included paths of the container `name` in `cosmos.bicep`.
    fn indexed_in_infra(bicep: &str, name: &str) -> BTreeSet<String> {
        let container = &bicep[bicep.find(&format!("resource {name} ")).expect("the container in cosmos.bicep")..];
        let included = &container[container.find("includedPaths").expect("includedPaths in cosmos.bicep")..];
        let included = &included[..included.find(']').expect("end of includedPaths")];
        included
            .match_indices("path: '/")
            .map(|(i, m)| included[i + m.len()..].split('/').next().unwrap_or_default().to_owned())
            .collect()
    }

    fn queried_in(sources: &[&str]) -> BTreeSet<String> {
        sources.iter().flat_map(|s| fields_in(s)).filter(|f| f != "id" && f != "pk").collect()
    }

    /// The queries, the indexing policies and `infra/` must not drift: every
    /// field a query of a container uses is indexed there (but `id` and the
    /// partition key, which the point reads and the cross-partition lookup
    /// use), and each Bicep container indexes exactly the fields the code
    /// does.
    #[test]
    fn queried_fields_are_indexed_here_and_in_infra() {
        let bicep = include_str!("../../infra/modules/cosmos.bicep");
        let queried = queried_in(&[
            include_str!("events/reader.rs"),
            include_str!("events/filter_sql.rs"),
            include_str!("events/segment.rs"),
        ]);
        let indexed: BTreeSet<String> = QUERIED_FIELDS.iter().map(|s| s.to_string()).collect();
        assert!(queried.contains("seq") && queried.contains("sealed"), "the scan found the queries: {queried:?}");
        assert_eq!(queried, indexed, "fields the events queries use vs QUERIED_FIELDS");
        assert_eq!(indexed_in_infra(bicep, "container"), indexed, "cosmos.bicep events container vs QUERIED_FIELDS");

        let queried = queried_in(&[include_str!("subscriptions/mod.rs")]);
        let indexed: BTreeSet<String> = SUBSCRIPTIONS_QUERIED_FIELDS.iter().map(|s| s.to_string()).collect();
        assert!(queried.contains("consumer"), "the scan found the queries: {queried:?}");
        assert_eq!(queried, indexed, "fields the subscriptions queries use vs SUBSCRIPTIONS_QUERIED_FIELDS");
        assert_eq!(
            indexed_in_infra(bicep, "subscriptionsContainer"),
            indexed,
            "cosmos.bicep subscriptions container vs SUBSCRIPTIONS_QUERIED_FIELDS"
        );
    }
}
