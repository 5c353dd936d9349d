"""The standard ``OTEL_*`` variables the SDK, the OTLP exporters and the instrumentations read
themselves, declared like otel_crm's own settings (settings.py) so that each is checked once.

Upstream reads these from the process environment wherever it needs them, and a bad value stops
the app (``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc``), switches telemetry off behind a traceback
(``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT=abc``) or fails every request (a bad header-capture regex).
Declared here, a bad value gives one line naming it and its default is used: settings.py removes
the variable from the environment before any upstream code reads it
(``discard_invalid_standard_variables``), so upstream falls back to the same default. Valid values
stay in the environment and upstream applies them, except where otel_crm passes its own arguments
(sampler, propagators, batch processors, exporters: docs/configuration.md says which).

:class:`StandardVariables` is the base class of ``Settings``; its fields are registry entries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from otel_crm._internal.settings_parse import SettingProblem, setting

__all__ = ["BUILTIN_SAMPLERS", "OPTIONAL_PROPAGATORS", "PRE_IMPORT_VARIABLES", "STANDARD_NAMES",
           "StandardVariables", "installed_entry_points", "stashed_name", "unstash"]

Check = Callable[[Any, str], tuple[Any, list[SettingProblem]]]

# Propagator names of the optional upstream packages (entry points `opentelemetry_propagator`).
OPTIONAL_PROPAGATORS = {"b3": "opentelemetry-propagator-b3", "b3multi": "opentelemetry-propagator-b3",
                        "jaeger": "opentelemetry-propagator-jaeger", "xray": "opentelemetry-propagator-aws-xray",
                        "xray-lambda": "opentelemetry-propagator-aws-xray",
                        "ottrace": "opentelemetry-propagator-ot-trace"}
BUILTIN_PROPAGATORS = frozenset({"tracecontext", "baggage", "none"})
BUILTIN_SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
                    "parentbased_always_off", "parentbased_traceidratio")

# Read by upstream when its modules are imported, before any otel_crm code runs: otel_crm_select.pth
# moves an invalid value of these to OTEL_CRM_INVALID_<name> (settings.py reads it from there).
PRE_IMPORT_VARIABLES = ("OTEL_PROPAGATORS", "OTEL_PYTHON_CONTEXT",
                        "OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH",
                        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS")


def stashed_name(variable: str) -> str:
    return f"OTEL_CRM_INVALID_{variable}"


def unstash(env: Mapping[str, str]) -> Mapping[str, str]:
    """Variables upstream reads at import, before otel_crm runs, whose invalid value
    otel_crm_select.pth set aside under OTEL_CRM_INVALID_<name>: read them under their own name."""
    moved = {name: env[stashed_name(name)] for name in PRE_IMPORT_VARIABLES
             if stashed_name(name) in env and name not in env}
    return {**env, **moved} if moved else env


def installed_entry_points(group: str) -> frozenset[str]:
    return frozenset(ep.name for ep in entry_points(group=group))


def _problem(source: str, value: Any, allowed: str, default: Any, outcome: str = "") -> SettingProblem:
    text = ",".join(value) if isinstance(value, tuple) else str(value)
    return SettingProblem(source, text, allowed, default, outcome)


def _limit(default: str) -> Check:
    """A count or length limit as the SDK reads it: a non-negative integer, or `unset` (no limit)."""
    def check(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
        text = str(value).strip().lower()
        if text == "unset" or (text.isascii() and text.isdigit()):
            return text, []
        return default, [_problem(source, value, "a non-negative integer or `unset`", default)]

    return check


def _regexes(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    for item in value:
        try:
            re.compile(item)
        except re.error:
            return (), [_problem(source, value, "comma-separated regular expressions", ())]
    return value, []


def _readable_file(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    try:
        readable = Path(value).is_file()
    except (OSError, ValueError):  # a name too long for the file system (found by make reliability), a NUL
        readable = False
    if readable:
        return value, []
    return "", [_problem(source, value, "the path of a readable file", "")]


def _named(group: str, default: Any) -> Check:
    """Each name must be an installed entry point of `group` (one name or a list)."""
    def check(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
        names = value if isinstance(value, tuple) else (value,)
        found = installed_entry_points(group)
        if all(name in found for name in names):
            return value, []
        return default, [_problem(source, value, f"installed entry points of {group}: {', '.join(sorted(found))}",
                                  default)]

    return check


def _propagators(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    """Known names are kept, a known name whose package is missing is left out (one line), an
    unknown name makes the whole value invalid (the default is used)."""
    default = ("tracecontext", "baggage")
    names = tuple(name.lower() if name.lower() == "none" else name for name in value)
    unusual = [name for name in names if name not in BUILTIN_PROPAGATORS]
    installed = installed_entry_points("opentelemetry_propagator") if unusual else frozenset()
    unknown = [name for name in unusual if name not in installed and name not in OPTIONAL_PROPAGATORS]
    if unknown or not names:
        allowed = ", ".join(sorted(BUILTIN_PROPAGATORS | set(OPTIONAL_PROPAGATORS) | installed))
        return default, [_problem(source, value, f"comma-separated names from {allowed}", default)]
    missing = [name for name in unusual if name not in installed]
    if not missing:
        return names, []
    kept = tuple(name for name in names if name not in missing) or default
    packages = ", ".join(sorted({OPTIONAL_PROPAGATORS[name] for name in missing}))
    return kept, [_problem(source, value, f"propagators whose package is installed ({packages} is not)",
                           default, f"using {','.join(kept)!r}")]


def _sampler(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    name = str(value).strip().lower()
    if name in BUILTIN_SAMPLERS:
        return name, []
    installed = installed_entry_points("opentelemetry_traces_sampler")
    if value in installed:
        return value, []
    allowed = ", ".join((*BUILTIN_SAMPLERS, *sorted(installed)))
    return "", [_problem(source, value, f"one of {allowed}", "")]


def _grpc_codes(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    import grpc

    names = {code.name for code in grpc.StatusCode}
    if all(item.strip().upper() in names for item in value):
        return value, []
    return (), [_problem(source, value, "comma-separated gRPC status code names (UNAVAILABLE…)", ())]


def _choice(*choices: str) -> Check:
    """A case-insensitive choice (upstream upper-cases some of these itself)."""
    def check(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
        if str(value).strip().lower() in choices:
            return str(value).strip().lower(), []
        return "", [_problem(source, value, "one of " + ", ".join(choices), "")]

    return check


_LIMIT_DOC = "(SDK default {0}; `unset`: no limit). Passed to the SDK only when valid."


@dataclass(frozen=True)
class StandardVariables:
    # --- the SDK: limits -------------------------------------------------------------------------
    attribute_count_limit: str = setting(
        "OTEL_ATTRIBUTE_COUNT_LIMIT", default="", check=_limit(""),
        doc="Attributes per span, event, link and log record " + _LIMIT_DOC.format(128))
    attribute_value_length_limit: str = setting(
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", default="", check=_limit(""),
        doc="Characters per attribute value " + _LIMIT_DOC.format("none"))
    span_attribute_count_limit: str = setting(
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", default="", check=_limit(""),
        doc="Attributes per span " + _LIMIT_DOC.format(128))
    span_attribute_value_length_limit: str = setting(
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", default="", check=_limit(""),
        doc="Characters per span attribute value " + _LIMIT_DOC.format("none"))
    span_event_count_limit: str = setting(
        "OTEL_SPAN_EVENT_COUNT_LIMIT", default="", check=_limit(""),
        doc="Events per span " + _LIMIT_DOC.format(128))
    span_link_count_limit: str = setting(
        "OTEL_SPAN_LINK_COUNT_LIMIT", default="", check=_limit(""),
        doc="Links per span " + _LIMIT_DOC.format(128))
    event_attribute_count_limit: str = setting(
        "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", default="", check=_limit(""),
        doc="Attributes per span event " + _LIMIT_DOC.format(128))
    link_attribute_count_limit: str = setting(
        "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", default="", check=_limit(""),
        doc="Attributes per span link " + _LIMIT_DOC.format(128))
    logrecord_attribute_count_limit: str = setting(
        "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", default="", check=_limit(""),
        doc="Attributes per log record " + _LIMIT_DOC.format(128))
    logrecord_attribute_value_length_limit: str = setting(
        "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", default="", check=_limit(""),
        doc="Characters per log record attribute value " + _LIMIT_DOC.format("none"))
    # --- the SDK: batching and metric export ---------------------------------------------------
    bsp_export_timeout_ms: int = setting(
        "OTEL_BSP_EXPORT_TIMEOUT", default=30000, minimum=0, maximum=600000, unit="milliseconds",
        doc="Validated only: span exports are bounded by OTEL_EXPORTER_OTLP_TIMEOUT.")
    blrp_schedule_delay_ms: int = setting(
        "OTEL_BLRP_SCHEDULE_DELAY", default=1000, minimum=1, maximum=600000, unit="milliseconds",
        doc="Delay between two log record exports.")
    blrp_max_queue_size: int = setting(
        "OTEL_BLRP_MAX_QUEUE_SIZE", default=2048, minimum=1, maximum=10_000_000,
        doc="Log records waiting for export; past this they are dropped and counted.")
    blrp_max_export_batch_size: int = setting(
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", default=512, minimum=1, maximum=100_000,
        doc="Log records per export call (at most the queue size).")
    blrp_export_timeout_ms: int = setting(
        "OTEL_BLRP_EXPORT_TIMEOUT", default=30000, minimum=0, maximum=600000, unit="milliseconds",
        doc="Validated only: log exports are bounded by OTEL_EXPORTER_OTLP_TIMEOUT.")
    metric_export_timeout_ms: int = setting(
        "OTEL_METRIC_EXPORT_TIMEOUT", default=30000, minimum=0, maximum=600000, unit="milliseconds",
        doc="Validated only: metric exports are bounded by OTEL_EXPORTER_OTLP_TIMEOUT.")
    metrics_exemplar_filter: str = setting(
        "OTEL_METRICS_EXEMPLAR_FILTER", default="", check=_choice("trace_based", "always_on", "always_off"),
        doc="Which measurements may become exemplars (SDK default trace_based).")
    otlp_metrics_temporality_preference: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", default="",
        check=_choice("cumulative", "delta", "lowmemory"), doc="OTLP metric temporality (SDK default cumulative).")
    otlp_metrics_default_histogram_aggregation: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", default="",
        check=_choice("explicit_bucket_histogram", "base2_exponential_bucket_histogram"),
        doc="OTLP histogram aggregation (SDK default explicit_bucket_histogram).")
    # --- OTLP exporters: TLS and per-signal options (otel_crm passes its own protocol, timeout,
    # compression and insecure flag for every signal; the per-signal ones are checked only) ------
    otlp_certificate: str = setting(
        "OTEL_EXPORTER_OTLP_CERTIFICATE", default="", check=_readable_file,
        doc="CA certificate file for TLS to the collector (read by the exporters).")
    otlp_client_key: str = setting(
        "OTEL_EXPORTER_OTLP_CLIENT_KEY", default="", check=_readable_file,
        doc="Client key file for mTLS (read by the exporters).")
    otlp_client_certificate: str = setting(
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", default="", check=_readable_file,
        doc="Client certificate file for mTLS (read by the exporters).")
    otlp_traces_certificate: str = setting(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", default="", check=_readable_file,
        doc="CA certificate file for TLS to the collector (traces) (read by the exporters).")
    otlp_traces_client_key: str = setting(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", default="", check=_readable_file,
        doc="Client key file for mTLS (read by the exporters).")
    otlp_traces_client_certificate: str = setting(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", default="", check=_readable_file,
        doc="Client certificate file for mTLS (read by the exporters).")
    otlp_traces_headers: Mapping[str, str] = setting(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS", default={}, secret=True,
        doc="Export headers for traces, read by the exporter when OTEL_EXPORTER_OTLP_HEADERS is empty.")
    otlp_traces_protocol: str = setting(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", default="", check=_choice("grpc", "http/protobuf"),
        doc="Validated only: OTEL_EXPORTER_OTLP_PROTOCOL chooses the transport of every signal.")
    otlp_traces_timeout: float | None = setting(
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", default=None, minimum=0, maximum=600000,
        doc="Validated only: OTEL_EXPORTER_OTLP_TIMEOUT bounds every export.")
    otlp_traces_compression: str = setting(
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", default="", check=_choice("none", "gzip", "deflate"),
        doc="Validated only: OTEL_EXPORTER_OTLP_COMPRESSION applies to every signal.")
    otlp_traces_insecure: bool | None = setting(
        "OTEL_EXPORTER_OTLP_TRACES_INSECURE", default=None,
        doc="Validated only: OTEL_EXPORTER_OTLP_INSECURE (or the endpoint's scheme) decides.")
    otlp_metrics_certificate: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", default="", check=_readable_file,
        doc="CA certificate file for TLS to the collector (metrics) (read by the exporters).")
    otlp_metrics_client_key: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", default="", check=_readable_file,
        doc="Client key file for mTLS (read by the exporters).")
    otlp_metrics_client_certificate: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE", default="", check=_readable_file,
        doc="Client certificate file for mTLS (read by the exporters).")
    otlp_metrics_headers: Mapping[str, str] = setting(
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS", default={}, secret=True,
        doc="Export headers for metrics, read by the exporter when OTEL_EXPORTER_OTLP_HEADERS is empty.")
    otlp_metrics_protocol: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", default="", check=_choice("grpc", "http/protobuf"),
        doc="Validated only: OTEL_EXPORTER_OTLP_PROTOCOL chooses the transport of every signal.")
    otlp_metrics_timeout: float | None = setting(
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", default=None, minimum=0, maximum=600000,
        doc="Validated only: OTEL_EXPORTER_OTLP_TIMEOUT bounds every export.")
    otlp_metrics_compression: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", default="", check=_choice("none", "gzip", "deflate"),
        doc="Validated only: OTEL_EXPORTER_OTLP_COMPRESSION applies to every signal.")
    otlp_metrics_insecure: bool | None = setting(
        "OTEL_EXPORTER_OTLP_METRICS_INSECURE", default=None,
        doc="Validated only: OTEL_EXPORTER_OTLP_INSECURE (or the endpoint's scheme) decides.")
    otlp_logs_certificate: str = setting(
        "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", default="", check=_readable_file,
        doc="CA certificate file for TLS to the collector (logs) (read by the exporters).")
    otlp_logs_client_key: str = setting(
        "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", default="", check=_readable_file,
        doc="Client key file for mTLS (read by the exporters).")
    otlp_logs_client_certificate: str = setting(
        "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", default="", check=_readable_file,
        doc="Client certificate file for mTLS (read by the exporters).")
    otlp_logs_headers: Mapping[str, str] = setting(
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS", default={}, secret=True,
        doc="Export headers for logs, read by the exporter when OTEL_EXPORTER_OTLP_HEADERS is empty.")
    otlp_logs_protocol: str = setting(
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", default="", check=_choice("grpc", "http/protobuf"),
        doc="Validated only: OTEL_EXPORTER_OTLP_PROTOCOL chooses the transport of every signal.")
    otlp_logs_timeout: float | None = setting(
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", default=None, minimum=0, maximum=600000,
        doc="Validated only: OTEL_EXPORTER_OTLP_TIMEOUT bounds every export.")
    otlp_logs_compression: str = setting(
        "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", default="", check=_choice("none", "gzip", "deflate"),
        doc="Validated only: OTEL_EXPORTER_OTLP_COMPRESSION applies to every signal.")
    otlp_logs_insecure: bool | None = setting(
        "OTEL_EXPORTER_OTLP_LOGS_INSECURE", default=None,
        doc="Validated only: OTEL_EXPORTER_OTLP_INSECURE (or the endpoint's scheme) decides.")
    grpc_retryable_error_codes: tuple[str, ...] = setting(
        "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES", default=(), check=_grpc_codes,
        doc="Extra gRPC status codes the gRPC exporters retry.")
    sdk_internal_metrics_enabled: bool = setting(
        "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", default=False, doc="The SDK's own otel.sdk.* metrics.")
    # --- context, propagation, sampling ---------------------------------------------------------
    propagators: tuple[str, ...] = setting(
        "OTEL_PROPAGATORS", default=("tracecontext", "baggage"), check=_propagators,
        doc="Propagators, in order: tracecontext, baggage, none, and b3, b3multi, jaeger, xray, "
            "xray-lambda, ottrace when their package is installed. otel_crm's tenant handling stays on "
            "top (docs/tenancy.md).")
    traces_sampler: str = setting(
        "OTEL_TRACES_SAMPLER", default="", check=_sampler,
        doc="Head sampler (used in head sampling mode only): always_on, always_off, traceidratio, "
            "parentbased_always_on, parentbased_always_off, parentbased_traceidratio, or an installed "
            "`opentelemetry_traces_sampler` entry point.")
    traces_sampler_arg: float | None = setting(
        "OTEL_TRACES_SAMPLER_ARG", default=None, minimum=0.0, maximum=1.0,
        doc="Ratio of the traceidratio samplers (empty: 1.0).")
    python_context: str = setting(
        "OTEL_PYTHON_CONTEXT", default="", check=_named("opentelemetry_context", ""),
        doc="Context implementation (default contextvars_context).")
    resource_detectors: tuple[str, ...] = setting(
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", default=(),
        check=_named("opentelemetry_resource_detector", ()),
        doc="Extra resource detectors (entry points) for resources the SDK builds itself.")
    gevent_patch: str = setting(
        "OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH", default="", check=_choice("patch_all"),
        doc="`patch_all`: gevent monkey-patching by opentelemetry-instrument.")
    tracer_provider_name: str = setting(
        "OTEL_PYTHON_TRACER_PROVIDER", default="", check=_named("opentelemetry_tracer_provider", ""),
        doc="Validated only: otel_crm installs its own tracer provider.")
    meter_provider_name: str = setting(
        "OTEL_PYTHON_METER_PROVIDER", default="", check=_named("opentelemetry_meter_provider", ""),
        doc="Validated only: otel_crm installs its own meter provider.")
    # --- instrumentations -----------------------------------------------------------------------
    excluded_urls: tuple[str, ...] = setting(
        "OTEL_PYTHON_EXCLUDED_URLS", default=(), check=_regexes,
        doc="URLs (regular expressions) no instrumentation traces.")
    flask_excluded_urls: tuple[str, ...] = setting(
        "OTEL_PYTHON_FLASK_EXCLUDED_URLS", default=(), check=_regexes, doc="URLs the Flask instrumentation skips.")
    django_excluded_urls: tuple[str, ...] = setting(
        "OTEL_PYTHON_DJANGO_EXCLUDED_URLS", default=(), check=_regexes, doc="URLs the Django instrumentation skips.")
    requests_excluded_urls: tuple[str, ...] = setting(
        "OTEL_PYTHON_REQUESTS_EXCLUDED_URLS", default=(), check=_regexes,
        doc="URLs the requests instrumentation skips.")
    capture_server_request_headers: tuple[str, ...] = setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", default=(), check=_regexes,
        doc="Request headers (regular expressions) recorded on server spans.")
    capture_server_response_headers: tuple[str, ...] = setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", default=(), check=_regexes,
        doc="Response headers (regular expressions) recorded on server spans.")
    capture_client_request_headers: tuple[str, ...] = setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", default=(), check=_regexes,
        doc="Request headers (regular expressions) recorded on client spans.")
    capture_client_response_headers: tuple[str, ...] = setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE", default=(), check=_regexes,
        doc="Response headers (regular expressions) recorded on client spans.")
    capture_headers_sanitize_fields: tuple[str, ...] = setting(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", default=(), check=_regexes,
        doc="Captured headers (regular expressions) whose values are replaced by [REDACTED].")


STANDARD_NAMES = frozenset(StandardVariables.__dataclass_fields__)
