"""The one mechanism every business helper shares.

A helper call (``workflow("x")``, ``connector_operation("hubspot", "sync")``…) returns an
:class:`Instrumented` object that works as a sync or async context manager and as a decorator for
sync and async functions. Each execution is an :class:`Operation`: it starts the span, makes it
current, times the user's code, marks failures (status ERROR, ``error.type``, exception event),
ends the span and records the helper's metrics. Subclasses only say *what* to record.

Rules kept here once for all helpers:

- The user's exception propagates unchanged (same object, same traceback): context managers never
  suppress, decorators use a bare ``raise``.
- Instrumentation failures never reach business code: they go to ``safety.report_internal_error`` (which
  re-raises under pytest by design). Only our code is guarded, never the user's.
- Metrics are exact: they are recorded whether or not the span is sampled; span attribute work
  that only serves the span is skipped when ``span.is_recording()`` is false.
- ``crm.tenant.id`` on metrics always goes through ``Runtime.tenant_label`` (cardinality guard).
"""

from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from time import perf_counter
from typing import Any, ClassVar, Generic, TypeVar, cast

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_crm._internal import semconv
from otel_crm._internal.generators import decorate_async_generator, decorate_generator
from otel_crm._internal.runtime import Runtime, current_runtime
from otel_crm._internal.safety import error_type, report_internal_error
from otel_crm._internal.tenancy import current_tenant
from otel_crm.helpers._shared import FAILURE, SUCCESS, Attributes, PerRuntime, function_name, metric_attributes
from otel_crm.helpers._validate import INVALID_ARGUMENT, noted, reject

__all__ = ["FAILURE", "SUCCESS", "Attributes", "Instrumented", "Operation", "PerRuntime", "error_type",
           "function_name", "metric_attributes"]

_F = TypeVar("_F", bound=Callable[..., Any])
_Op = TypeVar("_Op", bound="Operation")
_active: ContextVar[tuple[tuple[Instrumented[Any], Operation], ...]] = ContextVar(
    "otel_crm_helpers_active", default=())


_tracer: PerRuntime[trace.Tracer] = PerRuntime("otel_crm.helpers.tracer", lambda runtime: runtime.tracer())
# The context API's functions, bound once (module attribute lookups on the path of every operation)
_get_current = context.get_current
_attach = context.attach
_detach = context.detach
_set_span_in_context = trace.set_span_in_context


