"""The fork-hook registry: named, guarded, independent, in os.register_at_fork's order."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap

import pytest

from otel_crm._internal import forks

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _run(code: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@fork_only
def test_hooks_run_in_order_each_guarded_and_replaced_by_name() -> None:
    out = _run("""
        import json, os
        from otel_crm._internal import forks, safety
        safety.reraise_internal_errors(False)
        log = []
        forks.register("a", before=lambda: log.append("before a"), after_in_parent=lambda: log.append("parent a"),
                       after_in_child=lambda: log.append("child a"))
        forks.register("b", before=lambda: log.append("before b"), after_in_child=lambda: 1 / 0)
        forks.register("c", after_in_child=lambda: log.append("old c"))
        forks.register("c", after_in_child=lambda: log.append("child c"))  # replaces, same place
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, json.dumps(log).encode())
            os._exit(0)
        os.close(write)
        child = json.loads(os.fdopen(read).read())
        os.waitpid(pid, 0)
        print(json.dumps({"child": child, "parent": log}))
    """)
    # before: reverse order; after: registration order; b's failure costs c nothing
    assert out["child"] == ["before b", "before a", "child a", "child c"]
    assert out["parent"] == ["before b", "before a", "parent a"]


@fork_only
def test_a_failing_hook_is_reported_once_as_a_fork_error() -> None:
    out = _run("""
        import json, logging, os
        from otel_crm._internal import forks, safety
        safety.reraise_internal_errors(True)  # even under pytest, the next hook must run
        lines = []
        class Keep(logging.Handler):
            def emit(self, record):
                lines.append(record.getMessage())
        logging.getLogger("otel_crm").addHandler(Keep())
        forks.register("broken", after_in_child=lambda: {}["missing"])
        forks.register("after it", after_in_child=lambda: lines.append("ran"))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, json.dumps(lines).encode())
            os._exit(0)
        os.close(write)
        child = json.loads(os.fdopen(read).read())
        os.waitpid(pid, 0)
        print(json.dumps(child))
    """)
    assert len(out) == 2 and "internal error in fork" in out[0] and "KeyError" in out[0] and out[1] == "ran"


def test_a_bound_method_is_held_weakly() -> None:
    class Buffer:
        def reset(self) -> None:
            pass

    buffer = Buffer()
    forks.register("test: weak buffer", after_in_child=buffer.reset)
    assert "test: weak buffer" in forks.registered()
    del buffer
    gc.collect()
    assert "test: weak buffer" not in forks.registered()


def test_a_replaced_hooks_object_dying_does_not_remove_its_successor() -> None:
    class Buffer:
        def reset(self) -> None:
            pass

    old, new = Buffer(), Buffer()
    forks.register("test: successor", after_in_child=old.reset)
    forks.register("test: successor", after_in_child=new.reset)
    del old
    gc.collect()
    assert "test: successor" in forks.registered()
    forks.unregister("test: successor")
    assert "test: successor" not in forks.registered()


def test_no_other_module_registers_fork_hooks_itself() -> None:
    from pathlib import Path

    import otel_crm

    package = Path(otel_crm.__file__).resolve().parent
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if "register_at_fork" in path.read_text() and path.name != "forks.py"]
    assert offenders == []
