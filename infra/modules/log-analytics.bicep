// A Log Analytics workspace for the diagnostic settings of Cosmos DB and Key
// Vault, created only when main.bicep is given no existing workspace
// (logAnalyticsWorkspaceId).

param name string
param location string
param tags object

@description('Days the workspace keeps its data (31 are included in the price of ingestion).')
@minValue(30)
@maxValue(730)
param retentionInDays int

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      // Readers of a resource's logs need rights on that resource, not on
      // the whole workspace.
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

output id string = workspace.id
