"""`make reliability`: run every scenario (or those named), write docs/reliability.md.

    python -m tests.reliability.run [--quick] [--output docs/reliability.md] [scenario ...]

Exits 1 when a scenario failed (after writing the report: the failures are the findings).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.report import render
from tests.reliability.results import Result
from tests.reliability.scenarios import SCENARIOS, run_scenario
from tests.support.processes import ROOT

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the short bounds `make test` uses")
    parser.add_argument("--output", default=str(ROOT / "docs" / "reliability.md"))
    parser.add_argument("scenarios", nargs="*", help=f"any of: {', '.join(name for name, _ in SCENARIOS)}")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so each scenario's `finally` stops what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    names = args.scenarios or [name for name, _ in SCENARIOS]
    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="otel-crm-reliability-") as tmp:
        for name in names:
            print(f"reliability: {name} ...", flush=True)
            result = run_scenario(name, Path(tmp), args.quick)
            results.append(result)
            print(f"reliability: {name}: {'pass' if result.passed else 'FAIL'} in {result.elapsed_seconds:.0f} s"
                  + "".join(f"\n    - {failure}" for failure in result.failed()), flush=True)
    total = time.monotonic() - started
    Path(args.output).write_text(render(results, total_seconds=total, quick=args.quick))
    print(f"reliability: wrote {args.output} ({sum(r.passed for r in results)}/{len(results)} passed, {total:.0f} s)")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
