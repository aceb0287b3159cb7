#!/usr/bin/env python3
"""Monitoring and autoscaling objects of the chart, checked offline by
.ci/deploy-checks (issue 20):
  - by default (monitoring as deployed on AKS) the PodMonitor renders in
    Azure Monitor managed Prometheus' group (azmonitoring.coreos.com), the
    pods carry no scrape annotations besides, and each Deployment's
    NetworkPolicy admits the ama-metrics scraping pods on 8080 and no other
    pod of kube-system; no PrometheusRule or KEDA object renders (their CRDs
    may not exist), and the HPA scales on CPU alone (no custom metrics
    adapter);
  - the PodMonitor selects every Deployment's pods (API and deliver) in the
    release's namespace and scrapes port `http` (8080) at `/metrics`; its API
    group is the value (monitoring.coreos.com or azmonitoring.coreos.com);
  - infra/modules/prometheus-rules.json (the Azure Monitor Prometheus rule
    group that infra/ deploys) is the PrometheusRule's rules as rendered
    with the chart's values (--write-rule-groups writes it again);
  - the PrometheusRule's groups pass `promtool check rules`, and the alerts
    behave as .ci/alert-tests.yaml says (`promtool test rules`: input series
    in, alerts out, firing and not firing); every alert has a severity,
    summary, description, the routing labels, and a runbook_url whose anchor
    is a heading of docs/operations.md;
  - the HPA and the KEDA ScaledObject never both render, in any combination
    of autoscaling.enabled, autoscaling.waiters.enabled and
    autoscaling.keda.enabled; the ScaledObject scales the API Deployment
    (never `<fullname>-deliver`) and its queries select API pods only;
    KEDA without autoscaling.enabled or a Prometheus address refuses to
    render;
  - the HPA with the long-poll metric is a valid autoscaling/v2 object
    (kubernetes-validate --strict), and the chart lints with everything on.

    chart-monitoring.py --helm HELM --promtool PROMTOOL [--release R]
                        [--namespace NS] [--kube-version V] CHART
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ALERT_TESTS = HERE / "alert-tests.yaml"
OPERATIONS = HERE.parent / "docs" / "operations.md"

# Pod names as Kubernetes makes them for the two Deployments of a release
# whose full name is `altinn-events`: <deployment>-<replicaset hash>-<id>.
API_POD = "{fullname}-5d8f9c7b6d-x2x7q"
DELIVER_POD = "{fullname}-deliver-7c9b5f6d8-q2w3e"

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)
    return ok


class Chart:
    def __init__(self, args):
        self.args = args
        self.renders = 0

    def run(self, *extra, command="template"):
        cmd = [self.args.helm, command]
        if command == "template":
            cmd += [self.args.release]
        cmd += [self.args.chart, "--namespace", self.args.namespace]
        # values.yaml renders only with an image digest (image.requireDigest).
        cmd += ["--set", "image.digest=sha256:" + "0123456789abcdef" * 4]
        for s in extra:
            cmd += [s] if s.startswith("--") else ["--set", s]
        self.renders += 1
        return subprocess.run(cmd, capture_output=True, text=True)

    def render(self, *sets):
        out = self.run(*sets)
        if out.returncode != 0:
            problems.append(f"helm template {' '.join(sets) or '(defaults)'} failed: {out.stderr.strip()}")
            return {}
        by_kind = {}
        for d in yaml.safe_load_all(out.stdout):
            if d:
                by_kind.setdefault(d["kind"], []).append(d)
        return by_kind

    def refuses(self, why, *sets):
        out = self.run(*sets)
        check(out.returncode != 0, f"helm template renders with {' '.join(sets)}, which it should refuse ({why})")
        return out.stderr


def github_anchors(markdown):
    """Anchors GitHub makes for the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
        anchors.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
    return anchors


def literal_yaml(data):
    """YAML with multi-line strings (the rule expressions) as `|` blocks."""

    class Dumper(yaml.SafeDumper):
        pass

    def str_rep(dumper, s):
        style = "|" if "\n" in s else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)

    Dumper.add_representer(str, str_rep)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=1000)


def pod_regexes(query):
    return re.findall(r'pod=~"([^"]+)"', query)


