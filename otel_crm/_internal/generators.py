"""Decorating generator functions: the decorated context is current only while the generator runs.

A decorator that simply wraps the call would end its span (or leave its tenant) the moment the
generator object is created, before any of its body runs. Attaching at the first step and
detaching at the last would be worse: between two steps the *consumer's* code runs, and it would
see the generator's span and tenant as its own. So the context is attached before each step of
the inner generator and detached right after it, in the same frame: every attach is paired with
its detach in one context, even when the generator is closed by the garbage collector or, for
async generators, finalized in another task.

``send``, ``throw`` and ``close`` are forwarded like ``yield from`` does, so a decorated
generator behaves exactly like the undecorated one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any, Protocol

__all__ = ["Steps", "drive", "drive_async"]


class Steps(Protocol):
    """What a decorator does around the steps of a generator. None of these may raise."""

    def resume(self) -> object:
        """Before a step: make the decorator's context current; return a handle for `suspend`."""

    def suspend(self, handle: object) -> None:
        """After the step: undo `resume`."""

    def item(self, value: object) -> None:
        """The generator yielded `value`."""

    def done(self, exc: BaseException | None) -> None:
        """Once, at the end: None when exhausted, GeneratorExit when closed early, else the error."""


def drive(generator: Generator[Any, Any, Any], steps: Steps) -> Generator[Any, Any, Any]:
    """``yield from generator``, with `steps` around each step of it."""
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            handle = steps.resume()
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
                steps.suspend(handle)
            steps.item(value)
            try:
                to_send = yield value
            except GeneratorExit:
                handle = steps.resume()
                try:
                    generator.close()
                finally:
                    steps.suspend(handle)
                raise
            except BaseException as exc:  # the consumer threw into us: pass it on
                to_throw = exc
    except BaseException as exc:
        steps.done(exc)
        raise
    steps.done(None)
    return result


async def drive_async(generator: AsyncGenerator[Any, Any], steps: Steps) -> AsyncGenerator[Any, Any]:
    """The same for an async generator."""
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            handle = steps.resume()
            try:
                if to_throw is not None:
                    thrown, to_throw = to_throw, None
                    value = await generator.athrow(thrown)
                else:
                    value = await generator.asend(to_send)
            except StopAsyncIteration:
                break
            finally:
                steps.suspend(handle)
            steps.item(value)
            try:
                to_send = yield value
            except GeneratorExit:
                handle = steps.resume()
                try:
                    await generator.aclose()
                finally:
                    steps.suspend(handle)
                raise
            except BaseException as exc:
                to_throw = exc
    except BaseException as exc:
        steps.done(exc)
        raise
    steps.done(None)
