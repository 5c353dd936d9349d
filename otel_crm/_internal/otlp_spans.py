"""Spans to OTLP protobuf bytes without building protobuf message objects.

The OTLP exporters encode a batch by building an ``ExportTraceServiceRequest`` of message objects
(``encode_spans``: a ``KeyValue`` and an ``AnyValue`` per attribute, a ``Span`` per span) and
serialising it: ~36 µs per span of a Flask request, on the export thread, for every exported span.
:func:`encode_spans_bytes` writes the same bytes directly (4-5 times cheaper): the fields in field-number
order, as the protobuf runtime serialises them, with proto3's rules (a default scalar is not written;
a set message or a set ``oneof`` member always is, even if empty). Grouping by resource and scope,
and what each field holds, follow ``encode_spans`` exactly; a differential test compares the bytes
of both for every attribute type, events, links, status, trace state, limits and several resources
and scopes (tests/unit/test_otlp_spans.py).

Anything upstream's encoder treats specially (an attribute value it cannot encode, which it logs
and skips; an integer outside int64; text that is not valid UTF-8; a mapping; a non-string key)
returns ``None``: the caller then uses upstream's encoder for that batch, so such a batch is
encoded (or logged) exactly as before.

How the exporters use it (:func:`use_direct_encoding`, for otel_crm's own span exporter unless
``OTEL_CRM_FAST_SPANS=false``): over gRPC, the exporter's request becomes an :class:`EncodedSpans`
that the exporter's gated stub (exporters.py) sends as is, by the same Export method with no request
serializer (the bytes are the serialised request); over HTTP, the trace exporter module's
``encode_spans`` gives an object whose ``SerializePartialToString`` returns the bytes (a module name:
every HTTP span exporter of the process gets the same bytes, faster). Each only when the exporter's
code is what this was checked against (its methods read the names replaced), else upstream's.

Bounded: encoded attribute pairs are memoised (:class:`Memo`, 4,096 entries, values of at most
256 characters, no floats: ``0.0`` and ``-0.0`` are equal keys with different encodings); the
resource's and each scope's bytes once per object. What is memoised is what was already exported.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from struct import Struct
from typing import Any, Final

from opentelemetry.trace import SpanKind

from otel_crm._internal.memo import Memo
from otel_crm._internal.sdk_compat import attributes_dict, grpc_stub, span_parts

__all__ = ["EncodedSpans", "encode_spans_bytes", "grpc_raw_export", "use_direct_encoding"]

_FIXED64: Final = Struct("<Q").pack
_FIXED32: Final = Struct("<I").pack
_DOUBLE: Final = Struct("<d").pack
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_KIND: Final = {SpanKind.INTERNAL: b"\x30\x01", SpanKind.SERVER: b"\x30\x02", SpanKind.CLIENT: b"\x30\x03",
                SpanKind.PRODUCER: b"\x30\x04", SpanKind.CONSUMER: b"\x30\x05"}
_HAS_IS_REMOTE: Final = 0x100  # SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE: Final = 0x200  # SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_MEMO_VALUE_CHARS: Final = 256


class _Unsupported(Exception):
    """Something upstream's encoder handles its own way: the batch goes to upstream's encoder."""


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


def _text(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: upstream's message constructor refuses them
        raise _Unsupported from None


def _any_value(value: Any) -> bytes:
    """An ``AnyValue``'s payload (upstream's ``_encode_value``; a set oneof member is written even
    when it holds its default)."""
    kind = type(value)
    if kind is str:
        return _field(b"\x0a", _text(value))
    if value is None:  # an empty AnyValue (a None inside a sequence)
        return b""
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _Unsupported
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if kind is float:
        return b"\x21" + _DOUBLE(value)
    if kind is bytes:
        return _field(b"\x3a", value)
    if kind is tuple or kind is list:
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(item)) for item in value]))
    raise _Unsupported  # subclasses, mappings, anything else: upstream's own handling


_pairs: Memo[tuple[bytes, str, type, Any], bytes] = Memo(4096)


def _attributes(tag: bytes, attributes: Any) -> bytes:
    """Repeated ``KeyValue`` fields under `tag`, in the mapping's order."""
    if not attributes:
        return b""
    out = []
    memo_get = _pairs.get
    for key, value in attributes_dict(attributes).items():
        if type(key) is not str:
            raise _Unsupported
        kind = type(value)
        memo_key = (tag, key, kind, value) if kind is str or kind is int or kind is bool else None
        encoded = memo_get(memo_key) if memo_key is not None else None
        if encoded is None:
            if value is None:
                raise _Unsupported  # upstream writes an empty value (never one the SDK keeps)
            name = _field(b"\x0a", _text(key)) if key else b""  # an empty string is proto3's default
            encoded = _field(tag, name + _field(b"\x12", _any_value(value)))
            if memo_key is not None and (kind is not str or len(value) <= _MEMO_VALUE_CHARS):
                _pairs.put(memo_key, encoded)
        out.append(encoded)
    return b"".join(out)


def _flags(parent: Any) -> bytes:
    return _FIXED32(_HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE)


def _trace_state(trace_state: Any) -> bytes:
    if trace_state is None:
        return b""
    text = ",".join([f"{key}={value}" for key, value in trace_state.items()])
    return _field(b"\x1a", _text(text)) if text else b""


