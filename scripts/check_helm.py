#!/usr/bin/env python3
"""The Helm chart's CI checks (`make helm`, part of `make test`), offline, in seconds.

For the default values and every example (helm/vigil/values-*.yaml):
  - lint and render with Helm's own engine (helm-python-sdk bundles Helm v4's library);
  - validate every manifest against Kubernetes 1.33's schemas (kubernetes-validate,
    strict: unknown fields fail); custom resources (ServiceMonitor, PrometheusRule,
    ScaledObject) have no schema there and are skipped;
  - compare with the committed golden rendering (helm/vigil/tests/golden/CASE.yaml).
Two variants cover the branches no example takes (lint and schemas, no golden file).
Then: values that must be refused are (schema and the chart's own checks), and the
PrometheusRule's groups, pulled out of the rendered chart, pass `promtool check rules`
and the unit tests in helm/vigil/tests/rules_test.yaml (`promtool test rules`).

  scripts/check_helm.py              the checks
  scripts/check_helm.py --update     rewrite the golden renderings after a deliberate change
  scripts/check_helm.py --self-test  prove the golden and rule checks fail on a broken chart
  scripts/check_helm.py --validate-configs BIN
                                     run `BIN validate` on each case's rendered config, with
                                     the pod's environment (dummy secret values), as the
                                     init container would
"""

import argparse
import copy
import functools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import yaml
from helm_python.chart import Chart, lint

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "vigil"
GOLDEN = CHART / "tests" / "golden"
RULES_TEST = CHART / "tests" / "rules_test.yaml"
RELEASE = NAMESPACE = "vigil"
KUBE_VERSION = "1.33.0"
# API groups of custom resources: kubernetes-validate has no schema for them.
CUSTOM_GROUPS = ("monitoring.coreos.com/", "keda.sh/")

# Branches no example takes: they must render to valid manifests too (no golden files).
VARIANTS = {
    "every option": {
        "hostNetwork": True, "admin": {"controlOnLoopback": False}, "pdb": {"enabled": False},
        "service": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24"], "whip": False},
        "resources": {"requests": {"cpu": "2"}}, "serviceAccount": {"create": False, "name": "vigil-sa"},
        "secrets": {"adminToken": {"name": "", "key": "token"}},
        "extraEnv": [{"name": "RUST_LOG", "value": "info"}],
        "extraVolumes": [{"name": "banks", "secret": {"secretName": "vigil-banks"}}],
        "extraVolumeMounts": [{"name": "banks", "mountPath": "/srv/vigil/banks", "readOnly": True}],
        "extraConfigFiles": {"policy.toml": "# a policy\n"},
        "fullnameOverride": "vigil-workers-with-a-rather-long-name-for-the-fleet",  # 52: the most
    },
    "deployment, HPA, all monitoring": {
        "workload": "Deployment", "podDeletionCost": {"enabled": True, "admissionPolicy": False},
        "autoscaling": {"hpa": {"enabled": True}},
        "monitoring": {"serviceMonitor": {"enabled": True}, "rules": {"enabled": True}, "dashboard": {"enabled": True}},
    },
}

# Values the chart must refuse at install, and a fragment of each refusal.
REFUSED = [
    ({"replicas": "two"}, "got string, want integer"),
    ({"replica": 2}, "additional properties 'replica' not allowed"),
    ({"workload": "DaemonSet"}, "/workload"),
    ({"gpu": {"resource": "gpu"}}, "/gpu/resource"),
    ({"drain": {"deadlineSeconds": 2}}, "/drain/deadlineSeconds"),
    ({"monitoring": {"rules": {"coverageFloor": 1.5}}}, "/monitoring/rules/coverageFloor"),
    ({"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}}, "not both"),
    ({"podDeletionCost": {"enabled": True}}, "only a Deployment's scale-down"),
    ({"workload": "Deployment", "persistence": {"enabled": True}}, "needs workload: StatefulSet"),
    ({"console": {"enabled": True, "replicas": 2}}, "needs console.store.databaseUrlSecret"),
    ({"console": {"port": 80}}, "/console/port"),
]

# kubernetes-validate reads its (large) schema files on every call; they never change.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents
)


class Failed(Exception):
    pass


def cases() -> dict[str, dict]:
    """Case name → values: the defaults and each example file."""
    out = {"default": {}}
    for f in sorted(CHART.glob("values-*.yaml")):
        out[f.stem.removeprefix("values-")] = yaml.safe_load(f.read_text()) or {}
    return out


def render(chart: Chart, values: dict) -> dict[str, str]:
    return chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)


