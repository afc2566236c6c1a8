"""MT-Bench's published votes through the tool: import, `stats`, `report`, timed, and the pooled agreement checked
against the MT-Bench paper's Table (Zheng et al. 2023, agreement between GPT-4 pair and humans on the expert votes).

The paper counts "human" as the expert_* raters only (author_* votes are left out), pairs every expert vote with
GPT-4's one vote on the same question, turn and model pair, and pairs every two expert votes on the same item
among themselves; "without ties" drops any pair with a tie in it, "tie (inconsistent)" counting as a tie. With
`--group human:expert_=experts` our pooled rows count the same pairs.

Run from /work/main (the votes stay in ../shared; nothing is copied into the project):
    .venv/bin/python benchmarks/mt_bench_agreement.py [--votes ../shared/data/mt_bench/judgments] [--n-boot 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (turn, pair of groups) -> ((n, % with ties), (n, % without ties)), as printed in the paper's Table
PAPER = {(1, ("experts", "gpt4_pair")): ((1343, 66), (859, 85)), (1, ("experts", "experts")): ((721, 63), (479, 81)),
         (2, ("experts", "gpt4_pair")): ((1325, 66), (864, 85)), (2, ("experts", "experts")): ((707, 67), (474, 82))}
GROUPS = ["--group", "human:expert_=experts", "--group", "human:author_=authors"]


def run(args: list[str]) -> tuple[str, float, float]:
    """(stdout, wall seconds, CPU seconds) of one lima-align command in its own process."""
    t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-m", "lima_align", *args], capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return out.stdout, time.perf_counter() - t, cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--votes", default=str(Path(__file__).resolve().parents[2] / "shared/data/mt_bench/judgments"))
    p.add_argument("--n-boot", default="2000")
    a = p.parse_args()
    votes = Path(a.votes)
    with tempfile.TemporaryDirectory() as tmp:
        judgments = Path(tmp, "mt_bench.jsonl")
        out, t_import, c_import = run(["import", "mt_bench_judgments", str(votes / "human.jsonl"), str(votes / "gpt4_pair.jsonl"),
                             "--output", str(judgments)])
        print(out.strip())
        text, t_stats, c_stats = run(["stats", str(judgments), "--n-boot", a.n_boot, *GROUPS])
        full, t_full, c_full = run(["stats", str(judgments), "--n-boot", a.n_boot, "--full", "--by-pair", *GROUPS])
        raw, _, _ = run(["stats", str(judgments), "--n-boot", a.n_boot, "--json", *GROUPS])
        _, t_report, c_report = run(["report", str(judgments), "--n-boot", a.n_boot, "--output", str(Path(tmp, "report")),
                           *GROUPS])
        html_size = os.path.getsize(Path(tmp, "report", "report.html"))
        json_size = os.path.getsize(Path(tmp, "report", "report.json"))
    rows = json.loads(raw)["pooled_agreement"]["rows"]
    print("\npooled agreement against the paper's Table (n must be equal, % equal after rounding):")
    ok = True
    for (turn, groups), paper in PAPER.items():
        (row,) = [r for r in rows if r["turn"] == turn and {r["group_1"], r["group_2"]} == set(groups)
                  and r["within"] == (groups[0] == groups[1])]
        for key, (n, pct) in zip(("with_ties", "without_ties"), paper, strict=True):
            s = row[key]
            same = s["n"] == n and round(100 * s["agreed"] / s["n"]) == pct
            ok &= same
            print(f"  turn {turn} {groups[0]} ~ {groups[1]:9s} {key:12s} ours {s['agreed']}/{s['n']} "
                  f"({100 * s['agreed'] / s['n']:.1f}%)  paper {pct}% ({n})  {'equal' if same else 'DIFFERENT'}")
    print(f"\nstats (compact): {t_stats:.2f} s wall, {c_stats:.2f} s CPU, {len(text.splitlines())} lines; "
          f"--full --by-pair: {t_full:.2f} s wall, {c_full:.2f} s CPU, {len(full.splitlines())} lines")
    print(f"report: {t_report:.2f} s wall, {c_report:.2f} s CPU, report.html {html_size / 1e6:.2f} MB, report.json "
          f"{json_size / 1e6:.2f} MB; import {t_import:.2f} s wall, {c_import:.2f} s CPU (each includes starting "
          "Python and imports)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