class Operation:
    """One execution of a helper: its span, clock and outcome. Also the handle `with … as` returns.

    A subclass passes its span's name, kind and start attributes (given to the sampler too) to
    ``Operation.__init__(self, …)`` (no ``super()`` object per operation); the lifecycle calls only
    the optional hooks a subclass overrides (found by ``__init_subclass__``): a call saved per operation.
    """

    __slots__ = ("_context", "_kind", "_name", "_rejected", "_runtime", "_span", "_start", "_t0", "_tenant_id",
                 "_token")

    component: ClassVar[str] = "helpers"
    _has_entered: ClassVar[bool] = False  # overrides _entered/_exited
    _has_started: ClassVar[bool] = False  # overrides _started
    _has_ending: ClassVar[bool] = False  # overrides _ending

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._has_entered = cls._entered is not Operation._entered or cls._exited is not Operation._exited
        cls._has_started = cls._started is not Operation._started
        cls._has_ending = cls._ending is not Operation._ending

    def __init__(self, name: str = "", kind: SpanKind = SpanKind.INTERNAL, start: Attributes | None = None
                 ) -> None:
        self._name = name
        self._kind = kind
        self._start = start
        self._rejected: tuple[str, ...] = ()
        self._span: trace.Span | None = None
        self._token: object | None = None
        self._runtime: Runtime | None = None
        self._tenant_id: str | None = None
        self._t0 = 0.0
        # The context the metrics are recorded in (what the SDK would read for each of them: read once)
        self._context: Context | None = None

    # --- what subclasses describe (optional hooks) ------------------------------------------------
    def _started(self, span: trace.Span) -> None:
        """After the span is current; only called when it is recording."""

    def _ending(self, span: trace.Span) -> None:
        """Before the span ends; only called when it is recording."""

    def _record(self, runtime: Runtime, duration: float, error: str | None) -> None:
        """Record the helper's metrics (always, sampled or not), in ``self._context``."""

    def _on_result(self, result: Any) -> None:
        """Decorator form: the wrapped function's return value (success only)."""

    def _on_items(self, count: int) -> None:
        """Decorator form on a generator function: how many items it yielded (also on failure)."""

    def _entered(self) -> None:
        """Bookkeeping at start that must happen even when the span is not recording."""

    def _exited(self) -> None:
        """Undo :meth:`_entered`."""

    def _reject(self, argument: str, value: object, expected: str) -> None:
        """A misused argument of a handle method (``set_records``…): noted on the span, counted;
        the caller ignores the value. Raises only under pytest (see _validate)."""
        span = self._span
        if span is not None and span.is_recording() and argument not in self._rejected:
            self._rejected = noted(self._rejected, argument)
            span.set_attribute(INVALID_ARGUMENT, self._rejected)
        reject(self.component, argument, value, expected)

    # --- the shared lifecycle ---------------------------------------------------------------------
    @property
    def span(self) -> trace.Span:
        """The operation's span (a non-recording one when unsampled or not started)."""
        return self._span if self._span is not None else trace.INVALID_SPAN

    def _begin(self) -> None:
        try:
            runtime = self._runtime = current_runtime()
            # The current context, read once: the tenant, the parent span and the new span's context.
            parent = _get_current()
            tenant = current_tenant(parent)
            self._tenant_id = tenant.id if tenant is not None else None
            span = self._span = _tracer(runtime).start_span(self._name, context=parent, kind=self._kind,
                                                            attributes=self._start)
            self._token = _attach(_set_span_in_context(span, parent))
            if self._has_entered:
                self._entered()
            if self._has_started and span.is_recording():
                self._started(span)
        except Exception as exc:
            report_internal_error(self.component, exc)
        finally:
            self._t0 = perf_counter()

    def _detach(self) -> None:
        """A decorated generator runs in steps, in a context of its own (see
        otel_crm._internal.generators): leave the consumer's context as it was before `_begin`."""
        try:
            if self._has_entered:
                self._exited()
            if self._token is not None:
                context.detach(self._token)  # type: ignore[arg-type]
                self._token = None
        except Exception as exc:
            report_internal_error(self.component, exc)

    def _finish(self, exc: BaseException | None) -> None:
        duration = perf_counter() - self._t0
        error = error_type(exc) if exc is not None else None
        failure: Exception | None = None
        # Independent stages: a failure in one never costs the others (the span still ends,
        # the context is still restored, the metrics are still recorded).
        span = self._span
        if span is not None:
            try:
                if (exc is not None or self._has_ending) and span.is_recording():
                    if exc is not None:
                        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                        span.set_attribute(semconv.ERROR_TYPE, cast(str, error))
                        span.add_event("exception", _exception_attributes(exc, cast(str, error)))
                    if self._has_ending:
                        self._ending(span)
            except Exception as stage_exc:
                failure = stage_exc
            try:
                span.end()
            except Exception as stage_exc:
                failure = failure or stage_exc
        try:
            if self._has_entered:
                self._exited()
            if self._token is not None:
                _detach(self._token)  # type: ignore[arg-type]
                self._token = None
        except Exception as stage_exc:
            failure = failure or stage_exc
        try:
            if self._runtime is not None:
                self._context = _get_current()
                self._record(self._runtime, duration, error)
        except Exception as stage_exc:
            failure = failure or stage_exc
        if failure is not None:
            report_internal_error(self.component, failure)