def golden_text(rendered: dict[str, str]) -> str:
    """The manifests as `helm template` prints them, by template path; NOTES left out."""
    parts = []
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith("NOTES.txt") or not any(d for d in yaml.safe_load_all(text)):
            continue
        parts.append(f"---\n# Source: {path}\n{text}\n")
    return "".join(parts)


def manifests(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                if not {"apiVersion", "kind", "metadata"} <= doc.keys():
                    raise Failed(f"{path}: a document without apiVersion, kind and metadata")
                docs.append(doc)
    return docs


def check_lint(values: dict, case: str) -> None:
    report = lint(CHART, copy.deepcopy(values), namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    # Severity 1 is information ("icon is recommended"); warnings and errors fail.
    bad = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
    if bad:
        raise Failed(f"{case}: helm lint: " + "; ".join(m["error"].strip() for m in bad))


def check_schemas(docs: list[dict], case: str) -> tuple[int, int]:
    checked = skipped = 0
    for doc in docs:
        what = f"{case}: {doc['kind']}/{doc['metadata'].get('name')}"
        if doc["apiVersion"].startswith(CUSTOM_GROUPS):
            skipped += 1
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            raise Failed(f"{what}: {path}: {e.message}") from None
        except kubernetes_validate.SchemaNotFoundError as e:
            raise Failed(f"{what}: {e.message}") from None
        checked += 1
    return checked, skipped


def check_golden(case: str, text: str, update: bool, golden_dir: Path = GOLDEN) -> str:
    path = golden_dir / f"{case}.yaml"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return "written"
    if not path.exists():
        raise Failed(f"{case}: no golden rendering at {path.relative_to(ROOT)} (run with --update)")
    if path.read_text() != text:
        import difflib

        diff = difflib.unified_diff(path.read_text().splitlines(), text.splitlines(), "golden", "rendered", lineterm="", n=1)
        shown = "\n".join(list(diff)[:40])
        raise Failed(f"{case}: the chart renders differently from {path.relative_to(ROOT)}:\n{shown}\n"
                     "(a deliberate change: scripts/check_helm.py --update, and commit the golden file)")
    return "matches"


def check_refusals(chart: Chart) -> int:
    for values, fragment in REFUSED:
        try:
            render(chart, values)
        except Exception as e:  # HelmValuesError (schema) or HelmRenderError (fail)
            if fragment not in str(e):
                raise Failed(f"values {values}: refused, but not for the expected reason ({fragment!r}): {e}") from None
            continue
        raise Failed(f"values {values}: rendered, but must be refused ({fragment!r})")
    return len(REFUSED)


def promtool() -> str:
    tool = shutil.which("promtool")
    if not tool:
        raise Failed("promtool not found (Debian's prometheus package ships it): run scripts/setup.sh")
    return tool


def rule_groups(docs: list[dict]) -> dict:
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        raise Failed(f"expected one PrometheusRule, rendered {len(rules)}")
    return {"groups": rules[0]["spec"]["groups"]}


def check_rules(groups: dict, tests: Path = RULES_TEST) -> str:
    """`promtool check rules` and `promtool test rules` on the rendered groups."""
    tool = promtool()
    with tempfile.TemporaryDirectory() as tmp:
        # rules_test.yaml names rules.yaml beside itself.
        (Path(tmp) / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
        shutil.copy(tests, Path(tmp) / "rules_test.yaml")
        for args in (["check", "rules", "rules.yaml"], ["test", "rules", "rules_test.yaml"]):
            r = subprocess.run([tool, *args], cwd=tmp, capture_output=True, text=True)
            if r.returncode != 0:
                raise Failed(f"promtool {' '.join(args[:2])}:\n{(r.stdout + r.stderr).strip()}")
    n_alerts = sum(1 for g in groups["groups"] for r in g["rules"] if "alert" in r)
    n_tests = len(yaml.safe_load(tests.read_text())["tests"])
    return f"{n_alerts} alerts checked, {n_tests} unit tests pass"


def run_checks(update: bool) -> None:
    chart = Chart.load(CHART)
    every = cases()
    if not update:
        stale = {p.stem for p in GOLDEN.glob("*.yaml")} - every.keys()
        if stale:
            raise Failed(f"golden renderings without a values file: {sorted(stale)}")
    for case, values in every.items():
        t = time.monotonic()
        check_lint(values, case)
        rendered = render(chart, values)
        docs = manifests(rendered)
        checked, skipped = check_schemas(docs, case)
        golden = check_golden(case, golden_text(rendered), update)
        print(f"helm: {case}: lint ok, {len(docs)} manifests, {checked} valid for Kubernetes {KUBE_VERSION} "
              f"({skipped} custom resources skipped), golden {golden} ({time.monotonic() - t:.1f} s)")
    for case, values in VARIANTS.items():
        check_lint(values, case)
        checked, _ = check_schemas(manifests(render(chart, values)), case)
        print(f"helm: {case}: lint ok, {checked} manifests valid")
    print(f"helm: {check_refusals(chart)} wrong values refused (schema and chart checks)")
    docs = manifests(render(chart, {"monitoring": {"rules": {"enabled": True}}}))
    print(f"helm: rules: {check_rules(rule_groups(docs))}")


def self_test() -> None:
    """Each check must fail on a chart broken on purpose (in a temporary copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        broken = Path(tmp) / "vigil"
        shutil.copytree(CHART, broken)
        # A template edit (one more label on every object) must show as drift.
        helpers = broken / "templates" / "_helpers.tpl"
        helpers.write_text(helpers.read_text().replace(
            "app.kubernetes.io/managed-by: {{ .Release.Service }}",
            "app.kubernetes.io/managed-by: {{ .Release.Service }}\nextra: drift"))
        rendered = Chart.load(broken).render({}, name=RELEASE, namespace=NAMESPACE)
        try:
            check_golden("default", golden_text(rendered), update=False)
        except Failed as e:
            assert "renders differently" in str(e) and "extra: drift" in str(e), e
            print("helm: self-test: a changed template fails the golden check")
        else:
            raise Failed("self-test: the golden check passed a changed template")
        # A weakened rule (coverage floor 0.5) must fail the unit tests.
        values = {"monitoring": {"rules": {"enabled": True, "coverageFloor": 0.5}}}
        docs = manifests(Chart.load(CHART).render(values, name=RELEASE, namespace=NAMESPACE))
        try:
            check_rules(rule_groups(docs))
        except Failed as e:
            assert "VigilCoverageLow" in str(e), e
            print("helm: self-test: a weakened alert rule fails its unit tests")
        else:
            raise Failed("self-test: the rule unit tests passed a coverage floor of 0.5")


def validate_configs(vigil: Path) -> None:
    """`vigil validate` on each case's config with the pod's own environment: literal
    values as rendered, the pod name for field references, a dummy for each Secret."""
    chart = Chart.load(CHART)
    for case, values in cases().items():
        docs = manifests(render(chart, values))
        config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config"))
        pod = next(
            d for d in docs if d["kind"] in ("StatefulSet", "Deployment") and not d["metadata"]["name"].endswith("-console")
        )["spec"]["template"]["spec"]
        init = next(c for c in pod["initContainers"] if c["name"] == "validate-config")
        env = {"PATH": "/usr/bin:/bin"}
        for e in init["env"]:
            src = e.get("valueFrom", {})
            env[e["name"]] = e.get("value") or ("vigil-0" if "fieldRef" in src else "x" * 32)
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in config["data"].items():
                (Path(tmp) / name).write_text(text)
            env["VIGIL_CONFIG"] = f"{tmp}/vigil.toml"
            r = subprocess.run([str(vigil), "validate", f"{tmp}/vigil.toml"], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise Failed(f"{case}: vigil validate:\n{(r.stdout + r.stderr).strip()}")
        print(f"helm: {case}: config valid (vigil validate, the pod's environment)")
        console = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-console")), None)
        if console is None:
            continue
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-console"))
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {"PATH": "/usr/bin:/bin"}
        for e in container["env"]:
            env[e["name"]] = e.get("value") or "x" * 32
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "console.toml").write_text(console["data"]["console.toml"])
            env["VIGIL_CONFIG"] = f"{tmp}/console.toml"
            r = subprocess.run([str(vigil), "validate", f"{tmp}/console.toml"], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise Failed(f"{case}: the console's config: vigil validate:\n{(r.stdout + r.stderr).strip()}")
        print(f"helm: {case}: the console's config valid (vigil validate, the pod's environment)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite the golden renderings")
    ap.add_argument("--self-test", action="store_true", help="prove the checks fail on a broken chart")
    ap.add_argument("--validate-configs", metavar="VIGIL", type=Path, help="check rendered configs with this binary")
    args = ap.parse_args()
    t = time.monotonic()
    try:
        if args.self_test:
            self_test()
        elif args.validate_configs:
            validate_configs(args.validate_configs)
        else:
            run_checks(args.update)
    except Failed as e:
        print(f"helm: FAILED: {e}", file=sys.stderr)
        return 1
    print(f"helm: ok ({time.monotonic() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
