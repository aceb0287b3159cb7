#!/usr/bin/env python3
"""Production invariants of the rendered chart, checked offline by
.ci/deploy-checks (issue 20).

On every rendering:
  - two Deployments of the image: the API (`serve --role api`) and the
    deliver pods (`serve --role deliver`), or, with deliver.enabled=false,
    the API alone with `--role all`; each with its own ServiceAccount, and
    each ServiceAccount with a workload identity client id annotation that
    the role's SecretProviderClass fetches with;
  - the API Deployment's selector is the one the chart always had
    (a Deployment's selector cannot change: upgrades would fail);
  - no selector spans both Deployments: each Deployment's selector, PDB,
    NetworkPolicy and topology spread matches its own pod template's labels
    and not the other's; every Service matches the API pods only, and the
    HPA scales the API Deployment;
  - a stopping pod outlasts the publishes retrying Cosmos DB, in both
    Deployments: the service's shutdown grace exceeds the append retry
    deadline, the preStop sleep is at least 10 s, and
    terminationGracePeriodSeconds covers both;
  - the CPU limit leaves the runtime more than one worker; images pinned by
    digest are pulled IfNotPresent, tags Always; values.yaml refuses to
    render without a well-formed image digest (image.requireDigest);
  - egress, per role: DNS only to the cluster resolver (kube-dns), HTTPS
    only, to public addresses (every private, shared, link-local, loopback
    range and 168.63.129.16 excluded, IPv4 and IPv6) and to the
    private-endpoint CIDRs the values list; ingress only from named peers;
  - no secret is rendered: no Kubernetes Secret, no secretKeyRef, no
    secretObjects, no key- or secret-looking setting or value in a ConfigMap;
  - every keyVault.secrets entry is an objectAlias (= its setting) in the
    SecretProviderClass of each role it lists, and nowhere else; each role's
    pods mount their class read-only at EVENTS__SECRETS_DIR.
On production renderings (values.yaml) also: zone spread DoNotSchedule for
both Deployments and an API autoscaler keeping >= 3 pods.

With --helm and --chart it also renders variants itself: deliver disabled;
distinct identities, a fuller secret mapping and private-endpoint CIDRs; and
values the chart must refuse (a malformed or duplicate setting, an unknown
role, a replaced value).

    chart-invariants.py [--helm HELM --chart CHART] [--dev DEV.yaml ...] RENDERED.yaml ...

RENDERED files are renderings of values.yaml; DEV files of values.yaml +
values-dev.yaml (the chart's values files are read from CHART, default
helm/altinn-events next to this script).
"""
import argparse
import copy
import ipaddress
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

RELEASE = NAMESPACE = "altinn-events"
PRIVATE_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8", "168.63.129.16/32"]
PRIVATE_V6 = ["fc00::/7", "fe80::/10", "::1/128"]
KUBE_DNS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
# Settings in a ConfigMap that name a secret rather than hold one.
NOT_SECRET = {"EVENTS__SECRETS_DIR", "EVENTS__SECRETS_RELOAD_SECONDS"}
SECRET_SETTING = re.compile(r"(SECRET|PASSWORD|__KEY$|__KEYS__|KEY_RING|SUBSCRIPTION_KEY|CONNECTION_STRING)")
SECRET_VALUE = re.compile(r"(AccountKey=|SharedAccessSignature|-----BEGIN|whsec_|\b[a-z0-9_-]+:[A-Za-z0-9+/=]{16,})")

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)
    return bool(ok)


