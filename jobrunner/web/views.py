"""What the dashboard's pages show, computed without a database or a request: the colour of
each outcome, a job's sparkline of recent runs, the slot timeline's rectangles, and the
overview's counts. Pure functions, unit tested."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobrunner.ledger import SlotReport
from jobrunner.records import LockRow, Run, WorkerRow

COLOURS = {
    "succeeded": "#2e9d4f",
    "failed": "#d33c3c",
    "timed_out": "#b8326e",
    "lost": "#8b1e1e",
    "cancelled": "#8a8a8a",
    "skipped": "#e0a31a",
    "queued": "#4a7fd1",
    "running": "#2f5fb3",
    "no row": "#f2c4c4",
    "unexpected": "#9c6ade",
}
ATTENTION = ("failed", "timed_out", "lost")  # outcomes the overview lists
TIMELINE_WIDTH = 1000.0  # the strip's viewBox width


@dataclass(frozen=True, kw_only=True)
class Mark:
    """One rectangle of a strip: x and width in viewBox units, its colour and hover text."""

    x: float
    width: float
    colour: str
    title: str


def colour_of(report: SlotReport) -> str:
    if report.state == "ran":
        return COLOURS.get(report.outcome or "", COLOURS["succeeded"])
    return COLOURS.get(report.state, COLOURS["no row"])


def slot_text(report: SlotReport, when: str) -> str:
    """The hover text of a slot: what happened and why, as `why` says it."""
    what = {
        "ran": f"ran: {report.outcome}",
        "skipped": f"skipped: {report.reason}",
    }.get(report.state, report.state)
    why = f" - {report.reason}" if report.reason and report.state != "skipped" else ""
    tries = f", {report.attempts} attempt(s)" if report.attempts > 1 else ""
    worker = f", on {report.worker}" if report.worker else ""
    return f"{when}: {what}{tries}{worker}{why}"


def timeline(
    reports: Sequence[SlotReport], start: datetime, end: datetime, label: Mapping[datetime, str]
) -> list[Mark]:
    """One mark per slot, placed by its time in [start, end]; each as wide as the gap to the
    next slot (at least a hair), so that a strip of minute slots reads as a bar."""
    span = max((end - start).total_seconds(), 1e-6)
    xs = [(r.slot - start).total_seconds() / span * TIMELINE_WIDTH for r in reports]
    marks = []
    for i, report in enumerate(reports):
        nxt = xs[i + 1] if i + 1 < len(xs) else TIMELINE_WIDTH
        width = max(min(nxt - xs[i], TIMELINE_WIDTH - xs[i]) * 0.85, 0.8)
        text = slot_text(report, label.get(report.slot, report.slot.isoformat()))
        marks.append(Mark(x=max(xs[i], 0.0), width=width, colour=colour_of(report), title=text))
    return marks


def sparkline(runs: Sequence[Run]) -> list[Mark]:
    """The job's recent runs, oldest left: one square each (status colour, id and status)."""
    ordered = sorted(runs, key=lambda r: r.id)
    return [
        Mark(
            x=i * 7.0, width=6.0, colour=COLOURS.get(r.status, "#ccc"), title=f"#{r.id} {r.status}"
        )
        for i, r in enumerate(ordered)
    ]


def depth_by_queue(depth: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Due queued runs per queue (the priority classes added up)."""
    out: dict[str, int] = {}
    for (queue, _), n in depth.items():
        out[queue] = out.get(queue, 0) + n
    return dict(sorted(out.items()))


def attention(groups: Iterable[Sequence[Run]], limit: int = 10) -> list[Run]:
    """The newest failed, timed out and lost runs of several lists, newest first."""
    merged = {r.id: r for runs in groups for r in runs}
    return sorted(merged.values(), key=lambda r: r.id, reverse=True)[:limit]


def skewed(workers: Sequence[WorkerRow]) -> set[str]:
    """Workers whose config hash differs from the one most live workers run: a rolling
    deploy in progress, or a replica started with another file."""
    counts: dict[str, int] = {}
    for w in workers:
        counts[w.config_hash] = counts.get(w.config_hash, 0) + 1
    if len(counts) < 2:
        return set()
    common = max(counts, key=lambda h: (counts[h], h))
    return {w.worker_id for w in workers if w.config_hash != common}


def lease_left(lock: LockRow, now: datetime) -> str:
    if lock.expires_at is None or lock.worker_id is None:
        return "released"
    left = (lock.expires_at - now).total_seconds()
    return f"{left:.1f}s left" if left >= 0 else f"expired {-left:.1f}s ago"


def duration_text(run: Run) -> str:
    if run.started_at is None:
        return "-"
    end = run.finished_at
    if end is None:
        return "running"
    seconds = (end - run.started_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else str(timedelta(seconds=round(seconds)))
