{{/*
The pod template of one role's Deployment (dict "ctx" $ "role" "api"|"deliver").
Both roles run the same image and read the same ConfigMap; they differ in the
role argument, the service account (and so the workload identity), the
labels, the resources and the secrets they mount.

  api      the HTTP API and the feed repairer (`serve --role api`); with
           deliver.enabled=false also push delivery (`serve --role all`).
  deliver  push delivery and validation pushes (`serve --role deliver`); it
           serves only /health/* and /metrics on the same port.
*/}}
{{- define "altinn-events.podTemplate" -}}
{{- $ctx := .ctx }}
{{- $role := .role }}
{{- $v := $ctx.Values }}
{{- $api := eq $role "api" }}
{{- $port := include "altinn-events.containerPort" $ctx | int }}
{{- $certs := $v.keyVault.accessTokenCerts }}
{{- $secrets := include "altinn-events.keyVaultSecrets" . | fromJsonArray }}
{{- $serveRole := $role }}
{{- if and $api (not (include "altinn-events.deliverEnabled" $ctx)) }}
{{- $serveRole = "all" }}
{{- end }}
metadata:
  labels:
    {{- if $api }}
    {{- include "altinn-events.selectorLabels" $ctx | nindent 4 }}
    app.kubernetes.io/component: api
    {{- else }}
    {{- include "altinn-events.deliverSelectorLabels" $ctx | nindent 4 }}
    {{- end }}
    app.kubernetes.io/part-of: altinn-events
    app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
    # Lets the workload identity webhook inject AZURE_CLIENT_ID,
    # AZURE_TENANT_ID, AZURE_AUTHORITY_HOST and AZURE_FEDERATED_TOKEN_FILE.
    azure.workload.identity/use: "true"
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Roll the pods when the configuration or the Key Vault mapping changes
    # (the CSI driver reads a SecretProviderClass only when it mounts the
    # volume). A new version of a mapped secret needs no roll: the driver
    # rewrites the file and the service reads it again.
    checksum/config: {{ include (print $ctx.Template.BasePath "/configmap.yaml") $ctx | sha256sum }}
    {{- $classes := include "altinn-events.secretProviderClass" . }}
    {{- if $api }}
    {{- $classes = print $classes (include "altinn-events.accessTokenCertsClass" $ctx) }}
    {{- end }}
    checksum/secret-provider: {{ $classes | sha256sum }}
    {{- if $v.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $port | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ ternary (include "altinn-events.serviceAccountName" $ctx) (include "altinn-events.deliverServiceAccountName" $ctx) $api }}
  # No Kubernetes API token in the pod; workload identity brings its own.
  automountServiceAccountToken: false
  # No SERVICE_HOST/PORT variables from other Services in the namespace.
  enableServiceLinks: false
  # preStop sleep + the service's own drain time + a margin, so that the
  # kubelet never kills a pod that is still finishing its work.
  terminationGracePeriodSeconds: {{ add $v.preStopSleepSeconds $v.config.shutdownGraceSeconds 10 }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: altinn-events
      image: {{ include "altinn-events.image" $ctx | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy | default (ternary "IfNotPresent" "Always" (not (empty $v.image.digest))) }}
      args: ["serve", "--role", {{ $serveRole | quote }}]
      ports:
        - name: http
          containerPort: {{ $port }}
          protocol: TCP
      # Settings only; the secrets are files in the secrets volume
      # (EVENTS__SECRETS_DIR), read again while the pod runs.
      envFrom:
        - configMapRef:
            name: {{ include "altinn-events.fullname" $ctx }}
      startupProbe:
        httpGet:
          path: /health/live
          port: http
        periodSeconds: {{ $v.probes.startup.periodSeconds }}
        failureThreshold: {{ $v.probes.startup.failureThreshold }}
        timeoutSeconds: {{ $v.probes.startup.timeoutSeconds }}
      livenessProbe:
        httpGet:
          path: /health/live
          port: http
        periodSeconds: {{ $v.probes.liveness.periodSeconds }}
        failureThreshold: {{ $v.probes.liveness.failureThreshold }}
        timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
      readinessProbe:
        httpGet:
          path: /health/ready
          port: http
        periodSeconds: {{ $v.probes.readiness.periodSeconds }}
        failureThreshold: {{ $v.probes.readiness.failureThreshold }}
        timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
      {{- if gt (int $v.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ $v.preStopSleepSeconds }}
      {{- end }}
      resources:
        {{- toYaml (ternary $v.resources $v.deliver.resources $api) | nindent 8 }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        privileged: false
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: secrets
          mountPath: {{ $v.keyVault.secretsMountPath }}
          readOnly: true
        - name: access-token-certs
          mountPath: {{ $certs.mountPath }}
          readOnly: true
  volumes:
    {{- if $secrets }}
    # Mounting this volume is what makes the CSI driver fetch the secrets
    # (with this pod's identity) and write one file per setting; with the
    # add-on's secret rotation it rewrites them when a secret gets a new
    # version.
    - name: secrets
      csi:
        driver: secrets-store.csi.k8s.io
        readOnly: true
        volumeAttributes:
          secretProviderClass: {{ include "altinn-events.secretProviderClassName" . }}
    {{- else }}
    # keyVault.secrets maps nothing to this role: an empty directory.
    - name: secrets
      emptyDir:
        sizeLimit: 1Mi
    {{- end }}
    {{- if and $api $certs.issuers }}
    - name: access-token-certs
      csi:
        driver: secrets-store.csi.k8s.io
        readOnly: true
        volumeAttributes:
          secretProviderClass: {{ include "altinn-events.fullname" $ctx }}-access-token-certs
    {{- else if $api }}
    # No issuers configured: an empty directory, so the service starts and
    # rejects every platform access token.
    - name: access-token-certs
      emptyDir:
        sizeLimit: 1Mi
    {{- else }}
    # The deliver pods check no platform access token: an empty directory
    # where EVENTS__AUTH__ACCESS_TOKEN_CERTS_DIR points.
    - name: access-token-certs
      emptyDir:
        sizeLimit: 1Mi
    {{- end }}
  # Spread over zones (required in values.yaml: a pod that cannot keep the
  # spread waits rather than piling into one zone) and nodes (preferred),
  # counting only this Deployment's pods of the current revision.
  topologySpreadConstraints:
    - topologyKey: topology.kubernetes.io/zone
      maxSkew: {{ $v.topologySpread.zone.maxSkew }}
      whenUnsatisfiable: {{ $v.topologySpread.zone.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- if $api }}
          {{- include "altinn-events.selectorLabels" $ctx | nindent 10 }}
          {{- else }}
          {{- include "altinn-events.deliverSelectorLabels" $ctx | nindent 10 }}
          {{- end }}
      matchLabelKeys: ["pod-template-hash"]
    - topologyKey: kubernetes.io/hostname
      maxSkew: {{ $v.topologySpread.host.maxSkew }}
      whenUnsatisfiable: {{ $v.topologySpread.host.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- if $api }}
          {{- include "altinn-events.selectorLabels" $ctx | nindent 10 }}
          {{- else }}
          {{- include "altinn-events.deliverSelectorLabels" $ctx | nindent 10 }}
          {{- end }}
      matchLabelKeys: ["pod-template-hash"]
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The checkov skips both Deployments carry, as annotations. */}}
{{- define "altinn-events.checkovSkips" -}}
{{- if not .Values.image.digest }}
# Without image.digest the image is referenced by its release tag: a digest
# exists only once the image is built, and image.digest pins it then.
checkov.io/skip1: CKV_K8S_43=Image is pinned by release tag; image.digest pins the digest when known
{{- else }}
# Pinned by digest, the image cannot change: the node's copy is the build.
checkov.io/skip1: CKV_K8S_15=Image is pinned by digest; IfNotPresent cannot run another build
{{- end }}
{{- end }}
