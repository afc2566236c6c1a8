"""Mutation testing of lima-align's core modules with mutmut 3, one module at a time.

Run by hand (slow; nothing in CI calls it):

    pip install -e '.[mutation]'
    nice -n 19 python benchmarks/mutation.py decoding packing     # named modules, in order
    nice -n 19 python benchmarks/mutation.py --max-minutes 20 train
    nice -n 19 python benchmarks/mutation.py sampler --survivors     # after adding tests: survivors only

Each module gets its own scratch folder `.mutation/<module>/` holding links to src/ and tests/
and a pyproject.toml with a [tool.mutmut] table that mutates only that module and runs only the
test files listed for it in MODULES below (plus tests/test_<module>_mutants.py when it exists),
so a mutant costs seconds rather than the whole suite. mutmut copies the tree into
`.mutation/<module>/mutants/`, mutates it there and records each verdict in its .meta files;
after the run this script writes `.mutation/<module>/result.json` (counts and kill rate) and
`.mutation/<module>/survivors.txt` (the diff of every surviving mutant), and appends the row to
`.mutation/summary.json`.

The kill rate is (killed + timeout) / (killed + timeout + survived), a timeout counting as killed
(the tests did not pass); mutants no selected test reaches ("no tests") are reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutation"
MODEL_CACHES = SCRATCH / "model-caches"  # one folder per invocation; see mutation_model_cache.py

# module name -> (source file, the fast test files that exercise it). Slow-marked tests are
# deselected; test files that start servers, browsers or worker processes are left out on
# purpose (their code runs outside mutmut's forked test process, so they cannot kill mutants).
MODULES: dict[str, tuple[str, list[str]]] = {
    "decoding": ("src/lima_align/decoding.py", ["tests/test_generate.py"]),
    "sampler": ("src/lima_align/sampler.py", ["tests/test_generate.py"]),
    "packing": ("src/lima_align/packing.py", ["tests/test_packing.py"]),
    "jsonl": ("src/lima_align/jsonl.py", ["tests/test_jsonl.py"]),
    # the CLI test that trains a LoRA run and chats with it costs 4.5 s of each mutant's ~5 s and checks what
    # test_turns.py's checkpoint tests check directly, so it is left out here
    "turns": ("src/lima_align/turns.py", [
        "tests/test_turns.py", "tests/test_packing.py",
        "--deselect", "tests/test_turns.py::test_chat_on_a_lora_checkpoint_describes_its_eos_truthfully"]),
    "stats": ("src/lima_align/stats.py", ["tests/test_stats.py"]),
    # test_loss.py and test_packing.py call no function of train.py (loss.py owns TrainedPositionLoss);
    # test_tracking.py checks what train() hands the trackers, a resumed run included
    "train": ("src/lima_align/train.py", ["tests/test_train.py", "tests/test_train_reference.py",
                                          "tests/test_tracking.py"]),
    # test_scale_generate: the vLLM path and the static cache (in-process, a fake vllm module); the two
    # trimming tests of test_serve_hardening use no server. The refused-long-prompt test (24 s of the file's
    # ~40 s: a 400-token prompt answered in full) is left out; test_generate_mutants.py checks the same
    # batching and refusal on a shrunken context in under a second.
    "generate": ("src/lima_align/generate.py", [
        "tests/test_generate.py", "tests/test_scale_generate.py",
        "tests/test_serve_hardening.py::test_trimming_drops_the_same_turns_as_dropping_pairs_one_by_one",
        "tests/test_serve_hardening.py::test_trimming_renders_the_prompt_a_few_times_not_once_per_dropped_pair",
        "--deselect",
        "tests/test_generate.py::test_a_prompt_that_leaves_no_room_for_the_answer_is_refused_not_shortened"]),
    "judge": ("src/lima_align/judge.py", ["tests/test_judge.py"]),
    # serve's tests run uvicorn in a thread of the test process itself, so they reach the mutants
    "serve": ("src/lima_align/serve.py", ["tests/test_serve.py", "tests/test_serve_hardening.py"]),
    "serve_protocol": ("src/lima_align/serve_protocol.py", ["tests/test_serve.py", "tests/test_serve_hardening.py"]),
    # the routes and sessions tests drive the app through TestClient, in the test process, so they reach the mutants
    "app": ("src/lima_align/annotate/app.py", ["tests/test_annotate_app.py", "tests/test_annotate_turns.py",
                                               "tests/test_annotate_routes.py", "tests/test_annotate_sessions.py"]),
}

# One thread per test process: the machine is shared, and mutmut runs one mutant at a time here.
QUIET_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# `mutmut show NAME` for many mutants in one process (one `mutmut show` each costs a second of imports).
SHOW_DIFFS = """
import sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
for name in sys.argv[1:]:
    print(f"# {name}: survived")
    print(get_diff_for_mutant(name, path=find_mutant(name).path))
    print()
