"""What the bench found: figures (each with its ratio to the bare endpoint and its target) and checks."""
from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table


@dataclass
class Figure:
    scenario: str
    name: str
    value: float
    unit: str
    ratio: float | None = None  # to the bare endpoint's figure of the same kind
    ratio_of: str = ""
    target: str = ""
    met: bool | None = None
    reference: str = ""  # the Node/Express figure the issue quotes, where there is one
    spread: str = ""  # for a median of several runs: the runs' range
    load: str = "python"  # the load generator that made it: "python" (load.py) or "wrk"


@dataclass
class Report:
    quick: bool
    transport: str
    machine: dict
    figures: list[Figure] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, held, detail)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (scenario, why it did not run)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def check(self, what: str, held: bool, detail: str = "") -> None:
        self.checks.append((what, held, detail))

    def skip(self, scenario: str, why: str) -> None:
        self.skipped.append((scenario, why))

    @property
    def lost_nothing(self) -> bool:
        return all(held for _, held, _ in self.checks)


def memory_ratio(report: Report) -> None:
    """The bus's RSS after the most events over its RSS after the fewest (target <= 1.2x)."""
    bus = [f for f in report.figures if f.scenario == "memory" and f.name.startswith("bus ")]
    if len(bus) >= 2:
        ratio = bus[-1].value / bus[0].value
        bus[-1].ratio, bus[-1].ratio_of, bus[-1].target, bus[-1].met = ratio, "vs first figure", "<= 1.2x", ratio <= 1.2


def median_of(runs: list[float]) -> tuple[float, str]:
    """The median of several runs' figures, and their range as "min-max"."""
    ordered = sorted(runs)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return median, (f"{ordered[0]:,.1f}-{ordered[-1]:,.1f}" if len(ordered) > 1 else "one run")


def figures_table(report: Report) -> Table:
    mode = "quick" if report.quick else "full"
    table = Table(title=f"blogctl bench ({mode}, {report.transport}, {report.machine['cpus']} cores)",
                  title_justify="left")
    for column in ("scenario", "figure", "value", "ratio", "target", "load", "Node/Express (quoted)"):
        table.add_column(column, justify="right" if column in ("value", "ratio") else "left")
    for f in report.figures:
        ratio = f"{f.ratio:.2f}x {f.ratio_of}" if f.ratio is not None else ""
        target = f.target + (" ✓" if f.met else " ✗" if f.met is False else "")
        value = (f"{f.value:.2f}x" if f.unit == "x" else f"{f.value:,.1f} {f.unit}") + (f" ({f.spread})" if f.spread else "")
        table.add_row(f.scenario, f.name, value, ratio, target, f.load, f.reference)
    return table
