"""bench/_common.py's statistics and bench_requests.py's verdicts: the figures performance.md
states as met, missed or undecided."""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the bench scripts import their siblings by name
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


common = _load("_common")


@pytest.mark.parametrize(("n", "ranks"), [(6, (1, 6)), (9, (2, 8)), (10, (2, 9)), (12, (3, 10)), (20, (6, 15))])
def test_median_interval_takes_the_binomial_ranks(n: int, ranks: tuple[int, int]) -> None:
    # The textbook table of distribution-free 95% intervals for the median.
    assert common.median_ci(range(1, n + 1)) == ranks


def test_five_values_are_too_few_for_an_interval() -> None:
    with pytest.raises(ValueError, match="5 values are too few"):
        common.median_ci([1.0, 2.0, 3.0, 4.0, 5.0])


def test_median_interval_covers_the_true_median_at_least_95_percent_of_the_time() -> None:
    # Skewed noise (CPU time on a busy VM is), 9 rounds as the request bench runs them.
    rng = random.Random(15)
    true_median = 1.0  # of lognormvariate(0, sigma): e**0
    trials = 4000
    covered = 0
    for _ in range(trials):
        low, high = common.median_ci([rng.lognormvariate(0, 0.5) for _ in range(9)])
        covered += low <= true_median <= high
    assert covered / trials >= 0.945  # 96.1% exact for n = 9; the margin is sampling error


requests_bench = _load("bench_requests")


def test_the_verdict_meets_only_when_the_whole_interval_is_under_the_goal() -> None:
    assert requests_bench.judge([0.60, 0.62, 0.65, 0.66, 0.68, 0.70, 0.72, 0.74, 0.90], 0.75) == (
        "meets", "[0.62\u20130.74]")


def test_the_verdict_misses_only_when_the_whole_interval_is_above_the_goal() -> None:
    assert requests_bench.judge([0.70, 0.76, 0.78, 0.80, 0.81, 0.82, 0.83, 0.84, 0.85], 0.75)[0] == "misses"


def test_an_interval_across_the_goal_is_undecided_even_when_the_median_meets_it() -> None:
    verdict, interval = requests_bench.judge([0.60, 0.65, 0.70, 0.72, 0.73, 0.74, 0.76, 0.80, 0.85], 0.75)
    assert (verdict, interval) == ("undecided", "[0.65\u20130.80]")


def test_too_few_rounds_say_there_is_no_interval() -> None:
    assert requests_bench.judge([0.70, 0.71], 0.75) == ("meets, 2 rounds: no interval", "[—]")


def test_an_interval_ending_on_the_goal_meets_it_and_one_starting_on_it_does_not() -> None:
    assert requests_bench.judge([0.60, 0.70, 0.70, 0.70, 0.72, 0.74, 0.75, 0.75, 0.90], 0.75)[0] == "meets"
    assert requests_bench.judge([0.60, 0.75, 0.76, 0.77, 0.78, 0.79, 0.80, 0.81, 0.90], 0.75)[0] == "undecided"


def test_too_few_rounds_above_the_goal_miss_and_say_there_is_no_interval() -> None:
    assert requests_bench.judge([0.80, 0.90, 0.70], 0.75)[0] == "misses, 3 rounds: no interval"


def _results(ratios: list[float]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Rounds where otel_crm costs `ratio` times upstream on every path, bare half of upstream."""
    arms = {"bare": 0.5, "upstream-grpc": 1.0, "upstream-http": 1.0}
    results = {name: {"cpu_us": {p: [100.0 * f for _ in ratios] for p in requests_bench.PATHS}}
               for name, f in arms.items()}
    for name in ("otel_crm-grpc", "otel_crm-http"):
        results[name] = {"cpu_us": {p: [100.0 * r for r in ratios] for p in requests_bench.PATHS}}
    return results


def test_the_headline_states_the_median_round_ratio_its_interval_and_the_verdict() -> None:
    line = requests_bench.headline(_results([0.60, 0.62, 0.65, 0.66, 0.68, 0.70, 0.72, 0.74, 0.90]), "in-process CPU")
    assert line.startswith("in-process CPU: otel_crm/upstream 0.68x [0.62\u20130.74] gRPC (meets), "
                           "0.68x [0.62\u20130.74] HTTP (meets) (goal ≤ 0.75); otel_crm/bare 1.36x "
                           "[1.24\u20131.48] gRPC (meets)")


def test_the_headline_keeps_the_no_interval_warning() -> None:
    line = requests_bench.headline(_results([0.70, 0.72]), "in-process CPU")
    assert "0.71x [\u2014] gRPC (meets, 2 rounds: no interval)" in line


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's process CPU clock and /proc")
def test_a_servers_cpu_is_read_to_the_nanosecond_and_agrees_with_proc_stat() -> None:
    # The child spins for 0.3 s of CPU, then waits: read while it spins, compare once it waits.
    child = ("import sys, time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3: pass\n"
             "print('idle', flush=True)\nsys.stdin.readline()\n")
    busy = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        readings = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not readings or readings[-1] < 0.25):
            readings.append(requests_bench.proc_cpu_seconds(busy.pid))
        assert busy.stdout is not None and busy.stdout.readline() == b"idle\n"
        ticks = Path(f"/proc/{busy.pid}/stat").read_text().rsplit(")", 1)[1].split()
        from_stat = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
        now = requests_bench.proc_cpu_seconds(busy.pid)
        assert abs(now - from_stat) < 0.05 and now >= 0.3  # the same figure, finer
        steps = [b - a for a, b in itertools.pairwise(readings) if b > a]
        assert len(steps) > 30 and min(steps) < 0.005  # many readings in 0.3 s, not whole clock ticks (10 ms)
    finally:
        busy.kill()
        busy.wait()
