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

{{/*
Labels that select the API pods (the API Deployment, its Service, PDB, HPA
and NetworkPolicy). A Deployment's selector cannot change, so these stay as
they were before the deliver Deployment existed: upgrades keep working. The
deliver pods carry another `app.kubernetes.io/name` (`<name>-deliver`), so
nothing that selects on these labels ever matches them.
*/}}
{{- define "altinn-events.selectorLabels" -}}
app.kubernetes.io/name: {{ include "altinn-events.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* `app.kubernetes.io/name` of the deliver pods. */}}
{{- define "altinn-events.deliverName" -}}
{{- printf "%s-deliver" (include "altinn-events.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the deliver pods (their Deployment, PDB and NetworkPolicy). */}}
{{- define "altinn-events.deliverSelectorLabels" -}}
app.kubernetes.io/name: {{ include "altinn-events.deliverName" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: deliver
{{- end }}

{{/*
Labels on the pods of both Deployments of the release: select on these to
reach every pod (e.g. a PodMonitor scraping /metrics of both roles).
*/}}
{{- define "altinn-events.releasePodLabels" -}}
app.kubernetes.io/part-of: altinn-events
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

{{/* The deliver pods' service account: by default the API's name + `-deliver`. */}}
{{- define "altinn-events.deliverServiceAccountName" -}}
{{- default (printf "%s-deliver" (include "altinn-events.serviceAccountName" .)) .Values.deliver.serviceAccount.name }}
{{- end }}

{{/* Whether the deliver Deployment runs; without it the API pods also deliver (role all). */}}
{{- define "altinn-events.deliverEnabled" -}}
{{- if .Values.deliver.enabled }}true{{ end }}
{{- end }}

{{/* repository:tag@digest; repository:tag only where image.requireDigest is off. */}}
{{- define "altinn-events.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if and .Values.image.requireDigest (not .Values.image.digest) }}
{{- fail "image.digest is required: the sha256 digest of the pushed image (docs/deploy.md, step 7); set image.requireDigest=false to run a tag" }}
{{- end }}
{{- if and .Values.image.digest (not (regexMatch "^sha256:[0-9a-f]{64}$" .Values.image.digest)) }}
{{- fail (printf "image.digest %q must be sha256: and 64 lowercase hex digits" .Values.image.digest) }}
{{- end }}
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
{{- if and .Values.deliver.enabled (not .Values.deliver.workloadIdentity.clientId) }}
- deliver.workloadIdentity.clientId (infra output deliverIdentityClientId)
{{- end }}
{{- if not .Values.keyVault.name }}
- keyVault.name (infra output keyVaultName)
{{- end }}
{{- end }}

{{/*
The Key Vault secrets one role's pods mount, as a JSON list of
{objectName, setting}, from keyVault.secrets (called with dict "ctx" $ "role"
"api"|"deliver"). An entry's `roles` default to both. Without the deliver
Deployment the API pods run both roles (`--role all`) and mount every entry.
Fails rendering on a malformed entry or a setting mapped twice.
*/}}
{{- define "altinn-events.keyVaultSecrets" -}}
{{- $ctx := .ctx }}
{{- $role := .role }}
{{- $union := and (eq $role "api") (not (include "altinn-events.deliverEnabled" $ctx)) }}
{{- $out := list }}
{{- $seen := dict }}
{{- range $i, $s := $ctx.Values.keyVault.secrets }}
{{- $where := printf "keyVault.secrets[%d]" $i }}
{{- if not (kindIs "map" $s) }}
{{- fail (printf "%s must be a map with objectName and setting" $where) }}
{{- end }}
{{- $setting := toString (default "" $s.setting) }}
{{- /* The service's own rule for a setting's file name: lower-case letters, digits, `_`; levels separated by `__`, none empty. */}}
{{- if or (not (regexMatch "^[a-z0-9_]+$" $setting)) (hasPrefix "__" $setting) (hasSuffix "__" $setting) (contains "____" $setting) }}
{{- fail (printf "%s: setting %q must match ^[a-z0-9_]+$ with `__` between levels (the EVENTS__ variable name without the prefix, in lower case, e.g. pdp__subscription_key)" $where $setting) }}
{{- end }}
{{- if hasKey $seen $setting }}
{{- fail (printf "%s: setting %q is already mapped by keyVault.secrets[%v]; each setting comes from one secret" $where $setting (get $seen $setting)) }}
{{- end }}
{{- $_ := set $seen $setting $i }}
{{- $object := toString (default "" $s.objectName) }}
{{- if not (regexMatch "^[0-9A-Za-z-]{1,127}$" $object) }}
{{- fail (printf "%s (%s): objectName %q must be a Key Vault secret name (1-127 letters, digits and '-')" $where $setting $object) }}
{{- end }}
{{- $roles := list "api" "deliver" }}
{{- if hasKey $s "roles" }}
{{- if or (not (kindIs "slice" $s.roles)) (empty $s.roles) }}
{{- fail (printf "%s (%s): roles must be a non-empty list of api and deliver" $where $setting) }}
{{- end }}
{{- range $s.roles }}
{{- if not (has (toString .) (list "api" "deliver")) }}
{{- fail (printf "%s (%s): role %q is neither api nor deliver" $where $setting (toString .)) }}
{{- end }}
{{- end }}
{{- $roles = $s.roles }}
{{- end }}
{{- range $k, $_ := omit $s "objectName" "setting" "roles" }}
{{- fail (printf "%s (%s): unknown field %q (objectName, setting, roles)" $where $setting $k) }}
{{- end }}
{{- if or $union (has $role $roles) }}
{{- $out = append $out (dict "objectName" $object "setting" $setting) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The SecretProviderClass of one role's secrets volume (dict "ctx" $ "role"
"api"|"deliver"): the role's Key Vault secrets, each written as the file
named by its setting, fetched with the role's workload identity. Empty when
the role maps no secret (its pods then mount an empty directory).
*/}}
{{- define "altinn-events.secretProviderClassName" -}}
{{- if eq .role "api" }}
{{- printf "%s-secrets" (include "altinn-events.fullname" .ctx) }}
{{- else }}
{{- printf "%s-deliver-secrets" (include "altinn-events.fullname" .ctx) }}
{{- end }}
{{- end }}

{{- define "altinn-events.secretProviderClass" -}}
{{- $ctx := .ctx }}
{{- $secrets := include "altinn-events.keyVaultSecrets" . | fromJsonArray }}
{{- $clientId := ternary $ctx.Values.workloadIdentity.clientId $ctx.Values.deliver.workloadIdentity.clientId (eq .role "api") }}
{{- if $secrets }}
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {{ include "altinn-events.secretProviderClassName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "altinn-events.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  provider: azure
  parameters:
    usePodIdentity: "false"
    # The {{ .role }} pods' workload identity: it needs Key Vault Secrets User
    # on the vault (infra/).
    clientID: {{ $clientId | quote }}
    tenantId: {{ $ctx.Values.workloadIdentity.tenantId | quote }}
    keyvaultName: {{ $ctx.Values.keyVault.name | quote }}
    # Each secret becomes the file named by its setting (objectAlias) in
    # keyVault.secretsMountPath, which the service reads as EVENTS__SECRETS_DIR.
    # No objectVersion: the latest version, so a new version reaches the
    # running pods (with the add-on's secret rotation) without a restart.
    objects: |
      array:
      {{- range $secrets }}
        - |
          objectName: {{ .objectName }}
          objectType: secret
          objectAlias: {{ .setting }}
      {{- end }}
{{- end }}
{{- end }}

{{/*
Fails rendering on values that would deploy something broken, and on the
values this chart replaced (so that an old values file does not silently
lose a secret).
*/}}
{{- define "altinn-events.validate" -}}
{{- range $old := list "pdpSubscriptionKeySecret" "registerSubscriptionKeySecret" "cursorKeySecret" }}
{{- if index $.Values.keyVault $old }}
{{- fail (printf "keyVault.%s is replaced by the list keyVault.secrets (Key Vault secret -> setting; docs/deploy.md, \"Secrets from Key Vault\")" $old) }}
{{- end }}
{{- end }}
{{- if le (mul (int .Values.config.shutdownGraceSeconds) 1000) (int64 .Values.config.cosmos.publishDeadlineMs) }}
{{- fail "config.shutdownGraceSeconds must exceed config.cosmos.publishDeadlineMs: a stopping pod must outlast every publish it accepted (the deadline covers all of a publish's storage work)" }}
{{- end }}
{{- if ge (int64 .Values.config.cosmos.operationTimeoutMs) (int64 .Values.config.cosmos.publishDeadlineMs) }}
{{- fail "config.cosmos.operationTimeoutMs must be below config.cosmos.publishDeadlineMs: an attempt must fit in a publish" }}
{{- end }}
{{- if and .Values.config.delivery.enabled (le (int .Values.config.shutdownGraceSeconds) (int .Values.config.webhooks.timeoutSeconds)) }}
{{- fail "config.shutdownGraceSeconds must exceed config.webhooks.timeoutSeconds: a stopping pod finishes its pushes and stores their checkpoints before it lets its subscriptions go" }}
{{- end }}
{{- if and .Values.deliver.enabled (not .Values.config.delivery.enabled) }}
{{- fail "config.delivery.enabled is false but deliver.enabled is true: to stop push delivery set deliver.enabled=false as well (the API pods then run --role all with delivery off)" }}
{{- end }}
{{- end }}

{{/* The SecretProviderClass of the API pods' access token certificates; empty without issuers. */}}
{{- define "altinn-events.accessTokenCertsClass" -}}
{{- $kv := .Values.keyVault }}
{{- $wi := .Values.workloadIdentity }}
{{- with $kv.accessTokenCerts.issuers }}
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {{ include "altinn-events.fullname" $ }}-access-token-certs
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "altinn-events.labels" $ | nindent 4 }}
    app.kubernetes.io/component: api
spec:
  provider: azure
  parameters:
    usePodIdentity: "false"
    clientID: {{ $wi.clientId | quote }}
    tenantId: {{ $wi.tenantId | quote }}
    keyvaultName: {{ $kv.name | quote }}
    # Each object becomes the file <issuer>.pem: a secret as its value (PEM
    # text), a Key Vault certificate as its PEM public certificate.
    objects: |
      array:
      {{- range . }}
      {{- if not (regexMatch "^[a-z0-9][a-z0-9-]*$" (toString .issuer)) }}
      {{- fail (printf "keyVault.accessTokenCerts.issuers: issuer %q must be lower-case letters, digits and '-'" (toString .issuer)) }}
      {{- end }}
      {{- $type := default "secret" .objectType }}
      {{- if not (has $type (list "cert" "secret")) }}
      {{- fail (printf "keyVault.accessTokenCerts.issuers: objectType of %q must be cert or secret" .issuer) }}
      {{- end }}
        - |
          objectName: {{ required "keyVault.accessTokenCerts.issuers[].objectName is required" .objectName }}
          objectType: {{ $type }}
          objectAlias: {{ .issuer }}.pem
      {{- end }}
{{- end }}
{{- end }}
