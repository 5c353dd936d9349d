"""`otel-crm` command line: `doctor` checks a deployment's settings and collector; `settings`
prints the settings table; `collector-policy` prints the collector's tail_sampling policies for the
sampling settings."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from otel_crm._internal.settings import REGISTRY, Settings, registry_markdown, resolve_settings

__all__ = ["main"]

_MASK = "****"


def _masked(settings: Settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in REGISTRY:
        value = getattr(settings, setting.name)
        if setting.secret and value:
            value = {k: _MASK for k in value} if isinstance(value, Mapping) else _MASK
        values[setting.name] = value
    return values


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
    settings = resolve_settings(environ, strict=False)
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
            print(f"  - {problem.message()}", file=out)
    else:
        print("invalid variables: none", file=out)
    uses_otlp = any("otlp" in getattr(settings, f"{signal}_exporter")
                    for signal in ("traces", "metrics", "logs"))
    if uses_otlp and not settings.disabled:
        endpoints = sorted({settings.endpoint_for(s) for s in ("traces", "metrics", "logs")})
        for endpoint in endpoints:
            failure = check_endpoint(endpoint)
            if failure is None:
                print(f"OTLP endpoint {endpoint}: accepts connections", file=out)
            else:
                status = 1
                print(f"OTLP endpoint {endpoint}: NOT reachable ({failure})", file=out)
    return status


def attributes_markdown() -> str:
    """The README's table of our own attributes, generated from the semconv module."""
    from otel_crm._internal.semconv import CRM_ATTRIBUTES

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

