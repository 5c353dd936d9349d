"""Work that waits for a module: run it when the app imports the module, right after the module's
own code ran and before the importing statement gets it (at once if it is already imported).

Startup cost: patching Django, or loading the SQLAlchemy or requests instrumentation, imports that
library (about 0.1 to 0.3 s of CPU each). Waiting for the app's own import means an app that never
uses a library never pays for it, and one that does gets the library patched before its first use,
as when it was patched eagerly (docs/bench-startup.md measures it).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from wrapt import register_post_import_hook

from otel_crm._internal.safety import guard

__all__ = ["when_imported"]


def when_imported(module: str, component: str, action: Callable[[], object]) -> None:
    """Run `action` once `module` is imported; what it raises is reported under `component` and
    never reaches the app's import statement (under pytest it propagates, as every guard does)."""

    def hook(_module: ModuleType) -> None:
        with guard(component):
            action()

    register_post_import_hook(hook, module)
