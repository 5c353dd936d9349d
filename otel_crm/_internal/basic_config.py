"""An app's own `logging.basicConfig(level=..., format=...)` still shapes its stdout.

basicConfig does nothing when the root logger has handlers, and otel_crm's are there first (the
`opentelemetry-instrument` wrapper, or configure() at the top of the app): the app's call would
silently change nothing. While our stdout handler is on the root, `logging.basicConfig` is
wrapped:

- no `force`, and the root holds only otel_crm's handlers: `level` sets the root's level and our
  stdout handler's, `format`/`datefmt`/`style` become our stdout handler's (text) format, still
  scrubbed. `filename`/`stream`/`handlers` cannot be honoured without sending unscrubbed lines
  next to ours: the call leaves them and one line says so, and how to get them (`force=True`).
- `force=True`: the app takes the root over, as the stdlib documents; otel_crm's OTLP handler is
  put back so logs still reach the collector (its stdout handler is gone: the app chose its own).
- anyone else's handler on the root already: the stdlib's behaviour, unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from otel_crm._internal.stdout import LazyFlushStreamHandler, ScrubbingTextFormatter

__all__ = ["install_basic_config_hook", "uninstall_basic_config_hook"]

_log = logging.getLogger("otel_crm")
_DESTINATIONS = ("filename", "stream", "handlers")


class _Hook:
    def __init__(self, original: Callable[..., None], stdout: LazyFlushStreamHandler,
                 ours: list[logging.Handler]):
        self.original = original
        self.stdout = stdout
        self.ours = ours

    def __call__(self, **kwargs: Any) -> None:
        root = logging.getLogger()
        if kwargs.get("force"):
            self.original(**kwargs)
            for handler in self.ours:
                if handler is not self.stdout and handler not in root.handlers:
                    root.addHandler(handler)
            return
        if self.stdout not in root.handlers or any(h not in self.ours for h in root.handlers):
            self.original(**kwargs)  # not ours to decide: the stdlib's own behaviour
            return
        ignored = [name for name in _DESTINATIONS if kwargs.get(name) is not None]
        if ignored:
            _log.warning("otel_crm: logging.basicConfig(%s=...) left the root logger as it is: otel_crm's "
                         "stdout handler is on it; pass force=True to replace it, or set "
                         "OTEL_CRM_LOG_FORMAT=none", "/".join(ignored))
        level = kwargs.get("level")
        if level is not None:
            root.setLevel(level)
            self.stdout.setLevel(level)
        fmt = kwargs.get("format")
        if fmt is not None or kwargs.get("datefmt") is not None or "style" in kwargs:
            style = kwargs.get("style", "%")
            default = {"%": logging.BASIC_FORMAT, "{": "{levelname}:{name}:{message}",
                       "$": "${levelname}:${name}:${message}"}[style]
            self.stdout.setFormatter(ScrubbingTextFormatter(fmt or default, datefmt=kwargs.get("datefmt"),
                                                            style=style, scrub=self.stdout.scrub))


def install_basic_config_hook(stdout: LazyFlushStreamHandler, ours: list[logging.Handler]) -> None:
    uninstall_basic_config_hook()
    hook = _Hook(logging.basicConfig, stdout, ours)
    logging.basicConfig = hook


def uninstall_basic_config_hook() -> None:
    current = logging.basicConfig
    if isinstance(current, _Hook):
        logging.basicConfig = current.original