def check_defaults(objs, fullname):
    # Monitoring as deployed: Azure Monitor managed Prometheus scrapes through
    # its own PodMonitor group; its rules are in infra/, not a PrometheusRule.
    pms = objs.get("PodMonitor", [])
    if check(len(pms) == 1, f"defaults: {len(pms)} PodMonitors: monitoring must be on as deployed"):
        check(pms[0]["apiVersion"] == "azmonitoring.coreos.com/v1", f"defaults: PodMonitor {pms[0]['apiVersion']}, not Azure Monitor managed Prometheus'")
    for kind in ("PrometheusRule", "ScaledObject", "TriggerAuthentication"):
        check(kind not in objs, f"defaults: a {kind} renders, but its CRD may not exist")
    for dep in objs.get("Deployment", []):
        pod = dep["spec"]["template"]["metadata"]
        check("prometheus.io/scrape" not in (pod.get("annotations") or {}),
              f"defaults: {dep['metadata']['name']} has scrape annotations besides the PodMonitor: scraped twice")
    check_scraper_admitted(objs)
    hpas = objs.get("HorizontalPodAutoscaler", [])
    if check(len(hpas) == 1, f"defaults: {len(hpas)} HorizontalPodAutoscalers, expected 1"):
        hpa = hpas[0]["spec"]
        target = hpa["scaleTargetRef"]["name"]
        check(target == fullname, f"defaults: the HPA scales {target}, not the API Deployment {fullname}")
        types = [m["type"] for m in hpa["metrics"]]
        check(types == ["Resource"], f"defaults: HPA metrics {types}: anything but CPU needs a custom metrics adapter")


# Azure Monitor managed Prometheus' scraping pods: the ama-metrics add-on's
# replica in kube-system, which runs the PodMonitor scrapes.
AMA_METRICS = ({"kubernetes.io/metadata.name": "kube-system"}, {"rsName": "ama-metrics"})


def check_scraper_admitted(objs):
    """Every pod of the release is reachable on 8080 by ama-metrics, and by no
    other pod of kube-system."""
    policies = objs.get("NetworkPolicy", [])
    for dep in objs.get("Deployment", []):
        name = dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        mine = [p for p in policies if all(labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())]
        if not check(mine, f"defaults: no NetworkPolicy selects the pods of {name}"):
            continue
        admitted, wide = False, []
        for pol in mine:
            for rule in pol["spec"].get("ingress") or []:
                ports = {p.get("port") for p in rule.get("ports") or [{"port": 8080}]}
                if not ports & {8080, "http"}:
                    continue
                for peer in rule.get("from") or []:
                    ns = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                    pods = (peer.get("podSelector") or {}).get("matchLabels") or {}
                    if (ns, pods) == AMA_METRICS:
                        admitted = True
                    elif ns.get("kubernetes.io/metadata.name") == "kube-system" and not pods:
                        wide.append(peer)
        check(admitted, f"defaults: the NetworkPolicy of {name} does not admit ama-metrics (rsName: ama-metrics in kube-system) on 8080")
        check(not wide, f"defaults: the NetworkPolicy of {name} admits all of kube-system on 8080, not the scraper alone")


