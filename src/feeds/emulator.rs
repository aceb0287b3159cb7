//! The Cosmos SDK's in-process emulator (`__internal_in_memory_emulator`),
//! used by dev mode and the tests. It runs the SDK's real routing, retries,
//! partition ranges and RU model in memory. It is not part of the SDK's
//! stable API, so every use of it stays in this module, which production
//! builds (without feature `dev`) leave out.

use std::sync::Arc;

use azure_core::credentials::Secret;
use azure_data_cosmos::fault_injection::FaultInjectionRule;
use azure_data_cosmos::options::Region;
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosClientBuilder, CosmosRuntimeBuilder, RoutingStrategy,
};
use azure_data_cosmos_driver::in_memory_emulator::{
    ConsistencyLevel, EmulatorStore, InMemoryEmulatorHttpClient, VirtualAccountConfig, VirtualRegion,
};

const GATEWAY: &str = "https://eastus.emulator.local";

/// One emulated Cosmos account. Cloning shares it: several clients (as
/// several pods would) see the same data.
#[derive(Clone)]
pub struct EmulatorAccount {
    http: Arc<InMemoryEmulatorHttpClient>,
    faults: Vec<Arc<FaultInjectionRule>>,
}

impl std::fmt::Debug for EmulatorAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmulatorAccount")
    }
}

impl Default for EmulatorAccount {
    fn default() -> Self {
        Self::new()
    }
}

impl EmulatorAccount {
    pub fn new() -> Self {
        let region = VirtualRegion::new("East US", azure_core::http::Url::parse(GATEWAY).expect("static url"));
        let config = VirtualAccountConfig::new(vec![region])
            .expect("one region is a valid account")
            .with_consistency(ConsistencyLevel::Session);
        Self { http: Arc::new(InMemoryEmulatorHttpClient::new(config)), faults: Vec::new() }
    }

    /// The same account, reached through clients that inject these faults
    /// (429s, timeouts, 503s, ...) before requests reach the emulator.
    pub fn with_faults(&self, faults: Vec<Arc<FaultInjectionRule>>) -> Self {
        Self { http: self.http.clone(), faults }
    }

    /// A new SDK client on this account.
    pub async fn client(&self) -> azure_data_cosmos::Result<CosmosClient> {
        self.client_with(azure_data_cosmos::options::OperationOptions::default()).await
    }

    /// A client of this account whose operations default to `options`.
    pub async fn client_with(
        &self,
        options: azure_data_cosmos::options::OperationOptions,
    ) -> azure_data_cosmos::Result<CosmosClient> {
        let builder = if self.faults.is_empty() {
            self.http.runtime_builder()
        } else {
            self.http.runtime_builder_with_fault_rules(self.faults.clone())
        };
        let runtime = CosmosRuntimeBuilder::from(builder).build().await?;
        let account = AccountReference::with_authentication_key(
            GATEWAY.parse::<AccountEndpoint>().expect("static endpoint"),
            Secret::new("ZW11bGF0b3Ita2V5"),
        );
        CosmosClientBuilder::new()
            .with_runtime(runtime)
            .with_default_operation_options(options)
            .with_diagnostics_handler(Arc::new(super::ThrottleCounter))
            .build(account, RoutingStrategy::ProximityTo(Region::EAST_US))
            .await
    }

    /// The emulator's store, for tests that split partitions.
    pub fn store(&self) -> Arc<EmulatorStore> {
        self.http.store()
    }
}
