#!/usr/bin/env python3
"""Production invariants of the rendered chart (values.yaml), checked
offline by .ci/deploy-checks (issue 20):
  - a stopping pod outlasts the publishes retrying Cosmos DB: the service's
    shutdown grace exceeds the append retry deadline, the preStop sleep is at
    least 10 s, and terminationGracePeriodSeconds covers both;
  - zone spread is required (DoNotSchedule) and the autoscaler keeps >= 3;
  - the CPU limit leaves the runtime more than one worker;
  - images pinned by digest are pulled IfNotPresent, tags Always;
  - only named peers reach the pods (the NetworkPolicy's ingress has `from`);
  - no secret value is in a ConfigMap.

    chart-invariants.py RENDERED.yaml [RENDERED-WITH-DIGEST.yaml ...]
"""
import re
import sys

import yaml

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def check_rendered(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    config = {}
    for cm in by_kind.get("ConfigMap", []):
        data = cm.get("data") or {}
        config.update(data)
        for key, value in data.items():
            if re.search(r"(SECRET|PASSWORD|__KEY$|__KEYS__|SUBSCRIPTION_KEY|CONNECTION_STRING)", key):
                problems.append(f"ConfigMap {cm['metadata']['name']} carries the secret setting {key}")
            if re.search(r"(AccountKey=|-----BEGIN|whsec_)", str(value)):
                problems.append(f"ConfigMap {cm['metadata']['name']} has a secret-looking value under {key}")

    grace = int(config.get("EVENTS__SHUTDOWN_GRACE_SECONDS", "0"))
    deadline_ms = int(config.get("EVENTS__COSMOS__APPEND_RETRY_DEADLINE_MS", "30000"))
    check(grace * 1000 > deadline_ms, f"shutdown grace {grace} s does not exceed the append retry deadline {deadline_ms} ms")

    deployments = by_kind.get("Deployment", [])
    check(deployments, "no Deployment rendered")
    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"]:
            # A digest cannot change: IfNotPresent. A tag can be moved: Always.
            expected = "IfNotPresent" if "@sha256:" in c["image"] else "Always"
            check(c.get("imagePullPolicy") == expected, f"{name}/{c['name']}: imagePullPolicy is not {expected}")
            pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            check(pre >= 10, f"{name}/{c['name']}: preStop sleep {pre} s < 10 s")
            check(pod.get("terminationGracePeriodSeconds", 30) > pre + grace,
                  f"{name}: terminationGracePeriodSeconds does not cover preStop {pre} s + grace {grace} s")
            cpu = str(c.get("resources", {}).get("limits", {}).get("cpu", ""))
            if cpu:
                cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
                check(cores >= 2, f"{name}/{c['name']}: a CPU limit of {cpu} leaves the runtime one worker")
        zone = [t for t in pod.get("topologySpreadConstraints", []) if t["topologyKey"] == "topology.kubernetes.io/zone"]
        check(zone and zone[0]["whenUnsatisfiable"] == "DoNotSchedule", f"{name}: zone spread is not enforced")

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        check(hpa["spec"]["minReplicas"] >= 3, f"HPA {hpa['metadata']['name']}: minReplicas < 3")

    for np in by_kind.get("NetworkPolicy", []):
        for rule in np["spec"].get("ingress", []):
            check(rule.get("from"), f"NetworkPolicy {np['metadata']['name']}: an ingress rule admits every peer")
    check(by_kind.get("NetworkPolicy"), "no NetworkPolicy rendered")

    return len(docs), grace, deadline_ms


results = [check_rendered(p) for p in sys.argv[1:]]
objects = sum(r[0] for r in results)
grace, deadline_ms = results[0][1], results[0][2]

for p in problems:
    print(p)
print(f"summary: {len(results)} renderings, {objects} objects, grace {grace} s > retry deadline {deadline_ms / 1000:.0f} s; "
      f"{len(problems)} problems")
sys.exit(1 if problems else 0)
