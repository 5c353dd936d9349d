"""deploy/helm: values for the official opentelemetry-collector chart, checked without a cluster.

Always: the values against the chart's values.schema.json facts pinned in deploy/helm/chart-facts.json
(chart 0.170.0), and against our own files (image, config paths, env variables, resolver override).
With a chart checkout and helm (OTEL_CRM_HELM_CHART=<dir of the chart>, helm on PATH or in
$OTEL_CRM_CACHE/helm-*/bin): `helm template` renders them (and helm checks the full schema).
The collector tier itself runs in tests/integration/test_deploy_collector_tier.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import ROOT

HELM_DIR = ROOT / "deploy" / "helm"
FACTS = json.loads((HELM_DIR / "chart-facts.json").read_text())
VALUES = {name: yaml.safe_load((HELM_DIR / f"{name}-values.yaml").read_text()) for name in ("loadbalancer", "sampler")}
GATEWAY = ROOT / "collector-config" / "gateway"
IMAGE_DIR = "/etc/otelcol-crm/"  # collector-config/Dockerfile: COPY gateway/ /etc/otelcol-crm/gateway/
ENV_REF = re.compile(r"\$\{env:([A-Z0-9_]+)")


# --- a JSON-schema subset: what the chart's schema uses for the keys we set -------------------------

_TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool,
                          "integer": int, "number": (int, float)}


def schema_errors(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        ok = any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in names)
        if not ok:
            return [f"{where or '.'}: {value!r} is not {names}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: {key} is required")
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None:
                sub = next((s for pattern, s in schema.get("patternProperties", {}).items()
                            if re.search(pattern, key)), None)
            if sub is None:
                extra = schema.get("additionalProperties", True)
                if extra is False:
                    errors.append(f"{where}.{key}: not allowed")
                    continue
                sub = extra if isinstance(extra, dict) else {}
            errors += schema_errors(item, sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def chart_schema_errors(values: dict[str, Any]) -> list[str]:
    top = FACTS["schema"]
    errors = [f".{key}: not a key of chart {FACTS['source']['version']}" for key in values
              if key not in top["property_names"]]
    errors += [f".{key}: allowed by the chart but its schema is not pinned in chart-facts.json: re-extract"
               for key in values if key in top["property_names"] and key not in top["properties"]]
    errors += [f".{key} is required" for key in top["required"] if key not in values and key != "apiVersion"]
    properties = {k: v for k, v in values.items() if k in top["properties"]}
    if "ports" in properties:  # helm validates values merged over the chart's defaults
        defaults = FACTS["defaults"]["ports"]
        properties["ports"] = {k: {**defaults.get(k, {}), **v} for k, v in properties["ports"].items()}
    return errors + schema_errors(properties, {"type": "object", "properties": top["properties"]})


@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_match_the_charts_schema(name: str) -> None:
    assert chart_schema_errors(VALUES[name]) == []


def test_the_schema_check_can_fail() -> None:
    bad = {**VALUES["sampler"], "extraEnv": [], "replicaCount": "3",
           "service": {"clusterIP": None}, "ports": {"custom": {"containerPort": 4319}}}
    errors = chart_schema_errors(bad)
    assert any(e.startswith(".extraEnv") for e in errors)
    assert any(e.startswith(".replicaCount") for e in errors)
    assert any(e.startswith(".service.clusterIP") for e in errors)
    assert any("enabled is required" in e for e in errors)


# --- the values against our own files -------------------------------------------------------------

def env_of(values: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in values["extraEnvs"]}


def config_args(values: dict[str, Any]) -> list[str]:
    return [a.removeprefix("--config=") for a in values["command"]["extraArgs"] if a.startswith("--config=")]


def resolver_override() -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The ConfigMap the load balancer's values create, its mount path, and the file it holds."""
    values = VALUES["loadbalancer"]
    (manifest,) = values["extraManifests"]
    (volume,) = values["extraVolumes"]
    (mount,) = values["extraVolumeMounts"]
    assert manifest["kind"] == "ConfigMap" and volume["configMap"]["name"] == manifest["metadata"]["name"]
    assert mount["name"] == volume["name"]
    (filename, text), = manifest["data"].items()
    return manifest, f"{mount['mountPath']}/{filename}", yaml.safe_load(text)