def merge(base, over):
    """Helm's values merge: maps merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def selector_matches(selector, labels):
    """A label selector (matchLabels/matchExpressions, or a Service's plain map) against pod labels."""
    if selector is None:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def walk(node, path=""):
    """Every (path, key, value) of a document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def spc_objects(spc):
    """The objects of a SecretProviderClass: (objectName, objectAlias) pairs."""
    parsed = yaml.safe_load(spc["spec"]["parameters"].get("objects") or "array: []") or {}
    out = []
    for item in parsed.get("array") or []:
        obj = yaml.safe_load(item) if isinstance(item, str) else item
        out.append((obj.get("objectName"), obj.get("objectAlias")))
    return out


def covered(net, excepts):
    return any(net.subnet_of(e) for e in excepts if e.version == net.version)


def check_egress(tag, policy, private_cidrs, public_ports):
    """Each egress rule is DNS to kube-dns, `public_ports` (443, and the
    webhook ports for pods that push) to public addresses, or 443 to the
    private-endpoint CIDRs."""
    name = f"{tag}NetworkPolicy {policy['metadata']['name']}"
    seen = {"dns": False, "public4": False, "public6": False, "private": set()}
    for i, rule in enumerate(policy["spec"].get("egress") or []):
        where = f"{name}: egress rule {i}"
        ports = {(p.get("port"), p.get("protocol", "TCP")) for p in rule.get("ports") or []}
        peers = rule.get("to") or []
        if not check(ports, f"{where} allows every port") or not check(peers, f"{where} allows every destination"):
            continue
        if ports == {(53, "UDP"), (53, "TCP")}:
            check(all(p == KUBE_DNS for p in peers), f"{where}: DNS goes elsewhere than kube-dns in kube-system: {peers}")
            seen["dns"] = True
            continue
        public_rule = any(ipaddress.ip_network((p.get("ipBlock") or {}).get("cidr", "10.0.0.0/8")).prefixlen == 0 for p in peers)
        allowed = {(port, "TCP") for port in public_ports} if public_rule else {(443, "TCP")}
        if not check(ports == allowed, f"{where} allows ports {sorted(ports, key=str)}, not {sorted(allowed, key=str)}"):
            continue
        for peer in peers:
            block = peer.get("ipBlock")
            if not check(block and len(peer) == 1, f"{where}: a 443 peer that is not an ipBlock: {peer}"):
                continue
            net = ipaddress.ip_network(block["cidr"])
            excepts = [ipaddress.ip_network(e) for e in block.get("except") or []]
            if net.prefixlen == 0:
                required = PRIVATE_V4 if net.version == 4 else PRIVATE_V6
                missing = [r for r in required if not covered(ipaddress.ip_network(r), excepts)]
                check(not missing, f"{where}: public HTTPS does not exclude {missing}")
                seen[f"public{net.version}"] = True
            else:
                check(block["cidr"] in private_cidrs,
                      f"{where}: 443 to {block['cidr']}, which is not in networkPolicy.privateEndpointCidrs")
                seen["private"].add(block["cidr"])
                check(net.is_private, f"{where}: {block['cidr']} is a public range outside the public rule")
    check(seen["dns"], f"{name}: no DNS rule")
    check(seen["public4"], f"{name}: no public HTTPS rule")
    check(seen["private"] == set(private_cidrs),
          f"{name}: private-endpoint CIDRs {sorted(seen['private'])} != values {sorted(private_cidrs)}")


def check_import_job(tag, job, values, accounts, identity, secrets_dir, by_kind):
    """The import Job: the service's `import` command, its own identity, the
    password as a file from its own SecretProviderClass, and locked down."""
    name = f"{tag}Job {job['metadata']['name']}"
    imp = values["import"]
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(c.get("args", [])[:3] == ["import", "--source", imp["source"]], f"{name}: args {c.get('args')}")
    check(pod.get("restartPolicy") in ("OnFailure", "Never"), f"{name}: restartPolicy {pod.get('restartPolicy')}")
    check(pod.get("automountServiceAccountToken") is False, f"{name}: mounts a Kubernetes API token")
    check(job["spec"]["template"]["metadata"]["labels"].get("azure.workload.identity/use") == "true", f"{name}: not labelled for workload identity")
    sa = accounts.get(pod.get("serviceAccountName"))
    if check(sa, f"{name}: service account {pod.get('serviceAccountName')} is not rendered"):
        client = (sa["metadata"].get("annotations") or {}).get("azure.workload.identity/client-id")
        check(client == imp["workloadIdentity"]["clientId"], f"{name}: client id {client}, not import.workloadIdentity.clientId")
        check(client not in identity.values(), f"{name}: shares an identity with the pods")
    sec = c.get("securityContext", {})
    check(sec.get("readOnlyRootFilesystem") is True and sec.get("allowPrivilegeEscalation") is False
          and sec.get("runAsNonRoot") is True, f"{name}: container security context {sec}")
    check(not c.get("env"), f"{name}: environment variables outside the ConfigMap")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    mount = mounts.get(secrets_dir)
    if check(mount and mount.get("readOnly"), f"{name}: nothing mounted read-only at EVENTS__SECRETS_DIR"):
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        spc_name = volume.get("csi", {}).get("volumeAttributes", {}).get("secretProviderClass")
        spc = next((x for x in by_kind.get("SecretProviderClass", []) if x["metadata"]["name"] == spc_name), None)
        if check(spc, f"{name}: SecretProviderClass {spc_name} is not rendered"):
            # The password, and the ring that seals imported subscriptions'
            # webhook secrets (the pods' own mapping of it), nothing else.
            ring = [(o["objectName"], "subscription_secrets__key_ring") for o in values["keyVault"]["secrets"]
                    if o["setting"] == "subscription_secrets__key_ring"]
            check(spc_objects(spc) == [(imp["passwordSecret"], "import__source_password")] + ring,
                  f"{name}: its SecretProviderClass maps {spc_objects(spc)}, not only the password and the subscription secret ring")
            check(spc["spec"]["parameters"].get("clientID") == imp["workloadIdentity"]["clientId"],
                  f"{name}: its SecretProviderClass fetches with another identity")


def check_import_egress(tag, policy, private_cidrs, imp):
    """The import reaches DNS, the source database, the private endpoints and
    Entra ID (public 443 without private ranges), nothing else."""
    name = f"{tag}NetworkPolicy {policy['metadata']['name']}"
    check(not policy["spec"].get("ingress"), f"{name}: admits ingress")
    seen = set()
    for i, rule in enumerate(policy["spec"].get("egress") or []):
        where = f"{name}: egress rule {i}"
        ports = {(p.get("port"), p.get("protocol", "TCP")) for p in rule.get("ports") or []}
        peers = rule.get("to") or []
        if not check(ports and peers, f"{where} allows every port or destination"):
            continue
        if ports == {(53, "UDP"), (53, "TCP")}:
            check(all(p == KUBE_DNS for p in peers), f"{where}: DNS elsewhere than kube-dns")
            seen.add("dns")
        elif ports == {(imp["sourcePort"], "TCP")}:
            cidrs = sorted(p.get("ipBlock", {}).get("cidr") for p in peers)
            check(cidrs == sorted(imp["sourceCidrs"]), f"{where}: the source database rule reaches {cidrs}")
            seen.add("source")
        elif ports == {(443, "TCP")}:
            for peer in peers:
                net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                if net.prefixlen == 0:
                    excepts = [ipaddress.ip_network(e) for e in peer["ipBlock"].get("except") or []]
                    missing = [r for r in PRIVATE_V4 if not covered(ipaddress.ip_network(r), excepts)]
                    check(not missing, f"{where}: public HTTPS does not exclude {missing}")
                    seen.add("entra")
                else:
                    check(peer["ipBlock"]["cidr"] in private_cidrs, f"{where}: 443 to {net}, not a private endpoint")
        else:
            check(False, f"{where}: ports {sorted(ports, key=str)}")
    check(seen >= {"dns", "source", "entra"}, f"{name}: rules for {sorted(seen)} only")


def check_rendered(label, docs, values, production, deliver_expected):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    tag = f"[{label}] "

    def p(ok, what):
        return check(ok, tag + what)

    # --- no secret anywhere -------------------------------------------------
    p(not by_kind.get("Secret"), "a Kubernetes Secret is rendered")
    for d in docs:
        for path, key, value in walk(d):
            p(key != "secretKeyRef", f"{d['kind']} {d['metadata']['name']}: secretKeyRef at {path}")
            p(key != "secretObjects", f"{d['kind']} {d['metadata']['name']}: secretObjects (a synced Kubernetes Secret) at {path}")
    config = {}
    for cm in by_kind.get("ConfigMap", []):
        data = cm.get("data") or {}
        config.update(data)
        for key, value in data.items():
            p(key in NOT_SECRET or not SECRET_SETTING.search(key), f"ConfigMap {cm['metadata']['name']} carries the secret setting {key}")
            p(not SECRET_VALUE.search(str(value)), f"ConfigMap {cm['metadata']['name']} has a secret-looking value under {key}")
    secrets_dir = config.get("EVENTS__SECRETS_DIR")
    p(secrets_dir, "the ConfigMap sets no EVENTS__SECRETS_DIR")

    grace = int(config.get("EVENTS__SHUTDOWN_GRACE_SECONDS", "0"))
    deadline_ms = int(config.get("EVENTS__COSMOS__PUBLISH_DEADLINE_MS", "15000"))
    attempt_ms = int(config.get("EVENTS__COSMOS__OPERATION_TIMEOUT_MS", "5000"))
    p(grace * 1000 > deadline_ms, f"shutdown grace {grace} s does not exceed the publish deadline {deadline_ms} ms")
    p(attempt_ms < deadline_ms, f"an operation's timeout {attempt_ms} ms does not fit in the publish deadline {deadline_ms} ms")

    # --- the two Deployments ---------------------------------------------------
    deployments = by_kind.get("Deployment", [])
    roles = {}
    for dep in deployments:
        component = dep["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        p(component in ("api", "deliver"), f"Deployment {dep['metadata']['name']}: pod label app.kubernetes.io/component is {component!r}")
        p(component not in roles, f"two Deployments with component {component}")
        roles[component] = dep
    api, deliver = roles.get("api"), roles.get("deliver")
    if not p(api, "no API Deployment (component api)"):
        return 0
    fullname = api["metadata"]["name"]
    p(bool(deliver) == deliver_expected, "the deliver Deployment is " + ("missing" if deliver_expected else "rendered with deliver.enabled=false"))
    if deliver:
        p(deliver["metadata"]["name"] == f"{fullname}-deliver", f"the deliver Deployment is named {deliver['metadata']['name']}, not {fullname}-deliver")

    def container(dep):
        return dep["spec"]["template"]["spec"]["containers"][0]

    p(container(api).get("args") == ["serve", "--role", "api" if deliver_expected else "all"],
      f"API args are {container(api).get('args')}")
    if deliver:
        p(container(deliver).get("args") == ["serve", "--role", "deliver"], f"deliver args are {container(deliver).get('args')}")
        p(container(deliver)["image"] == container(api)["image"], "the deliver pods run another image than the API")
    p(api["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "altinn-events", "app.kubernetes.io/instance": RELEASE}},
      f"the API Deployment's selector changed ({api['spec']['selector']}): Kubernetes refuses to upgrade a Deployment whose selector changes")

    # Service accounts and identities.
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind.get("ServiceAccount", [])}
    identity = {}
    for role, dep in roles.items():
        pod = dep["spec"]["template"]["spec"]
        sa = accounts.get(pod.get("serviceAccountName"))
        if p(sa, f"{role}: service account {pod.get('serviceAccountName')} is not rendered"):
            annotations = sa["metadata"].get("annotations") or {}
            p("azure.workload.identity/client-id" in annotations, f"{role}: service account {sa['metadata']['name']} has no workload identity client id")
            identity[role] = annotations.get("azure.workload.identity/client-id")
        p(dep["spec"]["template"]["metadata"]["labels"].get("azure.workload.identity/use") == "true", f"{role}: pods not labelled for workload identity")
        p(pod.get("automountServiceAccountToken") is False, f"{role}: the pods mount a Kubernetes API token")
    if deliver:
        p(api["spec"]["template"]["spec"]["serviceAccountName"] != deliver["spec"]["template"]["spec"]["serviceAccountName"],
          "the API and deliver pods share a service account")
        want = (values["workloadIdentity"]["clientId"], values["deliver"]["workloadIdentity"]["clientId"])
        p((identity.get("api"), identity.get("deliver")) == want, f"client ids {identity} are not the values' {want}")

    # --- the import Job (import.enabled) -------------------------------------------
    jobs = by_kind.get("Job", [])
    p(len(jobs) == (1 if values.get("import", {}).get("enabled") else 0), f"{len(jobs)} Jobs rendered")
    for job in jobs:
        check_import_job(tag, job, values, accounts, identity, secrets_dir, by_kind)

    # --- selectors: no object spans both Deployments ---------------------------
    pod_labels = {role: dep["spec"]["template"]["metadata"]["labels"] for role, dep in roles.items()}
    for job in jobs:
        pod_labels["import"] = job["spec"]["template"]["metadata"]["labels"]

    def selected(selector):
        return sorted(role for role, labels in pod_labels.items() if selector_matches(selector, labels))

    for role, dep in roles.items():
        p(selected(dep["spec"]["selector"]) == [role], f"Deployment {dep['metadata']['name']}: its selector matches the pods of {selected(dep['spec']['selector'])}")
        for t in dep["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            p(selected(t["labelSelector"]) == [role], f"{role}: the {t['topologyKey']} spread counts the pods of {selected(t['labelSelector'])}")
    for svc in by_kind.get("Service", []):
        p(selected(svc["spec"].get("selector")) == ["api"], f"Service {svc['metadata']['name']} selects the pods of {selected(svc['spec'].get('selector'))}")
    pdbs = {}
    for pdb in by_kind.get("PodDisruptionBudget", []):
        s = selected(pdb["spec"]["selector"])
        p(len(s) == 1, f"PodDisruptionBudget {pdb['metadata']['name']} selects the pods of {s}")
        for role in s:
            pdbs[role] = pdb
    for role in roles:
        p(role in pdbs, f"{role}: no PodDisruptionBudget")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        p(hpa["spec"]["scaleTargetRef"]["name"] == fullname, f"HPA {hpa['metadata']['name']} scales {hpa['spec']['scaleTargetRef']['name']}, not the API")
        if production:
            p(hpa["spec"]["minReplicas"] >= 3, f"HPA {hpa['metadata']['name']}: minReplicas < 3")
    for so in by_kind.get("ScaledObject", []):
        p(so["spec"]["scaleTargetRef"]["name"] == fullname, f"ScaledObject {so['metadata']['name']} scales {so['spec']['scaleTargetRef']['name']}, not the API")

    # --- stopping, resources, images, spread --------------------------------------
    for role, dep in roles.items():
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"]:
            expected = "IfNotPresent" if "@sha256:" in c["image"] else "Always"
            p(c.get("imagePullPolicy") == expected, f"{name}/{c['name']}: imagePullPolicy is not {expected}")
            pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            p(pre >= 10, f"{name}/{c['name']}: preStop sleep {pre} s < 10 s")
            p(pod.get("terminationGracePeriodSeconds", 30) > pre + grace,
              f"{name}: terminationGracePeriodSeconds does not cover preStop {pre} s + grace {grace} s")
            cpu = str(c.get("resources", {}).get("limits", {}).get("cpu", ""))
            if cpu:
                cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
                p(cores >= 2, f"{name}/{c['name']}: a CPU limit of {cpu} leaves the runtime one worker")
            p(not c.get("env"), f"{name}/{c['name']}: environment variables outside the ConfigMap: {[e.get('name') for e in c.get('env', [])]}")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                p(probe in c, f"{name}/{c['name']}: no {probe}")
        zone = [t for t in pod.get("topologySpreadConstraints", []) if t["topologyKey"] == "topology.kubernetes.io/zone"]
        p(zone, f"{name}: no zone spread")
        if production:
            p(zone and zone[0]["whenUnsatisfiable"] == "DoNotSchedule", f"{name}: zone spread is not enforced (DoNotSchedule)")

    # --- network policies ----------------------------------------------------------
    np_values = values["networkPolicy"]
    private_cidrs = sorted(set((np_values.get("privateEndpointCidrs") or []) + (np_values.get("privateHttpsCidrs") or [])))
    policies = by_kind.get("NetworkPolicy", [])
    p(policies, "no NetworkPolicy rendered")
    for np in policies:
        name = np["metadata"]["name"]
        s = selected(np["spec"]["podSelector"])
        p(len(s) == 1, f"NetworkPolicy {name} selects the pods of {s}")
        p(set(np["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}, f"NetworkPolicy {name}: policyTypes {np['spec'].get('policyTypes')}")
        for rule in np["spec"].get("ingress", []):
            p(rule.get("from"), f"NetworkPolicy {name}: an ingress rule admits every peer")
            p(rule.get("ports"), f"NetworkPolicy {name}: an ingress rule admits every port")
        if s == ["deliver"]:
            froms = [peer for rule in np["spec"].get("ingress", []) for peer in rule.get("from") or []]
            p(froms == np_values["metricsFrom"], f"NetworkPolicy {name}: the deliver pods admit {froms}, not networkPolicy.metricsFrom")
        if s == ["import"]:
            check_import_egress(tag, np, private_cidrs, values["import"])
            continue
        if not np_values.get("extraEgress"):
            # Pods that push open the webhook ports the service checks
            # endpoints against (the same setting), and no others.
            pushes = s == ["deliver"] or (s == ["api"] and not deliver_expected)
            webhook_ports = {int(x) for x in config.get("EVENTS__WEBHOOKS__ALLOWED_PORTS", "[443]").strip("[]").split(",") if x.strip()}
            check_egress(tag, np, private_cidrs, {443} | webhook_ports if pushes else {443})
    for role in roles:
        p(sum(selected(np["spec"]["podSelector"]) == [role] for np in policies) == 1, f"{role}: not exactly one NetworkPolicy")

    # --- Key Vault mapping -----------------------------------------------------------
    classes = {spc["metadata"]["name"]: spc for spc in by_kind.get("SecretProviderClass", [])}
    entries = values["keyVault"]["secrets"] or []
    mounted = {}
    for role, dep in roles.items():
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        mount = mounts.get(secrets_dir)
        if not p(mount and mount.get("readOnly"), f"{role}: nothing mounted read-only at EVENTS__SECRETS_DIR {secrets_dir}"):
            continue
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        want = sorted(e["setting"] for e in entries if not deliver or role in e.get("roles", ["api", "deliver"]))
        if "csi" in volume:
            spc_name = volume["csi"]["volumeAttributes"]["secretProviderClass"]
            spc = classes.get(spc_name)
            if not p(spc, f"{role}: mounts SecretProviderClass {spc_name}, which is not rendered"):
                continue
            mounted[spc_name] = role
            objects = spc_objects(spc)
            by_alias = {alias: name for name, alias in objects}
            p(sorted(by_alias) == want, f"{role}: SecretProviderClass {spc_name} holds {sorted(by_alias)}, not {want}")
            for e in entries:
                if e["setting"] in by_alias:
                    p(by_alias[e["setting"]] == e["objectName"], f"{spc_name}: {e['setting']} comes from {by_alias[e['setting']]}, not {e['objectName']}")
            p(spc["spec"]["parameters"].get("clientID") == identity.get(role),
              f"{role}: SecretProviderClass {spc_name} fetches as {spc['spec']['parameters'].get('clientID')!r}, the pods' identity is {identity.get(role)!r}")
        else:
            p(not want, f"{role}: keyVault.secrets maps {want} but the pods mount no SecretProviderClass")
    # The import Job's class is checked with the Job (check_import_job).
    import_classes = {v.get("csi", {}).get("volumeAttributes", {}).get("secretProviderClass")
                      for job in by_kind.get("Job", []) for v in job["spec"]["template"]["spec"].get("volumes", [])}
    for spc_name, spc in classes.items():
        if spc_name in mounted or spc_name in import_classes:
            continue
        aliases = [alias for _, alias in spc_objects(spc)]
        p(spc_name.endswith("-access-token-certs"), f"SecretProviderClass {spc_name} is mounted by no role")
        leaked = sorted(set(aliases) & {e["setting"] for e in entries})
        p(not leaked, f"SecretProviderClass {spc_name} also holds {leaked}")
        p(all(a.endswith(".pem") for a in aliases), f"SecretProviderClass {spc_name} holds other files than certificates: {aliases}")
        users = [role for role, dep in roles.items()
                 if any(v.get("csi", {}).get("volumeAttributes", {}).get("secretProviderClass") == spc_name for v in dep["spec"]["template"]["spec"]["volumes"])]
        p(users in ([], ["api"]), f"the access token certificates are mounted by {users}, not the API alone")
        if users:
            p(spc["spec"]["parameters"].get("clientID") == identity.get("api"), f"SecretProviderClass {spc_name} does not fetch with the API's identity")

    return len(docs)


def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


DIGEST = "sha256:" + "0123456789abcdef" * 4


def helm_template(helm, chart, overlay):
    """Render the chart with an overlay of values (and an image digest, which
    values.yaml requires, unless the overlay says something of the image);
    returns (returncode, stdout, stderr)."""
    if "image" not in overlay:
        overlay = merge(overlay, {"image": {"digest": DIGEST}})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(overlay, f)
        f.flush()
        r = subprocess.run([helm, "template", RELEASE, chart, "--namespace", NAMESPACE, "-f", f.name],
                           capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--helm", help="helm binary: also render and check variants")
    ap.add_argument("--chart", default=str(pathlib.Path(__file__).resolve().parent.parent / "helm" / "altinn-events"))
    ap.add_argument("--dev", action="append", default=[], help="a rendering of values.yaml + values-dev.yaml")
    ap.add_argument("rendered", nargs="+", help="renderings of values.yaml")
    args = ap.parse_args()

    chart = pathlib.Path(args.chart)
    base = yaml.safe_load(open(chart / "values.yaml"))
    dev = merge(base, yaml.safe_load(open(chart / "values-dev.yaml")))

    renderings = objects = 0
    for path in args.rendered:
        objects += check_rendered(path, load(path), base, production=True, deliver_expected=base["deliver"]["enabled"])
        renderings += 1
    for path in args.dev:
        objects += check_rendered(path, load(path), dev, production=False, deliver_expected=dev["deliver"]["enabled"])
        renderings += 1

    refused = 0
    if args.helm:
        variants = {
            "deliver.enabled=false": {"deliver": {"enabled": False}},
            "identities, full mapping, private endpoints": {
                "workloadIdentity": {"clientId": "00000000-0000-0000-0000-0000000000a1", "tenantId": "t"},
                "deliver": {"workloadIdentity": {"clientId": "00000000-0000-0000-0000-0000000000d1"}},
                "keyVault": {"name": "kv", "secrets": [
                    {"objectName": "pdp-subscription-key", "setting": "pdp__subscription_key"},
                    {"objectName": "register-subscription-key", "setting": "register__subscription_key", "roles": ["api", "deliver"]},
                    {"objectName": "cursor-keys", "setting": "cursors__key_ring", "roles": ["api"]},
                    {"objectName": "instance-access-keys", "setting": "instance_access__key_ring", "roles": ["api"]},
                    {"objectName": "deliver-only", "setting": "webhooks__example", "roles": ["deliver"]},
                ], "accessTokenCerts": {"issuers": [{"issuer": "ttd", "objectName": "platform-access-token-ttd"}]}},
                "networkPolicy": {"privateEndpointCidrs": ["10.20.4.0/24"], "privateHttpsCidrs": ["10.30.0.0/24"]},
            },
            "import.enabled": {
                "import": {"enabled": True, "source": "postgres://events@pg.example:5432/eventsdb?sslmode=require",
                           "mode": "follow", "sourceCidrs": ["10.40.0.0/24"],
                           "workloadIdentity": {"clientId": "00000000-0000-0000-0000-0000000000f1"}},
                "workloadIdentity": {"clientId": "00000000-0000-0000-0000-0000000000a1", "tenantId": "t"},
                "deliver": {"workloadIdentity": {"clientId": "00000000-0000-0000-0000-0000000000d1"}},
                "networkPolicy": {"privateEndpointCidrs": ["10.20.4.0/24"]},
            },
            "deliver.enabled=false, full mapping": {
                "deliver": {"enabled": False},
                "keyVault": {"secrets": [
                    {"objectName": "pdp-subscription-key", "setting": "pdp__subscription_key"},
                    {"objectName": "cursor-keys", "setting": "cursors__key_ring", "roles": ["api"]},
                    {"objectName": "deliver-only", "setting": "webhooks__example", "roles": ["deliver"]},
                ]},
            },
        }
        for name, overlay in variants.items():
            code, out, err = helm_template(args.helm, str(chart), overlay)
            if check(code == 0, f"[{name}] helm template failed: {err.strip()}"):
                values = merge(base, merge({"image": {"digest": DIGEST}}, overlay))
                objects += check_rendered(name, [d for d in yaml.safe_load_all(out) if d], values,
                                          production=True, deliver_expected=values["deliver"]["enabled"])
                renderings += 1
        refusals = {
            "a setting in upper case": ({"keyVault": {"secrets": [{"objectName": "a", "setting": "PDP__SUBSCRIPTION_KEY"}]}}, "must match"),
            "a setting with a path separator": ({"keyVault": {"secrets": [{"objectName": "a", "setting": "../etc/passwd"}]}}, "must match"),
            "a setting mapped twice": ({"keyVault": {"secrets": [{"objectName": "a", "setting": "pdp__subscription_key"},
                                                                 {"objectName": "b", "setting": "pdp__subscription_key"}]}}, "already mapped"),
            "an unknown role": ({"keyVault": {"secrets": [{"objectName": "a", "setting": "a__b", "roles": ["web"]}]}}, "neither api nor deliver"),
            "a replaced value": ({"keyVault": {"cursorKeySecret": "cursor-key"}}, "replaced by the list keyVault.secrets"),
            "a grace below the publish deadline": ({"config": {"shutdownGraceSeconds": 30}}, "must exceed config.cosmos.publishDeadlineMs"),
            "an operation timeout beyond the publish deadline": ({"config": {"cosmos": {"operationTimeoutMs": 30000}}}, "must be below config.cosmos.publishDeadlineMs"),
            "a grace below the webhook timeout": ({"config": {"shutdownGraceSeconds": 40}}, "must exceed config.webhooks"),
            "an image without a digest": ({"image": {"tag": "1.0.0"}}, "image.digest is required"),
            "a malformed digest": ({"image": {"digest": "sha256:abc"}}, "must be sha256: and 64 lowercase hex digits"),
        }
        for name, (overlay, message) in refusals.items():
            code, _, err = helm_template(args.helm, str(chart), overlay)
            check(code != 0 and message in err, f"the chart renders {name} (or fails without saying so): {err.strip() or 'rendered'}")
            refused += 1

    for problem in problems:
        print(problem)
    print(f"summary: {renderings} renderings, {objects} objects, {refused} invalid value sets refused; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