"""


def test_files(module: str) -> list[str]:
    files = list(MODULES[module][1])
    extra = f"tests/test_{module}_mutants.py"
    if (ROOT / extra).exists():
        files.append(extra)
    return files


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(module: str, fresh: bool, timeout_constant: float | None = None) -> Path:
    work = SCRATCH / module
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    # The timeout setting sticks to the module's folder: mutmut re-runs every timed-out mutant whenever it
    # changes, so a --resume without the option must not fall back to the default and undo a recheck.
    settings_path = work / "settings.json"
    settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
    if timeout_constant is not None:
        settings["timeout_constant"] = timeout_constant
    settings_path.write_text(json.dumps(settings) + "\n")
    for name in ("src", "tests"):
        link = work / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    source, _ = MODULES[module]
    table = "\n".join([
        "",
        "[tool.mutmut]",
        'source_paths = ["src"]',
        f"only_mutate = {toml_list([source])}",
        f"pytest_add_cli_args_test_selection = {toml_list(test_files(module))}",
        'pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider", "-p", "mutation_model_cache", "-q", "-x"]',
        # torch is not fork-safe once it has run work in the parent: fork every mutant from a
        # clean server that only imported and collected the tests.
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        # a mutant that loops forever (a binary search that stops narrowing) is stopped after 3x its tests'
        # CPU time (mutmut's default of 15x let one such mutant hold the run for half an hour)
        "timeout_multiplier = 3.0",
        # mutmut's CPU-time limit is (tests' measured call time + this) x 3 x 2: the call time leaves out
        # fixture setup and model loading, so with mutmut's 1 s some mutants of the model modules that only
        # ran slowly were counted as timeouts (generate.py: 3 of 46 passed every test without the limit)
        f"timeout_constant = {settings.get('timeout_constant', 1.0)}",
        "",
    ])
    base = (ROOT / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(base + table)
    return work


def mutmut(work: Path, *args: str, timeout: float | None = None, log: Path | None = None) -> str:
    """Run `python -m mutmut ARGS` in `work`; its output (also streamed to `log`, to follow a long run)."""
    env = {**os.environ, **QUIET_ENV,  # LIMA_MUTATION_MODEL_CACHE: set by main()
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")] if p)}
    log = log or work / "last-command.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "mutmut", *args], cwd=work, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        capped = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Stop mutmut and its workers (its own process group); verdicts so far are on disk.
            capped = True
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    out = log.read_text()
    return out + "\n[time cap reached]\n" if capped else out


def verdicts(work: Path) -> dict[str, str]:
    """mutant name -> status, from `mutmut results --all true`."""
    out = mutmut(work, "results", "--all", "true")
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s+(\S+): (.+)$", line)
        if m:
            found[m.group(1)] = m.group(2).strip()
    return found


def run_module(module: str, max_minutes: float | None, fresh: bool, survivors_only: bool = False,
               matching: list[str] = (), timeout_constant: float | None = None, restat: bool = False,
               children: int = 1) -> dict:
    # survivors_only: test again only the previous run's survivors (after adding tests), or those of them whose
    # name contains one of `matching`; the other verdicts stand
    # ("no tests" ones too: a test added since may reach them)
    last = json.loads((SCRATCH / module / "result.json").read_text()) if survivors_only else {}
    names = last.get("survivors", []) + last.get("no_tests", [])
    if matching:
        names = [n for n in names if any(m in n for m in matching)]
    work = prepare(module, fresh and not survivors_only, timeout_constant)
    if restat:  # mutmut collects which tests reach each function again when its stats file is gone; verdicts stay
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        # ...except "no tests" (exit code 33), which mutmut would keep: a new function (serve.py's handlers once
        # undecorated) had no stats entry, so all 261 of its mutants stayed unrun
        for meta_path in (work / "mutants").rglob("*.meta"):
            meta = json.loads(meta_path.read_text())
            codes = meta.get("exit_code_by_key", {})
            if 33 in codes.values():
                meta["exit_code_by_key"] = {k: None if v == 33 else v for k, v in codes.items()}
                meta_path.write_text(json.dumps(meta))
    started = time.monotonic()
    run = mutmut(work, "run", "--max-children", str(children), *names,
                 timeout=max_minutes * 60 if max_minutes else None,
                 log=work / "run.log")
    elapsed = time.monotonic() - started
    status = verdicts(work)
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    tested = killed + counts.get("survived", 0)
    survivors = sorted(n for n, s in status.items() if s == "survived")
    timeouts = sorted(n for n, s in status.items() if s == "timeout")
    no_tests = sorted(n for n, s in status.items() if s == "no tests")
    diffs = subprocess.run([sys.executable, "-c", SHOW_DIFFS, *survivors], cwd=work, capture_output=True,
                           text=True, env={**os.environ, **QUIET_ENV}).stdout if survivors else ""
    (work / "survivors.txt").write_text(diffs)
    result = {
        "module": module,
        "source": MODULES[module][0],
        "tests": test_files(module),
        "mutants": len(status),
        "counts": counts,
        "kill_rate": round(killed / tested, 4) if tested else None,
        "survivors": survivors,
        "timeouts": timeouts,
        "no_tests": no_tests,
        "timeout_constant_s": json.loads((work / "settings.json").read_text()).get("timeout_constant", 1.0),
        "minutes": round(elapsed / 60, 1),
        "time_capped": "[time cap reached]" in run,
    }
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    summary_path = SCRATCH / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary[module] = {k: result[k] for k in ("mutants", "counts", "kill_rate", "minutes", "time_capped")}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"modules to test, in order (default: all of {', '.join(MODULES)})")
    ap.add_argument("--max-minutes", type=float, help="stop a module's run after this long; report what was measured")
    ap.add_argument("--resume", action="store_true", help="keep earlier verdicts in .mutation/<module>/ (re-runs only "
                    "mutants without one); by default each module starts afresh")
    ap.add_argument("--survivors", action="store_true", help="test only the survivors (and the mutants no test "
                    "reached) of the last run of each module again, after adding tests; other verdicts are kept")
    ap.add_argument("--matching", nargs="+", default=[], help="with --survivors: only survivors whose name "
                    "contains one of these strings (e.g. __call____mutmut_35)")
    ap.add_argument("--timeout-constant", type=float, help="seconds added to a mutant's measured test time before "
                    "mutmut's CPU limit (x 6) applies; default 1 (mutmut's). A new value re-runs every timed-out "
                    "mutant of the module and sticks to its folder, so 10 rechecks that a timeout was a hang")
    ap.add_argument("--restat", action="store_true", help="collect again which tests reach each function (after "
                    "adding tests to a file, or a change to mutation_model_cache.py), keeping the verdicts; with "
                    "--survivors the survivors are tested against the new selection")
    ap.add_argument("--children", type=int, default=1, help="mutants tested at once (default 1: the machine is "
                    "usually shared; 2 uses both cores of an otherwise idle 2-core machine)")
    args = ap.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    # Built afresh by each invocation, so a change to tests/conftest.py's models is never missed, and in a
    # folder of its own: two runs at once (one per core) each deleted the shared folder the other was reading,
    # and a run's stats step failed ("runner returned 1").
    MODEL_CACHES.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=MODEL_CACHES))
    os.environ["LIMA_MUTATION_MODEL_CACHE"] = str(cache)
    try:
        for module in args.modules or list(MODULES):
            r = run_module(module, args.max_minutes, fresh=not args.resume, survivors_only=args.survivors,
                           matching=args.matching, timeout_constant=args.timeout_constant, restat=args.restat,
                           children=args.children)
            rate = "n/a" if r["kill_rate"] is None else f"{100 * r['kill_rate']:.1f}%"
            capped = " (time cap reached)" if r["time_capped"] else ""
            print(f"{module:10s} {rate:>7s} killed  {r['counts']}  {r['minutes']} min{capped}", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
