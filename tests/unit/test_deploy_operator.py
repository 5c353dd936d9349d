"""deploy/operator: the auto-instrumentation image and the Instrumentation example, checked against
the project's own files and the layout the OpenTelemetry Operator expects (operator source,
internal/instrumentation/python.go, v0.158.0). The folder itself is built and injected in
tests/integration/test_operator_injection.py."""

from __future__ import annotations

import ast
import importlib.util
import re
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from otel_crm._internal.settings import REGISTRY, resolve_settings
from tests.support.processes import ROOT

OPERATOR = ROOT / "deploy" / "operator"
DOCKERFILE = (OPERATOR / "Dockerfile").read_text()
# These read the repository (pyproject.toml) with tomllib, new in 3.11; the install check runs the
# unit tests on 3.10 too, where they are skipped (nothing here concerns the installed package).
tomllib = pytest.importorskip("tomllib", reason="tomllib is new in Python 3.11")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INSTRUMENTATION = yaml.safe_load((OPERATOR / "instrumentation.yaml").read_text())


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_autoinstrumentation",
                                                  OPERATOR / "build_autoinstrumentation.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_script()


def _stages() -> list[str]:
    return re.split(r"(?m)^FROM ", DOCKERFILE)[1:]


def test_both_build_stages_run_the_one_build_script() -> None:
    builders = [s for s in _stages() if "build_autoinstrumentation.py" in s]
    targets = sorted(re.findall(r"RUN python deploy/operator/build_autoinstrumentation\.py (\S+)", DOCKERFILE))
    assert len(builders) == 2 and targets == ["/autoinstrumentation", "/autoinstrumentation-musl"]
    assert [s.split()[0] for s in builders] == ["python:${PYTHON_VERSION}-slim", "python:${PYTHON_VERSION}-alpine"]


def test_the_image_has_the_folders_the_operator_copies_and_cp() -> None:
    final = _stages()[-1]
    assert final.startswith("busybox:")  # the init container runs `cp -r /autoinstrumentation/. <mount>`
    assert "COPY --from=build /autoinstrumentation /autoinstrumentation" in final
    assert "COPY --from=build-musl /autoinstrumentation-musl /autoinstrumentation-musl" in final
    assert "chmod -R go+r" in final


def test_the_build_context_holds_what_the_wheel_and_the_script_need() -> None:
    copied = {src.rstrip("/") for line in re.findall(r"(?m)^COPY (?!--from)(.+) \S+$", DOCKERFILE)
              for src in line.split()}
    hatch = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", "constraints.txt", "deploy/operator", PYPROJECT["project"]["readme"],
              *hatch["packages"], *hatch["force-include"]}
    assert needed <= copied
    ignore = (OPERATOR / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore and {f"!{c}" for c in copied} <= {line.rstrip("/") for line in ignore}


def test_requirements_are_the_instrumentations_of_every_framework_extra() -> None:
    lines = [line.strip() for line in (OPERATOR / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    names = {re.split(r"[<>=~!]", line)[0] for line in lines}
    assert all(n.startswith("opentelemetry-instrumentation-") for n in names), "instrumentations only"
    extras = PYPROJECT["project"]["optional-dependencies"]
    wanted = {re.split(r"[<>=~!]", dep)[0] for extra in ("flask", "django", "sqlalchemy", "requests")
              for dep in extras[extra] if dep.startswith("opentelemetry-instrumentation-")}
    assert wanted <= names
    family = next(d for d in PYPROJECT["project"]["dependencies"]
                  if re.match(r"opentelemetry-instrumentation[<>=~!]", d))
    assert all(line.endswith(family.removeprefix("opentelemetry-instrumentation")) for line in lines)


def test_sitecustomize_selects_otel_crm_then_does_what_upstreams_does() -> None:
    statements = [ast.unparse(n) for n in ast.parse((OPERATOR / "sitecustomize.py").read_text()).body]
    entry_points = PYPROJECT["project"]["entry-points"]
    (distro,) = entry_points["opentelemetry_distro"]
    (configurator,) = entry_points["opentelemetry_configurator"]
    assert statements[1:3] == [f"os.environ.setdefault('OTEL_PYTHON_DISTRO', {distro!r})",
                               f"os.environ.setdefault('OTEL_PYTHON_CONFIGURATOR', {configurator!r})"]
    assert tuple(statements[-2:]) == BUILD.UPSTREAM_SITECUSTOMIZE_CODE


def test_upstreams_sitecustomize_is_still_the_file_the_build_replaces() -> None:
    """The pinned opentelemetry-instrumentation's file; the build refuses to replace a changed one."""
    path = Path(str(metadata.distribution("opentelemetry-instrumentation").locate_file(
        "opentelemetry/instrumentation/auto_instrumentation/sitecustomize.py")))
    assert BUILD._statements(path.read_text()) == BUILD.UPSTREAM_SITECUSTOMIZE_CODE


def test_build_replaces_only_upstreams_two_line_sitecustomize(tmp_path: Path) -> None:
    path = tmp_path / BUILD.SITECUSTOMIZE
    path.parent.mkdir(parents=True)
    path.write_text("from opentelemetry.instrumentation.auto_instrumentation import initialize\n"
                    "import something_new\ninitialize()\n")
    with pytest.raises(SystemExit, match="no longer upstream"):
        BUILD.install_sitecustomize(tmp_path)
    path.write_text("# c\nfrom opentelemetry.instrumentation.auto_instrumentation import initialize\n\ninitialize()\n")
    BUILD.install_sitecustomize(tmp_path)
    assert path.read_text() == (OPERATOR / "sitecustomize.py").read_text()


def test_build_refuses_a_folder_that_would_shadow_the_apps_frameworks(tmp_path: Path) -> None:
    (tmp_path / "otel_crm").mkdir()
    BUILD.check_folder(tmp_path)
    (tmp_path / "flask").mkdir()
    with pytest.raises(SystemExit, match="flask"):
        BUILD.check_folder(tmp_path)


def test_build_refuses_a_non_empty_target(tmp_path: Path) -> None:
    (tmp_path / "opentelemetry").mkdir()
    with pytest.raises(SystemExit, match="not empty"):
        BUILD.build(tmp_path)


def test_instrumentation_is_an_operator_resource_with_valid_otel_crm_settings() -> None:
    assert INSTRUMENTATION["apiVersion"] == "opentelemetry.io/v1alpha1"
    assert INSTRUMENTATION["kind"] == "Instrumentation"
    spec = INSTRUMENTATION["spec"]
    # otel_crm ignores OTEL_TRACES_SAMPLER and installs its own propagators: setting them would mislead.
    assert "sampler" not in spec and "propagators" not in spec
    env = {e["name"]: e["value"] for e in spec["python"]["env"]}
    known = {v for s in REGISTRY for v in s.env} | {"OTEL_PYTHON_DISTRO", "OTEL_PYTHON_CONFIGURATOR"}
    assert set(env) <= known
    settings = resolve_settings({**env, "OTEL_CRM_STRICT": "true"})  # raises on any invalid value
    assert settings.sampling_mode == "collector" and env["OTEL_PYTHON_DISTRO"] == "otel_crm"


def test_instrumentation_exports_to_the_load_balancer_over_otlp_http() -> None:
    lb = yaml.safe_load((ROOT / "deploy" / "helm" / "loadbalancer-values.yaml").read_text())
    endpoint = INSTRUMENTATION["spec"]["exporter"]["endpoint"]
    # The operator sets OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for Python pods.
    assert re.fullmatch(rf"http://{lb['fullnameOverride']}\.[a-z0-9-]+\.svc\.cluster\.local:4318", endpoint)
