"""Regenerate the `tail_sampling` policies of the shipped collector configs from otel_crm's defaults.

    python scripts/collector_policy.py          # rewrite the generated blocks in place
    python scripts/collector_policy.py --check  # exit 1 if a shipped config is stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from otel_crm._internal.collector_policy import BEGIN_MARKER, END_MARKER, shipped_policies_block

CONFIGS = Path(__file__).resolve().parents[1] / "collector-config"
FILES = (CONFIGS / "otelcol.yaml", CONFIGS / "gateway" / "sampler.yaml")
BLOCK = re.compile(rf"^[ ]*{re.escape(BEGIN_MARKER)}.*?^[ ]*{re.escape(END_MARKER)}\n", re.S | re.M)


def render(text: str) -> str:
    if len(BLOCK.findall(text)) != 1:
        raise SystemExit("expected exactly one generated policies block")
    return BLOCK.sub(lambda _m: shipped_policies_block(), text)


def main() -> int:
    stale = []
    for path in FILES:
        current = path.read_text()
        fresh = render(current)
        if fresh != current:
            stale.append(path)
            if "--check" not in sys.argv:
                path.write_text(fresh)
    if stale and "--check" in sys.argv:
        print("stale tail_sampling policies in " + ", ".join(str(p) for p in stale)
              + ": run `python scripts/collector_policy.py`")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
