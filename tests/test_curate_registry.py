"""The curation sources share one signature and one registry (curate/sources.py) that the recipe check and
the pipeline both read."""

from __future__ import annotations

import inspect
import json
import typing

import pytest

from lima_align.curate import pipeline, sources
from lima_align.curate.config import CurateRecipe
from lima_align.curate.existing import DatasetsConfig
from lima_align.curate.sources import SOURCES, Source
from lima_align.errors import ProblemList

SOURCE_MODULES = [m for m in vars(sources).values() if inspect.ismodule(m) and m.__name__.startswith("lima_align.")]


def test_every_source_module_has_the_shared_signature_and_a_registry_entry():
    registered = {src.read.__module__ for src in SOURCES.values()}
    modules = {m.__name__ for m in SOURCE_MODULES if hasattr(m, "read")}
    assert modules == registered and len(registered) == 4
    for src in SOURCES.values():
        assert list(inspect.signature(src.read).parameters) == ["cfg", "run"]
        assert list(inspect.signature(src.input_files).parameters) == ["cfg"]


def test_the_recipe_has_one_section_per_registered_source_of_its_settings_type():
    hints = typing.get_type_hints(CurateRecipe)
    source_sections = [k for k, t in hints.items() if any(t is s.config for s in SOURCES.values())]
    assert source_sections == list(SOURCES)
    assert all(hints[key] is src.config for key, src in SOURCES.items())


def test_the_recipe_check_reads_the_registry(monkeypatch):
    problems = ProblemList()
    CurateRecipe().check(problems)
    (no_input,) = [p for p in problems.problems if "no input" in p.what]
    assert all(f"{key}.paths" in no_input.fix for key in SOURCES)
    # a source whose settings count as input, though it has no paths: the check asks the registry
    monkeypatch.setitem(SOURCES, "datasets", Source("dataset", DatasetsConfig, SOURCES["datasets"].read,
                                                    SOURCES["datasets"].input_files, has_input=lambda cfg: True))
    problems = ProblemList()
    CurateRecipe().check(problems)
    assert not [p for p in problems.problems if "no input" in p.what]


def test_limits_of_a_registered_source_are_checked():
    problems = ProblemList()
    recipe = CurateRecipe()
    recipe.stackexchange.title.min_chars = 200  # above max_chars 150
    recipe.check(problems)
    assert any(p.where == "stackexchange.title.min_chars" for p in problems.problems)


def test_the_pipeline_reads_every_registered_source_in_order(tmp_path, monkeypatch):
    calls = []

    def fake(name):
        def read(cfg, run):
            calls.append(name)
            run.counts.seen[name] += 1
            run.counts.kept[name] += 1
            yield {"id": f"{name}:1", "source": name, "meta": {"source": name},
                   "messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a."}]}
        return read

    for key, src in list(SOURCES.items()):
        monkeypatch.setitem(SOURCES, key, Source(src.name, src.config, fake(key), lambda cfg: [],
                                                 has_input=lambda cfg: True))
    recipe = CurateRecipe(output_dir=str(tmp_path / "out"), report=False)
    out = pipeline.run_curate(recipe, candidates_only=True)
    assert calls == list(SOURCES)
    ids = [json.loads(line)["id"] for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert ids == [f"{key}:1" for key in SOURCES]


@pytest.mark.parametrize("key", list(SOURCES))
def test_an_empty_section_reads_nothing_and_has_no_files(key):
    from lima_align.curate.inputs import BadRows
    from lima_align.curate.rules import RuleCounts, SourceRun

    src = SOURCES[key]
    cfg = src.config()
    assert not src.has_input(cfg)
    assert list(src.read(cfg, SourceRun(0, RuleCounts(), BadRows()))) == []
    assert src.input_files(cfg) == []
