"""Run every `bench/bench_*.py`, then assemble `docs/performance.md` (what `make bench` does).

    .venv/bin/python bench/run_all.py                    # run all benches (~30+ min), then assemble
    .venv/bin/python bench/run_all.py --assemble-only    # rebuild docs/performance.md from docs/bench-*.md
    .venv/bin/python bench/run_all.py --only requests,sampler
    .venv/bin/python bench/run_all.py --only requests --instructions   # + request_instructions.py (~30 min)

Each bench writes its own `docs/bench-<name>.md` (`bench_<name>.py` -> `bench-<name>.md`); this script
runs them one after another (never in parallel: they would measure each other), then includes each
file, with its reproduce command, under one introduction and a goals-vs-measured table. A bench that
does not exist yet, or has never written its file, is listed as "not yet measured"; a bench that fails
keeps its previous file (marked as from an earlier run). `docs/collector.md` (collector build times
and load figures) is included when present, and `docs/performance-notes.md` (hand-written: the
optimisations and their measured effect) right after the goals table.

The summary table takes each bench's headline from an HTML comment `<!-- summary: ... -->` in its file
when there is one, else from its lines that state a goal, else it points to the section.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH, DOCS, PYTHON, ROOT, cpu_model

OUTPUT = DOCS / "performance.md"


@dataclass(frozen=True)
class Goal:
    bench: str
    what: str
    target: str


# Known benches, in report order; any other bench_*.py present is appended after them.
KNOWN = ("sampler", "requests", "startup", "helpers", "tenancy", "scrubbing")
TITLES = {"sampler": "Tail sampler", "requests": "Requests (Flask app)", "startup": "Startup",
          "helpers": "Business helpers",
          "tenancy": "Tenancy", "scrubbing": "Scrubbing"}
GOALS = (
    Goal("sampler", "tail sampler throughput vs bare BatchSpanProcessor", "≥ 1.1×"),
    Goal("requests", "Flask request (3 paths, 20 tenants, gRPC and HTTP export), otel_crm vs upstream distro "
         "(always-on) / vs uninstrumented", "≤ 0.75× upstream; ≤ 1.6× uninstrumented (moonshot)"),
    Goal("startup", "startup (`opentelemetry-instrument` + Flask app), otel_crm vs upstream distro", "≤ 1.0×"),
    Goal("helpers", "business helpers vs hand-written spans", "≤ 1.1× raw spans"),
    Goal("tenancy", "tenant attribution cost", "cost ratio reported"),
    Goal("scrubbing", "scrubbing cost per span / log record", "cost ratio reported"),
)


@dataclass
class Outcome:
    name: str
    script: Path | None
    ran: bool = False
    ok: bool = False
    seconds: float = 0.0
    note: str = ""

    @property
    def doc(self) -> Path:
        return DOCS / f"bench-{self.name}.md"

    @property
    def reproduce(self) -> str:
        return f".venv/bin/python bench/bench_{self.name}.py"


def discover() -> dict[str, Outcome]:
    found = {p.stem[len("bench_"):]: p for p in sorted(BENCH.glob("bench_*.py"))}
    names = [n for n in KNOWN] + [n for n in found if n not in KNOWN]
    return {n: Outcome(n, found.get(n)) for n in names}


def run(outcome: Outcome, timeout: float, logdir: Path) -> None:
    assert outcome.script is not None
    log_path = logdir / f"bench-{outcome.name}.log"
    print(f"== {outcome.script.name} (log: {log_path})", flush=True)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.run([PYTHON, str(outcome.script)], cwd=str(ROOT), stdout=log,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
            outcome.ok = proc.returncode == 0
            outcome.note = "" if outcome.ok else f"exited with {proc.returncode}"
        except subprocess.TimeoutExpired:
            outcome.note = f"timed out after {timeout / 60:.0f} min"
    outcome.ran = True
    outcome.seconds = time.monotonic() - started
    status = "ok" if outcome.ok else f"FAILED ({outcome.note}); tail of its log:\n" + \
        log_path.read_text(errors="replace")[-2000:]
    print(f"   {outcome.seconds / 60:.1f} min, {status}", flush=True)


# --- assembling -------------------------------------------------------------------------------------

_SUMMARY = re.compile(r"<!--\s*summary:\s*(.*?)\s*-->", re.S)


def include(markdown: str) -> str:
    """A bench file under our own `## title`: drop its `#` title, shift its other headings down one
    level (`##` -> `###`), outside code fences."""
    body = markdown.strip().splitlines()
    if body and body[0].startswith("# "):
        body = body[1:]
    out, fenced = [], False
    for line in body:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(out).strip()


def headline(name: str, text: str) -> str:
    """The measured figure(s) for the summary table."""
    match = _SUMMARY.search(text)
    if match:
        return " ".join(match.group(1).split())
    picks: list[str] = []
    if name == "sampler":  # the tail arm's CPU-time throughput row, plus the bold ratio line
        for line in text.splitlines():
            if line.startswith("| TailSampling") and "| cpu |" in line:
                picks.append(f"tail {line.split('|')[3].strip()} spans/s (cpu)")
                break
    if name == "scrubbing":  # the typical (no secrets) rows of the first mode
        for line in text.splitlines():
            if "typical" in line and line.startswith("|"):
                cells = [c.strip() for c in line.strip("|").split("|")]
                picks.append(f"{cells[0]}: {cells[-1]}")
            if len(picks) == 2:
                break
    best: tuple[int, str] | None = None
    for line in text.splitlines():  # the line that states a result against a goal
        plain = line.replace("**", "").strip()
        if not re.search(r"\d(\.\d+)?\s*[x×]", plain) or plain.startswith("|"):
            continue
        score = (2 * ("**" in line) + 2 * bool(re.search(r"\b(meets?|misse[sd]|met|MISSED)\b", plain))
                 + bool(re.search(r"\bgoal\b", plain, re.I)) - 2 * bool(re.search(r"Goal:", plain)))
        if score >= 2 and (best is None or score > best[0]):
            best = (score, plain.split(" (medians")[0])
    if best is not None:
        picks.append(best[1])
    if not picks:
        for line in text.splitlines():
            bold = re.findall(r"\*\*(.+?)\*\*", line)
            if bold:
                picks.append(bold[0])
                break
    return "; ".join(picks) if picks else "see section"


def esc(cell: str) -> str:
    return cell.replace("|", "\\|")


def assemble(outcomes: dict[str, Outcome], run_started: str | None) -> str:
    sdk = _version("opentelemetry-sdk")
    lines = [
        "# Performance", "",
        "Generated by `bench/run_all.py` (`make bench`) from the `docs/bench-*.md` files each benchmark "
        "writes; edit those scripts, not this file.", "",
        # Assembled without running, the machine at hand is not the one that measured: say so.
        f"- **Machine**: `nproc` = {os.cpu_count()}, {cpu_model()}, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}); "
        f"opentelemetry-sdk {sdk}." if run_started else
        "- **Machine**: each section names the machine its own run used (this file was assembled with "
        "`--assemble-only`, without running a bench).",
        "- **Method**: every ratio is measured within one run of one script: the arms it compares run "
        "interleaved (order rotating or randomised per round) and the figures are medians over rounds, so "
        "drift and other load on the machine hit all arms alike. On a shared machine CPU-time figures are "
        "the steadier ones; each section says which clock it uses and the load average it saw.",
    ]
    if run_started:
        ran = [o for o in outcomes.values() if o.ran]
        lines.append(f"- **This run**: started {run_started}; "
                     + ", ".join(f"{o.name} {'ok' if o.ok else 'FAILED'} ({o.seconds / 60:.1f} min)" for o in ran)
                     + ("" if len(ran) == sum(o.script is not None for o in outcomes.values())
                        else "; the other sections are from each bench's own last run") + ".")
    lines += ["", "## Goals vs measured", "", "| goal | target | measured | section |", "|---|---|---|---|"]
    for goal in GOALS:
        outcome = outcomes.get(goal.bench)
        if outcome is not None and outcome.doc.exists():
            measured = headline(goal.bench, outcome.doc.read_text(encoding="utf-8"))
            if outcome.ran and not outcome.ok:
                measured += f" (from an earlier run: this run {outcome.note})"
        else:
            measured = "not yet measured"
        lines.append(f"| {esc(goal.what)} | {esc(goal.target)} | {esc(measured)} | "
                     f"[{TITLES.get(goal.bench, goal.bench)}](#{anchor(goal.bench)}) |")
    collector = DOCS / "collector.md"
    notes = DOCS / "performance-notes.md"
    lines.append(f"| collector build time and load | reported | "
                 f"{'see section' if collector.exists() else 'not yet measured'} | [Collector](#collector) |")
    if notes.exists():  # hand-written: what each optimisation changed, and what stands in the way
        lines += ["", include(notes.read_text(encoding="utf-8"))]
    for outcome in outcomes.values():
        title = TITLES.get(outcome.name, outcome.name)
        lines += ["", f"## {title}", "", f"Reproduce: `{outcome.reproduce}` (writes `docs/{outcome.doc.name}`).",
                  ""]
        if outcome.ran and not outcome.ok:
            lines += [f"**This run's `bench_{outcome.name}.py` {outcome.note}**; the figures below are from an "
                      "earlier run." if outcome.doc.exists() else f"**`bench_{outcome.name}.py` {outcome.note}.**",
                      ""]
        if outcome.doc.exists():
            lines.append(include(outcome.doc.read_text(encoding="utf-8")))
        elif outcome.script is None:
            lines.append(f"Not yet measured: `bench/bench_{outcome.name}.py` does not exist yet.")
        else:
            lines.append(f"Not yet measured: `bench/bench_{outcome.name}.py` has not written "
                         f"`docs/{outcome.doc.name}` yet.")
    instructions = DOCS / "bench-request-instructions.md"  # optional (`--instructions`): valgrind, slow
    if instructions.exists():
        lines += ["", "## Requests in instructions", "", include(instructions.read_text(encoding="utf-8"))]
    lines += ["", "## Collector", "", "Reproduce: `make collector-bench` (build times: `make collector`).", ""]
    if collector.exists():
        lines.append(include(collector.read_text(encoding="utf-8")))
    else:
        lines.append("Not yet measured: `docs/collector.md` does not exist yet.")
    return "\n".join(lines).rstrip() + "\n"


def anchor(name: str) -> str:
    title = TITLES.get(name, name).lower()
    return re.sub(r"[^a-z0-9 -]", "", title).replace(" ", "-")


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assemble-only", action="store_true", help="do not run; rebuild performance.md")
    parser.add_argument("--only", default="", help="comma-separated bench names to run (others: kept as is)")
    parser.add_argument("--timeout-min", type=float, default=60, help="per bench")
    parser.add_argument("--instructions", action="store_true", help="also run bench/request_instructions.py "
                        "(instructions per request under valgrind, ~30 min; not a default step)")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args()
    outcomes = discover()
    extra = Outcome("request-instructions", BENCH / "request_instructions.py")
    started = None
    if not args.assemble_only:
        started = time.strftime("%Y-%m-%d %H:%M %Z")
        only = {n.strip() for n in args.only.split(",") if n.strip()}
        logdir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"otel-crm-bench-{int(time.time())}"
        logdir.mkdir(parents=True, exist_ok=True)
        for outcome in outcomes.values():
            if outcome.script is None or (only and outcome.name not in only):
                continue
            run(outcome, args.timeout_min * 60, logdir)
        if args.instructions:
            run(extra, args.timeout_min * 60, logdir)
    DOCS.mkdir(exist_ok=True)
    Path(args.output).write_text(assemble(outcomes, started), encoding="utf-8")
    print(f"wrote {args.output}")
    failed = [o.name for o in (*outcomes.values(), extra) if o.ran and not o.ok]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
