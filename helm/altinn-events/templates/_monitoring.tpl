{{/*
PromQL label matchers for the release's series, used by the PrometheusRule and
the KEDA ScaledObject. They match on `namespace` and `pod`, which every
Kubernetes scrape keeps (a PodMonitor, annotation-based scraping, Azure Monitor
managed Prometheus, kube-state-metrics), so the rules work whichever of them
collects the metrics, and a rule evaluated by a Prometheus that sees several
namespaces or releases only looks at this one.
*/}}

{{/* Every pod of the release: the API Deployment's (`<fullname>-<hash>-<id>`) and the deliver one's (`<fullname>-deliver-<hash>-<id>`). */}}
{{- define "altinn-events.promPods" -}}
namespace="{{ .Release.Namespace }}",pod=~"{{ include "altinn-events.fullname" . | regexQuoteMeta }}-.+"
{{- end }}

{{/* The API Deployment's pods only: its name, then exactly the ReplicaSet hash and the pod's id (the deliver pods have one segment more). */}}
{{- define "altinn-events.promApiPods" -}}
namespace="{{ .Release.Namespace }}",pod=~"{{ include "altinn-events.fullname" . | regexQuoteMeta }}-[a-z0-9]+-[a-z0-9]+"
{{- end }}

{{/* Labels added to every alert: severity comes from the rule, these route it. */}}
{{- define "altinn-events.alertLabels" -}}
{{- with .Values.metrics.prometheusRule.additionalAlertLabels }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* runbook_url of an alert: the base URL of docs/operations.md and the alert's anchor in its "Alerts" section. */}}
{{- define "altinn-events.runbook" -}}
{{- printf "%s#%s" .root.Values.metrics.prometheusRule.runbookBaseUrl .anchor | quote }}
{{- end }}
