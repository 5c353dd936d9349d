"""Secrets out of the SDK's own log messages, which otel_crm does not write but prints.

The OpenTelemetry SDK logs what it could not use, whole: a malformed header of
OTEL_EXPORTER_OTLP_*HEADERS (``x-team: SECRET`` — given no headers by otel_crm, the exporters parse
the variables themselves), a malformed pair of OTEL_RESOURCE_ATTRIBUTES, and an exporter's endpoint,
user info included, in every retry warning. A filter on those loggers masks them: the warning
stays, the secret goes (``****``). Installed before any exporter or resource is built
(:func:`otel_crm._internal.settings.resolve_settings` calls :func:`install`).
"""

from __future__ import annotations

import logging

from otel_crm._internal.settings_parse import MASK, mask_userinfo

__all__ = ["install", "mask_userinfo"]

_HEADERS_LOGGER = "opentelemetry.util.re"
_RESOURCE_LOGGER = "opentelemetry.sdk.resources"
# Loggers whose messages name an endpoint (a logger's filter does not apply to its children).
_ENDPOINT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.sdk._shared_internal",
)


class _MaskSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        template = record.msg if isinstance(record.msg, str) else ""
        if record.name == _HEADERS_LOGGER and template.startswith("Header format invalid"):
            record.args = (MASK,)  # the header, malformed: no telling which part is the secret
        elif record.name == _RESOURCE_LOGGER and template.startswith("Invalid key value resource attribute pair"):
            if isinstance(record.args, tuple) and record.args:
                record.args = (MASK, *record.args[1:])
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # a malformed record: logging reports it itself
                return True
            masked = mask_userinfo(message)
            if masked != message:
                record.msg, record.args = masked, ()
        return True


_filter = _MaskSecrets()


def install() -> None:
    """Idempotent; cheap enough to call on every settings resolution."""
    for name in (_HEADERS_LOGGER, _RESOURCE_LOGGER, *_ENDPOINT_LOGGERS):
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