def check_podmonitor(chart, namespace):
    objs = chart.render("metrics.podMonitor.enabled=true", "metrics.podMonitor.apiVersion=monitoring.coreos.com/v1")
    pms = objs.get("PodMonitor", [])
    if not check(len(pms) == 1, f"podMonitor.enabled: {len(pms)} PodMonitors rendered"):
        return
    pm = pms[0]
    check(pm["apiVersion"] == "monitoring.coreos.com/v1", f"PodMonitor apiVersion {pm['apiVersion']}")
    spec = pm["spec"]
    selector = spec["selector"]["matchLabels"]
    check(spec.get("namespaceSelector", {}).get("matchNames") == [namespace], "PodMonitor does not look in the release's namespace")
    deployments = objs.get("Deployment", [])
    check(deployments, "no Deployment rendered")
    for dep in deployments:
        name = dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in selector.items()), f"PodMonitor selector {selector} misses the pods of Deployment {name}")
        ports = {p.get("name"): p["containerPort"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        check(ports.get("http") == 8080, f"Deployment {name} has no container port `http` 8080 for the PodMonitor")
    eps = spec.get("podMetricsEndpoints", [])
    if check(len(eps) == 1, f"PodMonitor has {len(eps)} endpoints"):
        ep = eps[0]
        check(ep.get("port") == "http", f"PodMonitor scrapes port {ep.get('port')}, not http")
        check(ep.get("path") == "/metrics", f"PodMonitor scrapes path {ep.get('path')}, not /metrics")
        check(ep.get("interval") == "30s", f"PodMonitor interval {ep.get('interval')}, not the default 30s")

    aks = chart.render("metrics.podMonitor.enabled=true", "metrics.podMonitor.apiVersion=azmonitoring.coreos.com/v1")
    got = [p["apiVersion"] for p in aks.get("PodMonitor", [])]
    check(got == ["azmonitoring.coreos.com/v1"], f"metrics.podMonitor.apiVersion is not used: {got}")


def check_rules(chart, promtool):
    sets = (
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.additionalAlertLabels.team=events",
        "metrics.prometheusRule.runbookBaseUrl=https://docs.example/operations.md",
    )
    objs = chart.render(*sets)
    rules = objs.get("PrometheusRule", [])
    if not check(len(rules) == 1, f"prometheusRule.enabled: {len(rules)} PrometheusRules rendered"):
        return 0, ""
    spec = rules[0]["spec"]
    anchors = github_anchors(OPERATIONS.read_text())
    alerts = [r for g in spec["groups"] for r in g["rules"] if "alert" in r]
    for r in alerts:
        name = r["alert"]
        check(r.get("labels", {}).get("severity") in ("critical", "warning"), f"{name}: severity is not critical or warning")
        check(r.get("labels", {}).get("team") == "events", f"{name}: additionalAlertLabels are not on the alert")
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            check(ann.get(key), f"{name}: no {key} annotation")
        url = ann.get("runbook_url", "")
        base, _, anchor = url.partition("#")
        check(base == "https://docs.example/operations.md", f"{name}: runbook_url {url} does not start with runbookBaseUrl")
        check(anchor in anchors, f"{name}: runbook anchor #{anchor} is not a heading of docs/operations.md")
        check(f'namespace="{chart.args.namespace}"' in r["expr"], f"{name}: the expression does not select the release's namespace")

    with tempfile.TemporaryDirectory() as tmp:
        rules_file = pathlib.Path(tmp, "rules.yaml")
        rules_file.write_text(literal_yaml(spec))
        shutil.copy(ALERT_TESTS, tmp)
        out = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
        if not check(out.returncode == 0, "promtool check rules failed:\n" + out.stdout + out.stderr):
            print(rules_file.read_text())
        out = subprocess.run([promtool, "test", "rules", ALERT_TESTS.name], cwd=tmp, capture_output=True, text=True)
        check(out.returncode == 0, "promtool test rules failed:\n" + out.stdout + out.stderr)
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    tested = sorted({t["alertname"] for case in tests for t in case.get("alert_rule_test", [])})
    for name in tested:
        check(name in {r["alert"] for r in alerts}, f"alert-tests.yaml tests {name}, which the chart does not render")

    # The repairer turned off: its two alerts would only ever fire.
    off = chart.render(*sets, "config.extraEnv.EVENTS__COSMOS__REPAIR_INTERVAL_SECONDS=0")
    names = {r["alert"] for p in off.get("PrometheusRule", []) for g in p["spec"]["groups"] for r in g["rules"]}
    check(names and not any("FeedRepair" in n for n in names), "repair alerts render although the repairer is off")
    return len(alerts), f"{len(tests)} unit tests of {len(tested)} alerts"


RULE_GROUPS = HERE.parent / "infra" / "modules" / "prometheus-rules.json"
AZURE_SEVERITY = {"critical": 0, "warning": 2}


def iso_duration(d):
    """A Prometheus duration (5m, 1h30m, 90s) as ISO 8601 (PT5M, PT1H30M, PT90S)."""
    units = {u: n for n, u in re.findall(r"(\d+)([hms])", d)}
    if not units or "".join(units[u] + u for u in "hms" if u in units) != d:
        raise ValueError(f"duration {d!r}")
    return "PT" + "".join(units[u] + u.upper() for u in "hms" if u in units)


def azure_rule_groups(chart):
    """The PrometheusRule as rendered with the chart's values (the
    production defaults), as the rules of an Azure Monitor Prometheus rule
    group (Microsoft.AlertsManagement/prometheusRuleGroups): what
    infra/modules/prometheus-rules.bicep deploys. Same expressions, labels
    and annotations; `for` in ISO 8601; `severity` also as Azure's number."""
    objs = chart.render("metrics.prometheusRule.enabled=true")
    groups = [g for r in objs.get("PrometheusRule", []) for g in r["spec"]["groups"]]
    rules = []
    for g in groups:
        for r in g["rules"]:
            rule = {"alert": r["alert"], "expression": r["expr"].strip()}
            if "for" in r:
                rule["for"] = iso_duration(r["for"])
            rule["severity"] = AZURE_SEVERITY[r["labels"]["severity"]]
            rule["labels"] = r.get("labels", {})
            rule["annotations"] = r.get("annotations", {})
            rules.append(rule)
    return {
        "_comment": (
            "Generated by .ci/chart-monitoring.py --write-rule-groups from the chart's PrometheusRule "
            f"(release {chart.args.release}, namespace {chart.args.namespace}, helm/altinn-events/values.yaml); "
            ".ci/deploy-checks fails when it differs. Do not edit by hand."
        ),
        "release": chart.args.release,
        "namespace": chart.args.namespace,
        "interval": "PT1M",
        "rules": rules,
    }


def rule_groups_json(chart):
    return json.dumps(azure_rule_groups(chart), indent=2, ensure_ascii=False) + "\n"


def check_rule_groups(chart):
    """infra/'s rule groups are the PrometheusRule's rules."""
    want = rule_groups_json(chart)
    have = RULE_GROUPS.read_text() if RULE_GROUPS.exists() else ""
    check(have == want, f"{RULE_GROUPS.relative_to(HERE.parent)} differs from the chart's rules: "
          "run .ci/chart-monitoring.py --write-rule-groups (with --helm) after changing the rules or their values")
    return len(json.loads(want)["rules"])


def check_autoscaling(chart, fullname, kube_version):
    keda_on = ("autoscaling.keda.enabled=true", "autoscaling.keda.prometheus.serverAddress=http://prometheus.monitoring:9090")
    api_pod, deliver_pod = API_POD.format(fullname=fullname), DELIVER_POD.format(fullname=fullname)
    combos = 0
    for enabled in ("true", "false"):
        for waiters in ("true", "false"):
            for keda in ("true", "false"):
                sets = [f"autoscaling.enabled={enabled}", f"autoscaling.waiters.enabled={waiters}"]
                if keda == "true":
                    sets += keda_on
                if enabled == "false" and keda == "true":
                    chart.refuses("KEDA needs autoscaling.enabled, or the Deployment would also set replicas", *sets)
                    continue
                combos += 1
                objs = chart.render(*sets)
                hpas, sos = objs.get("HorizontalPodAutoscaler", []), objs.get("ScaledObject", [])
                label = ", ".join(sets)
                check(not (hpas and sos), f"{label}: both an HPA and a KEDA ScaledObject render")
                want_hpa, want_so = enabled == "true" and keda == "false", enabled == "true" and keda == "true"
                check(len(hpas) == int(want_hpa), f"{label}: {len(hpas)} HPAs")
                check(len(sos) == int(want_so), f"{label}: {len(sos)} ScaledObjects")
                for hpa in hpas:
                    metrics = hpa["spec"]["metrics"]
                    check(metrics[0]["type"] == "Resource" and metrics[0]["resource"]["name"] == "cpu", f"{label}: CPU is not the HPA's first metric")
                    pods = [m for m in metrics if m["type"] == "Pods"]
                    check(len(pods) == (1 if waiters == "true" else 0), f"{label}: {len(pods)} Pods metrics")
                for so in sos:
                    check_scaledobject(so, objs, fullname, api_pod, deliver_pod, label)

    chart.refuses("KEDA without a Prometheus address", "autoscaling.keda.enabled=true")

    # TriggerAuthentication for Azure Monitor managed Prometheus.
    objs = chart.render(*keda_on, "autoscaling.keda.prometheus.azureWorkloadIdentityClientId=00000000-0000-0000-0000-000000000000")
    tas = objs.get("TriggerAuthentication", [])
    if check(len(tas) == 1, f"{len(tas)} TriggerAuthentications with azureWorkloadIdentityClientId"):
        check(tas[0]["spec"]["podIdentity"]["provider"] == "azure-workload", "the TriggerAuthentication is not azure-workload")
        for t in objs["ScaledObject"][0]["spec"]["triggers"]:
            if t["type"] == "prometheus":
                check(t.get("authenticationRef", {}).get("name") == tas[0]["metadata"]["name"], f"trigger {t.get('name')} does not use the TriggerAuthentication")

    # The HPA with the long-poll metric against the Kubernetes schema.
    validate = shutil.which("kubernetes-validate", path=os.path.dirname(sys.executable)) or shutil.which("kubernetes-validate")
    if check(validate, "kubernetes-validate not found beside the Python running this script or on PATH"):
        out = chart.run("autoscaling.waiters.enabled=true")
        hpa = "---\n".join(
            yaml.safe_dump(d) for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "HorizontalPodAutoscaler"
        )
        v = subprocess.run([validate, "--strict", "-k", kube_version, "--quiet", "-"], input=hpa, capture_output=True, text=True)
        check(v.returncode == 0 and not (v.stdout + v.stderr).strip(), "HPA with autoscaling.waiters.enabled is invalid:\n" + v.stdout + v.stderr)
    return combos


def check_scaledobject(so, objs, fullname, api_pod, deliver_pod, label):
    spec = so["spec"]
    target = spec["scaleTargetRef"]
    deployments = {d["metadata"]["name"]: d for d in objs.get("Deployment", [])}
    check(target.get("kind", "Deployment") == "Deployment" and target["name"] == fullname,
          f"{label}: the ScaledObject scales {target}, not the API Deployment {fullname}")
    check(not target["name"].endswith("-deliver"), f"{label}: the ScaledObject scales the deliver Deployment")
    dep = deployments.get(target["name"])
    if check(dep, f"{label}: the ScaledObject's target {target['name']} is not a rendered Deployment"):
        tmpl = dep["spec"]["template"]
        component = tmpl["metadata"]["labels"].get("app.kubernetes.io/component")
        check(component in (None, "api"), f"{label}: the ScaledObject's target runs component {component}")
        args = [a for c in tmpl["spec"]["containers"] for a in c.get("args", [])]
        check("deliver" not in args, f"{label}: the ScaledObject's target runs {args}")
    types = [t["type"] for t in spec["triggers"]]
    check("cpu" in types, f"{label}: the ScaledObject has no CPU trigger (the floor)")
    proms = [t for t in spec["triggers"] if t["type"] == "prometheus"]
    check(len(proms) == 2, f"{label}: {len(proms)} prometheus triggers, expected long-polls and requests")
    for t in proms:
        query = t["metadata"]["query"]
        regexes = pod_regexes(query)
        check(regexes, f"{label}: trigger {t.get('name')} does not select pods: {query}")
        for rx in regexes:
            check(re.fullmatch(rx, api_pod), f"{label}: trigger {t.get('name')} misses API pod {api_pod}")
            check(not re.fullmatch(rx, deliver_pod), f"{label}: trigger {t.get('name')} counts deliver pod {deliver_pod}")
        check(float(t["metadata"]["threshold"]) > 0, f"{label}: trigger {t.get('name')} has no threshold")
    check("query_waiters" in proms[0]["metadata"]["query"] if proms else False, f"{label}: the first trigger is not the long-polls")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--helm", default="helm")
    p.add_argument("--promtool", default="promtool")
    p.add_argument("--release", default="altinn-events")
    p.add_argument("--namespace", default="altinn-events")
    p.add_argument("--kube-version", default="1.33.0")
    p.add_argument("--write-rule-groups", action="store_true",
                   help="write infra/modules/prometheus-rules.json from the chart's rules and exit")
    p.add_argument("chart")
    args = p.parse_args()
    chart = Chart(args)
    if args.write_rule_groups:
        RULE_GROUPS.write_text(rule_groups_json(chart))
        sys.exit(1 if problems else 0)

    defaults = chart.render()
    # The chart's full name: the Service's, and the API Deployment's.
    fullname = defaults["Service"][0]["metadata"]["name"] if defaults.get("Service") else args.release
    check_defaults(defaults, fullname)
    check_podmonitor(chart, args.namespace)
    alerts, tests = check_rules(chart, args.promtool)
    azure_rules = check_rule_groups(chart)
    combos = check_autoscaling(chart, fullname, args.kube_version)

    everything = (
        "metrics.podMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
        "autoscaling.keda.enabled=true", "autoscaling.keda.prometheus.serverAddress=http://prometheus.monitoring:9090",
    )
    lint = chart.run("--strict", *everything, command="lint")
    check(lint.returncode == 0, "helm lint --strict with PodMonitor, PrometheusRule and KEDA on failed:\n" + lint.stdout + lint.stderr)

    for x in problems:
        print(x)
    print(f"summary: {chart.renders} renderings; PodMonitor on port http /metrics; {alerts} alerts pass promtool check rules "
          f"and are infra/'s {azure_rules} rule group rules, "
          f"{tests} pass promtool test rules; HPA xor KEDA in {combos} combinations; {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
