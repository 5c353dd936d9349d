"""The one registry of otel_crm settings and the one resolver that reads the environment.

Every setting has a name, the environment variables that feed it in priority order (``OTEL_CRM_*``
first, then the standard ``OTEL_*`` one), a type, a default and a one-line doc. ``resolve_settings``
turns explicit arguments + environment into a frozen :class:`Settings`. Nothing else in otel_crm
reads ``os.environ``.

Bad values never break the host app: each produces exactly one log line naming the variable, the
value and what is allowed, and the default is used. ``OTEL_CRM_STRICT=true`` raises instead.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_crm._internal.sampling.policy import SamplingRule

__all__ = [
    "REGISTRY",
    "Kind",
    "Setting",
    "SettingProblem",
    "Settings",
    "SettingsError",
    "registry_markdown",
    "resolve_settings",
]

_log = logging.getLogger("otel_crm")

DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "dev", "local"})
_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()


class Kind(enum.Enum):
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STR = "str"
    ENUM = "enum"
    LIST = "list"  # comma-separated strings
    ENUM_LIST = "enum list"  # comma-separated, each from choices
    MAPPING = "mapping"  # key=value,key2=value2 (W3C baggage style, percent-decoded)
    JSON_LIST = "json list"  # a JSON array of objects (explicit: a list of mappings)


@dataclass(frozen=True)
class Setting:
    name: str
    env: tuple[str, ...]
    kind: Kind
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False
    unit: str = ""  # shown with the allowed range: a wrong unit is the usual mistake
    # Defaults that differ under the `development` profile (deployment.environment.name).
    development_default: Any = _UNSET
    # Item-level validation after parsing: (value, source) -> (kept value, problems); e.g. one bad
    # sampling rule is left out and reported, the other rules stay.
    check: Callable[[Any, str], tuple[Any, list[SettingProblem]]] | None = None

    def allowed(self) -> str:
        if self.kind is Kind.BOOL:
            return "one of true/false/1/0/yes/no/on/off"
        if self.kind in (Kind.ENUM, Kind.ENUM_LIST):
            prefix = "one of " if self.kind is Kind.ENUM else "comma-separated values from "
            return prefix + "/".join(self.choices)
        if self.kind in (Kind.INT, Kind.FLOAT):
            what = "an integer" if self.kind is Kind.INT else "a number"
            unit = f" ({self.unit})" if self.unit else ""
            if self.minimum is not None and self.maximum is not None:
                return f"{what} from {_fmt(self.minimum)} to {_fmt(self.maximum)}{unit}"
            if self.minimum is not None:
                return f"{what} >= {_fmt(self.minimum)}"
            return what
        if self.kind is Kind.MAPPING:
            return "key=value pairs separated by commas"
        if self.kind is Kind.JSON_LIST:
            return "a JSON array of objects"
        return "a string"


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _check_sampling_rules(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    from otel_crm._internal.sampling.policy import compile_rules

    rules, problems = compile_rules(value)
    return rules, [SettingProblem(f"{source} {p.label}", p.text, p.reason, None, "rule left out")
                   for p in problems]


_B = Kind.BOOL
_I = Kind.INT
_F = Kind.FLOAT
_S = Kind.STR
_E = Kind.ENUM

REGISTRY: tuple[Setting, ...] = (
    # --- general ---------------------------------------------------------------------------------
    Setting("strict", ("OTEL_CRM_STRICT",), _B, False,
            "Raise SettingsError on a bad setting instead of logging one line and using the default."),
    Setting("disabled", ("OTEL_CRM_DISABLED", "OTEL_SDK_DISABLED"), _B, False,
            "Turn otel_crm off entirely: no providers are installed."),
    Setting("service_name", ("OTEL_CRM_SERVICE_NAME", "OTEL_SERVICE_NAME"), _S, "unknown_service",
            "service.name of this process."),
    Setting("service_version", ("OTEL_CRM_SERVICE_VERSION",), _S, "", "service.version (empty: not set)."),
    Setting("service_namespace", ("OTEL_CRM_SERVICE_NAMESPACE",), _S, "",
            "service.namespace (empty: not set)."),
    Setting("service_instance_id", ("OTEL_CRM_SERVICE_INSTANCE_ID",), _S, "",
            "service.instance.id (empty: a random UUID per process, renewed after fork)."),
    Setting("environment", ("OTEL_CRM_ENVIRONMENT",), _S, "",
            "deployment.environment.name; `development`/`dev`/`local` select the development profile. "
            "Empty: taken from OTEL_RESOURCE_ATTRIBUTES, else `production`."),
    Setting("resource_attributes", ("OTEL_RESOURCE_ATTRIBUTES",), Kind.MAPPING, {},
            "Extra resource attributes (standard variable); explicit settings win over these."),
    Setting("tenant_id", ("OTEL_CRM_TENANT_ID",), _S, "",
            "Single-tenant deployments: crm.tenant.id on the resource."),
    Setting("tenant_tier", ("OTEL_CRM_TENANT_TIER",), _S, "",
            "Single-tenant deployments: crm.tenant.tier on the resource."),
    # --- export ----------------------------------------------------------------------------------
    Setting("traces_exporter", ("OTEL_CRM_TRACES_EXPORTER", "OTEL_TRACES_EXPORTER"), Kind.ENUM_LIST,
            ("otlp",), "Where spans go.", choices=("otlp", "console", "none")),
    Setting("metrics_exporter", ("OTEL_CRM_METRICS_EXPORTER", "OTEL_METRICS_EXPORTER"), Kind.ENUM_LIST,
            ("otlp",), "Where metrics go (the Prometheus endpoint is separate).",
            choices=("otlp", "console", "none")),
    Setting("logs_exporter", ("OTEL_CRM_LOGS_EXPORTER", "OTEL_LOGS_EXPORTER"), Kind.ENUM_LIST,
            ("otlp",), "Where log records go.", choices=("otlp", "console", "none")),
    Setting("console_export", ("OTEL_CRM_CONSOLE_EXPORT",), _B, False,
            "Also print spans to stdout (handy with the development profile)."),
    Setting("otlp_protocol", ("OTEL_CRM_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"), _E,
            "grpc", "OTLP transport.", choices=("grpc", "http/protobuf")),
    Setting("otlp_endpoint", ("OTEL_EXPORTER_OTLP_ENDPOINT",), _S, "",
            "OTLP endpoint for every signal (empty: http://localhost:4317 for grpc, :4318 for http)."),
    Setting("otlp_traces_endpoint", ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",), _S, "",
            "OTLP endpoint for spans only (http: the full URL, used as is)."),
    Setting("otlp_metrics_endpoint", ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",), _S, "",
            "OTLP endpoint for metrics only."),
    Setting("otlp_logs_endpoint", ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",), _S, "",
            "OTLP endpoint for logs only."),
    Setting("otlp_headers", ("OTEL_EXPORTER_OTLP_HEADERS",), Kind.MAPPING, {},
            "Headers sent with every export (values are masked by `otel-crm doctor`).", secret=True),
    Setting("otlp_timeout_ms", ("OTEL_EXPORTER_OTLP_TIMEOUT",), _I, 10000,
            "Timeout of one export call, in milliseconds as the spec says (upstream Python reads "
            "seconds: a value below 100 is refused as one).", minimum=100, maximum=600000,
            unit="milliseconds"),
    Setting("otlp_compression", ("OTEL_EXPORTER_OTLP_COMPRESSION",), _E, "none",
            "Compression of OTLP payloads.", choices=("none", "gzip", "deflate")),
    Setting("otlp_insecure", ("OTEL_EXPORTER_OTLP_INSECURE",), _B, None,
            "gRPC without TLS (empty: decided by the endpoint's scheme, http:// means insecure)."),
    Setting("bsp_schedule_delay_ms", ("OTEL_BSP_SCHEDULE_DELAY",), _I, 5000,
            "Delay between two span exports, in milliseconds.", minimum=1, maximum=600000),
    Setting("bsp_max_queue_size", ("OTEL_BSP_MAX_QUEUE_SIZE",), _I, 2048,
            "Spans waiting for export; past this they are dropped and counted.", minimum=1,
            maximum=10_000_000),
    Setting("bsp_max_export_batch_size", ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",), _I, 512,
            "Spans per export call.", minimum=1, maximum=100_000),
    Setting("metric_export_interval_ms", ("OTEL_METRIC_EXPORT_INTERVAL",), _I, 60000,
            "Interval between two metric pushes, in milliseconds.", minimum=100, maximum=3_600_000),
    Setting("prometheus_port", ("OTEL_CRM_PROMETHEUS_PORT",), _I, 0,
            "Serve /metrics for Prometheus on this port (0: off).", minimum=0, maximum=65535),
    Setting("prometheus_host", ("OTEL_CRM_PROMETHEUS_HOST",), _S, "127.0.0.1",
            "Address the Prometheus endpoint binds to."),
    Setting("shutdown_timeout_seconds", ("OTEL_CRM_SHUTDOWN_TIMEOUT_SECONDS",), _F, 3.0,
            "Longest time flush-at-exit may take, collector up or down.", minimum=0.1, maximum=120),
    Setting("semconv_stability_opt_in", ("OTEL_SEMCONV_STABILITY_OPT_IN",), _S, "http,database",
            "Which stable conventions the instrumentations emit (the distro sets this default)."),
    # --- logs ------------------------------------------------------------------------------------
    Setting("log_format", ("OTEL_CRM_LOG_FORMAT",), _E, "json",
            "Format of the stdout log handler otel_crm adds (`none`: add none).",
            choices=("json", "text", "none")),
    Setting("access_log", ("OTEL_CRM_ACCESS_LOG",), _B, True,
            "One JSON line per request (method, path, status_code, latency_ms) on stdout."),
    Setting("log_level", ("OTEL_CRM_LOG_LEVEL", "OTEL_PYTHON_LOG_LEVEL"), _E, "info",
            "Lowest level sent to stdout and OTLP.", choices=("debug", "info", "warning", "error")),
    # --- sampling --------------------------------------------------------------------------------
    Setting("sampling_mode", ("OTEL_CRM_SAMPLING_MODE",), _E, "tail",
            "tail: decide in process; collector: export 100% for the collector's tail_sampling; "
            "head: parent-based trace-id ratio; off: keep everything.",
            choices=("tail", "collector", "head", "off")),
    Setting("sampling_ratio", ("OTEL_CRM_SAMPLING_RATIO",), _F, 0.1,
            "Share of ok, fast traces kept (development profile: 1.0).", minimum=0.0, maximum=1.0,
            development_default=1.0),
    Setting("sampling_slow_seconds", ("OTEL_CRM_SAMPLING_SLOW_SECONDS",), _F, 2.0,
            "A trace whose local root lasts at least this long is always kept.", minimum=0.0,
            maximum=86400),
    Setting("sampling_rules", ("OTEL_CRM_SAMPLING_RULES",), Kind.JSON_LIST, (),
            "Ordered sampling rules, first match wins: each matches any of route, method, tenant, "
            "operation, service and gives ratio (0-1), optional name, errors, slow (docs/sampling.md).",
            check=_check_sampling_rules),
    Setting("sampling_max_traces", ("OTEL_CRM_SAMPLING_MAX_TRACES",), _I, 5000,
            "Undecided traces held at once; the oldest is decided early when full.", minimum=1,
            maximum=1_000_000),
    Setting("sampling_max_spans_per_trace", ("OTEL_CRM_SAMPLING_MAX_SPANS_PER_TRACE",), _I, 500,
            "Spans buffered per trace; a longer trace is decided early.", minimum=1, maximum=1_000_000),
    Setting("sampling_max_spans", ("OTEL_CRM_SAMPLING_MAX_SPANS",), _I, 20000,
            "Spans buffered over all traces (the memory bound).", minimum=1, maximum=10_000_000),
    Setting("sampling_max_trace_age_seconds", ("OTEL_CRM_SAMPLING_MAX_TRACE_AGE_SECONDS",), _F, 60.0,
            "An undecided trace older than this is decided with what it has.", minimum=0.01,
            maximum=86400),
    # --- tenancy ---------------------------------------------------------------------------------
    Setting("tenant_header", ("OTEL_CRM_TENANT_HEADER",), _S, "X-Tenant-ID",
            "Request header holding the tenant id (empty: none)."),
    Setting("user_header", ("OTEL_CRM_USER_HEADER",), _S, "X-User-ID",
            "Request header holding the user id (empty: none)."),
    Setting("tenant_resolver", ("OTEL_CRM_TENANT_RESOLVER",), _S, "",
            "`module:function` taking the framework request, returning a tenant id or None."),
    Setting("trust_incoming_baggage", ("OTEL_CRM_TRUST_INCOMING_BAGGAGE",), _B, False,
            "Accept crm.tenant.id from incoming W3C baggage (only behind your own gateway: "
            "callers can forge it)."),
    Setting("baggage_allowed_hosts", ("OTEL_CRM_BAGGAGE_ALLOWED_HOSTS",), Kind.LIST,
            ("localhost", "127.0.0.1"),
            "Hosts (or .suffixes) outgoing requests may carry baggage to; others get none."),
    Setting("capture_user_id", ("OTEL_CRM_CAPTURE_USER_ID",), _B, False,
            "Put the user id (personal data) on spans and logs."),
    Setting("tenant_metric_limit", ("OTEL_CRM_TENANT_METRIC_LIMIT",), _I, 100,
            "Distinct tenants per metric before the rest are recorded as __other__.", minimum=0,
            maximum=100_000),
    Setting("tenant_allowlist", ("OTEL_CRM_TENANT_ALLOWLIST",), Kind.LIST, (),
            "Tenants always recorded by name on metrics (others count against the limit)."),
    # --- privacy ---------------------------------------------------------------------------------
    Setting("scrub_mode", ("OTEL_CRM_SCRUB_MODE",), _E, "redact",
            "What happens to secrets and personal data found in telemetry.",
            choices=("redact", "hash", "off")),
    Setting("scrub_salt", ("OTEL_CRM_SCRUB_SALT",), _S, "",
            "Salt for hash mode (empty: random per process, so hashes join only within it).",
            secret=True),
    Setting("scrub_patterns", ("OTEL_CRM_SCRUB_PATTERNS",), Kind.LIST, (),
            "Extra regular expressions to scrub, separated by commas (a JSON array also works)."),
    Setting("scrub_keys", ("OTEL_CRM_SCRUB_KEYS",), Kind.LIST, (),
            "Extra attribute keys whose values are always scrubbed."),
    # --- business helpers ------------------------------------------------------------------------
    Setting("pricing_file", ("OTEL_CRM_PRICING_FILE",), _S, "",
            "JSON file of LLM prices per million tokens, merged over the built-in table."),
    Setting("capture_message_content", ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",), _B,
            False, "Record prompt/completion content on GenAI spans (scrubbed)."),
)

_BY_NAME = {s.name: s for s in REGISTRY}
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class SettingProblem:
    variable: str
    value: str
    allowed: str
    default: Any
    outcome: str = ""  # what happens instead (default: "using the default ...")

    def message(self, *, strict: bool = False) -> str:
        text = f"otel_crm: invalid {self.variable}={self.value!r}: expected {self.allowed}"
        return text if strict else f"{text}; {self.outcome or 'using the default ' + _show(self.default)}"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return repr(",".join(value))
    if isinstance(value, dict):
        return repr(",".join(f"{k}={v}" for k, v in value.items()))
    return repr(value)


class SettingsError(ValueError):
    """Raised under OTEL_CRM_STRICT=true (or strict=True) for invalid settings."""

    def __init__(self, problems: list[SettingProblem]):
        self.problems = problems
        super().__init__("; ".join(p.message(strict=True) for p in problems))


@dataclass(frozen=True)
class Settings:
    strict: bool
    disabled: bool
    service_name: str
    service_version: str
    service_namespace: str
    service_instance_id: str
    environment: str
    resource_attributes: Mapping[str, str]
    tenant_id: str
    tenant_tier: str
    traces_exporter: tuple[str, ...]
    metrics_exporter: tuple[str, ...]
    logs_exporter: tuple[str, ...]
    console_export: bool
    otlp_protocol: str
    otlp_endpoint: str
    otlp_traces_endpoint: str
    otlp_metrics_endpoint: str
    otlp_logs_endpoint: str
    otlp_headers: Mapping[str, str]
    otlp_timeout_ms: int
    otlp_compression: str
    otlp_insecure: bool | None
    bsp_schedule_delay_ms: int
    bsp_max_queue_size: int
    bsp_max_export_batch_size: int
    metric_export_interval_ms: int
    prometheus_port: int
    prometheus_host: str
    shutdown_timeout_seconds: float
    semconv_stability_opt_in: str
    log_format: str
    access_log: bool
    log_level: str
    sampling_mode: str
    sampling_ratio: float
    sampling_slow_seconds: float
    sampling_rules: tuple[SamplingRule, ...]
    sampling_max_traces: int
    sampling_max_spans_per_trace: int
    sampling_max_spans: int
    sampling_max_trace_age_seconds: float
    tenant_header: str
    user_header: str
    tenant_resolver: str
    trust_incoming_baggage: bool
    baggage_allowed_hosts: tuple[str, ...]
    capture_user_id: bool
    tenant_metric_limit: int
    tenant_allowlist: tuple[str, ...]
    scrub_mode: str
    scrub_salt: str
    scrub_patterns: tuple[str, ...]
    scrub_keys: tuple[str, ...]
    pricing_file: str
    capture_message_content: bool
    problems: tuple[SettingProblem, ...] = field(default=(), compare=False)
    # Which settings came from an explicit argument or a variable (not a default).
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def profile(self) -> str:
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


class _Invalid(Exception):
    pass


def _parse(setting: Setting, raw: str) -> Any:
    text = raw.strip()
    kind = setting.kind
    if kind is Kind.BOOL:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _Invalid
    if kind in (Kind.INT, Kind.FLOAT):
        try:
            number: float = int(text) if kind is Kind.INT else float(text)
        except ValueError:
            raise _Invalid from None
        if math.isnan(number) or math.isinf(number):
            raise _Invalid
        if setting.minimum is not None and number < setting.minimum:
            raise _Invalid
        if setting.maximum is not None and number > setting.maximum:
            raise _Invalid
        return number
    if kind is Kind.ENUM:
        low = text.lower()
        if low not in setting.choices:
            raise _Invalid
        return low
    if kind is Kind.LIST:
        return _parse_list(text)
    if kind is Kind.ENUM_LIST:
        items = tuple(item.lower() for item in _parse_list(text))
        if not items or any(item not in setting.choices for item in items):
            raise _Invalid
        return items
    if kind is Kind.MAPPING:
        return _parse_mapping(text)
    if kind is Kind.JSON_LIST:
        return _parse_json_list(text)
    return text


def _parse_list(text: str) -> tuple[str, ...]:
    if text.startswith("["):
        import json

        try:
            value = json.loads(text)
        except ValueError:
            raise _Invalid from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Invalid
        return tuple(value)
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_json_list(text: str) -> tuple[Any, ...]:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        raise _Invalid from None
    if not isinstance(value, list):
        raise _Invalid
    return tuple(value)


def _parse_mapping(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _Invalid
        result[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return result


def _check_explicit(setting: Setting, value: Any) -> Any:
    """Validate an explicit keyword argument with the same rules as its variable."""
    if isinstance(value, str) and setting.kind is not Kind.STR:
        return _parse(setting, value)
    kind = setting.kind
    if kind is Kind.BOOL:
        if not isinstance(value, bool) and not (setting.default is None and value is None):
            raise _Invalid
        return value
    if kind in (Kind.INT, Kind.FLOAT):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid
        if kind is Kind.INT and not isinstance(value, int):
            raise _Invalid
        return _parse(setting, str(value))
    if kind in (Kind.LIST, Kind.ENUM_LIST):
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        return _parse(setting, ",".join(str(v) for v in value)) if value else ()
    if kind is Kind.MAPPING:
        if not isinstance(value, Mapping):
            raise _Invalid
        return {str(k): str(v) for k, v in value.items()}
    if kind is Kind.JSON_LIST:
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        return tuple(value)
    if not isinstance(value, str):
        raise _Invalid
    return value


_ENV_NAME = re.compile(r"deployment\.environment(\.name)?$")


def resolve_settings(
    environ: Mapping[str, str] | None = None, **explicit: Any
) -> Settings:
    """Resolve settings: explicit keyword arguments beat variables, which beat defaults.

    `environ` defaults to ``os.environ`` — the only place otel_crm reads it.
    """
    env = os.environ if environ is None else environ
    unknown = set(explicit) - set(_BY_NAME)
    if unknown:
        raise TypeError(f"unknown otel_crm setting(s): {', '.join(sorted(unknown))}")
    problems: list[SettingProblem] = []
    values: dict[str, Any] = {}
    chosen: set[str] = set()
    for setting in REGISTRY:
        if setting.name in explicit and explicit[setting.name] is not None:
            try:
                values[setting.name] = _check_explicit(setting, explicit[setting.name])
                chosen.add(setting.name)
                _check_items(setting, values, f"argument {setting.name}", problems)
                continue
            except _Invalid:
                problems.append(SettingProblem(f"argument {setting.name}", str(explicit[setting.name]),
                                               setting.allowed(), setting.default))
        for variable in setting.env:
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[setting.name] = _parse(setting, raw)
                chosen.add(setting.name)
                _check_items(setting, values, variable, problems)
            except _Invalid:
                problems.append(SettingProblem(variable, raw, setting.allowed(), setting.default))
            break
    environment = values.get("environment") or _environment_from_resource(values) or "production"
    values["environment"] = environment
    development = environment.lower() in DEVELOPMENT_ENVIRONMENTS
    for setting in REGISTRY:
        if setting.name in values:
            continue
        default = setting.default
        if development and setting.development_default is not _UNSET:
            default = setting.development_default
        values[setting.name] = dict(default) if isinstance(default, dict) else default
    strict = bool(values["strict"])
    if problems and strict:
        raise SettingsError(problems)
    for problem in problems:
        _log.warning(problem.message())
    return Settings(**values, problems=tuple(problems), explicit=frozenset(chosen))


def _check_items(setting: Setting, values: dict[str, Any], source: str, problems: list[SettingProblem]) -> None:
    if setting.check is not None:
        values[setting.name], found = setting.check(values[setting.name], source)
        problems.extend(found)


def _environment_from_resource(values: Mapping[str, Any]) -> str:
    attributes: Mapping[str, str] = values.get("resource_attributes") or {}
    for key, value in attributes.items():
        if _ENV_NAME.match(key) and value:
            return value
    return ""


def registry_markdown() -> str:
    """The settings table for the README, generated from the registry."""
    lines = ["| Setting | Variables (first wins) | Type / allowed | Default | What it does |",
             "|---|---|---|---|---|"]
    for s in REGISTRY:
        default = _show(s.default) if s.default not in (None, "", (), {}) else "—"
        if s.development_default is not _UNSET:
            default += f" (development: {_show(s.development_default)})"
        variables = ", ".join(f"`{v}`" for v in s.env)
        lines.append(f"| `{s.name}` | {variables} | {s.allowed()} | {default} | {s.doc} |")
    return "\n".join(lines) + "\n"