class Instrumented(Generic[_Op]):
    """What a helper call returns: a sync/async context manager and a sync/async decorator.

    Subclasses implement :meth:`_operation` (a fresh :class:`Operation` per execution); the
    decorator form also gets the call's positional arguments (connectors read ``self`` there).
    """

    # No __init__ (one is built per `with`): the slot starts unset, read with getattr.
    __slots__ = ("_by_function",)
    _by_function: dict[tuple[int, str], Attributes]

    def _with_function(self, attributes: Attributes, code_function: str | None) -> Attributes:
        """`attributes` plus ``code.function.name`` for the decorator form (built once per function)."""
        if code_function is None:
            return attributes
        by_function = getattr(self, "_by_function", None)
        if by_function is None:
            by_function = self._by_function = {}
        key = (id(attributes), code_function)
        cached = by_function.get(key)
        if cached is None:
            cached = by_function[key] = {**attributes, semconv.CODE_FUNCTION_NAME: code_function}
        return cached

    def _operation(self, args: tuple[Any, ...] | None, code_function: str | None) -> _Op:
        raise NotImplementedError

    def _new(self, args: tuple[Any, ...] | None, code_function: str | None) -> _Op | None:
        try:
            operation = self._operation(args, code_function)
        except Exception as exc:
            report_internal_error(Operation.component, exc)
            return None
        operation._begin()
        return operation

    # --- context manager --------------------------------------------------------------------------
    # The entered operations live in the *context* (not on this object), so one object shared by
    # concurrent tasks or threads (`SYNC = connector_operation(...)`; `async with SYNC:`) or
    # re-entered while active always finishes the operation its own block started. (Keeping the
    # first one on the object would be faster but wrong for a task spawned inside such a block.)
    def __enter__(self) -> _Op:
        try:
            operation = self._operation(None, None)
        except Exception as exc:
            report_internal_error(Operation.component, exc)
            operation = _NULL_OPERATION  # type: ignore[assignment]  # only when instrumentation failed
        else:
            operation._begin()
        _active.set((*_active.get(), (self, operation)))
        return operation

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        active = _active.get()
        if active and active[-1][0] is self:  # the usual case: the innermost block is this one's
            operation = active[-1][1]
            _active.set(active[:-1])
        else:
            for position in range(len(active) - 2, -1, -1):
                if active[position][0] is self:
                    operation = active[position][1]
                    _active.set(active[:position] + active[position + 1:])
                    break
            else:
                return
        if operation is not _NULL_OPERATION:
            operation._finish(exc)

    async def __aenter__(self) -> _Op:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)

    # --- decorator --------------------------------------------------------------------------------
    def __call__(self, function: _F) -> _F:
        if not callable(function):  # returned as is: using it fails in the user's code, as without us
            reject(Operation.component, "decorator.function", function, "a function")
            return function
        code_function = function_name(function)
        new = self._new

        if inspect.isgeneratorfunction(function):
            return decorate_generator(function, lambda args: _OperationSteps(new, args, code_function))
        if inspect.isasyncgenfunction(function):
            return decorate_async_generator(function, lambda args: _OperationSteps(new, args, code_function))
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                operation = new(args, code_function)
                if operation is None:
                    return await function(*args, **kwargs)
                try:
                    result = await function(*args, **kwargs)
                except BaseException as exc:
                    operation._finish(exc)
                    raise
                _succeed(operation, result)
                return result

            return cast(_F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            operation = new(args, code_function)
            if operation is None:
                return function(*args, **kwargs)
            try:
                result = function(*args, **kwargs)
            except BaseException as exc:
                operation._finish(exc)
                raise
            _succeed(operation, result)
            return result

        return cast(_F, wrapper)


class _OperationSteps:
    """A decorated generator's operation: started at its first step (under the consumer's context
    at that moment), current only while the generator runs, finished at its end."""

    __slots__ = ("_args", "_code_function", "_items", "_new", "_operation")

    def __init__(self, new: Callable[[tuple[Any, ...] | None, str | None], Operation | None],
                 args: tuple[Any, ...], code_function: str):
        self._new = new
        self._args = args
        self._code_function = code_function
        self._operation: Operation | None = None
        self._items = 0

    def start(self) -> Context:
        operation = self._operation = self._new(self._args, self._code_function)
        if operation is None:  # starting failed (and was reported): run bare
            return context.get_current()
        operation._detach()
        return trace.set_span_in_context(operation.span)

    def enter(self) -> None:
        if self._operation is not None:
            try:
                self._operation._entered()
            except Exception as exc:
                report_internal_error(self._operation.component, exc)

    def leave(self) -> None:
        if self._operation is not None:
            try:
                self._operation._exited()
            except Exception as exc:
                report_internal_error(self._operation.component, exc)

    def item(self, value: object) -> None:
        self._items += 1

    def done(self, exc: BaseException | None) -> None:
        operation = self._operation
        if operation is None:
            return
        try:
            operation._on_items(self._items)
        except Exception as stage_exc:
            report_internal_error(operation.component, stage_exc)
        operation._finish(None if isinstance(exc, GeneratorExit) else exc)  # closed early: no failure


def _exception_attributes(exc: BaseException, error: str) -> dict[str, str]:
    """The ``exception`` event of the SDK's ``record_exception`` without ``exception.escaped``
    (deprecated, and the SDK writes it as the string 'True'/'False')."""
    return {semconv.EXCEPTION_TYPE: error, semconv.EXCEPTION_MESSAGE: str(exc),
            semconv.EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exc))}


def _succeed(operation: Operation, result: Any) -> None:
    try:
        operation._on_result(result)
    except Exception as exc:
        report_internal_error(operation.component, exc)
    operation._finish(None)


class _NullOperation(Operation):
    """Stand-in handle when starting the real one failed (non-pytest): every method is a no-op."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return _noop


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


_NULL_OPERATION = _NullOperation()
