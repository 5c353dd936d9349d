"""A cheaper context extraction for the web instrumentations' server spans, same Context.

The Flask and Django instrumentations start their server span through
`opentelemetry.instrumentation.utils._start_internal_or_server_span`, which calls that module's
`extract` (upstream's `propagate.extract`) with the WSGI environ and the WSGI getter: the global
composite runs the trace-context propagator, then otel_crm's baggage propagator (its tenant
rules), each asking the getter for its header. Most requests carry no `baggage` header, and many
no `traceparent` either; for them the composite's answer is known without running it:

    no `baggage` header: the trace-context propagator's Context (an empty one without
    `traceparent`), plus the tenant current at the call — what CrmBaggagePropagator.extract
    returns when W3C baggage finds nothing (trusted baggage or not, propagating or not).

`fast_extract` returns exactly that, and calls upstream's `extract` for anything else: another
getter or carrier type, an explicit context, a `baggage` header, or a global propagator that is
not the one `install` was given (OTEL_PROPAGATORS other than `tracecontext[,baggage]`, or one set
later by the app). `install` replaces `utils.extract` when that module is imported (it is when the
WSGI instrumentation is) and puts upstream's back with OTEL_CRM_FAST_SPANS=false.
"""

from __future__ import annotations

import sys
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Getter, TextMapPropagator, default_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_crm._internal.deferred import when_imported
from otel_crm._internal.tenancy import context_with_tenant, current_tenant

__all__ = ["fast_extract", "install"]

_UTILS = "opentelemetry.instrumentation.utils"
_WSGI = "opentelemetry.instrumentation.wsgi"
_upstream_extract = propagate.extract
_get_global_textmap = propagate.get_global_textmap

# What `fast_extract` stands in for: the installed composite and its trace-context propagator
# (None: upstream's extract, always), and the WSGI instrumentation's getter.
_composite: CompositePropagator | None = None
_trace_context: TraceContextTextMapPropagator | None = None
_wsgi_getter: Any = None
_hooked: list[bool] = []


def fast_extract(carrier: CarrierT, context: Context | None = None,
                 getter: Getter[CarrierT] = default_getter) -> Context:
    """`propagate.extract(carrier, context, getter)`, cheaper for a WSGI environ (module docstring)."""
    composite = _composite
    environ: Any = carrier
    if (composite is None or getter is not _wsgi_getter or context is not None or type(environ) is not dict
            or "HTTP_BAGGAGE" in environ or _get_global_textmap() is not composite):
        return _upstream_extract(carrier, context, getter)
    result = Context() if "HTTP_TRACEPARENT" not in environ else _trace_context.extract(  # type: ignore[union-attr]
        carrier, None, getter)
    tenant = current_tenant()  # the baggage propagator's ambient tenant (the new Context has none)
    return result if tenant is None else context_with_tenant(tenant, result)


def install(composite: CompositePropagator, propagators: list[TextMapPropagator], enabled: bool) -> None:
    """After `composite` (made of `propagators`) became the global propagator: stand in for its
    extraction when it is trace context + otel_crm's baggage, and `enabled` (OTEL_CRM_FAST_SPANS)."""
    from otel_crm._internal.propagation import CrmBaggagePropagator  # (it imports this module)

    global _composite, _trace_context
    if (enabled and len(propagators) == 2 and type(propagators[0]) is TraceContextTextMapPropagator
            and type(propagators[1]) is CrmBaggagePropagator):
        _trace_context, _composite = propagators[0], composite
        if not _hooked:  # one import hook per process (at once when the module is already imported)
            _hooked.append(True)
            when_imported(_WSGI, "fast_extract", _patch)
        elif _WSGI in sys.modules:
            _patch()
    else:
        _composite = None
        utils: Any = sys.modules.get(_UTILS)
        if utils is not None and getattr(utils, "extract", None) is fast_extract:
            utils.extract = _upstream_extract


def _patch() -> None:
    global _wsgi_getter
    if _composite is None:
        return
    wsgi = sys.modules[_WSGI]
    utils: Any = sys.modules[_UTILS]  # the WSGI instrumentation imports it
    _wsgi_getter = wsgi.wsgi_getter
    if getattr(utils, "extract", None) is _upstream_extract:  # else someone else's: leave it
        utils.extract = fast_extract
