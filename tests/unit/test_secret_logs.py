from __future__ import annotations

import logging

import pytest

from otel_crm._internal import secret_logs


def test_userinfo_is_masked_wherever_it_appears() -> None:
    assert secret_logs.mask_userinfo("exporting logs to u:S3CRET@127.0.0.1:4317, retrying") == \
        "exporting logs to ****@127.0.0.1:4317, retrying"
    assert secret_logs.mask_userinfo("http://app:p@ss@db:5432/x") == "http://****@db:5432/x"
    assert secret_logs.mask_userinfo("ipv4:127.0.0.1:4317: Connection refused") == \
        "ipv4:127.0.0.1:4317: Connection refused"


@pytest.mark.parametrize(("logger", "template", "args", "expected"), [
    ("opentelemetry.util.re", "Header format invalid! Header values ...: %s", ("x-team: S3CRET",),
     "Header format invalid! Header values ...: ****"),
    ("opentelemetry.sdk.resources", "Invalid key value resource attribute pair %s: %s",
     ("session S3CRET", "not enough values"), "Invalid key value resource attribute pair ****: not enough values"),
    ("opentelemetry.exporter.otlp.proto.grpc.exporter", "Transient error %s encountered while exporting %s to %s",
     ("UNAVAILABLE", "logs", "u:S3CRET@collector:4317"),
     "Transient error UNAVAILABLE encountered while exporting logs to ****@collector:4317"),
])
def test_the_sdk_warnings_that_would_print_a_secret_are_masked(
        logger: str, template: str, args: tuple[str, ...], expected: str, caplog: pytest.LogCaptureFixture) -> None:
    secret_logs.install()
    secret_logs.install()  # idempotent
    assert len([f for f in logging.getLogger(logger).filters if isinstance(f, secret_logs._MaskSecrets)]) == 1
    with caplog.at_level(logging.WARNING, logger=logger):
        logging.getLogger(logger).warning(template, *args)
    assert caplog.records[-1].getMessage() == expected
    assert "S3CRET" not in caplog.text
