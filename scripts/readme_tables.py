"""Regenerate the documentation tables that come from code (the settings registry, the crm.* attributes).

    python scripts/readme_tables.py          # rewrite the docs in place (`make readme-tables`)
    python scripts/readme_tables.py --check  # exit 1 if a generated table is stale

Each table lives once, between `<!-- NAME:start -->` / `<!-- NAME:end -->` markers: the settings in
docs/configuration.md, otel_crm's own attributes in docs/telemetry.md.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from otel_crm._internal.settings import registry_markdown
from otel_crm.cli import attributes_markdown

ROOT = Path(__file__).resolve().parents[1]
TABLES: dict[str, tuple[Path, Callable[[], str]]] = {
    "settings-table": (ROOT / "docs" / "configuration.md", registry_markdown),
    "attributes-table": (ROOT / "docs" / "telemetry.md", attributes_markdown),
}


def render(text: str, name: str, make: Callable[[], str]) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- {name}:start/end --> markers found")
    return pattern.sub(lambda m: m.group(1) + make() + m.group(2), text)


def main() -> int:
    stale = []
    for name, (path, make) in TABLES.items():
        current = path.read_text()
        fresh = render(current, name, make)
        if fresh != current:
            stale.append(path.relative_to(ROOT))
            if "--check" not in sys.argv:
                path.write_text(fresh)
    if stale and "--check" in sys.argv:
        print(f"generated tables are stale in {', '.join(map(str, stale))}: run `make readme-tables`")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
