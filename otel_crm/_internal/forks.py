"""One registry of fork hooks: what otel_crm does around fork() and renews in a forked child.

Only the forking thread survives fork(); a lock another thread held at that moment stays held
forever in the child, and state built for the parent (buffers, budgets, identity) is not the
child's. Every part of otel_crm that cares registers a *named* hook here, never with
``os.register_at_fork`` itself:

- each hook runs guarded: a failure is reported (``crm.internal.errors``, component ``fork``) and
  the other hooks still run;
- registering a name again replaces its hook (a re-created object does not pile hooks up);
- a bound method is held weakly: the hook goes away with its object (a processor per test);
- order is ``os.register_at_fork``'s: each name is handed to it once, when first registered, so
  ``before`` hooks run in reverse and ``after`` hooks in registration order, interleaved with the
  SDK's own hooks as if registered directly (the runtime's hooks, registered after its providers,
  run after the SDK has renewed the providers' locks).
"""

from __future__ import annotations

import functools
import inspect
import os
import weakref
from collections.abc import Callable
from typing import Literal

from otel_crm._internal.safety import report_internal_error

__all__ = ["Stage", "register", "registered", "unregister"]

Stage = Literal["before", "after_in_parent", "after_in_child"]
_Getter = Callable[[], Callable[[], object] | None]  # the hook's function, None once its object died


class _Hook:
    __slots__ = ("stages",)

    def __init__(self) -> None:
        self.stages: dict[Stage, _Getter] = {}


_hooks: dict[str, _Hook] = {}
_handed_to_os: set[tuple[str, Stage]] = set()


def register(name: str, *, before: Callable[[], object] | None = None,
             after_in_parent: Callable[[], object] | None = None,
             after_in_child: Callable[[], object] | None = None) -> None:
    """Run `before` just before fork(), `after_in_parent`/`after_in_child` just after it, under
    `name` (which replaces any hook registered under it before)."""
    hook = _Hook()
    stages: tuple[tuple[Stage, Callable[[], object] | None], ...] = (
        ("before", before), ("after_in_parent", after_in_parent), ("after_in_child", after_in_child))
    for stage, function in stages:
        if function is None:
            continue
        if inspect.ismethod(function):
            hook.stages[stage] = weakref.WeakMethod(function, functools.partial(_forget, name, hook))
        else:
            hook.stages[stage] = functools.partial(_same, function)
    _hooks[name] = hook
    for stage in hook.stages:
        if (name, stage) not in _handed_to_os and hasattr(os, "register_at_fork"):
            _handed_to_os.add((name, stage))
            run = functools.partial(_run, name, stage)
            if stage == "before":
                os.register_at_fork(before=run)
            elif stage == "after_in_parent":
                os.register_at_fork(after_in_parent=run)
            else:
                os.register_at_fork(after_in_child=run)


def unregister(name: str) -> None:
    _hooks.pop(name, None)


def registered() -> list[str]:
    """Names with a live hook, in registration order (for tests and `otel-crm doctor`)."""
    return [name for name, hook in list(_hooks.items())
            if any(getter() is not None for getter in hook.stages.values())]


def _same(function: Callable[[], object]) -> Callable[[], object]:
    return function


def _forget(name: str, hook: _Hook, _dead: object) -> None:
    if _hooks.get(name) is hook:  # not a newer hook registered under the same name
        _hooks.pop(name, None)


def _run(name: str, stage: Stage) -> None:
    hook = _hooks.get(name)
    getter = hook.stages.get(stage) if hook is not None else None
    function = getter() if getter is not None else None
    if function is None:
        return
    try:
        function()
    except Exception as exc:  # the next hook must still run: reported, never raised here
        report_internal_error("fork", exc, raise_in_tests=False)
