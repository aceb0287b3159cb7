#!/usr/bin/env python3
"""Split rendered Helm output for schema validation.

kubernetes-validate ships the schemas of Kubernetes' built-in kinds only. For a
custom resource it prints a warning ("Couldn't find schema") and exits 0, so
piping the whole chart into it would let any CRD - and any typo in a built-in
apiVersion - pass unchecked. This script therefore:

- validates the one CRD kind the chart uses, SecretProviderClass
  (secrets-store.csi.x-k8s.io/v1), itself: against the CRD's schema (the
  fields of the upstream SecretProviderClassSpec, unknown fields rejected), the
  Azure provider's parameter names and `objects` syntax, and the wiring to the
  Deployment (CSI volumes name an existing class; secretKeyRefs name a synced
  Secret and key);
- validates the PodMonitor (monitoring.coreos.com/v1 or Azure Monitor managed
  Prometheus' copy, azmonitoring.coreos.com/v1) against the fields of the
  Prometheus Operator's PodMonitorSpec that the chart uses, unknown fields
  rejected, and checks that its selector matches every Deployment's pods
  and its port is a named container port of them;
- writes every other document to stdout for `kubernetes-validate --strict`,
  where the caller treats any output, warnings included, as a failure.

Usage: split-crds.py < rendered.yaml > builtin-kinds.yaml   (exit 1 on errors)
"""

import sys

import jsonschema
import yaml

SPC = ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass")

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

# spec of secrets-store.csi.x-k8s.io/v1 SecretProviderClass (upstream CRD).
SPC_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": SPC[0]},
        "kind": {"const": SPC[1]},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string"},
                "labels": STRING_MAP,
                "annotations": STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "required": ["provider", "parameters"],
            "additionalProperties": False,
            "properties": {
                "provider": {"type": "string", "minLength": 1},
                "parameters": STRING_MAP,
                "secretObjects": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["secretName", "type", "data"],
                        "additionalProperties": False,
                        "properties": {
                            "secretName": {"type": "string", "minLength": 1},
                            "type": {"type": "string", "minLength": 1},
                            "labels": STRING_MAP,
                            "annotations": STRING_MAP,
                            "data": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["objectName", "key"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "objectName": {"type": "string", "minLength": 1},
                                        "key": {"type": "string", "minLength": 1},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

PODMONITOR_API = {"monitoring.coreos.com/v1", "azmonitoring.coreos.com/v1"}
DURATION = {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h))+)$"}
# The fields of the Prometheus Operator's PodMonitor (v1) the chart writes.
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"enum": sorted(PODMONITOR_API)},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": STRING_MAP},
        },
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": STRING_MAP},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}, "any": {"type": "boolean"}},
                },
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                        },
                    },
                },
            },
        },
    },
}

# Parameters the Azure Key Vault provider reads.
AZURE_PARAMETERS = {
    "usePodIdentity", "useVMManagedIdentity", "userAssignedIdentityID", "clientID",
    "keyvaultName", "tenantId", "cloudName", "cloudEnvFileName", "objects",
}
AZURE_OBJECT_FIELDS = {
    "objectName", "objectType", "objectAlias", "objectVersion", "objectVersionHistory",
    "objectFormat", "objectEncoding", "filePermission",
}
AZURE_OBJECT_TYPES = {"secret", "key", "cert"}


