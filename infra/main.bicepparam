// Parameters of infra/main.bicep for one environment. The values that depend
// on your cluster and network come from environment variables, so the same
// file serves every environment (docs/deploy.md exports them):
//
//   AKS_OIDC_ISSUER      az aks show -g $RG -n $AKS --query oidcIssuerProfile.issuerUrl -o tsv
//   PE_SUBNET_ID         subnet for the private endpoints (empty: none)
//   KV_ADMIN_OBJECT_ID   your object id, to upload secrets (empty: none)
//   KV_PUBLIC_ACCESS     Enabled while you upload from outside the VNet, else Disabled
//   MY_IP                your public IPv4 address, let through the Key Vault firewall
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

param autoscaleMaxThroughput = 4000
param zoneRedundant = true
param continuousBackupTier = 'Continuous7Days'
param cosmosPublicNetworkAccess = 'Disabled'

param tags = {
  service: 'altinn-events'
}
