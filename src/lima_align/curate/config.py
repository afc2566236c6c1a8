"""The curation recipe: which dumps to read, LIMA's per-record rules, dedup, selection and outputs.

Loaded like every recipe: `config.load_recipe(path, overrides, cls=CurateRecipe)`. Every rule has a
name (the `se_*`, `wh_*`, `rd_*` keys in the manifest) and each is switched or tuned in its source's
section, whose settings live with the source (stackexchange.py, wikihow.py, reddit.py, existing.py;
the registry is sources.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import setting
from ..errors import ProblemList
from ..recipe_loading import range_of
from .dedup import DedupConfig
from .existing import DatasetsConfig
from .reddit import RedditConfig
from .select import SelectConfig
from .sources import SOURCES
from .stackexchange import StackExchangeConfig
from .wikihow import WikiHowConfig


@dataclass
class CurateRecipe:
    output_dir: str = setting("runs/curate", "folder for candidates.jsonl, selected.jsonl, manifest.json, report.html")
    seed: int = setting(0, "seed for every random choice (prompt from title or body, selection)", at_least=0)
    on_error: Literal["skip", "fail"] = setting("skip", "bad rows: skip and record them in the manifest, or stop")
    max_bad_fraction: float = setting(0.01, "with on_error=skip, stop anyway when more than this share of a file's "
                                      "rows is bad", at_least=0, at_most=1)
    max_bad_rows: int = setting(10, "this many bad rows per file are always tolerated (small files)", at_least=0)
    stackexchange: StackExchangeConfig = field(default_factory=StackExchangeConfig,
                                               metadata={"help": "StackExchange dumps"})
    wikihow: WikiHowConfig = field(default_factory=WikiHowConfig, metadata={"help": "wikiHow dumps"})
    reddit: RedditConfig = field(default_factory=RedditConfig, metadata={"help": "Reddit Pushshift dumps"})
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig, metadata={"help": "existing datasets"})
    dedup: DedupConfig = field(default_factory=DedupConfig, metadata={"help": "exact and near-duplicate removal"})
    select: SelectConfig = field(default_factory=SelectConfig, metadata={"help": "selection strategy"})
    report: bool = setting(True, "write report.html and charts")

    def check(self, problems: ProblemList) -> None:
        sections = {key: getattr(self, key) for key in SOURCES}
        if not any(src.has_input(sections[key]) for key, src in SOURCES.items()):
            keys = [f"{key}.paths" for key in SOURCES]
            problems.add(keys[0], "no input: every source's paths are empty",
                         f"set {', '.join(keys[:-1])} or {keys[-1]}")
        # Loading checks each number against its range; a recipe built in Python skips loading, and
        # comparisons like `v <= 0` let NaN through, so the ranges are checked here again (NaN fails).
        _check_ranges(self, "", problems)
        for key, section in sections.items():
            _check_ranges(section, f"{key}.", problems)
            for f in dataclasses.fields(section):
                if dataclasses.is_dataclass(getattr(section, f.name)):
                    _check_ranges(getattr(section, f.name), f"{key}.{f.name}.", problems)
        for key, src in SOURCES.items():
            for low, high in src.limits:
                lo, hi = _dotted(sections[key], low), _dotted(sections[key], high)
                if lo > hi:
                    problems.add(f"{key}.{low}", f"({lo}) is above the maximum ({hi})", "swap the two values")
        self.dedup.check(problems, "dedup.")
        self.select.check(problems, "select.")


def _dotted(section: object, name: str) -> Any:
    for part in name.split("."):
        section = getattr(section, part)
    return section


def _check_ranges(section: object, prefix: str, problems: ProblemList) -> None:
    """The section's own numbers (not its subsections) outside their declared range, NaN included."""
    for f in dataclasses.fields(section):
        v, rng = getattr(section, f.name), range_of(f)
        if rng is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and v not in rng:
            problems.add(f"{prefix}{f.name}", f"must be {rng}, got {v}", f"use a value {rng}")
