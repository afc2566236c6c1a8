"""benchmarks/mutation.py and its pytest plugin: the settings a mutation run depends on.

A wrong test order or a timeout setting that silently falls back changes the measured kill rates (or
their cost by hours) without any error, so both are pinned here. Nothing here runs mutmut.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest


BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_mutants_tests_run_fastest_first_by_mutmuts_durations(tmp_path, monkeypatch):
    plugin = load("mutation_model_cache")
    items = [SimpleNamespace(nodeid=n) for n in ("tests/a.py::slow", "tests/a.py::unmeasured", "tests/b.py::fast",
                                                  "tests/a.py::middle")]
    monkeypatch.chdir(tmp_path)
    plugin.pytest_collection_modifyitems(None, None, items)  # no stats yet (mutmut's stats run): order kept
    assert [i.nodeid for i in items] == ["tests/a.py::slow", "tests/a.py::unmeasured", "tests/b.py::fast",
                                         "tests/a.py::middle"]
    (tmp_path / "mutmut-stats.json").write_text(json.dumps({"duration_by_test": {
        "tests/a.py::slow": 3.0, "tests/b.py::fast": 0.01, "tests/a.py::middle": 0.5}}))
    plugin.pytest_collection_modifyitems(None, None, items)
    assert [i.nodeid for i in items] == ["tests/b.py::fast", "tests/a.py::middle", "tests/a.py::slow",
                                         "tests/a.py::unmeasured"]


def test_a_timeout_setting_sticks_to_the_module_until_it_starts_afresh(tmp_path, monkeypatch):
    tool = load("mutation")
    monkeypatch.setattr(tool, "SCRATCH", tmp_path)

    def constant() -> float:
        line = next(x for x in (tmp_path / "packing" / "pyproject.toml").read_text().splitlines()
                    if x.startswith("timeout_constant"))
        return float(line.split("=")[1])

    tool.prepare("packing", fresh=True)
    assert constant() == 1.0  # mutmut's own default, so older verdicts stay valid
    tool.prepare("packing", fresh=False, timeout_constant=10.0)
    assert constant() == 10.0
    tool.prepare("packing", fresh=False)  # a later --resume without the option keeps the recheck's limit
    assert constant() == 10.0
    tool.prepare("packing", fresh=True)
    assert constant() == 1.0


def test_every_module_names_test_files_that_exist():
    tool = load("mutation")
    for module, (source, tests) in tool.MODULES.items():
        assert (tool.ROOT / source).is_file(), module
        for t in tests:
            if t.startswith("tests/"):  # (the others are pytest options such as --deselect)
                assert (tool.ROOT / t.split("::")[0]).is_file(), (module, t)


def test_a_shared_fixtures_calls_count_for_every_test_that_uses_it(monkeypatch):
    import sys

    plugin = load("mutation_model_cache")
    hits: set[str] = set()  # stands in for mutmut's record of the running test's calls
    monkeypatch.setitem(sys.modules, "mutmut.state", SimpleNamespace(state=lambda: SimpleNamespace(_stats=hits)))
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")

    def set_up(name, scope, baseid, calls):
        wrapper = plugin.pytest_fixture_setup(SimpleNamespace(argname=name, scope=scope, baseid=baseid), None)
        next(wrapper)
        hits.update(calls)
        with pytest.raises(StopIteration):
            next(wrapper)

    first = SimpleNamespace(nodeid="tests/test_a.py::first", fixturenames=["run", "tmp_path"])
    hits.add("lima_align.a.parse")  # called by the first test before the fixture was set up
    set_up("run", "module", "tests/test_a.py", {"lima_align.train.x_train"})
    set_up("tmp_path", "function", "", {"lima_align.a.helper"})
    plugin.pytest_runtest_teardown(first, None)
    assert hits == {"lima_align.a.parse", "lima_align.train.x_train", "lima_align.a.helper"}

    hits.clear()  # (mutmut files the hits and starts the next test afresh)
    later = SimpleNamespace(nodeid="tests/test_a.py::later", fixturenames=["run"])
    elsewhere = SimpleNamespace(nodeid="tests/test_b.py::other", fixturenames=["run"])  # another file's "run"
    plugin.pytest_runtest_teardown(later, None)
    assert hits == {"lima_align.train.x_train"}
    hits.clear()
    plugin.pytest_runtest_teardown(elsewhere, None)
    assert hits == set()

    monkeypatch.setenv("MUTANT_UNDER_TEST", "lima_align.train.x_train__mutmut_1")  # a mutant's run: nothing added
    plugin.pytest_runtest_teardown(later, None)
    assert hits == set()
