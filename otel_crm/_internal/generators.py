"""Decorating generator functions: the decorated context is current only while the generator runs.

A decorator that simply wraps the call would end its span (or leave its tenant) the moment the
generator object is created, before any of its body runs. Attaching at the first step and
detaching at the last would be worse: between two steps the *consumer's* code runs, and it would
see the generator's span and tenant as its own.

So the generator gets a context of its own: built at its first step (the consumer's context at
that moment plus what the decorator adds), attached before each step and detached right after it,
in the same frame, so every attach is paired with its detach in one context, even when the
generator is closed by the garbage collector or, for async generators, finalized in another task.
What the generator's body attaches itself (a span, a tenant) is captured when it yields and
restored when it resumes, so a ``with`` block spanning a ``yield`` keeps working.

``send``, ``throw``, ``close`` and the return value pass through as with ``yield from``, and a
decorated generator function is still a generator (or async generator) function.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Protocol, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry.context import Context

__all__ = ["Steps", "decorate_async_generator", "decorate_generator"]

_F = TypeVar("_F", bound=Callable[..., Any])


class Steps(Protocol):
    """What a decorator does around a generator's steps. None of these may raise."""

    def start(self) -> Context:
        """At the first step, under the consumer's context: the context the generator runs in."""

    def enter(self) -> None:
        """Before each step, after the generator's context is attached (bookkeeping only)."""

    def leave(self) -> None:
        """After each step, before it is detached: undo `enter`."""

    def item(self, value: object) -> None:
        """The generator yielded `value`."""

    def done(self, exc: BaseException | None) -> None:
        """Once, at the end, in the generator's context: None when exhausted, GeneratorExit when
        closed early, else the error. Not called for a generator that never started."""


class _Runner:
    """One decorated generator's context and its attach/detach around each step."""

    __slots__ = ("_context", "_steps", "_token")

    def __init__(self, steps: Steps):
        self._steps = steps
        self._context: Context | None = None
        self._token: object = None

    def resume(self) -> None:
        if self._context is None:
            self._context = self._steps.start()
        self._token = otel_context.attach(self._context)
        self._steps.enter()

    def suspend(self) -> None:
        self._context = otel_context.get_current()  # with whatever the body attached itself
        self._steps.leave()
        otel_context.detach(self._token)  # type: ignore[arg-type]

    def done(self, exc: BaseException | None) -> None:
        if self._context is None:  # never started
            return
        token = otel_context.attach(self._context)
        try:
            self._steps.done(exc)
        finally:
            otel_context.detach(token)


def decorate_generator(function: _F, make_steps: Callable[[tuple[Any, ...]], Steps]) -> _F:
    """Wrap a generator function; `make_steps(args)` gives each call its steps."""

    @functools.wraps(function)
    def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
        generator: Generator[Any, Any, Any] = function(*args, **kwargs)
        runner = _Runner(make_steps(args))
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                runner.resume()
                try:
                    if to_throw is not None:
                        thrown, to_throw = to_throw, None
                        value = generator.throw(thrown)
                    else:
                        value = generator.send(to_send)
                except StopIteration as stop:
                    result = stop.value
                    break
                finally:
                    runner.suspend()
                runner._steps.item(value)
                try:
                    to_send = yield value
                except GeneratorExit:
                    runner.resume()
                    try:
                        generator.close()
                    finally:
                        runner.suspend()
                    raise
                except BaseException as exc:  # the consumer threw into us: pass it on
                    to_throw = exc
        except BaseException as exc:
            runner.done(exc)
            raise
        runner.done(None)
        return result

    return cast(_F, generator_wrapper)


def decorate_async_generator(function: _F, make_steps: Callable[[tuple[Any, ...]], Steps]) -> _F:
    """The same for an async generator function."""

    @functools.wraps(function)
    async def async_generator_wrapper(*args: Any, **kwargs: Any) -> Any:
        generator: AsyncGenerator[Any, Any] = function(*args, **kwargs)
        runner = _Runner(make_steps(args))
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                runner.resume()
                try:
                    if to_throw is not None:
                        thrown, to_throw = to_throw, None
                        value = await generator.athrow(thrown)
                    else:
                        value = await generator.asend(to_send)
                except StopAsyncIteration:
                    break
                finally:
                    runner.suspend()
                runner._steps.item(value)
                try:
                    to_send = yield value
                except GeneratorExit:
                    runner.resume()
                    try:
                        await generator.aclose()
                    finally:
                        runner.suspend()
                    raise
                except BaseException as exc:
                    to_throw = exc
        except BaseException as exc:
            runner.done(exc)
            raise
        runner.done(None)

    return cast(_F, async_generator_wrapper)
