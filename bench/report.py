"""Results of a scenario: values per system and repeat, medians, ratios, a Markdown table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.common import median


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str = ""
    better: Literal["higher", "lower"] | None = None
    digits: int = 1


@dataclass
class Result:
    scenario: str
    params: dict[str, Any]
    metrics: list[Metric]
    systems: list[str] = field(default_factory=list)
    values: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # the system the others are compared to, as other/it (None: jobrunner/peer)
    ratio_to: str | None = None

    def add(self, system: str, key: str, value: float | None) -> None:
        if system not in self.systems:
            self.systems.append(system)
        self.values.setdefault(system, {}).setdefault(key, []).append(value)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def median(self, system: str, key: str) -> float | None:
        return median(self.values.get(system, {}).get(key, []))

    def repeats(self, system: str, key: str) -> list[float | None]:
        return self.values.get(system, {}).get(key, [])

    def table(self) -> str:
        """Markdown: one row per metric, the median of each system, then jobrunner/peer
        (with `ratio_to`: each other system/that one)."""
        base = self.ratio_to or "jobrunner"
        others = [s for s in self.systems if s != base]
        ratios = others if base in self.systems else []
        pairs = [(p, base) if self.ratio_to else (base, p) for p in ratios]
        head = ["metric", *self.systems, *(f"{a}/{b}" for a, b in pairs)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in self.metrics:
            if not any(self.repeats(s, m.key) for s in self.systems):
                continue
            label = f"{m.label} ({m.unit})" if m.unit else m.label
            cells = [label]
            for s in self.systems:
                cells.append(_fmt(self.median(s, m.key), m.digits))
            for x, y in pairs:
                a, b = self.median(x, m.key), self.median(y, m.key)
                cells.append(f"{a / b:.2f}x" if a is not None and b else "")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def render(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        out = [f"### {self.scenario}", "", f"Parameters: {params}.", "", self.table()]
        if self.notes:
            out += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "params": self.params,
            "medians": {
                s: {m.key: self.median(s, m.key) for m in self.metrics} for s in self.systems
            },
            "values": self.values,
            "notes": self.notes,
            "extra": self.extra,
        }


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "n/a"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def dump(results: list[Result], path: str) -> None:
    with open(path, "w") as f:
        json.dump([r.to_json() for r in results], f, indent=2, default=str)
