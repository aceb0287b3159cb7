// Cosmos DB for NoSQL: the account (one write region, optionally a read region
// it fails over to), the `events` database with its events and subscriptions
// containers, the data-plane roles
// of the API's and the deliver pods' identities, a delete lock and diagnostic
// settings. Key auth is disabled: the service authenticates with Entra ID only
// (workload identity).

param accountName string
param location string
param tags object

param databaseName string
param containerName string
param subscriptionsContainerName string

@description('Autoscale maximum RU/s of the container; it scales between 10% of this and this.')
@minValue(1000)
param autoscaleMaxThroughput int

@description('Autoscale maximum RU/s of the subscriptions container.')
@minValue(1000)
param subscriptionsAutoscaleMaxThroughput int

@description('Container default TTL in seconds; events expire after it.')
param defaultTtlSeconds int

@description('Spread the account\'s replicas over the region\'s availability zones.')
param zoneRedundant bool

@description('Read region the account fails over to (failover priority 1). Empty: one region only.')
param secondaryLocation string

@description('Spread the read region\'s replicas over its availability zones (only where it has them).')
param secondaryZoneRedundant bool

@allowed(['Continuous7Days', 'Continuous30Days'])
param continuousBackupTier string

@description('Public network access; closed unless the caller opens it.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'

@description('IPv4 addresses or CIDR ranges allowed through the firewall when public network access is enabled.')
param allowedIpRanges array

@description('Principal (object) id of the service\'s managed identity.')
param dataContributorPrincipalId string

@description('Principal (object) id of the deliver pods\' managed identity.')
param deliverPrincipalId string

@description('Principal id of the import Job\'s identity: Built-in Data Contributor while importEnabled.')
param importPrincipalId string

param importEnabled bool

@description('Put a CanNotDelete lock on the account.')
param deleteLock bool

@description('Resource id of the Log Analytics workspace that receives the diagnostic logs and metrics.')
param logAnalyticsWorkspaceId string

@description('Action groups notified by the hot-partition alert (resource ids). Empty: the alert fires in Azure Monitor only.')
param alertActionGroupIds array = []

@description('Hot-partition alert: the highest normalized RU consumption of one partition key range, percent, over 15 minutes.')
@minValue(1)
@maxValue(100)
param hotPartitionThresholdPercent int = 90

// The write region first; a read region, when given, is where automatic
// failover moves the writes.
var readRegions = empty(secondaryLocation) ? [] : [
  {
    locationName: secondaryLocation
    failoverPriority: 1
    isZoneRedundant: secondaryZoneRedundant
  }
]

// ONE write region, always. Feed positions are kept unique and gapless by
// the unique key on /seq: a writer that loses the race for a number gets 409
// and takes the next one (docs/storage.md). Only a single write region
// enforces that key at write time; with several, two regions could each
// accept the same number and the conflict would be resolved afterwards (last
// writer wins), losing or reordering an acknowledged event. A read region
// adds no writer: it only takes over the writes when failover makes it the
// write region.
resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: concat([
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: zoneRedundant
      }
    ], readRegions)
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    // ONE write region, always (above).
    enableMultipleWriteLocations: false
    // When Azure declares the write region down, the read region (failover
    // priority 1) becomes the write region; the SDK follows by itself.
    enableAutomaticFailover: true
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
          { path: '/aseq/?' }
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

// Subscriptions, their delivery states, the delivery buckets' leases and the
// instances' presences (src/feeds/subscriptions, src/feeds/coordination):
// everything the deliver pods write, apart from the events, so that their
// identity can only read those. Small (about 1 KB a subscription), written
// at every checkpoint.
resource subscriptionsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: subscriptionsContainerName
  properties: {
    resource: {
      id: subscriptionsContainerName
      partitionKey: {
        paths: ['/pk']
        kind: 'Hash'
        version: 2
      }
      // On, without a default: subscriptions and delivery states never
      // expire; a presence does, by its own ttl, a day after its pod died.
      defaultTtl: -1
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          { path: '/seq/?' }
          { path: '/consumer/?' }
          { path: '/kind/?' }
          { path: '/dueMs/?' }
          { path: '/importedRow/?' }
        ]
        excludedPaths: [
          { path: '/*' }
        ]
      }
      // Subscription ids are `seq`, taken once (src/feeds/subscriptions).
      uniqueKeyPolicy: {
        uniqueKeys: [
          { paths: [ '/seq' ] }
        ]
      }
    }
    options: {
      autoscaleSettings: {
        maxThroughput: subscriptionsAutoscaleMaxThroughput
      }
    }
  }
  dependsOn: [
    container
  ]
}

