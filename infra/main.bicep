// Azure resources of altinn-events, deployed into one resource group next to
// an existing AKS cluster (OIDC issuer and workload identity enabled):
//
// - Cosmos DB for NoSQL account, database and container (Entra ID auth only;
//   one write region, optionally a read region it fails over to; continuous
//   backup),
// - Key Vault for the PDP subscription key and the access token certificates,
// - three user-assigned managed identities, each with a federated credential
//   for one of the chart's service accounts and its own data-plane roles:
//   the API pods', the deliver pods' (`serve --role deliver`) and the
//   import Job's (roles only while importEnabled),
// - CanNotDelete locks on the Cosmos DB account and the Key Vault,
// - diagnostic settings of both into a Log Analytics workspace (an existing
//   one, or one created here),
// - optionally, private endpoints for Cosmos DB and Key Vault in the
//   cluster's virtual network,
// - the service's alerts: a Prometheus rule group on the cluster's Azure
//   Monitor workspace (managed Prometheus) and a metric alert on Cosmos DB's
//   normalized RU per partition key range.
//
// Deploy: az deployment group create -g <rg> --parameters infra/main.bicepparam
// (docs/deploy.md). The outputs are the chart's required values.

targetScope = 'resourceGroup'

@description('Region of all resources.')
param location string = resourceGroup().location

@description('Tags applied to every resource.')
param tags object = {}

@description('Cosmos DB account name (globally unique, 3-44 lower-case letters, digits, hyphens). Empty: cosmos-events-<unique string of the resource group>. After a restore: the restored account\'s name (docs/operations.md, Recovery).')
@maxLength(44)
param cosmosAccountName string = ''

@description('Key Vault name (globally unique, 3-24 characters).')
@minLength(3)
@maxLength(24)
param keyVaultName string = 'kv-events-${take(uniqueString(resourceGroup().id), 12)}'

@description('Name of the service\'s user-assigned managed identity.')
param identityName string = 'id-altinn-events'

@description('Name of the deliver pods\' user-assigned managed identity.')
param deliverIdentityName string = 'id-altinn-events-deliver'

@description('Give the import Job (chart value import.enabled; docs/migration.md) its roles: Cosmos DB data, and the Key Vault secrets (the source database\'s password). Its identity exists either way (without roles it can do nothing); turn this off again after the cut-over.')
param importEnabled bool = false

@description('Name of the import Job\'s user-assigned managed identity.')
param importIdentityName string = 'id-altinn-events-import'

@description('Database name (chart value config.cosmos.database).')
param databaseName string = 'events'

@description('Container name (chart value config.cosmos.container).')
param containerName string = 'events'

@description('Subscriptions container name (chart value config.cosmos.subscriptionsContainer): subscriptions, delivery states, bucket leases, presences; the deliver pods write only there.')
param subscriptionsContainerName string = 'subscriptions'

@description('Autoscale maximum RU/s of the subscriptions container. 4000: the planned peak\'s checkpoints (2000 RU/s) and change feed at half of it (docs/capacity.md).')
@minValue(1000)
param subscriptionsAutoscaleMaxThroughput int = 4000

@description('Autoscale maximum RU/s of the container; it scales between 10% of this and this. 15000: the planned peak of 1M events/hour uses about 70% of it (docs/capacity.md). Raise it to 10 RU/s per GB stored as the container fills.')
@minValue(1000)
param autoscaleMaxThroughput int = 15000

@description('Container default TTL in seconds: events expire 90 days after they are written.')
@minValue(1)
param defaultTtlSeconds int = 7776000

@description('Zone-redundant Cosmos DB replicas. Needs a region with availability zones.')
param zoneRedundant bool = true

@description('Cosmos DB read region that automatic failover makes the write region when the write region (location) is down, e.g. norwaywest for norwayeast. Empty: one region, no failover. A second region doubles the throughput cost.')
param secondaryLocation string = ''

@description('Zone-redundant replicas in the read region. Needs a region with availability zones (norwaywest has none).')
param secondaryZoneRedundant bool = false

@description('Point-in-time restore window of the Cosmos DB continuous backup.')
@allowed(['Continuous7Days', 'Continuous30Days'])
param continuousBackupTier string = 'Continuous30Days'

@description('CanNotDelete locks on the Cosmos DB account and the Key Vault. Switch off for test environments that are deleted as a whole.')
param enableDeleteLocks bool = true

@description('Resource id of an existing Log Analytics workspace for the diagnostic settings. Empty: one is created (logAnalyticsWorkspaceName).')
param logAnalyticsWorkspaceId string = ''

@description('Name of the Log Analytics workspace created when logAnalyticsWorkspaceId is empty.')
param logAnalyticsWorkspaceName string = 'log-altinn-events'

@description('Days the created Log Analytics workspace keeps its data.')
@minValue(30)
@maxValue(730)
param logAnalyticsRetentionInDays int = 30

