from __future__ import annotations

import io
import socket

from otel_crm.cli import doctor, main


def _listening() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_doctor_masks_secrets_and_reports_a_reachable_collector() -> None:
    server = _listening()
    out = io.StringIO()
    port = server.getsockname()[1]
    status = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                     "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=topsecret", "OTEL_CRM_SCRUB_SALT": "pepper"},
                    out=out)
    server.close()
    text = out.getvalue()
    assert status == 0
    assert "topsecret" not in text and "pepper" not in text and "x-api-key" in text
    assert f"http://127.0.0.1:{port}: accepts connections" in text
    assert "invalid variables: none" in text


def test_doctor_fails_on_unreachable_collector_and_lists_bad_variables() -> None:
    server = _listening()
    port = server.getsockname()[1]
    server.close()  # nothing listens there any more
    out = io.StringIO()
    status = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                     "OTEL_CRM_SAMPLING_MODE": "sometimes", "OTEL_CRM_STRICT": "true"}, out=out)
    text = out.getvalue()
    assert status == 1
    assert "NOT reachable" in text
    assert "OTEL_CRM_SAMPLING_MODE='sometimes'" in text


def test_settings_table_command(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["settings", "--markdown"]) == 0
    assert "| `sampling_ratio` |" in capsys.readouterr().out


def test_attribute_table_in_the_docs_is_current() -> None:
    from pathlib import Path

    from otel_crm.cli import attributes_markdown

    docs = (Path(__file__).resolve().parents[2] / "docs" / "telemetry.md").read_text()
    assert attributes_markdown() in docs, "run `make readme-tables`"


def _doctor(environ: dict[str, str], capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    server = _listening()
    port = server.getsockname()[1]
    try:
        status = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", **environ})
    finally:
        server.close()
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _marked(text: str) -> set[str]:
    return {line.split()[1] for line in text.splitlines() if line.startswith(" * ")}


def test_doctor_marks_only_what_a_variable_set(capsys) -> None:  # type: ignore[no-untyped-def]
    status, out, _ = _doctor({"OTEL_SERVICE_NAME": "crm-api"}, capsys)
    assert status == 0
    assert _marked(out) == {"otlp_endpoint", "service_name"}
    assert "   strict = False" in out


def test_doctor_marks_strict_when_it_is_set_and_says_what_it_means(capsys) -> None:  # type: ignore[no-untyped-def]
    status, out, err = _doctor({"OTEL_CRM_STRICT": "true", "OTEL_CRM_SAMPLING_RATIO": "2"}, capsys)
    assert status == 1
    assert _marked(out) == {"otlp_endpoint", "strict"}  # the invalid ratio was not taken
    assert "OTEL_CRM_STRICT=true: the app would refuse to start with these." in out
    assert "OTEL_CRM_SAMPLING_RATIO='2': expected a number from 0 to 1\n" in out  # no "using the default"
    assert err == ""


def test_doctor_prints_each_invalid_variable_once_and_unambiguously(capsys) -> None:  # type: ignore[no-untyped-def]
    status, out, err = _doctor({"OTEL_EXPORTER_OTLP_PROTOCOL": "http"}, capsys)
    assert status == 1
    assert (out + err).count("OTEL_EXPORTER_OTLP_PROTOCOL") == 1
    assert "expected one of grpc, http/protobuf; using the default 'grpc'" in out
    assert "grpc/http" not in out + err


def test_doctor_never_prints_credentials(capsys) -> None:  # type: ignore[no-untyped-def]
    status, out, err = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://alice:hunter2@127.0.0.1:9/?token=k3y",
                               "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://bob:pw2@127.0.0.1:9/v1/traces",
                               "OTEL_EXPORTER_OTLP_HEADERS": "authorization Bearer s3cret"}), *capsys.readouterr()
    assert status == 1  # unreachable port, malformed headers
    for secret in ("alice", "hunter2", "k3y", "bob", "pw2", "s3cret", "Bearer"):
        assert secret not in out + err
    assert "OTEL_EXPORTER_OTLP_HEADERS='****'" in out
    assert "OTLP endpoint http://127.0.0.1:9/v1/traces: NOT reachable" in out


def test_doctor_masks_malformed_secrets_and_credential_like_resource_attributes(capsys) -> None:  # type: ignore[no-untyped-def]
    status, out, err = _doctor({"OTEL_EXPORTER_OTLP_HEADERS": "x-team: S3CRET-1",
                                "OTEL_RESOURCE_ATTRIBUTES": "api_token=S3CRET-2,team=crm"}, capsys)
    assert status == 1
    assert "S3CRET" not in out + err
    assert "invalid OTEL_EXPORTER_OTLP_HEADERS='****'" in out
    assert "resource_attributes = {'api_token': '****', 'team': 'crm'}" in out