// Data-plane roles. Cosmos DB refuses a change to an account while another
// one is in progress, so each of these waits for the one before it
// (dependsOn), starting after the containers exist.

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
  dependsOn: [
    subscriptionsContainer
  ]
}

// The import Job (docs/migration.md) writes events, subscriptions, delivery
// states and its progress, as the API does: the same built-in role, only
// while an import is planned.
resource importContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = if (importEnabled) {
  parent: account
  name: guid(account.id, importPrincipalId, '00000000-0000-0000-0000-000000000002')
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'
    principalId: importPrincipalId
    scope: account.id
  }
  dependsOn: [
    dataContributor
  ]
}

// The deliver pods (`serve --role deliver`) call arbitrary webhook hosts, so
// they are the first thing an attacker reaches: their identity reads the
// events and writes nothing but the subscriptions container.
// - On the events container: the built-in Data Reader (items/read,
//   executeQuery, readChangeFeed, readMetadata), nothing else: a deliver
//   identity cannot create, replace or delete an event, a segment head or
//   the store's generation.
// - On the subscriptions container, a role of their own with only the data
//   actions delivery uses:
//   - read subscriptions and states: items/read, executeQuery and
//     readChangeFeed (the SDK needs both of the last two for queries);
//   - store checkpoints, bucket leases, their presence and validation
//     results: items/create, upsert and replace;
//   - items/delete: a stopping pod deletes its presence document (without
//     it, the others count the stopped pod for up to a lease and leave its
//     buckets waiting that long), and a deliverer deletes the delivery state
//     of a subscription that was deleted.
//   No stored procedures, no conflict feed.
// - On the account: readMetadata only (the SDK reads the account's regions
//   and the database's metadata when it starts).
// Databases and containers change through Azure Resource Manager only
// (disableKeyBasedMetadataWriteAccess), where this identity has no role.
// Data-plane roles scope to an account, a database or a container (never to
// documents), hence the two containers.
var containerScope = '${account.id}/dbs/${database.name}/colls/${container.name}'
var subscriptionsScope = '${account.id}/dbs/${database.name}/colls/${subscriptionsContainer.name}'

// Named anew (role and assignment) when it moved from the events container
// to the subscriptions container: a role definition's scopes and an
// assignment's scope are not changed in place while assignments use them.
// The earlier role ('altinn-events deliver', on the events container) and
// its assignment are not removed by an incremental deployment: delete them
// (docs/deploy.md, "Upgrading to the subscriptions container").
resource deliverRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-11-15' = {
  parent: account
  name: guid(account.id, 'altinn-events-deliver', subscriptionsScope)
  properties: {
    roleName: 'altinn-events deliver (subscriptions)'
    type: 'CustomRole'
    assignableScopes: [
      subscriptionsScope
    ]
    permissions: [
      {
        dataActions: [
          'Microsoft.DocumentDB/databaseAccounts/readMetadata'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/create'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/upsert'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/replace'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/delete'
        ]
      }
    ]
  }
  // importContributor is conditional: when it is not deployed, ARM drops
  // it from here, and dataContributor still orders this after it.
  dependsOn: [
    dataContributor
    importContributor
  ]
}

// readMetadata assigned on a container covers that container's metadata
// only; the SDK also reads the account's (its regions) and the database's
// when it starts. Metadata only: no item, query or change feed.
resource metadataReaderRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-11-15' = {
  parent: account
  name: guid(account.id, 'altinn-events-metadata-reader')
  properties: {
    roleName: 'altinn-events metadata reader'
    type: 'CustomRole'
    assignableScopes: [
      account.id
    ]
    permissions: [
      {
        dataActions: [
          'Microsoft.DocumentDB/databaseAccounts/readMetadata'
        ]
      }
    ]
  }
  dependsOn: [
    deliverRole
  ]
}

