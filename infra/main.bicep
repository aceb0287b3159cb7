// Azure resources of altinn-events, deployed into one resource group next to
// an existing AKS cluster (OIDC issuer and workload identity enabled):
//
// - Cosmos DB for NoSQL account, database and container (Entra ID auth only),
// - Key Vault for the PDP subscription key and the access token certificates,
// - the user-assigned managed identity the pods use, with its federated
//   credential for the chart's service account and its data-plane roles,
// - optionally, private endpoints for Cosmos DB and Key Vault in the
//   cluster's virtual network.
//
// Deploy: az deployment group create -g <rg> --parameters infra/main.bicepparam
// (docs/deploy.md). The outputs are the chart's required values.

targetScope = 'resourceGroup'

@description('Region of all resources.')
param location string = resourceGroup().location

@description('Tags applied to every resource.')
param tags object = {}

@description('Cosmos DB account name (globally unique, 3-44 lower-case letters, digits, hyphens).')
@minLength(3)
@maxLength(44)
param cosmosAccountName string = 'cosmos-events-${uniqueString(resourceGroup().id)}'

@description('Key Vault name (globally unique, 3-24 characters).')
@minLength(3)
@maxLength(24)
param keyVaultName string = 'kv-events-${take(uniqueString(resourceGroup().id), 12)}'

@description('Name of the service\'s user-assigned managed identity.')
param identityName string = 'id-altinn-events'

@description('Database name (chart value config.cosmos.database).')
param databaseName string = 'events'

@description('Container name (chart value config.cosmos.container).')
param containerName string = 'events'

@description('Autoscale maximum RU/s of the container; it scales between 10% of this and this.')
@minValue(1000)
param autoscaleMaxThroughput int = 4000

@description('Container default TTL in seconds: events expire 90 days after they are written.')
@minValue(1)
param defaultTtlSeconds int = 7776000

@description('Zone-redundant Cosmos DB replicas. Needs a region with availability zones.')
param zoneRedundant bool = true

@description('Point-in-time restore window of the Cosmos DB continuous backup.')
@allowed(['Continuous7Days', 'Continuous30Days'])
param continuousBackupTier string = 'Continuous7Days'

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

@description('Object ids of users or groups that manage Key Vault secrets and certificates (az ad signed-in-user show --query id -o tsv).')
param keyVaultAdminPrincipalIds array = []

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

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    accountName: cosmosAccountName
    location: location
    tags: tags
    databaseName: databaseName
    containerName: containerName
    autoscaleMaxThroughput: autoscaleMaxThroughput
    defaultTtlSeconds: defaultTtlSeconds
    zoneRedundant: zoneRedundant
    continuousBackupTier: continuousBackupTier
    publicNetworkAccess: cosmosPublicNetworkAccess
    allowedIpRanges: allowedIpRanges
    dataContributorPrincipalId: identity.outputs.principalId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
    publicNetworkAccess: keyVaultPublicNetworkAccess
    allowedIpRanges: allowedIpRanges
    readerPrincipalId: identity.outputs.principalId
    adminPrincipalIds: keyVaultAdminPrincipalIds
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

@description('Chart value workloadIdentity.tenantId.')
output tenantId string = tenant().tenantId

@description('Chart value keyVault.name.')
output keyVaultName string = keyVault.outputs.name

@description('Cosmos DB account name.')
output cosmosAccountName string = cosmosAccountName
