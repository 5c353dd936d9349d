"""Scenarios driven inside one process each: the span flood, bad values, helper misuse."""

from __future__ import annotations

from pathlib import Path

from tests.reliability import badvalues, flood, misuse
from tests.reliability.faults import FileCollector
from tests.reliability.harness import settle
from tests.reliability.results import Accounting, Result

__all__ = ["RSS_GROWTH_BOUND_MB", "bad_values", "helper_misuse", "span_flood"]

RSS_GROWTH_BOUND_MB = 100.0


def span_flood(work: Path, quick: bool) -> Result:
    total = 50_000 if quick else 1_000_000
    result = Result(f"{total:,}-span flood",
                    f"{total:,} spans ended as fast as {flood.THREADS} threads can in one process (sampling off, "
                    "default queue of 2048), exported over gRPC to the real collector",
                    bound_seconds=60 if quick else 420)
    collector = FileCollector(work / "collector")
    collector.start()
    try:
        outcome = flood.run(collector.endpoint("grpc"), total, work, timeout=result.bound_seconds)
        counted = {reason: int(n) for reason, n in outcome["dropped"].items()}
        traces_file = collector.runs[0] / "traces.jsonl"

        def landed() -> bool:
            return flood.exported_spans(traces_file) + sum(counted.values()) >= total

        settle(landed, 30, interval=0.5)  # else the accounting shows the gap
        exported = flood.exported_spans(traces_file)
        growth = outcome["rss_peak_mb"] - outcome["rss_baseline_mb"]
        result.load = (f"{total:,} spans in {outcome['seconds']:.1f} s "
                       f"({total / max(outcome['seconds'], 0.001):,.0f} spans/s)")
        result.faults = ["producers outpace the export thread: the bounded queue fills"]
        result.accounting = [Accounting("traces", total, exported, counted)]
        result.check("the driver exited cleanly", outcome["returncode"] == 0 and not outcome["tracebacks"],
                     f"return code {outcome['returncode']}, {outcome['tracebacks']} tracebacks")
        result.check(f"RSS growth within {RSS_GROWTH_BOUND_MB:.0f} MB (queue budget holds)",
                     growth <= RSS_GROWTH_BOUND_MB,
                     f"{outcome['rss_baseline_mb']:.0f} MB -> peak {outcome['rss_peak_mb']:.0f} MB (+{growth:.1f} MB)")
        result.check("force_flush completed", bool(outcome["flushed"]), str(outcome["flushed"]))
        result.check_accounting(("traces",))
    finally:
        collector.stop()
    return result


def bad_values(work: Path, quick: bool) -> Result:
    cases = badvalues.bad_values(quick)
    result = Result("bad values for every variable" + (" (quick subset)" if quick else ""),
                    f"{len(cases)} app starts, each with one bad value: otel_crm's settings registry and the "
                    "standard OTEL_* variables the SDK declares; one request, SIGTERM",
                    bound_seconds=90 if quick else 240)
    collector = FileCollector(work / "collector")
    collector.start()
    try:
        outcomes = badvalues.try_all(work, cases, collector.endpoint("grpc"))
    finally:
        collector.stop()
    result.load = f"{len(outcomes)} starts, one request each"
    result.table = [o.row() for o in outcomes]
    for source in ("otel_crm", "standard"):
        mine = [o for o in outcomes if o.case.source == source]
        if not mine:
            continue
        bad = [o.case.variable for o in mine if not o.ok]
        result.check(f"{source} variables: the app starts, serves, records, exits cleanly, no traceback",
                     not bad, f"{len(mine) - len(bad)}/{len(mine)} survive"
                     + (f"; the host app noticed: {', '.join(bad)}" if bad else ""))
        for verdict, what in (("silent", "accepted without a line naming them"),
                              ("noisy", "named in more than one line")):
            found = [o.case.variable for o in mine if o.verdict == verdict]
            if found:
                result.notes.append(f"{source} variables {what} ({len(found)}): {', '.join(found)}")
    return result


def helper_misuse(work: Path, quick: bool) -> Result:
    cases = misuse.run(work)
    result = Result("helper misuse", f"{len(cases)} calls of the public helpers with wrong types, NaN, infinities, "
                    "huge token counts, in production mode (not under pytest)", bound_seconds=60)
    raised = [c for c in cases if c["raised"]]
    uncounted = [c for c in cases if c["invalid"] and c["counted"] < 1]
    priced = [c for c in cases if c["cost"]]
    result.load = f"{len(cases)} calls"
    result.table = [(f"`{c['call']}`", "**" + c["raised"] + "**" if c["raised"] else "no", str(int(c["counted"])),
                     "**yes**" if c["cost"] else "no",
                     "pass" if not c["raised"] and not c["cost"] and (c["counted"] >= 1 or not c["invalid"])
                     else "**FAIL**") for c in cases]
    result.check("no exception reached business code", not raised,
                 f"{len(cases) - len(raised)}/{len(cases)} calls returned normally"
                 + "".join(f"; {c['call']} raised {c['raised']}" for c in raised[:5]))
    result.check("every invalid call counted in crm.internal.errors", not uncounted,
                 f"{sum(1 for c in cases if c['invalid']) - len(uncounted)}/{sum(1 for c in cases if c['invalid'])}"
                 + "".join(f"; {c['call']} not counted" for c in uncounted[:5]))
    result.check("no cost recorded from invalid token counts", not priced,
                 "none" if not priced else ", ".join(c["call"] for c in priced))
    return result
