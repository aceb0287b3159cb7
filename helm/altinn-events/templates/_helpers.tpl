{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "altinn-events.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: the release name, suffixed with the chart name unless it already contains it. */}}
{{- define "altinn-events.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "altinn-events.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pods; they never change across upgrades. */}}
{{- define "altinn-events.selectorLabels" -}}
app.kubernetes.io/name: {{ include "altinn-events.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "altinn-events.labels" -}}
helm.sh/chart: {{ include "altinn-events.chart" . }}
{{ include "altinn-events.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: altinn-events
{{- end }}

{{/* The service account name; infra/ puts it in the federated credential's subject. */}}
{{- define "altinn-events.serviceAccountName" -}}
{{- default (include "altinn-events.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* repository:tag, or repository:tag@digest when a digest is given. */}}
{{- define "altinn-events.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The container port; the image sets EVENTS__LISTEN_ADDR=0.0.0.0:8080 too. */}}
{{- define "altinn-events.containerPort" -}}
8080
{{- end }}

{{/* Name of the Kubernetes Secret that the CSI driver syncs from Key Vault. */}}
{{- define "altinn-events.secretName" -}}
{{- printf "%s-secrets" (include "altinn-events.fullname" .) }}
{{- end }}

{{/*
Values that must be set for the pods to start and become ready, as a list of messages.
Used by NOTES.txt; rendering does not fail on them so that `helm lint` and
`helm template` work on the bare chart.
*/}}
{{- define "altinn-events.missingValues" -}}
{{- if not (contains "/" .Values.image.repository) }}
- image.repository (no registry in it: <registry>.azurecr.io/altinn-events)
{{- end }}
{{- if not .Values.config.cosmos.endpoint }}
- config.cosmos.endpoint (infra output cosmosEndpoint)
{{- end }}
{{- if not .Values.workloadIdentity.clientId }}
- workloadIdentity.clientId (infra output workloadIdentityClientId)
{{- end }}
{{- if not .Values.workloadIdentity.tenantId }}
- workloadIdentity.tenantId (infra output tenantId)
{{- end }}
{{- if not .Values.keyVault.name }}
- keyVault.name (infra output keyVaultName)
{{- end }}
{{- end }}
