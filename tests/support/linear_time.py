"""Linear-time checks that hold on any machine.

A fixed CPU budget for 1 MB fails on a slower machine though nothing broke (CI once measured 1.01 s
against a 1 s line that a 2-vCPU VM here met at 0.7-0.93 s). What "no input makes it slow" means is
*linear*: so the check compares the cost of 1 MB with the cost of 100 kB of the same input, in the
same run, on the same thread. Ten times the input costs 7-20x measured at rest: the cost per byte
steps up where the working set leaves the CPU caches (Python 3.10's doubled quotes in SQL: 90 ns/B up
to 140 kB, 250 ns/B from 160 kB on, flat after), and CI's four parallel unit runs on two cores push
that to 37x. A quadratic path costs 100x, so the line is 50x, and a failing measurement is taken
once more (best of both) before it counts, so that one descheduled run is not a failure. A generous
absolute bound stays, so that a linear but absurdly slow path fails too.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable

__all__ = ["ATTEMPTS", "LARGE", "MAX_GROWTH", "SMALL", "assert_linear", "cpu_seconds", "per_megabyte_bound"]

SMALL = 100_000
LARGE = 1_000_000
MAX_GROWTH = 50.0  # cost(LARGE) / cost(SMALL): linear is 7-37 measured, quadratic 100
ATTEMPTS = 2  # a quadratic path fails every attempt; noise rarely twice
_TIMER_SLACK = 0.02  # seconds: thread_time's granularity and a cold cache on small inputs


def per_megabyte_bound() -> float:
    """Seconds of CPU that 1 MB may cost at most. Python 3.10 has no possessive quantifiers:
    regex_compat's exact rewrite is linear but slower (1.05-1.1 s measured under load)."""
    return 3.0 if sys.version_info >= (3, 11) else 5.0


def cpu_seconds(work: Callable[[], object], repeat: int) -> float:
    """The best of `repeat` runs, in CPU seconds of this thread (other processes do not count),
    without the cyclic GC (a collection landing in one run is not the code's cost)."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.thread_time()
            work()
            best = min(best, time.thread_time() - start)
    finally:
        gc.enable()
    return best


def assert_linear(work: Callable[[str], object], make: Callable[[int], str], label: str) -> float:
    """Fail when `work` on `make(LARGE)` costs more than MAX_GROWTH times `make(SMALL)`, or more
    than the per-megabyte bound. Returns the large input's cost."""
    small_text, large_text = make(SMALL), make(LARGE)
    small = large = float("inf")
    for _ in range(ATTEMPTS):
        small = min(small, cpu_seconds(lambda: work(small_text), repeat=3))
        large = min(large, cpu_seconds(lambda: work(large_text), repeat=1))
        linear = large < MAX_GROWTH * small + _TIMER_SLACK
        if linear:
            break
    assert linear, (
        f"{label}: 1 MB cost {large:.3f}s of CPU, {large / max(small, 1e-9):.0f}x the {small:.4f}s "
        f"of 100 kB (linear is 7-37x, quadratic 100x)")
    bound = per_megabyte_bound()
    assert large < bound, f"{label}: {large:.2f}s of CPU for 1 MB (bound {bound} s)"
    return large
