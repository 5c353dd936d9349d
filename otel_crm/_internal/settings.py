"""Every otel_crm setting, declared once, and the one resolver that reads the environment.

Each field of :class:`Settings` is a setting: its name, type (``Literal`` for modes), the
environment variables that feed it in priority order (``OTEL_CRM_*`` first, then the standard
``OTEL_*`` one), its default and a one-line doc. :data:`REGISTRY` is derived from the fields, in
the same order. ``resolve_settings`` turns explicit arguments + environment into a frozen
:class:`Settings`. Nothing else in otel_crm reads ``os.environ``. (How a declaration is parsed:
settings_parse.py.)

Bad values never break the host app: each produces exactly one log line naming the variable, the
value and what is allowed, and the default is used. ``OTEL_CRM_STRICT=true`` raises instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from otel_crm._internal import secret_logs
from otel_crm._internal import settings_checks as checks
from otel_crm._internal.sampling.policy import SamplingRule
from otel_crm._internal.settings_parse import (
    UNSET,
    Kind,
    Setting,
    SettingProblem,
    SettingsError,
    markdown_table,
    read_values,
    registry_of,
    setting,
)
from otel_crm._internal.settings_std import STANDARD_NAMES, StandardVariables, unstash

__all__ = [
    "REGISTRY",
    "Compression",
    "Exporter",
    "Kind",
    "LogFormat",
    "LogLevel",
    "OtlpProtocol",
    "Profile",
    "SamplingMode",
    "ScrubMode",
    "Setting",
    "SettingProblem",
    "Settings",
    "SettingsError",
    "discard_invalid_standard_variables",
    "distro_defaults",
    "registry_markdown",
    "resolve_settings",
]

_log = logging.getLogger("otel_crm")

DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "dev", "local"})

Exporter = Literal["otlp", "console", "none"]
OtlpProtocol = Literal["grpc", "http/protobuf"]
Compression = Literal["none", "gzip", "deflate"]
LogFormat = Literal["json", "text", "none"]
LogLevel = Literal["debug", "info", "warning", "error"]
SamplingMode = Literal["tail", "collector", "head", "off"]
ScrubMode = Literal["redact", "hash", "off"]
Profile = Literal["development", "production"]


@dataclass(frozen=True)
class Settings(StandardVariables):  # the standard variables upstream reads: settings_std.py
    # --- general ---------------------------------------------------------------------------------
    strict: bool = setting(
        "OTEL_CRM_STRICT", default=False,
        doc="Raise SettingsError on a bad setting instead of logging one line and using the default.")
    disabled: bool = setting(
        "OTEL_CRM_DISABLED", "OTEL_SDK_DISABLED", default=False,
        doc="Turn otel_crm off entirely: no providers are installed.")
    service_name: str = setting(
        "OTEL_CRM_SERVICE_NAME", "OTEL_SERVICE_NAME", default="unknown_service",
        doc="service.name of this process.")
    service_version: str = setting(
        "OTEL_CRM_SERVICE_VERSION", default="", doc="service.version (empty: not set).")
    service_namespace: str = setting(
        "OTEL_CRM_SERVICE_NAMESPACE", default="", doc="service.namespace (empty: not set).")
    service_instance_id: str = setting(
        "OTEL_CRM_SERVICE_INSTANCE_ID", default="",
        doc="service.instance.id (empty: a random UUID per process, renewed after fork; an explicit id "
            "is kept in forked workers too).")
    environment: str = setting(
        "OTEL_CRM_ENVIRONMENT", default="",
        doc="deployment.environment.name; `development`/`dev`/`local` select the development profile. "
            "Empty: taken from OTEL_RESOURCE_ATTRIBUTES, else `production`.")
    resource_attributes: Mapping[str, str] = setting(
        "OTEL_RESOURCE_ATTRIBUTES", default={},
        doc="Extra resource attributes (standard variable); explicit settings win over these.")
    tenant_id: str = setting(
        "OTEL_CRM_TENANT_ID", default="", doc="Single-tenant deployments: crm.tenant.id on the resource.")
    tenant_tier: str = setting(
        "OTEL_CRM_TENANT_TIER", default="", doc="Single-tenant deployments: crm.tenant.tier on the resource.")
    fast_spans: bool = setting(
        "OTEL_CRM_FAST_SPANS", default=True,
        doc="otel_crm's cheaper paths: spans, Flask hooks, SQL and pool hooks, histograms, context extraction, "
            "span encoding (same telemetry; checked at startup). `false`: upstream's own code throughout.")
    # --- export ----------------------------------------------------------------------------------
    traces_exporter: tuple[Exporter, ...] = setting(
        "OTEL_CRM_TRACES_EXPORTER", "OTEL_TRACES_EXPORTER", default=("otlp",), doc="Where spans go.",
        distro_default=True)
    metrics_exporter: tuple[Exporter, ...] = setting(
        "OTEL_CRM_METRICS_EXPORTER", "OTEL_METRICS_EXPORTER", default=("otlp",),
        doc="Where metrics go (the Prometheus endpoint is separate).", distro_default=True)
    logs_exporter: tuple[Exporter, ...] = setting(
        "OTEL_CRM_LOGS_EXPORTER", "OTEL_LOGS_EXPORTER", default=("otlp",), doc="Where log records go.",
        distro_default=True)
    console_export: bool = setting(
        "OTEL_CRM_CONSOLE_EXPORT", default=False,
        doc="Also print spans to stdout (handy with the development profile).")
    otlp_protocol: OtlpProtocol = setting(
        "OTEL_CRM_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", default="grpc", doc="OTLP transport.")
    otlp_endpoint: str = setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT", default="",
        doc="OTLP endpoint for every signal (empty: http://localhost:4317 for grpc, :4318 for http).",
        check=checks.check_endpoint)
    otlp_traces_endpoint: str = setting(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", default="",
        doc="OTLP endpoint for spans only (http: the full URL, used as is).", check=checks.check_endpoint)
    otlp_metrics_endpoint: str = setting(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", default="", doc="OTLP endpoint for metrics only.",
        check=checks.check_endpoint)
    otlp_logs_endpoint: str = setting(
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", default="", doc="OTLP endpoint for logs only.",
        check=checks.check_endpoint)
    otlp_headers: Mapping[str, str] = setting(
        "OTEL_EXPORTER_OTLP_HEADERS", default={},
        doc="Headers sent with every export (values are masked by `otel-crm doctor`).", secret=True)
    otlp_timeout_ms: int = setting(
        "OTEL_EXPORTER_OTLP_TIMEOUT", default=10000,
        doc="Timeout of one export call, in milliseconds as the spec says (upstream Python reads "
            "seconds: a value below 100 is refused as one).", minimum=100, maximum=600000,
        unit="milliseconds")
    otlp_compression: Compression = setting(
        "OTEL_EXPORTER_OTLP_COMPRESSION", default="none", doc="Compression of OTLP payloads.")
    otlp_insecure: bool | None = setting(
        "OTEL_EXPORTER_OTLP_INSECURE", default=None,
        doc="gRPC without TLS (empty: decided by the endpoint's scheme, http:// means insecure).")
    bsp_schedule_delay_ms: int = setting(
        "OTEL_BSP_SCHEDULE_DELAY", default=5000,
        doc="Delay between two span exports, in milliseconds.", minimum=1, maximum=600000)
    bsp_max_queue_size: int = setting(
        "OTEL_BSP_MAX_QUEUE_SIZE", default=2048,
        doc="Spans waiting for export; past this they are dropped and counted.", minimum=1,
        maximum=10_000_000)
    bsp_max_export_batch_size: int = setting(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default=512, doc="Spans per export call.", minimum=1,
        maximum=100_000)
    metric_export_interval_ms: int = setting(
        "OTEL_METRIC_EXPORT_INTERVAL", default=60000,
        doc="Interval between two metric pushes, in milliseconds.", minimum=100, maximum=3_600_000)
    prometheus_port: int = setting(
        "OTEL_CRM_PROMETHEUS_PORT", default=0,
        doc="Serve /metrics for Prometheus on this port (0: off).", minimum=0, maximum=65535)
    prometheus_host: str = setting(
        "OTEL_CRM_PROMETHEUS_HOST", default="127.0.0.1", doc="Address the Prometheus endpoint binds to.",
        check=checks.check_host)
    shutdown_timeout_seconds: float = setting(
        "OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS", default=3.0,
        doc="Longest time flush-at-exit may take, collector up or down.", minimum=0.1, maximum=120)
    semconv_stability_opt_in: str = setting(
        "OTEL_SEMCONV_STABILITY_OPT_IN", default="http,database",
        doc="Which stable conventions the instrumentations emit (the distro sets this default).",
        distro_default=True)
    # --- logs ------------------------------------------------------------------------------------
    log_format: LogFormat = setting(
        "OTEL_CRM_LOG_FORMAT", default="json",
        doc="Format of the stdout log handler otel_crm adds (`none`: add none).")
    access_log: bool = setting(
        "OTEL_CRM_ACCESS_LOG", default=True,
        doc="One JSON line per request (method, path, status_code, latency_ms) on stdout.")
    trace_response_header: bool = setting(
        "OTEL_CRM_TRACE_RESPONSE_HEADER", default=True,
        doc="`traceresponse` and `Server-Timing: traceparent` headers (the trace id) on every HTTP response.")
    log_level: LogLevel = setting(
        "OTEL_CRM_LOG_LEVEL", "OTEL_PYTHON_LOG_LEVEL", default="info",
        doc="Lowest level sent to stdout and OTLP.")
    startup_report: bool = setting(
        "OTEL_CRM_STARTUP_REPORT", default=False, development_default=True,
        doc="One sanitized line at startup: service, environment, endpoint, protocol, sampling, tenant "
            "source, scrubbing (development profile: on).")
    # --- sampling --------------------------------------------------------------------------------
    sampling_mode: SamplingMode = setting(
        "OTEL_CRM_SAMPLING_MODE", default="tail",
        doc="tail: decide in process; collector: export 100% for the collector's tail_sampling; "
            "head: parent-based trace-id ratio; off: keep everything.")
    sampling_rules: tuple[SamplingRule, ...] = setting(
        "OTEL_CRM_SAMPLING_RULES", default=(),
        doc="Ordered sampling rules, first match wins: each matches any of route, method, tenant, "
            "operation, service and gives ratio (0-1), optional name, errors, slow (docs/sampling.md).",
        check=checks.check_sampling_rules)
    sampling_ratio: float = setting(
        "OTEL_CRM_SAMPLING_RATIO", default=0.1,
        doc="Share of ok, fast traces kept (development profile: 1.0).", minimum=0.0, maximum=1.0,
        development_default=1.0)
    sampling_slow_seconds: float = setting(
        "OTEL_CRM_SAMPLING_SLOW_SECONDS", default=2.0,
        doc="A trace whose local root lasts at least this long is always kept.", minimum=0.0,
        maximum=86400)
    sampling_max_traces: int = setting(
        "OTEL_CRM_SAMPLING_MAX_TRACES", default=5000,
        doc="Undecided traces held at once; the oldest is decided early when full.", minimum=1,
        maximum=1_000_000)
    sampling_max_spans_per_trace: int = setting(
        "OTEL_CRM_SAMPLING_MAX_SPANS_PER_TRACE", default=500,
        doc="Spans buffered per trace; a longer trace is decided early.", minimum=1, maximum=1_000_000)
    sampling_max_spans: int = setting(
        "OTEL_CRM_SAMPLING_MAX_SPANS", default=20000,
        doc="Spans buffered over all traces (the memory bound).", minimum=1, maximum=10_000_000)
    sampling_max_trace_age_seconds: float = setting(
        "OTEL_CRM_SAMPLING_MAX_TRACE_AGE_SECONDS", default=60.0,
        doc="An undecided trace older than this is decided with what it has.", minimum=0.01,
        maximum=86400)
    # --- tenancy ---------------------------------------------------------------------------------
    tenant_header: str = setting(
        "OTEL_CRM_TENANT_HEADER", default="X-Tenant-ID",
        doc="Request header holding the tenant id (`none`: no header is read).", check=checks.header_or_none)
    user_header: str = setting(
        "OTEL_CRM_USER_HEADER", default="X-User-ID",
        doc="Request header holding the user id (`none`: no header is read).", check=checks.header_or_none)
    tenant_resolver: str = setting(
        "OTEL_CRM_TENANT_RESOLVER", default="",
        doc="`module:function` taking the framework request, returning a tenant id or None.")
    trust_incoming_baggage: bool = setting(
        "OTEL_CRM_TRUST_INCOMING_BAGGAGE", default=False,
        doc="Accept crm.tenant.id from incoming W3C baggage (only behind your own gateway: "
            "callers can forge it).")
    baggage_allowed_hosts: tuple[str, ...] = setting(
        "OTEL_CRM_BAGGAGE_ALLOWED_HOSTS", default=("localhost", "127.0.0.1"),
        doc="Hosts (or .suffixes) outgoing requests may carry baggage to; others get none.")
    capture_user_id: bool = setting(
        "OTEL_CRM_CAPTURE_USER_ID", default=False, doc="Put the user id (personal data) on spans and logs.")
    tenant_metric_limit: int = setting(
        "OTEL_CRM_TENANT_METRIC_LIMIT", default=100,
        doc="Distinct tenants per metric before the rest are recorded as __other__.", minimum=0,
        maximum=100_000)
    # Cardinality budgets (distinct values per metric; the rest are recorded as __other__).
    operation_metric_limit: int = setting(
        "OTEL_CRM_OPERATION_METRIC_LIMIT", default=200, minimum=0, maximum=100_000,
        doc="Distinct operations (crm.operation.name, http.route, error.type…) per metric.")
    connector_metric_limit: int = setting(
        "OTEL_CRM_CONNECTOR_METRIC_LIMIT", default=200, minimum=0, maximum=100_000,
        doc="Distinct connectors (service.peer.name) and resource types per metric.")
    workflow_metric_limit: int = setting(
        "OTEL_CRM_WORKFLOW_METRIC_LIMIT", default=200, minimum=0, maximum=100_000,
        doc="Distinct workflow and step names per metric.")
    model_metric_limit: int = setting(
        "OTEL_CRM_MODEL_METRIC_LIMIT", default=200, minimum=0, maximum=100_000,
        doc="Distinct GenAI models and providers per metric.")
    index_metric_limit: int = setting(
        "OTEL_CRM_INDEX_METRIC_LIMIT", default=200, minimum=0, maximum=100_000,
        doc="Distinct search indexes (db.collection.name) per metric.")
    tenant_allowlist: tuple[str, ...] = setting(
        "OTEL_CRM_TENANT_ALLOWLIST", default=(),
        doc="Tenants always recorded by name on metrics (others count against the limit).")
    # --- privacy ---------------------------------------------------------------------------------
    scrub_mode: ScrubMode = setting(
        "OTEL_CRM_SCRUB_MODE", default="redact",
        doc="What happens to secrets and personal data found in telemetry.")
    scrub_salt: str = setting(
        "OTEL_CRM_SCRUB_SALT", default="",
        doc="Salt for hash mode (empty: random per process, so hashes join only within it).", secret=True)
    scrub_patterns: tuple[str, ...] = setting(
        "OTEL_CRM_SCRUB_PATTERNS", default=(),
        doc="Extra regular expressions to scrub, separated by commas (a JSON array also works).")
    scrub_keys: tuple[str, ...] = setting(
        "OTEL_CRM_SCRUB_KEYS", default=(), doc="Extra attribute keys whose values are always scrubbed.")
    scrub_allow_keys: tuple[str, ...] = setting(
        "OTEL_CRM_SCRUB_ALLOW_KEYS", default=(),
        doc="Attribute keys whose values are never scanned (exact, case-insensitive; the deny-list still wins).")
    scrub_allow_patterns: tuple[str, ...] = setting(
        "OTEL_CRM_SCRUB_ALLOW_PATTERNS", default=(),
        doc="Regular expressions marking text as safe: a finding inside one of their matches is kept.")
    capture_db_literals: bool = setting(
        "OTEL_CRM_CAPTURE_DB_LITERALS", default=False,
        doc="Keep literal values in db.query.text (default: replaced by `?`, as the database "
            "conventions ask).")
    # --- business helpers ------------------------------------------------------------------------
    pricing_file: str = setting(
        "OTEL_CRM_PRICING_FILE", default="",
        doc="JSON file of LLM prices per million tokens, merged over the built-in table.",
        check=checks.check_readable_file)
    capture_message_content: bool = setting(
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", default=False,
        doc="Record prompt/completion content on GenAI spans (scrubbed).")
    journeys: Mapping[str, Any] = setting(
        "OTEL_CRM_JOURNEYS", default={},
        doc="Business journeys (ordered milestones, targets in seconds) for `journey_milestone`; "
            "see docs/journeys.md.")
    journeys_file: str = setting(
        "OTEL_CRM_JOURNEYS_FILE", default="",
        doc="JSON file of business journeys, merged under `journeys` (same shape).")
    # --- command line ----------------------------------------------------------------------------
    jaeger_url: str = setting(
        "OTEL_CRM_JAEGER_URL", default="http://127.0.0.1:16686",
        doc="Jaeger query API that `otel-crm traces` reads.")
    # --- not settings: what resolution found -----------------------------------------------------
    problems: tuple[SettingProblem, ...] = field(default=(), compare=False)
    # Which settings came from an explicit argument or a variable (not a default).
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def profile(self) -> Profile:
        """`development` or `production`, keyed on deployment.environment.name."""
        return "development" if self.environment.lower() in DEVELOPMENT_ENVIRONMENTS else "production"

    def endpoint_for(self, signal: str) -> str:
        """The OTLP endpoint for `traces`/`metrics`/`logs`, following the OTLP exporter spec."""
        specific = getattr(self, f"otlp_{signal}_endpoint")
        if specific:
            return str(specific)
        http = self.otlp_protocol == "http/protobuf"
        base = self.otlp_endpoint or ("http://localhost:4318" if http else "http://localhost:4317")
        return f"{base.rstrip('/')}/v1/{signal}" if http else base

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# otel_crm's own settings first, then the standard variables upstream reads (settings_std.py).
REGISTRY: tuple[Setting, ...] = tuple(sorted(registry_of(Settings), key=lambda s: s.name in STANDARD_NAMES))
# Every standard variable of the registry (ours read some too: OTEL_BSP_*, OTEL_EXPORTER_OTLP_*…).
_STANDARD_VARIABLES = frozenset(v for s in REGISTRY for v in s.env if not v.startswith("OTEL_CRM_"))
_NAMES = frozenset(s.name for s in REGISTRY)
_ENV_NAME = re.compile(r"deployment\.environment(\.name)?$")


def resolve_settings(
    environ: Mapping[str, str] | None = None, **explicit: Any
) -> Settings:
    """Resolve settings: explicit keyword arguments beat variables, which beat defaults.

    `environ` defaults to ``os.environ`` — the only place otel_crm reads it.
    """
    secret_logs.install()  # before any exporter or resource is built from what is resolved here
    env = unstash(os.environ if environ is None else environ)
    unknown = set(explicit) - _NAMES
    if unknown:
        raise TypeError(f"unknown otel_crm setting(s): {', '.join(sorted(unknown))}")
    values, chosen, problems = read_values(REGISTRY, env, explicit)
    environment = values.get("environment") or _environment_from_resource(values) or "production"
    values["environment"] = environment
    development = environment.lower() in DEVELOPMENT_ENVIRONMENTS
    for entry in REGISTRY:
        if entry.name in values:
            continue
        default = entry.default
        if development and entry.development_default is not UNSET:
            default = entry.development_default
        values[entry.name] = dict(default) if isinstance(default, dict) else default
    strict = bool(values["strict"])
    if problems and strict:
        raise SettingsError(problems)
    for problem in problems:
        _log.warning(problem.message())
    return Settings(**values, problems=tuple(problems), explicit=frozenset(chosen))


def discard_invalid_standard_variables(settings: Settings) -> None:
    """Remove from the process environment each standard variable whose value was refused (its
    one line was logged when resolving), and blank ones, before upstream reads them: upstream then
    uses its default, the one otel_crm documents, instead of failing. Valid values stay."""
    refused = {problem.variable for problem in settings.problems}
    for name in _STANDARD_VARIABLES:
        raw = os.environ.get(name)
        if raw is not None and (name in refused or not raw.strip()):
            del os.environ[name]


def _environment_from_resource(values: Mapping[str, Any]) -> str:
    attributes: Mapping[str, str] = values.get("resource_attributes") or {}
    for key, value in attributes.items():
        if _ENV_NAME.match(key) and value:
            return value
    return ""


def distro_defaults() -> dict[str, str]:
    """What the distro writes to the environment (unless set): the defaults of the settings
    other libraries read from their standard variable themselves."""
    return {entry.env[-1]: ",".join(entry.default) if isinstance(entry.default, tuple) else str(entry.default)
            for entry in REGISTRY if entry.distro_default}


def registry_markdown() -> str:
    """The settings table for docs/configuration.md, generated from the registry."""
    return markdown_table(REGISTRY)
