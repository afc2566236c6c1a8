"""What a section of `lima-align report` is: a function from the report's inputs to a Section (its HTML
fragment, its numbers for report.json and the charts it drew). report.SECTIONS lists them in page order;
judgments, dialogue, training runs and analysis summaries all plug in this way, so the page and
report.json are written once, from the inputs, and never edited afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple


@dataclass(frozen=True)
class ReportInputs:
    """Everything a section may read. `summary` is stats.summarize() over `records` (report.json's base);
    `shown` is its compact view for the page and `left_out` the note saying what that view leaves out."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    shown: dict[str, Any]
    left_out: str
    charts_dir: Path
    runs: list[Path] = field(default_factory=list)  # training run folders
    analyses: list[dict[str, Any]] = field(default_factory=list)  # `analyze shift/retention` summaries


class Section(NamedTuple):
    """html: a trusted fragment (every value in it escaped); data: keys added to report.json; charts: the
    names of the charts/NAME.png files it drew, listed under report.json's "charts"."""

    html: str
    data: dict[str, Any] = {}
    charts: tuple[str, ...] = ()