def test_image_and_binary_are_the_otel_crm_collector() -> None:
    dockerfile = (ROOT / "collector-config" / "Dockerfile").read_text()
    version = yaml.safe_load((ROOT / "collector-config" / "builder-config.yaml").read_text())["dist"]["version"]
    assert "COPY gateway/ /etc/otelcol-crm/gateway/" in dockerfile
    for values in VALUES.values():
        assert values["image"]["tag"] == version
        assert f"/{values['command']['name']}" in re.findall(r'ENTRYPOINT \["([^"]+)"\]', dockerfile)


@pytest.mark.parametrize(("name", "mode"), [("loadbalancer", "deployment"), ("sampler", "statefulset")])
def test_runs_the_repository_config_file_not_a_copy(name: str, mode: str) -> None:
    values = VALUES[name]
    assert values["mode"] == mode
    # No chart ConfigMap, no /conf/relay.yaml: the chart's `config` (and its default pipelines) is unused.
    assert values["configMap"] == {"create": False} and "config" not in values and "alternateConfig" not in values
    assert config_args(values)[0] == f"{IMAGE_DIR}gateway/{name}.yaml"
    assert (GATEWAY / f"{name}.yaml").is_file()
    settings = yaml.safe_dump(values)  # comments aside
    assert not {"tail_sampling", "policies", "processors", "pipelines"} & set(re.findall(r"\w+", settings))


@pytest.mark.parametrize("name", sorted(VALUES))
def test_every_env_variable_is_one_the_configs_read(name: str) -> None:
    values = VALUES[name]
    read = set(ENV_REF.findall((GATEWAY / f"{name}.yaml").read_text()))
    if name == "loadbalancer":
        read |= set(ENV_REF.findall(yaml.safe_dump(resolver_override()[2])))
    assert set(env_of(values)) <= read, f"set but never read: {set(env_of(values)) - read}"
    for variable in ("OTELCOL_OTLP_GRPC_ENDPOINT", "OTELCOL_HEALTH_ENDPOINT", "OTELCOL_TELEMETRY_HOST"):
        assert env_of(values)[variable].startswith("$(MY_POD_IP)"), "bind the pod IP, not 127.0.0.1"


@pytest.mark.parametrize("name", sorted(VALUES))
def test_ports_and_probes_match_the_endpoints(name: str) -> None:
    values, defaults = VALUES[name], FACTS["defaults"]
    ports = {k: {**defaults["ports"].get(k, {}), **v} for k, v in
             {**{k: {} for k in defaults["ports"]}, **values["ports"]}.items()}
    enabled = {p["containerPort"] for p in ports.values() if p["enabled"]}
    env = env_of(values)
    assert int(env["OTELCOL_OTLP_GRPC_ENDPOINT"].rpartition(":")[2]) in enabled
    assert int(env["OTELCOL_TELEMETRY_PORT"]) in enabled
    health = int(env["OTELCOL_HEALTH_ENDPOINT"].rpartition(":")[2])
    assert defaults["livenessProbe"]["httpGet"] == defaults["readinessProbe"]["httpGet"] == {"port": health,
                                                                                             "path": "/"}
    if name == "loadbalancer":  # apps send OTLP/HTTP (the operator's Python default) and gRPC
        assert int(env["OTELCOL_OTLP_HTTP_ENDPOINT"].rpartition(":")[2]) in enabled
    else:
        assert int(env["OTELCOL_PROMETHEUS_ENDPOINT"].rpartition(":")[2]) in enabled
        assert not {4318, 6831, 14250, 14268, 9411} & enabled


