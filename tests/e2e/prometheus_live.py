"""A real Prometheus server (Debian's `prometheus`, from `make promtool`) on loopback for the e2e tests.

It scrapes every second and evaluates the shipped rules every second. The alert rules are loaded
from a copy in which only the `for:` durations are shortened (the expressions are the shipped
ones, byte for byte); the recording rules are loaded as shipped.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.stack import CONFIGS, binary, http_get
from tests.support.processes import ManagedProcess, free_port, http_ok

__all__ = ["PrometheusProc", "shortened_for", "test_rule_files"]

_FOR = re.compile(r"^(\s+for:\s*)(\S+)\s*$", re.M)


def shortened_for(rules_text: str, duration: str) -> str:
    """The rules with every `for:` set to `duration`; nothing else changes."""
    return _FOR.sub(lambda m: f"{m.group(1)}{duration}", rules_text)


def test_rule_files(directory: Path, for_duration: str) -> list[Path]:
    shipped = CONFIGS / "prometheus"
    rules = directory / "rules.yaml"
    rules.write_text((shipped / "rules.yaml").read_text())
    alerts = directory / "alerts.yaml"
    alerts.write_text(shortened_for((shipped / "alerts.yaml").read_text(), for_duration))
    return [rules, alerts]


test_rule_files.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


@dataclass
class PrometheusProc:
    log_dir: Path
    scrape_configs: Sequence[Mapping[str, Any]]
    rule_files: Sequence[Path] = ()
    interval: str = "1s"
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusProc:
        config = {
            "global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                       "evaluation_interval": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": list(self.scrape_configs),
        }
        path = self.log_dir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        exe = binary("PROMETHEUS_BIN", "prometheus", "promtool")
        self.process = ManagedProcess("prometheus", [
            str(exe), f"--config.file={path}", f"--storage.tsdb.path={self.log_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"], log_dir=self.log_dir)
        self.process.wait_healthy(lambda: http_ok(f"{self.url}/-/ready"))
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def api(self, path: str, **params: str) -> Any:
        status, body = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=10)
        data = json.loads(body)
        assert status == 200 and data.get("status") == "success", f"{path} {params}: {status} {body[:500]!r}"
        return data["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; a PromQL error fails the test with the expression."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10)
        data = json.loads(body)
        assert status == 200 and data.get("status") == "success", f"{expr!r}: {data.get('error', body[:300])}"
        result = data["data"]["result"]
        return result if isinstance(result, list) else [{"metric": {}, "value": result}]

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["lastScrape"] != "0001-01-01T00:00:00Z" for t in active)

    def wait_for(self, expr: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                assert result, f"no data for {expr!r} after {timeout:.0f}s"
                return result
            time.sleep(0.5)
