"""`otel-crm` command line: `doctor` checks a deployment's settings and collector; `settings`
prints the settings table; `traces` shows recent traces and waterfalls from Jaeger;
`collector-policy` prints the collector's tail_sampling policies for the sampling settings."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from otel_crm._internal import traces_view
from otel_crm._internal.semconv import CRM_ATTRIBUTES
from otel_crm._internal.settings import (
    REGISTRY,
    SettingProblem,
    Settings,
    SettingsError,
    registry_markdown,
    resolve_settings,
)
from otel_crm._internal.settings_parse import credential_key
from otel_crm._internal.startup_report import sanitized_endpoint

__all__ = ["main"]

_MASK = "****"


_ENDPOINT_SETTINGS = frozenset({"otlp_endpoint", "otlp_traces_endpoint", "otlp_metrics_endpoint",
                                "otlp_logs_endpoint"})


def _masked(settings: Settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in REGISTRY:
        value = getattr(settings, setting.name)
        if setting.secret and value:
            value = {k: _MASK for k in value} if isinstance(value, Mapping) else _MASK
        elif isinstance(value, Mapping) and value:  # e.g. resource attributes: mask credential-like keys
            value = {k: _MASK if credential_key(str(k)) else v for k, v in value.items()}
        elif setting.name in _ENDPOINT_SETTINGS and value:
            value = sanitized_endpoint(value)  # user info and query strings carry credentials
        values[setting.name] = value
    return values


class _Silenced(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _resolve_quietly(environ: Mapping[str, str] | None) -> Settings:
    """Settings as the app would get them, without the one-line warnings (doctor lists problems itself)
    and without raising under OTEL_CRM_STRICT=true (doctor reports instead)."""
    logger, silenced = logging.getLogger("otel_crm"), _Silenced()
    logger.addFilter(silenced)
    try:
        try:
            return resolve_settings(environ)
        except SettingsError:
            # Only reachable when OTEL_CRM_STRICT came from a variable, so `explicit` stays true to it.
            return resolve_settings(environ, strict=False).replace(strict=True)
    finally:
        logger.removeFilter(silenced)


def _problem_line(problem: SettingProblem, *, strict: bool) -> str:
    setting = next((s for s in REGISTRY if problem.variable in s.env), None)
    if setting is not None and setting.secret:
        problem = dataclasses.replace(problem, value=_MASK)
    return problem.message(strict=strict)


def _endpoint_address(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "localhost", parts.port or default


def check_endpoint(endpoint: str, timeout: float = 2.0) -> str | None:
    """None when a TCP connection to the endpoint succeeds, else the reason."""
    try:
        host, port = _endpoint_address(endpoint)
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def doctor(environ: Mapping[str, str] | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    settings = _resolve_quietly(environ)
    print("otel_crm doctor", file=out)
    print(f"  profile: {settings.profile}", file=out)
    print("settings:", file=out)
    for name, value in _masked(settings).items():
        marker = "*" if name in settings.explicit else " "
        print(f" {marker} {name} = {value!r}", file=out)
    print("  (* = set by a variable)", file=out)
    status = 0
    if settings.problems:
        status = 1
        print("invalid variables:", file=out)
        for problem in settings.problems:
            print(f"  - {_problem_line(problem, strict=settings.strict)}", file=out)
        if settings.strict:
            print("  OTEL_CRM_STRICT=true: the app would refuse to start with these.", file=out)
    else:
        print("invalid variables: none", file=out)
    uses_otlp = any("otlp" in getattr(settings, f"{signal}_exporter")
                    for signal in ("traces", "metrics", "logs"))
    if uses_otlp and not settings.disabled:
        endpoints = sorted({settings.endpoint_for(s) for s in ("traces", "metrics", "logs")})
        for endpoint in endpoints:
            failure = check_endpoint(endpoint)
            shown = sanitized_endpoint(endpoint)
            if failure is None:
                print(f"OTLP endpoint {shown}: accepts connections", file=out)
            else:
                status = 1
                print(f"OTLP endpoint {shown}: NOT reachable ({failure})", file=out)
    return status


def attributes_markdown() -> str:
    """The README's table of our own attributes, generated from the semconv module."""
    lines = ["| Attribute | Where | Meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {where} | {meaning} |" for name, (where, meaning) in CRM_ATTRIBUTES.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-crm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="print resolved settings, invalid variables, collector reachability")
    table = commands.add_parser("settings", help="print every setting")
    table.add_argument("--markdown", action="store_true", help="as the README's Markdown table")
    commands.add_parser("attributes", help="print otel_crm's own crm.* attributes as a Markdown table")
    traces_view.add_parser(commands)
    policy = commands.add_parser("collector-policy", help="print the collector's tail_sampling policies for "
                                                          "OTEL_CRM_SAMPLING_RULES, _RATIO and _SLOW_SECONDS")
    policy.add_argument("--env-defaults", action="store_true",
                        help="slow threshold, baseline percent and hash salt as ${env:VAR:-value}, like the "
                             "shipped configs")
    policy.add_argument("--shipped", action="store_true", help="the block the shipped configs carry (defaults)")
    policy.add_argument("--indent", type=int, default=0, help="indent by this many spaces")
    args = parser.parse_args(argv)
    if args.command == "collector-policy":
        from otel_crm._internal.collector_policy import print_policies

        return print_policies(shipped=args.shipped, env_defaults=args.env_defaults, indent=args.indent)
    if args.command == "doctor":
        return doctor()
    if args.command == "traces":
        return traces_view.run(args)
    if args.command == "attributes":
        sys.stdout.write(attributes_markdown())
        return 0
    if args.markdown:
        sys.stdout.write(registry_markdown())
    else:
        for setting in REGISTRY:
            print(f"{setting.name}: {', '.join(setting.env)} ({setting.allowed()}) — {setting.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

