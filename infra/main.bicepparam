// Parameters of infra/main.bicep for one environment. The values that depend
// on your cluster and network come from environment variables, so the same
// file serves every environment (docs/deploy.md exports them):
//
//   AKS_OIDC_ISSUER      az aks show -g $RG -n $AKS --query oidcIssuerProfile.issuerUrl -o tsv
//   PE_SUBNET_ID         subnet for the private endpoints (empty: none)
//   KV_ADMIN_OBJECT_ID   your object id, to upload secrets (empty: none)
//   KV_PUBLIC_ACCESS     Enabled while you upload from outside the VNet, else Disabled
//   MY_IP                your public IPv4 address, let through the Key Vault firewall
//   COSMOS_SECONDARY_LOCATION  Cosmos DB read region for automatic failover
//                        (default norwaywest, the pair of norwayeast; empty: one region)
//   DELETE_LOCKS         false: no CanNotDelete locks (a test environment); default true
//   LOG_ANALYTICS_WORKSPACE_ID  an existing workspace (empty: one is created)
//   COSMOS_ACCOUNT_NAME  only after a restore: the restored account (empty: the default name)
//   IMPORT               true: the import Job's identity gets its roles (docs/migration.md); default false
//   AKS                  the AKS cluster's name (the alert rules see its series only)
//   AZURE_MONITOR_WORKSPACE_ID  the Azure Monitor workspace of the cluster's managed Prometheus
//                        (az aks create --enable-azure-monitor-metrics ... : docs/deploy.md, "Monitoring")
//   ALERT_ACTION_GROUP_ID  an action group the alerts notify (empty: none)
//   RUNBOOK_BASE_URL     where docs/operations.md is browsed (alerts link their runbooks there)
//   KV_SECRETS_READY     true after the secrets are uploaded: each identity is granted its own
//   ACCESS_TOKEN_CERT_SECRETS  the access token certificate secrets, comma-separated
//                        (platform-access-token-ttd,...): the API reads them
//
// Deploy: az deployment group create -g $RG --parameters infra/main.bicepparam
using 'main.bicep'

param aksOidcIssuerUrl = readEnvironmentVariable('AKS_OIDC_ISSUER')
param privateEndpointSubnetId = readEnvironmentVariable('PE_SUBNET_ID', '')

var adminObjectId = readEnvironmentVariable('KV_ADMIN_OBJECT_ID', '')
param keyVaultAdminPrincipalIds = empty(adminObjectId) ? [] : [adminObjectId]

param keyVaultPublicNetworkAccess = readEnvironmentVariable('KV_PUBLIC_ACCESS', 'Disabled')
var myIp = readEnvironmentVariable('MY_IP', '')
param allowedIpRanges = empty(myIp) ? [] : [myIp]

param kubernetesNamespace = 'altinn-events'
param serviceAccountName = 'altinn-events'
param deliverServiceAccountName = 'altinn-events-deliver'
param importServiceAccountName = 'altinn-events-import'
// IMPORT=true while taking over from a running Altinn Events (docs/migration.md).
param importEnabled = readEnvironmentVariable('IMPORT', 'false') == 'true'

param cosmosAccountName = readEnvironmentVariable('COSMOS_ACCOUNT_NAME', '')
// docs/capacity.md: the planned peak of 1M events/hour needs about 10 700 RU/s.
param autoscaleMaxThroughput = 15000
param zoneRedundant = true
// Norway West has no availability zones, so its replicas cannot be zone redundant.
param secondaryLocation = readEnvironmentVariable('COSMOS_SECONDARY_LOCATION', 'norwaywest')
param secondaryZoneRedundant = false
param continuousBackupTier = 'Continuous30Days'
param cosmosPublicNetworkAccess = 'Disabled'

param enableDeleteLocks = readEnvironmentVariable('DELETE_LOCKS', 'true') != 'false'
param logAnalyticsWorkspaceId = readEnvironmentVariable('LOG_ANALYTICS_WORKSPACE_ID', '')

param aksClusterName = readEnvironmentVariable('AKS')
param azureMonitorWorkspaceId = readEnvironmentVariable('AZURE_MONITOR_WORKSPACE_ID')
var actionGroupId = readEnvironmentVariable('ALERT_ACTION_GROUP_ID', '')
param alertActionGroupIds = empty(actionGroupId) ? [] : [actionGroupId]
param runbookBaseUrl = readEnvironmentVariable('RUNBOOK_BASE_URL', 'docs/operations.md')

// KV_SECRETS_READY=true once the secrets are uploaded (docs/deploy.md step 5):
// the deployment then grants each identity its own secrets.
param keyVaultSecretsReady = readEnvironmentVariable('KV_SECRETS_READY', 'false') == 'true'
var certSecrets = readEnvironmentVariable('ACCESS_TOKEN_CERT_SECRETS', '')
param accessTokenCertSecrets = empty(certSecrets) ? [] : split(certSecrets, ',')

param tags = {
  service: 'altinn-events'
}
