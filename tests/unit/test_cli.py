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


def test_readme_attribute_table_is_current() -> None:
    from pathlib import Path

    from otel_crm.cli import attributes_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert attributes_markdown() in readme, "run `make readme-tables`"
