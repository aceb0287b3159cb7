// Private endpoints for Cosmos DB and Key Vault in a subnet of the AKS
// cluster's virtual network, with the private DNS zones that make the usual
// host names (<account>.documents.azure.com, <vault>.vault.azure.net) resolve
// to the private addresses inside that network.

param location string
param tags object

@description('Resource id of the subnet for the private endpoints.')
param subnetId string

param cosmosAccountId string
param keyVaultId string

// /subscriptions/../virtualNetworks/<vnet>/subnets/<subnet> -> the vnet's id.
var vnetId = split(subnetId, '/subnets/')[0]

var endpoints = [
  {
    name: 'cosmos'
    target: cosmosAccountId
    groupId: 'Sql'
    zone: 'privatelink.documents.azure.com'
  }
  {
    name: 'vault'
    target: keyVaultId
    groupId: 'vault'
    zone: 'privatelink.vaultcore.azure.net'
  }
]

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for e in endpoints: {
  name: e.zone
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (e, i) in endpoints: {
  parent: zones[i]
  name: 'link-${last(split(vnetId, '/'))}'
  location: 'global'
  tags: tags
  properties: {
    virtualNetwork: {
      id: vnetId
    }
    registrationEnabled: false
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for e in endpoints: {
  name: 'pe-${e.name}-${last(split(e.target, '/'))}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: e.name
        properties: {
          privateLinkServiceId: e.target
          groupIds: [e.groupId]
        }
      }
    ]
  }
}]

resource dnsGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (e, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: replace(e.zone, '.', '-')
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]

// The addresses of Cosmos DB's private endpoint (one per host name of the
// account: the global one and one per region), read from the endpoint's
// network interface (its customDnsConfigs stay empty with a DNS zone
// group), as /32 CIDRs: the chart's
// networkPolicy.privateEndpointCidrs. The pods reach these and nothing else
// of the subnet: Key Vault's endpoint beside them is reached by the CSI
// driver on the node, never by a pod, so the deliver pods (which connect to
// arbitrary webhook hosts) cannot reach the vault.
@description('Chart value networkPolicy.privateEndpointCidrs: Cosmos DB\'s private endpoint addresses.')
output cosmosCidrs array = [for c in reference(privateEndpoints[0].properties.networkInterfaces[0].id, '2023-11-01').ipConfigurations: '${c.properties.privateIPAddress}/32']
