#!/usr/bin/env python3
"""Checks of infra/ that need no Azure (run by .ci/deploy-checks with
checkov's virtualenv, whose Bicep parser, pycep, it uses):

  - every .bicep file parses (checkov skips a file it cannot parse without
    saying so: its checks would be gone unnoticed);
  - Key Vault access is per secret: no role that reads secrets or
    certificates is given to the API's, the deliver pods' or the import's
    identity on the whole vault (only operators get vault-wide roles), and
    the per-secret grants exist;
  - the default grants of infra/main.bicep are the chart's default mapping
    (helm/altinn-events/values.yaml keyVault.secrets: each secret to the
    roles that mount it; the import reads the subscription secret ring and
    its password): the deliver identity reads only what the deliver pods
    mount;
  - the Prometheus rule group module is deployed (the alerts as deployed);
  - Cosmos DB: the deliver identity writes only the subscriptions
    container. Its roles are the built-in Data Reader on the events
    container, a role whose only action is readMetadata on the account, and
    the deliver role on the subscriptions container (assignable there
    only); no other assignment names it.

    infra-checks.py REPO
"""
import json
import pathlib
import re
import sys

import yaml
from pycep import BicepParser

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)
    return ok


def inner(res):
    """A resource's own config (a loop or condition wraps it once more)."""
    config = res.get("config") or {}
    return config.get("config", config) if "loop_type" in config or "condition" in config else config


def main():
    repo = pathlib.Path(sys.argv[1])
    parsed = {}
    for path in sorted((repo / "infra").rglob("*.bicep")):
        try:
            parsed[path.relative_to(repo).as_posix()] = BicepParser().parse(file_path=path)
        except Exception as e:  # noqa: BLE001 - any parser failure is the finding
            check(False, f"{path.relative_to(repo)} does not parse (checkov would skip it): {str(e).splitlines()[0]}")

    kv = parsed.get("infra/modules/keyvault.bicep", {})
    identities = ("readerPrincipalId", "deliverPrincipalId", "importPrincipalId", "readers")
    per_secret = 0
    for name, res in (kv.get("resources") or {}).items():
        if res.get("type") != "Microsoft.Authorization/roleAssignments":
            continue
        config = inner(res)
        principal = json.dumps((config.get("properties") or {}).get("principalId"))
        scope = config.get("scope")
        if any(i in principal for i in identities):
            check(scope != "vault", f"keyvault.bicep {name}: a service identity's role on the whole vault, not per secret")
            if "grantedSecrets" in json.dumps(scope):
                per_secret += 1
    check(per_secret > 0, "keyvault.bicep: no role assignment scoped to a secret")

    main_text = (repo / "infra" / "main.bicep").read_text()
    grants = set(re.findall(r"\{ secret: '([^']+)', reader: '(api|deliver|import)' \}", main_text))
    values = yaml.safe_load((repo / "helm" / "altinn-events" / "values.yaml").read_text())
    want = set()
    for entry in values["keyVault"]["secrets"]:
        for role in entry.get("roles") or ["api", "deliver"]:
            want.add((entry["objectName"], role))
        if entry["setting"] == "subscription_secrets__key_ring":
            want.add((entry["objectName"], "import"))
    check(grants == want, f"infra/main.bicep keyVaultSecretGrants {sorted(grants)} are not the chart's mapping {sorted(want)}")

    modules = (parsed.get("infra/main.bicep", {}).get("modules") or {})
    check("prometheusRules" in modules, "infra/main.bicep does not deploy the Prometheus rule group")

    deliver_roles = check_cosmos(parsed.get("infra/modules/cosmos.bicep", {}))

    for p in problems:
        print(p)
    deliver = sorted(s for s, r in grants if r == "deliver")
    print(f"summary: {len(parsed)} Bicep files parse; Key Vault: {per_secret} per-secret grant resource(s), none vault-wide; "
          f"the deliver identity reads {deliver}; Cosmos DB: the deliver identity holds {deliver_roles}; "
          f"{len(problems)} problems")
    sys.exit(1 if problems else 0)


READER = "00000000-0000-0000-0000-000000000001"


def check_cosmos(cosmos):
    """The deliver identity's Cosmos DB roles and scopes (see the docstring);
    what it holds, for the summary."""
    resources = cosmos.get("resources") or {}
    variables = cosmos.get("variables") or {}

    def var(name):
        return json.dumps((variables.get(name) or {}).get("value"))

    check("colls/${container.name}" in var("containerScope"), "cosmos.bicep containerScope is not the events container")
    check("colls/${subscriptionsContainer.name}" in var("subscriptionsScope"),
          "cosmos.bicep subscriptionsScope is not the subscriptions container")
    custom = {}
    for name, res in resources.items():
        if res.get("type", "").endswith("/sqlRoleDefinitions"):
            props = inner(res).get("properties") or {}
            actions = [a for p in props.get("permissions") or [] for a in p.get("dataActions") or []]
            custom[name] = (props.get("assignableScopes"), actions)
    held = []
    for name, res in resources.items():
        if not res.get("type", "").endswith("/sqlRoleAssignments"):
            continue
        props = inner(res).get("properties") or {}
        if "deliverPrincipalId" not in json.dumps(props.get("principalId")):
            continue
        role, scope = json.dumps(props.get("roleDefinitionId")), json.dumps(props.get("scope"))
        defined = next((d for d in custom if f'"operand_1": "{d}"' in role), None)
        if READER in role:
            check(scope == '"containerScope"', f"cosmos.bicep {name}: the deliver identity reads with scope {scope}, not the events container")
            held.append("Data Reader on the events container")
        elif defined and custom[defined][1] == ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]:
            held.append("readMetadata on the account")
        elif defined == "deliverRole":
            check(scope == '"subscriptionsScope"', f"cosmos.bicep {name}: the deliver role is assigned at {scope}, not the subscriptions container")
            check(custom[defined][0] == ["subscriptionsScope"],
                  f"cosmos.bicep deliverRole is assignable at {custom[defined][0]}, not only the subscriptions container")
            held.append("the deliver role on the subscriptions container")
        else:
            check(False, f"cosmos.bicep {name}: the deliver identity holds {role} at {scope}")
    check(len(held) == 3 and len(set(held)) == 3, f"cosmos.bicep: the deliver identity's assignments are {held}")
    return held


if __name__ == "__main__":
    main()