@pytest.mark.parametrize("name", sorted(VALUES))
def test_memory_limiter_sits_below_the_container_limit(name: str) -> None:
    values = VALUES[name]
    limit = values["resources"]["limits"]["memory"]
    mib = int(limit.removesuffix("Mi")) if limit.endswith("Mi") else int(limit.removesuffix("Gi")) * 1024
    gomemlimit = int(mib * 0.8)  # the chart's GOMEMLIMIT: 80% of limits.memory
    assert int(env_of(values)["OTELCOL_MEMORY_LIMIT_MIB"]) <= gomemlimit


def test_load_balancer_finds_the_samplers_headless_service_by_dns() -> None:
    lb, sampler = VALUES["loadbalancer"], VALUES["sampler"]
    assert sampler["service"]["clusterIP"] == "None"  # headless: one A record per ready sampler
    assert env_of(lb)["LB_DNS_HOSTNAME"] == sampler["fullnameOverride"]
    assert env_of(lb)["LB_DNS_PORT"] == env_of(sampler)["OTELCOL_OTLP_GRPC_ENDPOINT"].rpartition(":")[2]

    _, path, override = resolver_override()
    assert config_args(lb) == [f"{IMAGE_DIR}gateway/loadbalancer.yaml", path]
    # Every load_balancing exporter a pipeline of gateway/loadbalancer.yaml uses gets the DNS
    # resolver, and loses the file's static list (two resolvers: the exporter refuses to start).
    base = yaml.safe_load((GATEWAY / "loadbalancer.yaml").read_text())
    used = {e for p in base["service"]["pipelines"].values() for e in p["exporters"]
            if e.split("/")[0] in ("load_balancing", "loadbalancing")}
    assert used
    for exporter in used:
        assert exporter in override["exporters"], f"{exporter} (gateway/loadbalancer.yaml) has no DNS resolver"
        resolver = override["exporters"][exporter]["resolver"]
        assert resolver["static"] is None and set(resolver["dns"]) >= {"hostname", "port"}, exporter


# --- rendered by the real chart, where a checkout and helm exist ----------------------------------

def _helm() -> str | None:
    found = shutil.which("helm")
    cache = Path(os.environ.get("OTEL_CRM_CACHE") or Path.home() / ".cache" / "otel-crm")
    return found or next((str(p) for p in sorted(cache.glob("helm-*/bin/helm"))), None)


@pytest.mark.parametrize("name", sorted(VALUES))
def test_rendered_manifests(name: str) -> None:
    chart, helm = os.environ.get("OTEL_CRM_HELM_CHART"), _helm()
    if not (chart and helm):
        pytest.skip("set OTEL_CRM_HELM_CHART to a checkout of charts/opentelemetry-collector (and have helm) "
                    "to render; the schema facts above are checked regardless")
    rendered = subprocess.run([helm, "template", f"otelcol-crm-{name}", chart, "-n", "observability",
                               "-f", str(HELM_DIR / f"{name}-values.yaml")],
                              capture_output=True, text=True, check=True).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    values = VALUES[name]
    full = values["fullnameOverride"]
    workload = docs[("Deployment" if name == "loadbalancer" else "StatefulSet", full)]
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [f"/{values['command']['name']}"]
    assert container["args"] == values["command"]["extraArgs"]  # no --config=/conf/relay.yaml
    assert container["env"][0]["name"] == "MY_POD_IP"  # defined before the $(MY_POD_IP) references
    assert [e for e in container["env"] if e["name"] in env_of(values)] == values["extraEnvs"]
    assert not [d for d in docs.values() if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(full)
                and d["metadata"]["name"] != "otelcol-crm-lb-resolver"], "the chart's own config is not rendered"
    service = docs[("Service", full)]
    assert service["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    if name == "sampler":
        assert workload["spec"]["serviceName"] == full and service["spec"]["clusterIP"] == "None"
    else:
        manifest, path, _ = resolver_override()
        assert docs[("ConfigMap", manifest["metadata"]["name"])]["data"] == manifest["data"]
        mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"]))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == manifest["metadata"]["name"]
        assert {p["port"] for p in service["spec"]["ports"]} >= {4317, 4318}
