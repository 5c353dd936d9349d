"""Regenerate the README tables that come from code (the settings registry, the crm.* attributes).

    python scripts/readme_tables.py          # rewrite README.md in place
    python scripts/readme_tables.py --check  # exit 1 if README.md is stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from otel_crm._internal.settings import registry_markdown
from otel_crm.cli import attributes_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
TABLES = {"settings-table": registry_markdown, "attributes-table": attributes_markdown}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + m.group(2), text)
    return text


def main() -> int:
    current = README.read_text()
    fresh = render(current)
    if "--check" in sys.argv:
        if fresh != current:
            print("README.md tables are stale: run `make readme-tables`")
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
