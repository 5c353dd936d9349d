"""Item checks of settings whose type alone does not say what is valid (``setting(check=...)``): each
takes the parsed value and where it came from, and returns the value to keep and the problems."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from otel_crm._internal.sampling.policy import compile_rules
from otel_crm._internal.settings_parse import SettingProblem

__all__ = ["check_endpoint", "check_host", "check_readable_file", "check_sampling_rules", "header_or_none"]


def header_or_none(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    # An empty variable means "unset" for every setting (the OTel convention), so switching header
    # extraction off needs a word: `none`.
    return ("" if str(value).strip().lower() == "none" else value), []


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*|\[?[0-9A-Fa-f:.]+\]?")


def check_host(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    # A bind address: a host name (RFC 1123 labels), an IPv4 or an IPv6 address; anything else would
    # fail at bind time (or earlier: the value also names a rendezvous directory).
    text = str(value).strip()
    if len(text) <= 253 and _HOST.fullmatch(text):
        return text, []
    return "127.0.0.1", [SettingProblem(source, text, "a host name or an IP address", "127.0.0.1")]


def check_sampling_rules(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    rules, problems = compile_rules(value)
    return rules, [SettingProblem(f"{source} {p.label}", p.text, p.reason, None, "rule left out")
                   for p in problems]


_HOST_PORT = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\]):[0-9]{{1,5}}")


def check_endpoint(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    # An OTLP endpoint: an http(s) URL with a host (and a valid port if any), or gRPC's `host:port`.
    # Anything else would fail on every export, with a line per batch instead of one at startup.
    text = str(value).strip()
    try:
        parts = urlsplit(text)
        valid = (parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0) \
            or bool(_HOST_PORT.fullmatch(text))
    except ValueError:  # a port out of range or not a number
        valid = False
    if valid:
        return text, []
    return "", [SettingProblem(source, text, "an http:// or https:// URL with a host (or host:port for grpc)", "")]


def check_readable_file(value: Any, source: str) -> tuple[Any, list[SettingProblem]]:
    # Said at startup rather than at first use (which may be hours later, or never).
    try:
        readable = Path(str(value)).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        readable = False
    if readable:
        return value, []
    return "", [SettingProblem(source, str(value), "the path of a readable file", "", "the file is ignored")]
