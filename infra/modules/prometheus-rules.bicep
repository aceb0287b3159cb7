// The service's alerts for Azure Monitor managed Prometheus: one Prometheus
// rule group on the AKS cluster's Azure Monitor workspace, evaluated by Azure
// (managed Prometheus does not read the chart's PrometheusRule objects).
//
// The rules are prometheus-rules.json: the chart's PrometheusRule as
// rendered with helm/altinn-events/values.yaml, for release and namespace
// `altinn-events` (written by `.ci/chart-monitoring.py --write-rule-groups`;
// .ci/deploy-checks fails when it and the chart differ). Each alert's
// runbook is docs/operations.md, "Alerts".

@description('Name of the rule group.')
param name string

@description('Region of the Azure Monitor workspace.')
param location string

param tags object = {}

@description('Resource id of the Azure Monitor workspace the cluster\'s managed Prometheus writes to.')
param azureMonitorWorkspaceId string

@description('Name of the AKS cluster: the rules see only its series.')
param clusterName string

@description('Action groups notified when an alert fires (resource ids). Empty: the alerts show in Azure Monitor only.')
param actionGroupIds array = []

@description('Where docs/operations.md is browsed: each alert\'s runbook_url is this plus #<alert name in lower case>.')
param runbookBaseUrl string = 'docs/operations.md'

var source = loadJsonContent('prometheus-rules.json')

// Bicep allows no loop inside a function call or a loop's property: the
// actions are made once, here.
var actions = [for id in actionGroupIds: {
  actionGroupId: id
}]

resource rules 'Microsoft.AlertsManagement/prometheusRuleGroups@2023-03-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    description: 'Alerts of altinn-events (release ${source.release}, namespace ${source.namespace}); runbooks in docs/operations.md.'
    scopes: [
      azureMonitorWorkspaceId
    ]
    clusterName: clusterName
    enabled: true
    interval: source.interval
    rules: [for rule in source.rules: union({
      alert: rule.alert
      expression: rule.expression
      severity: rule.severity
      labels: rule.labels
      annotations: union(rule.annotations, {
        runbook_url: replace(rule.annotations.runbook_url, 'docs/operations.md', runbookBaseUrl)
      })
      enabled: true
      resolveConfiguration: {
        autoResolved: true
        timeToResolve: 'PT10M'
      }
      actions: actions
    }, contains(rule, 'for') ? {
      'for': rule['for']
    } : {})]
  }
}

output id string = rules.id
