"""Search queries (Elasticsearch, OpenSearch, Postgres full-text…), per the database conventions.

CLIENT span ``search {index}`` with ``db.system.name``, ``db.operation.name`` (``search``),
``db.collection.name`` (the index), a sanitized ``db.query.text`` and
``db.response.returned_rows``; metric ``db.client.operation.duration`` (s) by system, operation,
collection, ``error.type`` and the guarded ``crm.tenant.id``.

Sanitizing (:func:`sanitize_query`) keeps the query's shape and drops every value, in one linear
pass (no regular expressions), bounded to :data:`MAX_QUERY_TEXT` characters:

- a dict/list (Elasticsearch DSL), or a string holding JSON: every leaf value becomes ``"?"``;
- SQL systems: quoted strings and numbers become ``?``;
- other systems (Lucene query strings): field names (``email:``), operators (AND, OR, NOT, TO) and
  brackets are kept, every term or phrase becomes ``?`` — ``email:"a@b.c" AND age:[18 TO 30]`` →
  ``email:? AND age:[? TO ?]``.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_crm._internal import semconv
from otel_crm._internal.runtime import Runtime
from otel_crm.helpers._base import Attributes, Instrumented, Operation, PerRuntime, metric_attributes
from otel_crm.helpers._shared import BoundSets, Memo
from otel_crm.helpers._validate import COUNT, INVALID_ARGUMENT, MAX_COUNT, Arguments, checked_count, is_name

__all__ = ["MAX_QUERY_TEXT", "SearchQuery", "SearchQueryRun", "sanitize_query", "search_query"]

MAX_QUERY_TEXT: Final = 2048
SEARCH: Final = "search"
DEFAULT_SYSTEM: Final = "elasticsearch"
_MAX_DEPTH = 32
_SQL_SYSTEMS = frozenset({"postgresql", "mysql", "mariadb", "sqlite", "microsoft.sql_server", "mssql",
                          "oracle.db", "clickhouse", "cockroachdb", "trino", "other_sql"})
_LUCENE_OPERATORS = frozenset({"AND", "OR", "NOT", "TO", "&&", "||", "!"})
_LUCENE_STRUCTURE = frozenset("()[]{}")
_LUCENE_BREAK = frozenset("()[]{}:\" \t\r\n")


# --- sanitizing -----------------------------------------------------------------------------------
def _mask(value: Any, depth: int) -> Any:
    if isinstance(value, dict):
        if depth >= _MAX_DEPTH:
            return "?"
        return {str(key): _mask(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if depth >= _MAX_DEPTH:
            return "?"
        return [_mask(item, depth + 1) for item in value]
    return "?"


def _skip_quoted(text: str, start: int) -> int:
    """Index just past the string literal opening at `start` (handles \\-escapes and doubled quotes)."""
    quote, i, n = text[start], start + 1, len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _sanitize_sql(text: str, limit: int) -> str:
    out: list[str] = []
    size, i, n = 0, 0, len(text)
    while i < n and size < limit:
        char = text[i]
        if char in "'\"":
            i = _skip_quoted(text, i)
            piece = "?"
        elif char.isdigit() or (char == "." and i + 1 < n and text[i + 1].isdigit()):
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "."):
                j += 1
            i, piece = j, "?"
        elif char.isalpha() or char in "_$@#":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_$@#"):
                j += 1
            piece, i = text[i:j], j  # identifiers and keywords, digits in them included
        else:
            piece, i = char, i + 1
        out.append(piece)
        size += len(piece)
    return "".join(out)[:limit]


def _sanitize_lucene(text: str, limit: int) -> str:
    out: list[str] = []
    size, i, n = 0, 0, len(text)
    while i < n and size < limit:
        char = text[i]
        if char == '"':
            i = _skip_quoted(text, i)
            piece = "?"
        elif char.isspace() or char in _LUCENE_STRUCTURE or char == ":":
            piece, i = char, i + 1
        else:
            j = i
            while j < n and text[j] not in _LUCENE_BREAK:
                j += 2 if text[j] == "\\" else 1
            j = min(j, n)
            word = text[i:j]
            if (j < n and text[j] == ":") or word in _LUCENE_OPERATORS:  # field name, operator
                piece = word
            elif word[0] in "+-" and len(word) > 1:
                piece = word[0] + "?"
            else:
                piece = "?"
            i = j
        out.append(piece)
        size += len(piece)
    return "".join(out)[:limit]


def _dump(value: Any) -> str:
    return json.dumps(_mask(value, 0), ensure_ascii=False, separators=(",", ":"))[:MAX_QUERY_TEXT]


def _sanitize_text(text: str, system: str) -> str:
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return _dump(json.loads(text))
        except (ValueError, RecursionError):  # not JSON (or absurdly deep): sanitize as text
            pass
    if system in _SQL_SYSTEMS:
        return _sanitize_sql(text, MAX_QUERY_TEXT)
    return _sanitize_lucene(text, MAX_QUERY_TEXT)


_sanitize_cached = functools.lru_cache(maxsize=256)(_sanitize_text)


def sanitize_query(query: Any, system: str = DEFAULT_SYSTEM) -> str:
    """``db.query.text`` for `query`: its shape with every literal value replaced by ``?``."""
    if not isinstance(system, str):  # never raise for a wrong type: sanitize as a query string
        system = DEFAULT_SYSTEM
    if isinstance(query, str):
        # Queries repeat: memoise the short ones (the cache never pins large strings).
        return _sanitize_cached(query, system) if len(query) <= 4096 else _sanitize_text(query, system)
    if isinstance(query, bytes):
        return _sanitize_text(query.decode("utf-8", "replace"), system)
    return _dump(query)


# --- the helper -----------------------------------------------------------------------------------
class _Instruments:
    __slots__ = ("duration",)

    def __init__(self, runtime: Runtime) -> None:
        self.duration = runtime.meter().create_histogram(
            semconv.DB_CLIENT_OPERATION_DURATION, unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=list(semconv.DB_CLIENT_OPERATION_DURATION_BUCKETS))


_instruments: PerRuntime[_Instruments] = PerRuntime("otel_crm.helpers.search", _Instruments)


class _Shape:
    """What one index and system always give: checked once, then memoised."""

    __slots__ = ("base", "sets", "span_name", "start", "system")

    def __init__(self, index: str, system: str, rejected: tuple[str, ...]) -> None:
        self.system = system
        self.span_name = f"{SEARCH} {index}"
        self.base: Attributes = {semconv.DB_SYSTEM_NAME: system, semconv.DB_OPERATION_NAME: SEARCH,
                                 semconv.DB_COLLECTION_NAME: index}
        self.start = {**self.base, INVALID_ARGUMENT: rejected} if rejected else self.base
        self.sets = BoundSets()


_shapes: Memo[tuple[Any, Any], _Shape] = Memo(256)
_DURATION = semconv.DB_CLIENT_OPERATION_DURATION


def _shape(index: str, system: str) -> _Shape:
    """A new shape (memoised when the arguments are valid)."""
    if is_name(index) and is_name(system):
        return _shapes.put((index, system), _Shape(index, system, ()))
    arguments = Arguments(SearchQueryRun.component, "search_query")  # a misuse: reported on every call
    index = arguments.name("index", index)
    system = arguments.name("system", system, fallback=DEFAULT_SYSTEM)
    return _Shape(index, system, arguments.rejected)


class SearchQueryRun(Operation):
    """One search; the handle of ``with search_query(...) as search``."""

    __slots__ = ("_query", "_results", "_shape")
    component = "helpers.search"

    def __init__(self, shape: _Shape, start: Attributes, query: Any) -> None:
        Operation.__init__(self, shape.span_name, SpanKind.CLIENT, start)
        self._shape = shape
        self._query = query
        self._results: int | None = None

    def set_results(self, count: int) -> None:
        """Hits returned (``db.response.returned_rows``)."""
        results = checked_count(count, MAX_COUNT)
        if results is None:
            self._reject("set_results.count", count, COUNT)
            return
        self._results = results

    def _started(self, span: trace.Span) -> None:
        if self._query is not None:
            span.set_attribute(semconv.DB_QUERY_TEXT, sanitize_query(self._query, self._shape.system))

    def _ending(self, span: trace.Span) -> None:
        if self._results is not None:
            span.set_attribute(semconv.DB_RESPONSE_RETURNED_ROWS, self._results)

    def _record(self, runtime: Runtime, duration: float, error: str | None) -> None:
        shape, tenant = self._shape, self._tenant_id
        if error is None:  # the usual case: sets bound once (see BoundSets)
            attributes = shape.sets.get(runtime, _DURATION, _DURATION if tenant is None else (_DURATION, tenant),
                                        shape.base, tenant)
        else:
            attributes = metric_attributes(runtime, _DURATION, shape.base, tenant, error=error)
        _instruments(runtime).duration.record(duration, attributes, self._context)


class SearchQuery(Instrumented[SearchQueryRun]):
    """Returned by :func:`search_query`."""

    __slots__ = ("_query", "_shape")

    def __init__(self, shape: _Shape, query: Any) -> None:
        self._shape = shape
        self._query = query

    def _operation(self, args: tuple[Any, ...] | None, code_function: str | None) -> SearchQueryRun:
        start = self._shape.start
        return SearchQueryRun(self._shape, start if code_function is None else self._with_function(
            start, code_function), self._query)


def search_query(index: str, *, system: str = DEFAULT_SYSTEM, query: Any = None) -> SearchQuery:
    """Trace one search against `index`: ``with search_query("leads", query=dsl) as search: …;
    search.set_results(len(hits))`` (or ``async with``). ``system`` is the ``db.system.name``
    value (elasticsearch, opensearch, postgresql…); `query` a DSL dict or a query string, only
    ever recorded sanitized."""
    try:
        shape = _shapes.get((index, system))
    except Exception:  # an unhashable argument: checked (and refused) below
        shape = None
    return SearchQuery(shape if shape is not None else _shape(index, system), query)