resource deliverMetadata 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, deliverPrincipalId, metadataReaderRole.id)
  properties: {
    roleDefinitionId: metadataReaderRole.id
    principalId: deliverPrincipalId
    scope: account.id
  }
}

// Cosmos DB Built-in Data Reader on the events container only.
resource deliverEventsReader 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, deliverPrincipalId, '00000000-0000-0000-0000-000000000001', containerScope)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001'
    principalId: deliverPrincipalId
    scope: containerScope
  }
  dependsOn: [
    deliverMetadata
  ]
}

resource deliverData 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, deliverPrincipalId, deliverRole.id, subscriptionsScope)
  properties: {
    roleDefinitionId: deliverRole.id
    principalId: deliverPrincipalId
    scope: subscriptionsScope
  }
  dependsOn: [
    deliverEventsReader
  ]
}

// Deleting the account (or the resource group) fails while this lock is
// there; docs/operations.md, "Recovery", says how to remove it on purpose.
// It does not stop data-plane deletes, nor a restore.
resource noDelete 'Microsoft.Authorization/locks@2020-05-01' = if (deleteLock) {
  scope: account
  name: 'do-not-delete'
  properties: {
    level: 'CanNotDelete'
    notes: 'Holds the events feeds, subscriptions and delivery state of altinn-events. Remove on purpose only (docs/operations.md, Recovery).'
  }
}

// Request logs into resource-specific tables (CDBDataPlaneRequests,
// CDBQueryRuntimeStatistics, CDBPartitionKeyStatistics,
// CDBPartitionKeyRUConsumption, CDBControlPlaneRequests) and the platform
// metrics (category Requests, table AzureMetrics). DataPlaneRequests logs
// every request: its volume follows the traffic.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: account
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [for category in [
      'DataPlaneRequests'
      'QueryRuntimeStatistics'
      'PartitionKeyStatistics'
      'PartitionKeyRUConsumption'
      'ControlPlaneRequests'
    ]: {
      category: category
      enabled: true
    }]
    metrics: [
      {
        category: 'Requests'
        enabled: true
      }
    ]
  }
}

// A hot physical partition (docs/capacity.md, "One feed's ceiling"): the
// container's RU/s are split evenly over its physical partitions and every
// write of one feed goes to one of them, so one partition key range can
// spend its share (and answer 429) while the account as a whole is far
// below its maximum. NormalizedRUConsumption is, per minute, the highest
// share of its RU/s any second used; split by PartitionKeyRangeId, the
// alert names the range. It corroborates the service's own
// AltinnEventsCosmosPartitionThrottled (docs/operations.md), which counts
// the 429s the SDK retried.
// The events container only: the subscriptions container is one physical
// partition, which AltinnEventsCosmosRuNearMax watches by its own maximum.
resource hotPartition 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${accountName}-cosmos-hot-partition'
  location: 'global'
  tags: tags
  properties: {
    description: 'One physical partition of ${databaseName}/${containerName} used more than ${hotPartitionThresholdPercent}% of its share of the RU/s: a hot feed (docs/capacity.md, docs/operations.md AltinnEventsCosmosPartitionThrottled).'
    severity: 2
    enabled: true
    scopes: [account.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'NormalizedRUConsumptionPerPartition'
          metricNamespace: 'Microsoft.DocumentDB/databaseAccounts'
          metricName: 'NormalizedRUConsumption'
          operator: 'GreaterThan'
          threshold: hotPartitionThresholdPercent
          timeAggregation: 'Maximum'
          dimensions: [
            {
              name: 'DatabaseName'
              operator: 'Include'
              values: [databaseName]
            }
            {
              name: 'CollectionName'
              operator: 'Include'
              values: [containerName]
            }
            {
              name: 'PartitionKeyRangeId'
              operator: 'Include'
              values: ['*']
            }
          ]
        }
      ]
    }
    autoMitigate: true
    actions: [for id in alertActionGroupIds: {
      actionGroupId: id
    }]
  }
}

output id string = account.id
output endpoint string = account.properties.documentEndpoint