def azure_files(name, params, errors):
    """Check the Azure provider parameters; return the file names it writes."""
    for key in sorted(set(params) - AZURE_PARAMETERS):
        errors.append(f"{name}: unknown Azure provider parameter {key!r}")
    try:
        objects = yaml.safe_load(params.get("objects", "")) or {}
        entries = [yaml.safe_load(entry) for entry in objects.get("array", [])]
    except (yaml.YAMLError, AttributeError) as err:
        errors.append(f"{name}: parameters.objects is not the provider's YAML: {err}")
        return set()
    files = set()
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("objectName"):
            errors.append(f"{name}: object without objectName: {entry!r}")
            continue
        for key in sorted(set(entry) - AZURE_OBJECT_FIELDS):
            errors.append(f"{name}: object {entry['objectName']!r} has unknown field {key!r}")
        if entry.get("objectType") not in AZURE_OBJECT_TYPES:
            errors.append(f"{name}: object {entry['objectName']!r} has objectType {entry.get('objectType')!r}")
        file = str(entry.get("objectAlias") or entry["objectName"])
        if file in files:
            errors.append(f"{name}: two objects write the file {file!r}")
        files.add(file)
    return files


def schema_errors(kind, schema, doc, errors):
    """Adds to `errors` where `doc` breaks `schema`; returns its name."""
    name = doc.get("metadata", {}).get("name", "?")
    for err in jsonschema.Draft202012Validator(schema).iter_errors(doc):
        path = "/".join(str(p) for p in err.absolute_path)
        errors.append(f"{kind} {name}: {path}: {err.message}")
    return name


def main():
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    errors = []
    classes = {}  # SecretProviderClass name -> synced {secretName: {keys}}
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) != SPC:
            continue
        name = schema_errors("SecretProviderClass", SPC_SCHEMA, doc, errors)
        spec = doc.get("spec") or {}
        if spec.get("provider") != "azure":
            errors.append(f"SecretProviderClass {name}: provider must be azure")
        files = azure_files(f"SecretProviderClass {name}", spec.get("parameters") or {}, errors)
        synced = {}
        for obj in spec.get("secretObjects") or []:
            keys = synced.setdefault(obj.get("secretName"), set())
            for item in obj.get("data") or []:
                if item.get("objectName") not in files:
                    errors.append(
                        f"SecretProviderClass {name}: secretObjects syncs {item.get('objectName')!r}, "
                        f"which no object writes (have {sorted(files)})"
                    )
                keys.add(item.get("key"))
        classes[name] = synced

    # The Deployment's side of the wiring.
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        mounted = set()
        for vol in pod.get("volumes") or []:
            csi = vol.get("csi")
            if csi and csi.get("driver") == "secrets-store.csi.k8s.io":
                spc = (csi.get("volumeAttributes") or {}).get("secretProviderClass")
                if spc not in classes:
                    errors.append(f"volume {vol['name']!r} names SecretProviderClass {spc!r}, which is not rendered")
                else:
                    mounted.add(spc)
        secrets = {}
        for spc in mounted:
            for secret, keys in classes[spc].items():
                secrets.setdefault(secret, set()).update(keys)
        for container in pod.get("containers") or []:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref.get("key") not in secrets.get(ref.get("name"), set()):
                    errors.append(
                        f"env {env['name']} reads Secret {ref.get('name')!r} key {ref.get('key')!r}, "
                        "which no mounted SecretProviderClass syncs"
                    )

    # PodMonitors: the schema, and the wiring to the Deployments' pods.
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    for doc in docs:
        if doc.get("kind") != "PodMonitor":
            continue
        name = schema_errors("PodMonitor", PODMONITOR_SCHEMA, doc, errors)
        spec = doc.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        for dep in deployments:
            template = dep["spec"]["template"]
            labels = template["metadata"].get("labels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                errors.append(f"PodMonitor {name}: selector {selector} misses the pods of {dep['metadata']['name']}")
            ports = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports") or []}
            for ep in spec.get("podMetricsEndpoints") or []:
                if ep.get("port") not in ports:
                    errors.append(f"PodMonitor {name}: port {ep.get('port')!r} is not a named port of {dep['metadata']['name']}")

    for err in errors:
        print(f"ERROR: {err}", file=sys.stderr)
    builtin = [d for d in docs if (d.get("apiVersion"), d.get("kind")) != SPC and d.get("kind") != "PodMonitor"]
    yaml.safe_dump_all(builtin, sys.stdout, sort_keys=False)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
