"""The OpenTelemetry Operator's Python injection, without a cluster.

The folder is built by deploy/operator/build_autoinstrumentation.py, the script the image's
Dockerfile runs (`pip install --target`), and cached by a hash of what goes into it. The pod's
environment is computed the way the operator computes it (internal/instrumentation/python.go and
sdk.go, operator v0.158.0; docs/kubernetes.md) from deploy/operator/instrumentation.yaml, then
expanded the way the kubelet expands `$(VAR)`. The apps run with exactly that environment (plus the
pod's own variables) on an interpreter that has the framework but no OpenTelemetry package, as in
an application image, and with no `opentelemetry-instrument` on the command line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import Collector, wait_until
from tests.support.processes import ROOT, ManagedProcess, free_port, http_ok

pytestmark = pytest.mark.integration

OPERATOR = ROOT / "deploy" / "operator"
INSTRUMENTATION = yaml.safe_load((OPERATOR / "instrumentation.yaml").read_text())
CACHE = Path(os.environ.get("OTEL_CRM_CACHE") or Path.home() / ".cache" / "otel-crm")
MOUNT = "/otel-auto-instrumentation-python"  # python.go: pythonInstrMountPath
AUTO_DIR = "opentelemetry/instrumentation/auto_instrumentation"
UPSTREAM_DISTRO = "opentelemetry-distro"  # the operator's own image installs it
APP_PACKAGES = ("flask", "django", "sqlalchemy", "requests")
SERVER = 2


# --- the operator's injection, as its source does it ------------------------------------------------

@dataclass
class Pod:
    """A Deployment's pod at admission time (no name or node yet: both come from the downward API)."""
    namespace: str
    deployment: str
    replicaset: str
    name: str  # what metadata.name resolves to once scheduled
    node: str
    image: str
    container: str = "app"
    env: list[tuple[str, str]] = field(default_factory=list)  # the container's own variables


