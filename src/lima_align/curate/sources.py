"""The curation sources, in the order the pipeline reads them; the recipe check (config.py) and the pipeline
(pipeline.py) both go through this registry.

Every source is a module with the same three parts: a settings dataclass (its recipe section),
`read(cfg, run: rules.SourceRun) -> Iterator[record]` and `input_files(cfg) -> list[Path]` (what the manifest
hashes). A new source is such a module, one entry here and its section in `config.CurateRecipe`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import existing, reddit, stackexchange, wikihow
from .rules import SourceRun


@dataclass(frozen=True)
class Source:
    name: str  # the source named in records, rule counts and the manifest's inputs
    config: type  # its settings: the recipe section's type
    read: Callable[[Any, SourceRun], Iterator[dict[str, Any]]]
    input_files: Callable[[Any], list[Path]]
    has_input: Callable[[Any], bool] = lambda cfg: bool(cfg.paths)
    # (shortest, longest) settings, dotted under the section, checked to be in order
    limits: tuple[tuple[str, str], ...] = ()


# recipe section -> source
SOURCES: dict[str, Source] = {
    "stackexchange": Source(stackexchange.SOURCE, stackexchange.StackExchangeConfig, stackexchange.read,
                            stackexchange.input_files,
                            limits=(("min_answer_chars", "max_answer_chars"), ("title.min_chars", "title.max_chars"))),
    "wikihow": Source(wikihow.SOURCE, wikihow.WikiHowConfig, wikihow.read, wikihow.input_files,
                      limits=(("min_chars", "max_chars"),)),
    "reddit": Source(reddit.SOURCE, reddit.RedditConfig, reddit.read, reddit.input_files,
                     limits=(("min_chars", "max_chars"),)),
    "datasets": Source(existing.SOURCE, existing.DatasetsConfig, existing.read, existing.input_files,
                       has_input=lambda cfg: bool(cfg.paths or cfg.hub)),
}
