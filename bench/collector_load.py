"""Load benchmark (not a test) for the single-node collector config.

telemetrygen → otelcol-crm (collector-config/otelcol.yaml, all pipelines as shipped:
spanmetrics on 100% of spans, redaction, tail_sampling, batch) → Jaeger v2 (in-memory).
Everything runs on 127.0.0.1 on free ports, for a bounded time per run.

Measures, per run: spans/s accepted and refused (from the collector's own
`otelcol_receiver_accepted_spans` / `otelcol_receiver_refused_spans`), the collector's
peak RSS (VmHWM from /proc/<pid>/status), tail-sampling decisions and early drops.

    make collector-bench                       # or:
    .venv/bin/python bench/collector_load.py --duration 30 --write-doc docs/collector.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.stack import CONFIGS, CollectorProc, JaegerProc, metric_sum  # noqa: E402

BEGIN, END = "<!-- collector-load:begin -->", "<!-- collector-load:end -->"


def vm_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) // 1024  # MiB
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def counters(col: CollectorProc) -> dict[str, float]:
    s = col.self_metrics()
    return {
        "accepted": metric_sum(s, "otelcol_receiver_accepted_spans"),
        "refused": metric_sum(s, "otelcol_receiver_refused_spans"),
        "sampled": metric_sum(s, "otelcol_processor_tail_sampling_global_count_traces_sampled", sampled="true"),
        "not_sampled": metric_sum(s, "otelcol_processor_tail_sampling_global_count_traces_sampled", sampled="false"),
        "dropped_too_early": metric_sum(s, "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early"),
        "exported": metric_sum(s, "otelcol_exporter_sent_spans", exporter="otlp_grpc/jaeger"),
    }


def one_run(label: str, rate: float, workers: int, child_spans: int, *, duration: int, env: dict[str, str],
            telemetrygen: str, log_dir: Path) -> dict[str, object]:
    (log_dir / label).mkdir(parents=True)
    jaeger = JaegerProc(log_dir / label).start()
    col = CollectorProc(log_dir / label, CONFIGS / "otelcol.yaml",
                        extra_env={"JAEGER_OTLP_ENDPOINT": jaeger.otlp_endpoint, **env}).start()
    assert col.process is not None
    pid = col.process.proc.pid
    try:
        before = counters(col)
        cpu_before = cpu_seconds(pid)
        argv = [telemetrygen, "traces", "--otlp-endpoint", col.grpc_endpoint, "--otlp-insecure",
                "--duration", f"{duration}s", "--rate", str(rate), "--workers", str(workers),
                "--child-spans", str(child_spans), "--service", f"bench-{label}"]
        started = time.monotonic()
        peak_rss = 0
        with open(log_dir / label / "telemetrygen.log", "wb") as log:
            gen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            while gen.poll() is None:
                peak_rss = max(peak_rss, vm_status(pid).get("VmRSS", 0))
                time.sleep(0.5)
        elapsed = time.monotonic() - started
        after = counters(col)
        cpu = cpu_seconds(pid) - cpu_before
        status = vm_status(pid)
        # let pending tail-sampling decisions finish for the decision counters
        wait = float(re.sub(r"s$", "", env.get("OTELCOL_DECISION_WAIT", "30s"))) + 2
        time.sleep(wait)
        settled = counters(col)
    finally:
        col.stop()
        jaeger.stop()
    accepted = after["accepted"] - before["accepted"]
    refused = after["refused"] - before["refused"]
    return {
        "run": label,
        "telemetrygen": f"--rate {rate:g} --workers {workers} --child-spans {child_spans} --duration {duration}s",
        "seconds": round(elapsed, 1),
        "accepted_spans_per_s": round(accepted / elapsed),
        "refused_spans_per_s": round(refused / elapsed),
        "accepted_spans": int(accepted),
        "refused_spans": int(refused),
        "collector_cpu_cores": round(cpu / elapsed, 2),
        "memory_limit_mib": int(env["OTELCOL_MEMORY_LIMIT_MIB"]),
        "peak_rss_mib_sampled": peak_rss,
        "vm_hwm_mib": status.get("VmHWM", 0),
        "traces_sampled": int(settled["sampled"]),
        "traces_not_sampled": int(settled["not_sampled"]),
        "dropped_too_early": int(settled["dropped_too_early"]),
        "spans_exported_to_jaeger": int(settled["exported"]),
    }


def markdown(results: list[dict[str, object]], env: dict[str, str], duration: int) -> str:
    lines = [
        BEGIN,
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({platform.machine()}), "
        "telemetrygen, collector and Jaeger sharing the machine. Sink: Jaeger v2 in-memory "
        "(only tail-sampled traces reach it; telemetrygen spans are all OK and fast, so ≈ the 10% baseline).",
        f"Collector env: `{' '.join(f'{k}={v}' for k, v in env.items())}` (the `limited` run overrides "
        "the memory_limiter to 120/30 MiB and decision_wait to 30s to show it holding); each run "
        f"{duration} s. Unthrottled, it competes with the "
        "collector for the 2 cores, so the figure is a floor for the collector alone.",
        "",
        "| run | telemetrygen | memory_limiter limit | accepted spans/s | refused spans/s | collector CPU (cores) "
        "| peak RSS (VmHWM) | traces kept / decided | dropped too early |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        decided = int(r["traces_sampled"]) + int(r["traces_not_sampled"])  # type: ignore[call-overload]
        lines.append(f"| {r['run']} | `{r['telemetrygen']}` | {r['memory_limit_mib']} MiB | "
                     f"{r['accepted_spans_per_s']:,} | {r['refused_spans_per_s']:,} | {r['collector_cpu_cores']} | "
                     f"{r['vm_hwm_mib']} MiB | {r['traces_sampled']:,} / {decided:,} | {r['dropped_too_early']:,} |")
    lines += ["", "Reproduce: `make collector-bench` (= `.venv/bin/python bench/collector_load.py --write-doc "
              "docs/collector.md`).", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=30, help="seconds per run")
    ap.add_argument("--write-doc", type=Path, help="replace the collector-load block in this markdown file")
    args = ap.parse_args()
    telemetrygen = os.environ.get("TELEMETRYGEN_BIN") or str(ROOT / "build" / "telemetrygen")
    if not Path(telemetrygen).exists():
        sys.exit(f"{telemetrygen} missing: run `make telemetrygen`")
    env = {"OTELCOL_DECISION_WAIT": "10s", "OTELCOL_MEMORY_LIMIT_MIB": "512", "OTELCOL_MEMORY_SPIKE_MIB": "128",
           "OTELCOL_NUM_TRACES": "100000"}
    limited = {**env, "OTELCOL_MEMORY_LIMIT_MIB": "120", "OTELCOL_MEMORY_SPIKE_MIB": "30",
               "OTELCOL_DECISION_WAIT": "30s"}
    runs = [("rate-limited", 2500.0, 2, 4, env), ("unthrottled", 0.0, 2, 4, env), ("limited", 0.0, 2, 4, limited)]
    with tempfile.TemporaryDirectory(prefix="collector-load-") as tmp:
        results = [one_run(label, rate, workers, child, duration=args.duration, env=run_env,
                           telemetrygen=telemetrygen, log_dir=Path(tmp))
                   for label, rate, workers, child, run_env in runs]
    print(json.dumps(results, indent=2))
    block = markdown(results, env, args.duration)
    print(block)
    if args.write_doc:
        text = args.write_doc.read_text() if args.write_doc.exists() else ""
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        args.write_doc.write_text(text)


if __name__ == "__main__":
    main()
