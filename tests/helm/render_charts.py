#!/usr/bin/env python3
"""Renders Weft's Helm charts with Helm itself and checks what comes out.

Driven by tests/tests/charts.rs, which asserts on the JSON report this prints on stdout:

- every chart under every profile (and the variants no profile turns on), rendered by
  Helm v4's library (PyPI helm-python-sdk), each object validated against Kubernetes'
  schemas (PyPI kubernetes-validate, strict: unknown fields are errors) for one pinned
  Kubernetes version;
- Helm's lint of every chart (strict);
- for each `--case CHART=JSON`: the objects Helm renders with those values, or the error it
  gives (a schema's message names the value), validated like the rest when rendered.

A chart that fails to render, an object that fails validation or a lint finding above
"info" ends the run with exit code 1 and the reason on stderr; a wrong package version
with exit code 2 and the command that fixes it.
"""

import argparse
import importlib.metadata
import json
import os
import sys

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.txt")
CHARTS = ["base", "weftd", "agent", "gateway", "weft"]
PROFILES = ["default", "demo", "minimal", "remote", "empty", "ambient"]
# Templates no profile turns on, rendered and validated too (values for the chart itself;
# the umbrella's are checked through its charts).
VARIANTS = {
    "weftd": [
        {"validationWebhook": {"enabled": False}, "pluginCA": {"enabled": True}, "autoscaleEnabled": True},
        {"profile": "remote", "global": {"remotePilotAddress": "198.51.100.7"}},
    ],
    "agent": [{"cni": {"enabled": False}, "excludedPorts": [22, 9090], "global": {"logAsJson": True}}],
    "gateway": [{"type": "egress", "components": {"egressGateway": True}}],
    "base": [{"gatewayAPI": {"install": False}, "keepCRDs": False}],
}
RELEASE = {"name": "weft", "namespace": "istio-system"}


def fail(message, code=1):
    print(f"render_charts.py: {message}", file=sys.stderr)
    sys.exit(code)


def check_pins():
    """The installed packages must be the pinned ones (cargo xtask setup installs them)."""
    with open(REQUIREMENTS) as f:
        pins = [line.split("#")[0].strip() for line in f]
    for pin in filter(None, pins):
        name, version = pin.split("==")
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            fail(f"{name} {installed or 'is not installed'}, the tests need {version}: run `cargo xtask setup` "
                 f"(or python3 -m pip install -r {REQUIREMENTS})", code=2)


def objects_of(rendered):
    """The objects of a render, in template order, each with the template it came from."""
    import yaml
    out = []
    for template in sorted(rendered):
        for document in yaml.safe_load_all(rendered[template]):
            if document:
                out.append({"template": template, "object": document})
    return out


def validate(objects, kube_version, where):
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    for entry in objects:
        obj = entry["object"]
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} ({entry['template']}, {where})"
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            fail(f"{name} is not a valid Kubernetes {kube_version} object: at {path or '(top)'}: {e.message}")
        except SchemaNotFoundError as e:
            fail(f"{name}: {e.message}")
    return len(objects)


def render(helm, charts_dir, chart, values):
    loaded = helm.Chart.load(os.path.join(charts_dir, chart))
    try:
        return loaded.render(values, **RELEASE)
    finally:
        loaded.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--charts", required=True, help="the charts/ directory")
    parser.add_argument("--kube-version", required=True, help="Kubernetes version to validate against, e.g. 1.34.0")
    parser.add_argument("--case", action="append", default=[], metavar="CHART=JSON",
                        help="values to render; the report carries the objects or Helm's error")
    args = parser.parse_args()
    check_pins()
    import helm_python as helm
    helm.disable_logging()

    report = {"helm": helm.helm_sdk_version(), "kubernetes": args.kube_version, "renders": [], "lint": {},
              "validated": 0, "cases": []}
    def must_render(chart, profile, values, where):
        try:
            objects = objects_of(render(helm, args.charts, chart, values))
        except helm.HelmError as e:
            fail(f"{where}: {e}")
        report["validated"] += validate(objects, args.kube_version, where)
        report["renders"].append({"chart": chart, "profile": profile, "values": values,
                                  "objects": [o["object"] for o in objects]})

    for chart in CHARTS:
        for profile in PROFILES:
            # The umbrella hands its profile to its charts as global.profile.
            values = {"global": {"profile": profile}} if chart == "weft" else {"profile": profile}
            must_render(chart, profile, values, f"chart {chart}, profile {profile}")
        for values in VARIANTS.get(chart, []):
            must_render(chart, values.get("profile", ""), values, f"chart {chart}, values {json.dumps(values)}")
        lint = helm.lint(os.path.join(args.charts, chart), None, strict=True, namespace=RELEASE["namespace"],
                         with_subcharts=True, kube_version=f"v{args.kube_version}")
        findings = [m for m in lint["messages"] if m["severity"] > 1] + [{"error": e} for e in lint["errors"]]
        if findings:
            fail(f"helm lint {chart}: {json.dumps(findings)}")
        report["lint"][chart] = lint["messages"]
    for case in args.case:
        chart, _, text = case.partition("=")
        values = json.loads(text)
        entry = {"chart": chart, "values": values, "error": None, "objects": []}
        try:
            objects = objects_of(render(helm, args.charts, chart, values))
            report["validated"] += validate(objects, args.kube_version, f"chart {chart}, values {text}")
            entry["objects"] = [o["object"] for o in objects]
        except helm.HelmError as e:
            entry["error"] = str(e)
        report["cases"].append(entry)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