def _span(span: Any) -> bytes:
    context = span.get_span_context()
    parent = span.parent
    attributes, events, links = span_parts(span)
    parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big"), b"\x12\x08" + context.span_id.to_bytes(8, "big"),
             _trace_state(context.trace_state)]
    if parent:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(b"\x2a", _text(span.name)))
    parts.append(_KIND[span.kind])
    if span.start_time:
        parts.append(b"\x39" + _FIXED64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _FIXED64(span.end_time))
    parts.append(_attributes(b"\x4a", attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in events:
        body = [b"\x09" + _FIXED64(event.timestamp) if event.timestamp else b""]
        if event.name:
            body.append(_field(b"\x12", _text(event.name)))
        body.append(_attributes(b"\x1a", event.attributes))
        if event.dropped_attributes:
            body.append(b"\x20" + _varint(event.dropped_attributes))
        parts.append(_field(b"\x5a", b"".join(body)))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in links:
        linked = link.context
        body = [b"\x0a\x10" + linked.trace_id.to_bytes(16, "big"), b"\x12\x08" + linked.span_id.to_bytes(8, "big"),
                _attributes(b"\x22", link.attributes)]
        if link.dropped_attributes:
            body.append(b"\x28" + _varint(link.dropped_attributes))
        body.append(b"\x35" + _flags(linked))
        parts.append(_field(b"\x6a", b"".join(body)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    if status is not None:
        body = [_field(b"\x12", _text(status.description)) if status.description else b""]
        if status.status_code.value:
            body.append(b"\x18" + _varint(status.status_code.value))
        parts.append(_field(b"\x7a", b"".join(body)))
    parts.append(b"\x85\x01" + _flags(parent))
    return b"".join(parts)


_resources: Memo[int, tuple[Any, bytes]] = Memo(16)
_scopes: Memo[int, tuple[Any, bytes]] = Memo(256)


def _resource(resource: Any) -> bytes:
    """``ResourceSpans.resource`` (always written, as upstream sets it)."""
    held = _resources.get(id(resource))
    if held is None or held[0] is not resource:  # the memo holds the object: its id is not reused
        held = _resources.put(id(resource), (resource, _field(b"\x0a", _attributes(b"\x0a", resource.attributes))))
    return held[1]


def _scope(scope: Any) -> bytes:
    """``ScopeSpans.scope`` (always written; empty for a span without one)."""
    held = _scopes.get(id(scope))
    if held is None or held[0] is not scope:
        body = b""
        if scope is not None:
            body = ((_field(b"\x0a", _text(scope.name)) if scope.name else b"")
                    + (_field(b"\x12", _text(scope.version)) if scope.version else b"")
                    + _attributes(b"\x1a", scope.attributes))
        held = _scopes.put(id(scope), (scope, _field(b"\x0a", body)))
    return held[1]


def encode_spans_bytes(spans: Sequence[Any]) -> bytes | None:
    """``encode_spans(spans).SerializeToString()``, or None when upstream's encoder must do it."""
    try:
        grouped: dict[Any, dict[Any, list[bytes]]] = {}
        last_resource: Any = None
        by_scope: dict[Any, list[bytes]] = {}
        for span in spans:
            resource = span.resource
            if resource is not last_resource:  # Resource's hash is a JSON dump: once per object met
                found = grouped.get(resource)
                if found is None:
                    found = grouped[resource] = {}
                last_resource, by_scope = resource, found
            scope = span.instrumentation_scope or None
            encoded = by_scope.get(scope)
            if encoded is None:
                encoded = by_scope[scope] = []
            encoded.append(_field(b"\x12", _span(span)))
        out = []
        for resource, by_scope in grouped.items():
            body = [_resource(resource)]
            for scope, encoded in by_scope.items():
                schema = _field(b"\x1a", _text(scope.schema_url)) if scope is not None and scope.schema_url else b""
                body.append(_field(b"\x12", _scope(scope) + b"".join(encoded) + schema))
            if resource.schema_url:
                body.append(_field(b"\x1a", _text(resource.schema_url)))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)
    except Exception:  # _Unsupported, or a span upstream's encoder would fail on as it always did
        return None


class EncodedSpans:
    """An ``ExportTraceServiceRequest`` already serialised: what the gated gRPC stub sends as is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializePartialToString(self) -> bytes:
        return self.data


_EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def grpc_raw_export(channel: Any) -> Any:
    """The trace service's Export call on `channel` for a request already serialised."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    return channel.unary_unary(_EXPORT_METHOD, request_serializer=None,
                               response_deserializer=ExportTraceServiceResponse.FromString)


def _encoded_or_upstream(upstream: Any) -> Any:
    def encode(spans: Sequence[Any]) -> Any:
        data = encode_spans_bytes(spans)
        return EncodedSpans(data) if data is not None else upstream(spans)

    return encode


def use_direct_encoding(exporter: Any) -> bool:
    """Make `exporter` (an OTLP span exporter, gRPC or HTTP) send :func:`encode_spans_bytes`'
    bytes; False, changing nothing, for any other exporter or code."""
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        module: Any = sys.modules.get(type(exporter).__module__)  # the exporter's class is imported
        if module.__name__ == "opentelemetry.exporter.otlp.proto.grpc.trace_exporter":
            if (type(exporter)._translate_data.__code__.co_names != ("encode_spans",)
                    or module.encode_spans is not encode_spans
                    or not getattr(grpc_stub(exporter), "sends_encoded", False)):  # a stub that sends the bytes
                return False
            exporter._translate_data = _encoded_or_upstream(encode_spans)
            return True
        if module.__name__ == "opentelemetry.exporter.otlp.proto.http.trace_exporter":
            current = module.encode_spans
            if getattr(current, "__wrapped__", None) is encode_spans:
                return True  # installed for an earlier exporter
            names = type(exporter).export.__code__.co_names
            if current is not encode_spans or "encode_spans" not in names or "SerializePartialToString" not in names:
                return False
            replacement = _encoded_or_upstream(encode_spans)
            replacement.__wrapped__ = encode_spans
            module.encode_spans = replacement
            return True
    except Exception:  # noqa: S110 - another exporter's make: upstream's encoding stays
        pass
    return False
