"""RequestAttributes against upstream's collect_request_attributes: the same dict (keys, values and
their order) for every environ, in each stability mode; the request's second call reuses the first
only while the environ values it read are unchanged."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.instrumentation import _semconv
from opentelemetry.instrumentation.wsgi import collect_request_attributes

from otel_crm._internal.integrations.request_attributes import RequestAttributes

MODES = [_semconv._StabilityMode.DEFAULT, _semconv._StabilityMode.HTTP, _semconv._StabilityMode.HTTP_DUP]


def environs() -> Iterator[dict[str, Any]]:
    values = {"REQUEST_METHOD": ["GET", " post ", "FOO", None], "SERVER_NAME": ["srv", None],
              "wsgi.url_scheme": ["http", None], "HTTP_HOST": ["h:1", ""], "SERVER_PORT": ["80", None],
              "RAW_URI": ["/a?b", "", None], "REQUEST_URI": ["/r", None], "PATH_INFO": ["/a", None],
              "QUERY_STRING": ["b", ""], "REMOTE_ADDR": ["1.2.3.4", None], "REMOTE_PORT": ["5", "x", None],
              "REMOTE_HOST": ["1.2.3.4", "name", None],
              "HTTP_USER_AGENT": ["curl/8", b"bot/1", memoryview(b"pytest"), "", None],
              "SERVER_PROTOCOL": ["HTTP/1.1", "http/2", "", None]}
    keys = list(values)
    for index, combination in enumerate(itertools.product(*values.values())):
        if index % 7 == 0:  # every 7th of the ~550k combinations: every value appears
            yield {key: value for key, value in zip(keys, combination, strict=True) if value is not None}


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.value)
def test_request_attributes_are_upstreams_in_order(mode: Any) -> None:
    collect = RequestAttributes(mode, limit=8)  # small: the memos are cleared many times on the way
    count = 0
    for environ in environs():
        environ.setdefault("REQUEST_METHOD", "GET")
        environ.setdefault("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            expected = list(collect_request_attributes(environ, mode).items())
        except Exception as exc:  # e.g. no host for wsgiref's request_uri: ours fails alike
            with pytest.raises(type(exc)):
                collect(environ)
            continue
        first, second = collect(environ), collect(environ)
        assert list(first.items()) == expected == list(second.items()), environ
        assert first is not second
        count += 1
    assert count > 10_000


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.value)
def test_a_changed_environ_is_recomputed(mode: Any) -> None:
    collect = RequestAttributes(mode)
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "SERVER_NAME": "s", "SERVER_PORT": "80",
                               "wsgi.url_scheme": "http", "HTTP_HOST": "a", "RAW_URI": "/x", "PATH_INFO": "/x",
                               "SERVER_PROTOCOL": "HTTP/1.1"}
    first = collect(environ)
    first["http.route"] = "/mutated by a caller"
    assert collect(environ) == collect_request_attributes(environ, mode)  # a fresh copy, not the caller's dict
    for name, value in [("HTTP_HOST", "b"), ("RAW_URI", "/y"), ("SCRIPT_NAME", "/app"), ("REQUEST_METHOD", "PUT"),
                        ("HTTP_USER_AGENT", "Googlebot")]:
        environ[name] = value
        assert list(collect(environ).items()) == list(collect_request_attributes(environ, mode).items()), name
    del environ["RAW_URI"]  # the old conventions' http.url, rebuilt from the host, script name, path and query
    for name, value in [("PATH_INFO", "/x"), ("SCRIPT_NAME", "/other"), ("QUERY_STRING", "q=1")]:
        environ[name] = value
        assert list(collect(environ).items()) == list(collect_request_attributes(environ, mode).items()), name


def test_a_failure_of_ours_falls_back_to_upstreams_function(monkeypatch: pytest.MonkeyPatch, no_reraise: None) -> None:
    mode = _semconv._StabilityMode.HTTP
    collect = RequestAttributes(mode)

    def broken(environ: Any) -> Any:
        raise KeyError("ours")

    monkeypatch.setattr(collect, "_compute", broken)
    environ = {"REQUEST_METHOD": "GET", "SERVER_NAME": "s", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
               "PATH_INFO": "/x", "SERVER_PROTOCOL": "HTTP/1.1"}
    assert collect(environ) == collect_request_attributes(environ, mode)
    environ["SERVER_PORT"] = "eighty"  # upstream raises for this environ: so does ours
    with pytest.raises(ValueError):
        collect(environ)