def operator_env(inst: dict, pod: Pod) -> list[tuple[str, str]]:
    """The container env after the operator's Python injection: (name, value) in order; downward-API
    values appear as `fieldRef:<path>`."""
    spec = inst["spec"]
    assert "sampler" not in spec and "propagators" not in spec  # not emulated: the example sets neither
    env = list(pod.env)

    def append_if_not_set(items: list[tuple[str, str]]) -> None:
        for name, value in items:
            if all(n != name for n, _ in env):
                env.append((name, value))

    # python.go injectPythonSDKToContainer: spec.python.env, then PYTHONPATH around the app's own.
    append_if_not_set([(e["name"], e["value"]) for e in spec["python"].get("env", [])])
    prefix, suffix = f"{MOUNT}/{AUTO_DIR}", MOUNT
    own = [i for i, (n, _) in enumerate(env) if n == "PYTHONPATH"]
    if own:
        env[own[0]] = ("PYTHONPATH", f"{prefix}:{env[own[0]][1]}:{suffix}")
    else:
        env.append(("PYTHONPATH", f"{prefix}:{suffix}"))
    # sdk.go injectCommonEnvVar: pod and node IPs prepended, then spec.env.
    for name, path in (("OTEL_POD_IP", "status.podIP"), ("OTEL_NODE_IP", "status.hostIP")):
        if all(n != name for n, _ in env):
            env.insert(0, (name, f"fieldRef:{path}"))
    append_if_not_set([(e["name"], e["value"]) for e in spec.get("env", [])])
    # python.go getDefaultPythonEnvVars
    append_if_not_set([("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_TRACES_EXPORTER", "otlp"),
                       ("OTEL_METRICS_EXPORTER", "otlp"), ("OTEL_LOGS_EXPORTER", "otlp")])
    # sdk.go injectCommonSDKConfig / createResourceMap (no annotations, labels not used by default)
    pod_name, node_name = "$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)", "$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME)"
    resource = {"k8s.namespace.name": pod.namespace, "k8s.container.name": pod.container,
                "k8s.replicaset.name": pod.replicaset, "k8s.deployment.name": pod.deployment,
                "service.instance.id": f"{pod.namespace}.{pod_name}.{pod.container}",
                "service.namespace": pod.namespace, "k8s.pod.name": pod_name, "k8s.node.name": node_name,
                "service.version": pod.image.rpartition(":")[2]}
    append_if_not_set([("OTEL_SERVICE_NAME", pod.deployment)])
    append_if_not_set([("OTEL_EXPORTER_OTLP_ENDPOINT", spec["exporter"]["endpoint"])])
    env.append(("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "fieldRef:metadata.name"))
    env.append(("OTEL_RESOURCE_ATTRIBUTES_NODE_NAME", "fieldRef:spec.nodeName"))
    env.append(("OTEL_RESOURCE_ATTRIBUTES", ",".join(f"{k}={v}" for k, v in sorted(resource.items()))))
    return env


def kubelet_expand(env: list[tuple[str, str]], pod: Pod, pod_ip: str = "10.42.1.17",
                   node_ip: str = "10.0.0.5") -> dict[str, str]:
    """Downward API values, then `$(VAR)` references to variables defined earlier in the list."""
    fields = {"metadata.name": pod.name, "spec.nodeName": pod.node, "status.podIP": pod_ip,
              "status.hostIP": node_ip}
    out: dict[str, str] = {}
    for name, value in env:
        if value.startswith("fieldRef:"):
            out[name] = fields[value.removeprefix("fieldRef:")]
        else:
            out[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: out.get(m[1], m[0]), value)
    return out


def pod_environment(pod: Pod, folder: Path, endpoint: str, *, without: tuple[str, ...] = ()) -> dict[str, str]:
    """What the app process sees: the injected env, the init container's copy at `folder`, and the
    exporter endpoint pointed at `endpoint` (the test collector's OTLP/HTTP receiver)."""
    env = kubelet_expand(operator_env(INSTRUMENTATION, pod), pod)
    env["PYTHONPATH"] = env["PYTHONPATH"].replace(MOUNT, str(folder))
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    for name in without:
        del env[name]
    return env


# --- the folder, the application image, a vendored upstream distro (all cached) ---------------------

def _cached(name: str, key_parts: list[bytes], build: Callable[[Path], None]) -> Path:
    digest = hashlib.sha256(b"\0".join([sys.version.encode(), *key_parts])).hexdigest()[:12]
    path = CACHE / f"{name}-{digest}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worktree's test run may be building the same thing
        if not path.exists():
            partial = CACHE / f"{name}-{digest}.partial-{os.getpid()}"
            for stale in CACHE.glob(f"{name}-{digest}.partial-*"):  # left by an interrupted build
                shutil.rmtree(stale)
            build(partial)
            partial.rename(path)
    return path


def folder_key(extra: tuple[str, ...]) -> list[bytes]:
    inputs = [ROOT / "pyproject.toml", ROOT / "constraints.txt", *sorted(OPERATOR.glob("*.txt")),
              OPERATOR / "build_autoinstrumentation.py", OPERATOR / "sitecustomize.py"]
    return [p.read_bytes() for p in inputs] + [e.encode() for e in extra]


def injected_folder(tmp: Path, extra: tuple[str, ...] = ()) -> Path:
    """The init container's copy of /autoinstrumentation. The cache holds the folder as built; the
    copy gets otel_crm/ from this checkout (the wheel's otel_crm/ is that directory; its metadata and
    entry points come from pyproject.toml, which is in the cache key)."""
    def build(target: Path) -> None:
        subprocess.run([sys.executable, str(OPERATOR / "build_autoinstrumentation.py"), str(target), "--quiet",
                        *(a for e in extra for a in ("--extra", e))], check=True)

    cached = _cached("autoinstrumentation", folder_key(extra), build)
    copy = tmp / "otel-auto-instrumentation-python"
    shutil.copytree(cached, copy, copy_function=os.link, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(copy / "otel_crm")
    shutil.copytree(ROOT / "otel_crm", copy / "otel_crm", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def app_python() -> Path:
    """An interpreter like an application image's: the example's frameworks, no OpenTelemetry."""
    pins = [f"{name}=={metadata.version(name)}" for name in APP_PACKAGES]

    def build(target: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
        subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *pins], check=True)

    return _cached("k8s-app-venv", [p.encode() for p in pins], build) / "bin" / "python"


def vendored_upstream_distro() -> Path:
    """opentelemetry-distro alone, as an app might vendor it on its own PYTHONPATH."""
    spec = f"{UPSTREAM_DISTRO}=={metadata.version(UPSTREAM_DISTRO)}"

    def build(target: Path) -> None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--target", str(target), spec], check=True)

    return _cached("k8s-vendored-distro", [spec.encode()], build)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"otel_crm only": injected_folder(tmp_path_factory.mktemp("plain")),
            "with upstream distro": injected_folder(tmp_path_factory.mktemp("upstream"), (UPSTREAM_DISTRO,))}


@pytest.fixture(scope="module")
def python() -> Path:
    return app_python()


def clean_env(env: dict[str, str]) -> list[str]:
    """`env -i` argv prefix: the process sees these variables and nothing from the test run."""
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8"}
    return ["env", "-i", *(f"{k}={v}" for k, v in {**base, **env}.items())]


# --- which distro and configurator the injected interpreter runs -----------------------------------

PROBE = """
import json, os
from opentelemetry import trace
import otel_crm
resource = getattr(trace.get_tracer_provider(), "resource", None)
print(json.dumps({
    "distro_ran": os.environ.get("OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION") == "false",  # CrmDistro._configure
    "resource": dict(resource.attributes) if resource else {},
    "otel_crm": otel_crm.__file__,
}), flush=True)
os._exit(0)
"""


def probe(python: Path, env: dict[str, str], tmp_path: Path) -> dict:
    result = subprocess.run([*clean_env(env), str(python), "-c", PROBE], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


NO_COLLECTOR = "http://127.0.0.1:9"  # the probe exits before anything is exported
PROBE_POD = Pod("crm", "leads-api", "leads-api-7c9d5", "leads-api-7c9d5-q2x8z", "node-2",
                "registry.example.com/leads-api:2.0.1")


def test_the_folder_with_upstream_distro_really_offers_two_distros(folders: dict[str, Path]) -> None:
    def entry_points(folder: Path, group: str) -> set[str]:
        names = set()
        for dist in metadata.distributions(path=[str(folder)]):
            names |= {ep.name for ep in dist.entry_points if ep.group == group}
        return names

    assert entry_points(folders["with upstream distro"], "opentelemetry_distro") == {"otel_crm", "distro"}
    assert entry_points(folders["with upstream distro"], "opentelemetry_configurator") == {"otel_crm",
                                                                                         "configurator"}
    assert entry_points(folders["otel_crm only"], "opentelemetry_distro") == {"otel_crm"}
    for folder in folders.values():  # the operator's emptyDir is limited to 200Mi by default (helper.go)
        assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 200 * 2**20


def test_docs_list_every_library_the_folder_shadows(folders: dict[str, Path]) -> None:
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    paragraph = next(p for p in docs.split("\n\n") if "shadow the application's copies" in p)
    listed = set(re.findall(r"`([^`]+)`", paragraph.split("shadow the application's copies")[1]))
    shipped = {d.metadata["Name"].lower().replace("_", "-") for d in
               metadata.distributions(path=[str(folders["otel_crm only"])])}
    assert {n for n in shipped if not n.startswith("opentelemetry-") and n != "otel-crm"} == \
        {n.lower().replace("_", "-") for n in listed}


@pytest.mark.parametrize("folder_name", ["otel_crm only", "with upstream distro"])
@pytest.mark.parametrize("selection_env", ["from the Instrumentation", "image defaults only"])
def test_otel_crm_is_the_distro_and_configurator_picked(folders: dict[str, Path], python: Path, *, folder_name: str,
                                                        selection_env: str, tmp_path: Path) -> None:
    without = ("OTEL_PYTHON_DISTRO", "OTEL_PYTHON_CONFIGURATOR") if selection_env == "image defaults only" else ()
    env = pod_environment(PROBE_POD, folders[folder_name], NO_COLLECTOR, without=without)
    found = probe(python, env, tmp_path)
    assert found["otel_crm"].startswith(str(folders[folder_name]))
    assert found["distro_ran"], "CrmDistro configured the environment"
    assert found["resource"]["telemetry.distro.name"] == "otel_crm", "CrmConfigurator built the providers"
    assert found["resource"]["k8s.pod.name"] == PROBE_POD.name


def test_upstream_distro_on_the_apps_own_pythonpath_does_not_win(folders: dict[str, Path], python: Path,
                                                                  tmp_path: Path) -> None:
    """The operator puts an app's own PYTHONPATH between its two entries, so a vendored upstream
    distro is found before the folder's otel_crm. Control: upstream's own sitecustomize then picks
    upstream (first entry point found); ours picks otel_crm."""
    vendor = vendored_upstream_distro()
    pod = Pod(**{**PROBE_POD.__dict__, "env": [("PYTHONPATH", str(vendor))]})
    folder = folders["otel_crm only"]
    env = pod_environment(pod, folder, NO_COLLECTOR, without=("OTEL_PYTHON_DISTRO", "OTEL_PYTHON_CONFIGURATOR"))
    assert env["PYTHONPATH"] == f"{folder}/{AUTO_DIR}:{vendor}:{folder}"
    found = probe(python, env, tmp_path)
    assert found["distro_ran"] and found["resource"]["telemetry.distro.name"] == "otel_crm"

    stock = tmp_path / "stock"
    stock.mkdir()
    shutil.copy(Path(metadata.distribution("opentelemetry-instrumentation").locate_file(
        f"{AUTO_DIR}/sitecustomize.py")), stock / "sitecustomize.py")
    env["PYTHONPATH"] = f"{stock}:{vendor}:{folder}"
    control = probe(python, env, tmp_path)
    assert not control["distro_ran"] and control["resource"].get("telemetry.distro.name") != "otel_crm", \
        "without otel_crm's sitecustomize the vendored upstream distro wins: the test above can fail"


# --- the examples, injected, against the real collector -----------------------------------------------

@dataclass
class InjectedApp:
    pod: Pod
    port: int
    process: ManagedProcess

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def injected_app(python: Path, pod: Pod, folder: Path, collector: Collector, *, tmp_path: Path,
                 argv: list[str]) -> Iterator[InjectedApp]:
    port = free_port()
    own = [*pod.env, ("CRM_PORT", str(port)), ("CRM_DB_PATH", str(tmp_path / "crm.sqlite3")),
           ("PYTHONUNBUFFERED", "1")]
    env = pod_environment(Pod(**{**pod.__dict__, "env": own}), folder, collector.http_endpoint)
    assert not any("opentelemetry-instrument" in a for a in argv)
    process = ManagedProcess(pod.deployment, [*clean_env(env), str(python), *argv], log_dir=tmp_path,
                             cwd=tmp_path)
    try:
        process.wait_healthy(lambda: http_ok(f"http://127.0.0.1:{port}/health"), timeout=60)
        yield InjectedApp(pod, port, process)
    finally:
        process.stop()


EXAMPLES = {
    "flask": (Pod("crm", "flask-crm", "flask-crm-5d8f7c9b6", "flask-crm-5d8f7c9b6-x2x7q", "pool-a-node-3",
                  "registry.example.com/flask-crm:1.4.2"),
              [str(ROOT / "examples" / "flask_crm" / "app.py")], "GET /leads/<int:lead_id>"),
    "django": (Pod("crm", "django-crm", "django-crm-84b6f5d7c", "django-crm-84b6f5d7c-m4p9t", "pool-b-node-1",
                   "registry.example.com/django-crm:3.0.0",
                   env=[("DJANGO_SETTINGS_MODULE", "crm_settings"),
                        ("PYTHONPATH", str(ROOT / "examples" / "django_crm"))]),
               [str(ROOT / "examples" / "django_crm" / "manage.py"), "runserver", "--noreload"],
               "GET leads/<int:lead_id>"),
}


@pytest.mark.parametrize("folder_name", ["otel_crm only", "with upstream distro"])
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_injected_example_sends_spans_metrics_and_logs_with_k8s_resource(
        folders: dict[str, Path], python: Path, collector: Collector, *, tmp_path: Path, example: str,
        folder_name: str) -> None:
    pod, argv, route_span = EXAMPLES[example]
    with injected_app(python, pod, folders[folder_name], collector, tmp_path=tmp_path, argv=argv) as app:
        created = requests.post(app.url("/leads"), json={"name": "Ada", "email": "ada@example.com"},
                                headers={"X-Tenant-ID": "acme"}, timeout=10)
        assert created.status_code in (200, 201), created.text
        lead = created.json()["id"]
        assert requests.get(app.url(f"/leads/{lead}"), headers={"X-Tenant-ID": "acme"}, timeout=10).ok
        assert requests.get(app.url("/fail"), timeout=10).status_code == 500
        assert app.process.stop() < 10  # SIGTERM, as the kubelet does: otel_crm flushes on the way out
        output = app.process.output()

    expected = {"k8s.namespace.name": pod.namespace, "k8s.deployment.name": pod.deployment,
                "k8s.replicaset.name": pod.replicaset, "k8s.pod.name": pod.name, "k8s.node.name": pod.node,
                "k8s.container.name": pod.container, "service.name": pod.deployment,
                "service.namespace": pod.namespace, "service.version": pod.image.rpartition(":")[2],
                "service.instance.id": f"{pod.namespace}.{pod.name}.{pod.container}",
                "telemetry.distro.name": "otel_crm"}

    def resource_of(items: list) -> dict:  # type: ignore[type-arg]
        return {k: items[0].resource.get(k) for k in expected}

    wait_until(lambda: any(s.name == route_span for s in collector.spans()), 20, f"{route_span} span")
    server = next(s for s in collector.spans() if s.name == route_span)
    assert server.kind == SERVER and server.attributes["http.request.method"] == "GET"  # stable semconv
    assert server.attributes["crm.tenant.id"] == "acme"
    assert resource_of([server]) == expected, output[-3000:]

    wait_until(lambda: any(p.metric == "http.server.request.duration" for p in collector.metrics()), 20,
               "http.server.request.duration")
    points = [p for p in collector.metrics() if p.metric == "http.server.request.duration"]
    assert resource_of(points) == expected

    wait_until(lambda: bool(collector.logs()), 20, "log records")
    logs = collector.logs()
    assert resource_of(logs) == expected
    keys = [(r.body, r.trace_id, r.span_id) for r in logs]
    assert len(keys) == len(set(keys)), "each record exported once (no second OTLP log handler)"
