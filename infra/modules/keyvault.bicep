// Key Vault for the service's secrets (the PDP subscription key, the key
// rings) and the public certificates that verify platform access tokens
// (secrets holding PEM text). RBAC authorization: each identity may read
// the secrets it uses, one role assignment per secret (secretGrants);
// the operators named in adminPrincipalIds may manage them. A delete lock
// and diagnostic settings.

param name string
param location string
param tags object

@description('Public network access; closed unless the caller opens it.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'

@description('IPv4 addresses or CIDR ranges allowed through the firewall when public network access is enabled.')
param allowedIpRanges array

@description('Principal (object) id of the service\'s managed identity.')
param readerPrincipalId string

@description('Principal (object) id of the deliver pods\' managed identity.')
param deliverPrincipalId string

@description('Principal id of the import Job\'s identity: Key Vault Secrets User while importEnabled (the source database\'s password).')
param importPrincipalId string

param importEnabled bool

@description('Object ids of users or groups that manage the secrets and certificates.')
param adminPrincipalIds array

@description('Put a CanNotDelete lock on the vault.')
param deleteLock bool

@description('Resource id of the Log Analytics workspace that receives the audit log and metrics.')
param logAnalyticsWorkspaceId string

var roles = {
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  certificateUser: 'db79e9a7-68ee-4b58-9aeb-b90e7c24fcba' // Key Vault Certificate User
  secretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer
  certificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985' // Key Vault Certificates Officer
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'None'
      ipRules: [for ip in allowedIpRanges: {
        value: ip
      }]
    }
  }
}

// Access per secret: each identity may read exactly the secrets its pods
// (or the import Job) mount, no other (Key Vault Secrets User scoped to the
// secret, not the vault): the deliver pods, which connect to hosts anywhere,
// cannot read the cursor or instance access key rings, nor the access token
// certificates. A role scoped to a secret needs the secret to exist, and the
// secrets are uploaded after the vault is made (docs/deploy.md, step 5), so
// the grants are made by the deployment that follows (secretsReady); until
// then the identities read nothing, and no pod runs yet.
@description('The secrets each identity reads: {secret, reader} with reader `api`, `deliver` or `import` (docs/deploy.md: the chart\'s keyVault.secrets and accessTokenCerts, and the import\'s password).')
param secretGrants array

@description('Whether the secrets of secretGrants exist in the vault (after docs/deploy.md step 5): only then are the grants made.')
param secretsReady bool

var readers = {
  api: readerPrincipalId
  deliver: deliverPrincipalId
  import: importPrincipalId
}

resource grantedSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for g in secretGrants: {
  parent: vault
  name: g.secret
}]

resource secretReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (g, i) in secretGrants: if (secretsReady && (g.reader != 'import' || importEnabled)) {
  scope: grantedSecrets[i]
  name: guid(vault.id, g.secret, readers[g.reader], roles.secretsUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsUser)
    principalId: readers[g.reader]
    principalType: 'ServicePrincipal'
  }
}]

resource adminSecretsRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for id in adminPrincipalIds: {
  scope: vault
  name: guid(vault.id, id, roles.secretsOfficer)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsOfficer)
    principalId: id
  }
}]

resource adminCertificatesRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for id in adminPrincipalIds: {
  scope: vault
  name: guid(vault.id, id, roles.certificatesOfficer)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.certificatesOfficer)
    principalId: id
  }
}]

// Deleting the vault (or the resource group) fails while this lock is there.
// Purge protection keeps a deleted vault recoverable for 90 days; the lock
// stops the delete itself, and with it the outage until a recovery.
resource noDelete 'Microsoft.Authorization/locks@2020-05-01' = if (deleteLock) {
  scope: vault
  name: 'do-not-delete'
  properties: {
    level: 'CanNotDelete'
    notes: 'Holds the secrets of altinn-events. Remove on purpose only (docs/operations.md, Recovery).'
  }
}

// Who read or changed which secret (AuditEvent), Azure Policy's evaluations
// (AzurePolicyEvaluationDetails), and the platform metrics.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: vault
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [for category in [
      'AuditEvent'
      'AzurePolicyEvaluationDetails'
    ]: {
      category: category
      enabled: true
    }]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