@description('Public network access to Cosmos DB. Disabled: reachable only through the private endpoint (privateEndpointSubnetId).')
@allowed(['Enabled', 'Disabled'])
param cosmosPublicNetworkAccess string = 'Disabled'

@description('Public network access to Key Vault. Enable it, with your address in allowedIpRanges, while you upload secrets and certificates from outside the cluster network.')
@allowed(['Enabled', 'Disabled'])
param keyVaultPublicNetworkAccess string = 'Disabled'

@description('IPv4 addresses or CIDR ranges let through the Cosmos DB and Key Vault firewalls when public network access is enabled.')
param allowedIpRanges array = []

@description('Resource id of a subnet in the AKS cluster\'s virtual network for private endpoints. Empty: no private endpoints (then enable public network access with allowedIpRanges).')
param privateEndpointSubnetId string = ''

@description('OIDC issuer URL of the AKS cluster: az aks show -g <rg> -n <cluster> --query oidcIssuerProfile.issuerUrl -o tsv')
param aksOidcIssuerUrl string

@description('Kubernetes namespace of the Helm release.')
param kubernetesNamespace string = 'altinn-events'

@description('Service account of the Helm release (chart value serviceAccount.name; by default the release name).')
param serviceAccountName string = 'altinn-events'

@description('Service account of the chart\'s deliver pods (chart value deliver.serviceAccount.name; by default <serviceAccountName>-deliver).')
param deliverServiceAccountName string = '${serviceAccountName}-deliver'

@description('Service account of the chart\'s import Job (chart value import.serviceAccount.name; by default <serviceAccountName>-import).')
param importServiceAccountName string = '${serviceAccountName}-import'

@description('Object ids of users or groups that manage Key Vault secrets and certificates (az ad signed-in-user show --query id -o tsv).')
param keyVaultAdminPrincipalIds array = []

@description('Whether the secrets are in Key Vault (docs/deploy.md step 5): the deployment after that grants each identity its secrets, one by one.')
param keyVaultSecretsReady bool = false

@description('Key Vault secrets holding the access token issuers\' public certificates (the chart\'s keyVault.accessTokenCerts.issuers[*].objectName): the API reads them.')
param accessTokenCertSecrets array = []

@description('The Key Vault secret holding the source database\'s password (the chart\'s import.passwordSecret): the import Job reads it.')
param importPasswordSecret string = 'altinn-events-source-password'

@description('The secrets each role reads, as the chart maps them by default (keyVault.secrets; a secret mapped to a role the chart does not give it stays unreadable there).')
param keyVaultSecretGrants array = [
  { secret: 'pdp-subscription-key', reader: 'api' }
  { secret: 'pdp-subscription-key', reader: 'deliver' }
  { secret: 'cursor-keys', reader: 'api' }
  { secret: 'subscription-secret-keys', reader: 'api' }
  { secret: 'subscription-secret-keys', reader: 'deliver' }
  { secret: 'subscription-secret-keys', reader: 'import' }
]

@description('Resource id of the Azure Monitor workspace the AKS cluster\'s managed Prometheus (the ama-metrics add-on) writes to: the service\'s alerts are a Prometheus rule group on it (modules/prometheus-rules.bicep). docs/deploy.md, "Monitoring".')
param azureMonitorWorkspaceId string

@description('Name of the AKS cluster the service runs on: the alert rules see its series only.')
param aksClusterName string

@description('Action groups notified by the alerts (the Prometheus rule group and the hot-partition metric alert), as resource ids. Empty: they show in Azure Monitor only.')
param alertActionGroupIds array = []

@description('Where docs/operations.md is browsed (e.g. https://github.com/<org>/<repo>/blob/main/docs/operations.md): each alert\'s runbook_url is this plus the alert\'s anchor.')
param runbookBaseUrl string = 'docs/operations.md'

var cosmosName = empty(cosmosAccountName) ? 'cosmos-events-${uniqueString(resourceGroup().id)}' : cosmosAccountName

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: identityName
    location: location
    tags: tags
    oidcIssuerUrl: aksOidcIssuerUrl
    kubernetesNamespace: kubernetesNamespace
    serviceAccountName: serviceAccountName
  }
}

// The deliver pods push to endpoints on the internet: their own identity,
// so that their rights can be smaller than the API's (modules/cosmos.bicep
// says how much smaller, and what it does not restrict).
module deliverIdentity 'modules/identity.bicep' = {
  name: 'identity-deliver'
  params: {
    name: deliverIdentityName
    location: location
    tags: tags
    oidcIssuerUrl: aksOidcIssuerUrl
    kubernetesNamespace: kubernetesNamespace
    serviceAccountName: deliverServiceAccountName
  }
}

