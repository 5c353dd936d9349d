"""What a scenario found: checks (each pass/fail), load held, faults, and per-signal accounting."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Accounting", "Check", "Result"]


@dataclass
class Accounting:
    """produced = exported + counted(reasons) is the invariant; `uncounted` is what breaks it."""

    signal: str
    produced: int | None
    exported: int
    counted: dict[str, int] = field(default_factory=dict)

    @property
    def counted_total(self) -> int:
        return sum(self.counted.values())

    @property
    def uncounted(self) -> int | None:
        if self.produced is None:
            return None
        return self.produced - self.exported - self.counted_total

    @property
    def exact(self) -> bool:
        return self.uncounted == 0

    def describe_counted(self) -> str:
        if not self.counted:
            return "0"
        parts = ", ".join(f"{reason} {n}" for reason, n in sorted(self.counted.items()) if n)
        return f"{self.counted_total} ({parts})" if parts else "0"


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Result:
    name: str
    what: str
    bound_seconds: float
    elapsed_seconds: float = 0.0
    load: str = ""
    faults: list[str] = field(default_factory=list)
    accounting: list[Accounting] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    table: list[tuple[str, ...]] = field(default_factory=list)  # per-case rows (bad values, misuse)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(what, bool(ok), detail))
        return bool(ok)

    def check_accounting(self, exact_signals: tuple[str, ...] = ("traces", "logs", "metrics")) -> None:
        """One check per signal whose production is known: produced = exported + counted."""
        for acc in self.accounting:
            if acc.produced is None or acc.signal not in exact_signals:
                continue
            self.check(f"{acc.signal}: produced = exported + counted", acc.exact,
                       f"{acc.produced} = {acc.exported} + {acc.counted_total}"
                       + ("" if acc.exact else f" ({acc.uncounted} uncounted)"))

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks) and self.elapsed_seconds <= self.bound_seconds

    def failed(self) -> list[str]:
        out = [f"{c.what}: {c.detail}" for c in self.checks if not c.ok]
        if self.elapsed_seconds > self.bound_seconds:
            out.append(f"took {self.elapsed_seconds:.1f}s, bound {self.bound_seconds:.0f}s")
        return out
