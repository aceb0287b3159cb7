// Cosmos DB for NoSQL: the account, the `events` database and container, and
// the data-plane role of the service's identity. Key auth is disabled: the
// service authenticates with Entra ID only (workload identity).

param accountName string
param location string
param tags object

param databaseName string
param containerName string

@description('Autoscale maximum RU/s of the container; it scales between 10% of this and this.')
@minValue(1000)
param autoscaleMaxThroughput int

@description('Container default TTL in seconds; events expire after it.')
param defaultTtlSeconds int

@description('Spread the account\'s replicas over the region\'s availability zones.')
param zoneRedundant bool

@allowed(['Continuous7Days', 'Continuous30Days'])
param continuousBackupTier string

@description('Public network access; closed unless the caller opens it.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'

@description('IPv4 addresses or CIDR ranges allowed through the firewall when public network access is enabled.')
param allowedIpRanges array

@description('Principal (object) id of the service\'s managed identity.')
param dataContributorPrincipalId string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: zoneRedundant
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    // One write region: a feed segment's head document serializes its appends
    // through ETag conditions, which multi-region writes would not preserve.
    enableMultipleWriteLocations: false
    enableAutomaticFailover: false
    // Entra ID (RBAC) only, for data and metadata: no account keys.
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: publicNetworkAccess
    networkAclBypass: 'None'
    isVirtualNetworkFilterEnabled: false
    ipRules: [for ip in allowedIpRanges: {
      ipAddressOrRange: ip
    }]
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: {
        tier: continuousBackupTier
      }
    }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      // Each feed segment is one logical partition: pk = "{feed}|{segment}".
      partitionKey: {
        paths: ['/pk']
        kind: 'Hash'
        version: 2
      }
      defaultTtl: defaultTtlSeconds
      // Only what queries filter or order on; `/*` excluded, so `data` and
      // every other property cost no index writes.
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          { path: '/seq/?' }
          { path: '/type/?' }
          { path: '/source/?' }
          { path: '/subject/?' }
          { path: '/alternativesubject/?' }
          { path: '/time/?' }
          { path: '/resource/?' }
          { path: '/resourceinstance/?' }
          { path: '/sealed/?' }
          { path: '/eid/?' }
          { path: '/consumer/?' }
          { path: '/kind/?' }
          { path: '/dueMs/?' }
        ]
        excludedPaths: [
          { path: '/*' }
        ]
      }
      // A sequence number is taken once per segment partition: appends rely
      // on it (src/feeds/writer.rs). Unique keys can only be set when the
      // container is created.
      uniqueKeyPolicy: {
        uniqueKeys: [
          { paths: [ '/seq' ] }
        ]
      }
    }
    options: {
      autoscaleSettings: {
        maxThroughput: autoscaleMaxThroughput
      }
    }
  }
}

// Cosmos DB Built-in Data Contributor: read and write items, read metadata.
// Assigned on the account, which holds only this service's data: the SDK
// reads account-level metadata (regions, partition key ranges) as well.
resource dataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, dataContributorPrincipalId, '00000000-0000-0000-0000-000000000002')
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'
    principalId: dataContributorPrincipalId
    scope: account.id
  }
}

output id string = account.id
output endpoint string = account.properties.documentEndpoint