// The import from a running Altinn Events: an identity of its own, whose
// roles exist only while importEnabled is true.
module importIdentity 'modules/identity.bicep' = {
  name: 'identity-import'
  params: {
    name: importIdentityName
    location: location
    tags: tags
    oidcIssuerUrl: aksOidcIssuerUrl
    kubernetesNamespace: kubernetesNamespace
    serviceAccountName: importServiceAccountName
  }
}

module logAnalytics 'modules/log-analytics.bicep' = if (empty(logAnalyticsWorkspaceId)) {
  name: 'log-analytics'
  params: {
    name: logAnalyticsWorkspaceName
    location: location
    tags: tags
    retentionInDays: logAnalyticsRetentionInDays
  }
}

var workspaceId = empty(logAnalyticsWorkspaceId) ? logAnalytics.outputs.id : logAnalyticsWorkspaceId

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    accountName: cosmosName
    location: location
    tags: tags
    databaseName: databaseName
    containerName: containerName
    subscriptionsContainerName: subscriptionsContainerName
    autoscaleMaxThroughput: autoscaleMaxThroughput
    subscriptionsAutoscaleMaxThroughput: subscriptionsAutoscaleMaxThroughput
    defaultTtlSeconds: defaultTtlSeconds
    zoneRedundant: zoneRedundant
    secondaryLocation: secondaryLocation
    secondaryZoneRedundant: secondaryZoneRedundant
    continuousBackupTier: continuousBackupTier
    publicNetworkAccess: cosmosPublicNetworkAccess
    allowedIpRanges: allowedIpRanges
    dataContributorPrincipalId: identity.outputs.principalId
    deliverPrincipalId: deliverIdentity.outputs.principalId
    importPrincipalId: importIdentity.outputs.principalId
    importEnabled: importEnabled
    deleteLock: enableDeleteLocks
    logAnalyticsWorkspaceId: workspaceId
    alertActionGroupIds: alertActionGroupIds
  }
}

// The alerts of docs/operations.md, evaluated by Azure Monitor on the series
// managed Prometheus scrapes from the chart's PodMonitor.
module prometheusRules 'modules/prometheus-rules.bicep' = {
  name: 'prometheus-rules'
  params: {
    name: 'altinn-events-alerts'
    location: location
    tags: tags
    azureMonitorWorkspaceId: azureMonitorWorkspaceId
    clusterName: aksClusterName
    actionGroupIds: alertActionGroupIds
    runbookBaseUrl: runbookBaseUrl
  }
}

var accessTokenCertGrants = [for n in accessTokenCertSecrets: {
  secret: n
  reader: 'api'
}]

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
    publicNetworkAccess: keyVaultPublicNetworkAccess
    allowedIpRanges: allowedIpRanges
    readerPrincipalId: identity.outputs.principalId
    deliverPrincipalId: deliverIdentity.outputs.principalId
    importPrincipalId: importIdentity.outputs.principalId
    importEnabled: importEnabled
    secretsReady: keyVaultSecretsReady
    secretGrants: concat(keyVaultSecretGrants, accessTokenCertGrants, [
      {
        secret: importPasswordSecret
        reader: 'import'
      }
    ])
    adminPrincipalIds: keyVaultAdminPrincipalIds
    deleteLock: enableDeleteLocks
    logAnalyticsWorkspaceId: workspaceId
  }
}

module privateEndpoints 'modules/private-endpoints.bicep' = if (!empty(privateEndpointSubnetId)) {
  name: 'private-endpoints'
  params: {
    location: location
    tags: tags
    subnetId: privateEndpointSubnetId
    cosmosAccountId: cosmos.outputs.id
    keyVaultId: keyVault.outputs.id
  }
}

@description('Chart value config.cosmos.endpoint.')
output cosmosEndpoint string = cosmos.outputs.endpoint

@description('Chart value workloadIdentity.clientId.')
output workloadIdentityClientId string = identity.outputs.clientId

@description('Chart value deliver.workloadIdentity.clientId: the deliver pods\' identity.')
output deliverIdentityClientId string = deliverIdentity.outputs.clientId

@description('Chart value import.workloadIdentity.clientId: the import Job\'s identity.')
output importIdentityClientId string = importIdentity.outputs.clientId

@description('Chart value workloadIdentity.tenantId.')
output tenantId string = tenant().tenantId

@description('Chart value keyVault.name.')
output keyVaultName string = keyVault.outputs.name

@description('Cosmos DB account name.')
output cosmosAccountName string = cosmosName

@description('Chart value networkPolicy.privateEndpointCidrs: the addresses of Cosmos DB\'s private endpoint (empty without private endpoints). Not the subnet: the pods must not reach Key Vault\'s endpoint beside it.')
output cosmosPrivateEndpointCidrs array = empty(privateEndpointSubnetId) ? [] : privateEndpoints!.outputs.cosmosCidrs

@description('Log Analytics workspace holding the diagnostic logs of Cosmos DB and Key Vault.')
output logAnalyticsWorkspaceId string = workspaceId
