// The service's Entra ID identity: a user-assigned managed identity that the
// pods assume through Azure workload identity. The federated credential trusts
// tokens that the AKS cluster's OIDC issuer signs for one service account.

@description('Name of the user-assigned managed identity.')
param name string

param location string
param tags object

@description('OIDC issuer URL of the AKS cluster (az aks show --query oidcIssuerProfile.issuerUrl).')
param oidcIssuerUrl string

@description('Namespace of the service account (the Helm release namespace).')
param kubernetesNamespace string

@description('Name of the service account (Helm value serviceAccount.name; by default the release name).')
param serviceAccountName string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

resource federation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: identity
  name: 'aks-${kubernetesNamespace}-${serviceAccountName}'
  properties: {
    issuer: oidcIssuerUrl
    subject: 'system:serviceaccount:${kubernetesNamespace}:${serviceAccountName}'
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

output id string = identity.id
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
