"""pytest plugin for benchmarks/mutation.py: the tests' tiny random models are built once, not once per mutant,
and each mutant's tests run fastest first.

mutmut runs every mutant in a fresh forked pytest session, so each session-scoped model fixture
(`tiny_gemma`, `tiny_llama` in tests/conftest.py) would be rebuilt for every mutant: tokenizer
training and model creation cost about as much as the tests themselves. `build_model` is seeded and
deterministic, so this plugin wraps it: the first call for a (kind, seed) builds into
$LIMA_MUTATION_MODEL_CACHE, later calls copy that folder to where the fixture asked for it.

mutmut hands pytest a mutant's tests as a set (in no useful order) and stops at the first failure, so a
killed mutant costs the tests that ran before the one that failed. Running them by the durations mutmut
measured (mutmut-stats.json) puts the many fast, specific tests before the few slow end-to-end runs.

mutmut learns which tests reach a function by recording calls while each test runs, setup included, so a
module- or session-scoped fixture's calls count for the first test that uses it only: the 12 tests that read
test_train_mutants.py's one watched training run were never run against a mutant of `train()`. During
mutmut's stats run this plugin credits those calls to every test that uses the fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest


def _cached(build):
    cache = Path(os.environ["LIMA_MUTATION_MODEL_CACHE"])

    def build_model(out: Path, kind: str = "gemma3", seed: int = 0) -> Path:
        built = cache / f"{kind}-{seed}"
        if not built.exists():
            tmp = cache / f".{kind}-{seed}-{os.getpid()}"
            build(tmp, kind, seed)
            tmp.rename(built)
        shutil.copytree(built, out, dirs_exist_ok=True)
        return out

    build_model.__wrapped__ = build
    return build_model


def pytest_collection_finish(session) -> None:
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__file__", None) or ""
        fn = getattr(mod, "build_model", None)
        if path.endswith(os.path.join("tests", "conftest.py")) and fn is not None and not hasattr(fn, "__wrapped__"):
            mod.build_model = _cached(fn)


def pytest_collection_modifyitems(session, config, items) -> None:
    stats = Path("mutmut-stats.json")  # (the working folder is mutants/, where mutmut keeps it)
    if not stats.exists():  # the stats run itself: collection order
        return
    durations = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid.removeprefix("mutants/"), float("inf")))


def _stats_hits() -> set[str] | None:
    """mutmut's set of functions reached by the running test, during its stats run only."""
    if os.environ.get("MUTANT_UNDER_TEST") != "stats":
        return None
    from mutmut.state import state

    return state()._stats


_reached: dict[tuple[str, str], set[str]] = {}  # (fixture name, where it is defined) -> functions its setup reached


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    hits = _stats_hits()
    if hits is None or fixturedef.scope == "function":  # (a function fixture runs again for every test)
        yield
        return
    before = set(hits)
    hits.clear()
    try:
        yield
    finally:
        _reached[(fixturedef.argname, fixturedef.baseid)] = set(hits)
        hits.update(before)


@pytest.hookimpl(tryfirst=True)  # before mutmut's own teardown hook files the test's hits
def pytest_runtest_teardown(item, nextitem) -> None:
    hits = _stats_hits()
    if hits is None:
        return
    for (name, baseid), reached in _reached.items():
        if name in item.fixturenames and item.nodeid.startswith(baseid):
            hits.update(reached)
