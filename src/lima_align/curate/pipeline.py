"""`lima-align curate run`: sources -> rules -> dedup -> select -> outputs, resumable.

Output folder:
  candidates.jsonl    every record that passed its source's rules (input to `curate select`)
  eval_prompts.jsonl  self-contained Reddit titles as evaluation prompts (when any)
  dedup_dropped.jsonl which candidates dedup removed, and which record each duplicates
  selected.jsonl      the final dataset (our format; source, site/category, ids, URL, licence in meta)
  manifest.json       resolved config, sha256 of every input, per-rule drops per source, bad rows
                      with locations, dedup counts, final counts per source / group / domain
  report.html, charts/*.png
  state.json          which stages finished, under which config hash (for resume)

Resume: a stage whose hash matches state.json is not run again. A folder holds one candidate pool:
other sources, rules or inputs there are refused unless `restart=True`. Another dedup/select
config on the same pool is allowed: it replaces selected.jsonl, the manifest and the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import LimaError
from ..jsonl import read_jsonl, write_jsonl_atomic, write_text_atomic
from .config import CurateRecipe
from .inputs import BadRows, sha256_file
from .rules import RuleCounts, SourceRun
from .sources import SOURCES

OUTPUTS = ("candidates.jsonl", "eval_prompts.jsonl", "dedup_dropped.jsonl", "selected.jsonl", "manifest.json",
           "report.html", "state.json")
SOURCE_KEYS = ("seed", "on_error", "max_bad_fraction", "max_bad_rows", *SOURCES)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def input_files(recipe: CurateRecipe) -> list[tuple[str, Path]]:
    """(source, file) for every input, in recipe order (the manifest hashes each)."""
    return [(src.name, p) for key, src in SOURCES.items() for p in src.input_files(getattr(recipe, key))]


def tally(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts per source, group, domain and stratum."""
    out: dict[str, Counter] = {"source": Counter(), "group": Counter(), "domain": Counter(), "stratum": Counter()}
    for r in records:
        meta = r.get("meta") or {}
        out["source"][str(meta.get("source") or r.get("source") or "")] += 1
        for key in ("group", "domain", "stratum"):
            out[key][str(meta.get(key, ""))] += 1
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def _candidates(recipe: CurateRecipe, counts: RuleCounts, bad: BadRows,
                eval_out: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every source in turn, each record once (a repeated id is counted as rule duplicate_id)."""
    run = SourceRun(recipe.seed, counts, bad, eval_out)
    seen: set[str] = set()
    for key, src in SOURCES.items():
        for rec in src.read(getattr(recipe, key), run):
            if rec["id"] in seen:
                name = rec["meta"]["source"]
                counts.kept[name] -= 1
                counts.drop(name, "duplicate_id")
                continue
            seen.add(rec["id"])
            yield rec


def report_input_problems(stage: dict[str, Any], shown: int = 5) -> None:
    """On stderr, at the end of reading: every notice, and the skipped bad rows with their count per
    file and first locations, then a one-line summary (a skip must never pass unseen)."""
    for note in stage.get("notices", []):
        print(f"notice: {note}", file=sys.stderr)
    bad = stage.get("bad_rows") or {}
    if not bad.get("count"):
        return
    for path, n in bad["by_file"].items():
        first = [x for x in bad["locations"] if x["where"].startswith(path)][:shown]
        print(f"warning: {path}: skipped {n} bad row(s); first:", file=sys.stderr)
        for x in first:
            print(f"  {x['where']}: {x['what']}", file=sys.stderr)
    print(f"warning: skipped {bad['count']} bad row(s) in {len(bad['by_file'])} file(s) (on_error=skip); all "
          "locations are in manifest.json under bad_rows", file=sys.stderr)


def print_rule_summary(stage: dict[str, Any]) -> None:
    """On stdout, per source: rows seen, records kept and each rule's drops, largest first (the numbers
    of the manifest), so a run that keeps 12 records of 1,241 questions says why without opening it."""
    for source, r in stage.get("rules", {}).items():
        drops = ", ".join(f"{rule} {n:,}" for rule, n in sorted(r["dropped"].items(), key=lambda x: (-x[1], x[0])))
        print(f"{source}: {r['seen']:,} seen, {r['kept']:,} kept" + (f"; dropped: {drops}" if drops else ""))


def _read_state(out: Path) -> dict[str, Any]:
    p = out / "state.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise LimaError(f"{p} is damaged", where=str(p), fix="rerun with --restart to start this folder over") from None


def run_curate(recipe: CurateRecipe, *, restart: bool = False, candidates_only: bool = False) -> Path:
    """Run the whole curation job into recipe.output_dir; returns the folder."""
    out = Path(recipe.output_dir)
    config = dataclasses.asdict(recipe)
    inputs = [{"source": s, "path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
              for s, p in input_files(recipe)]
    cand_hash = _hash({"config": {k: config[k] for k in SOURCE_KEYS}, "inputs": [i["sha256"] for i in inputs]})
    full_hash = _hash({"cand": cand_hash, "dedup": config["dedup"], "select": config["select"]})
    state = _read_state(out)
    if restart:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        state = {}
    elif state and state.get("candidates_hash") != cand_hash:
        raise LimaError(f"{out} holds a curation run with another config or other inputs (sources, rules, seed "
                        f"or input files differ: hash {state.get('candidates_hash')}, now {cand_hash})",
                        where=str(out / "state.json"),
                        fix="use another output_dir, or rerun with --restart to replace that run")
    out.mkdir(parents=True, exist_ok=True)
    stages = state.get("stages", {})
    if stages.get("selected", {}).get("hash") not in (None, full_hash):  # another selection on the same pool
        for name in ("dedup_dropped.jsonl", "selected.jsonl", "manifest.json", "report.html"):
            (out / name).unlink(missing_ok=True)
        stages.pop("selected")
    state = {"candidates_hash": cand_hash, "stages": stages}
    write_text_atomic(out / "state.json", json.dumps(state, indent=2))

    stage = state["stages"].get("candidates", {})
    if stage.get("hash") == cand_hash and (out / "candidates.jsonl").exists():
        print(f"candidates: reusing {out / 'candidates.jsonl'} (same sources, rules and inputs)")
    else:
        counts = RuleCounts()
        bad = BadRows(recipe.on_error, recipe.max_bad_fraction, recipe.max_bad_rows)
        eval_prompts: list[dict[str, Any]] = []
        write_jsonl_atomic(out / "candidates.jsonl", _candidates(recipe, counts, bad, eval_prompts))
        if eval_prompts:
            write_jsonl_atomic(out / "eval_prompts.jsonl", eval_prompts)
        stage = {"hash": cand_hash, "rules": counts.to_manifest(), "bad_rows": bad.to_manifest(),
                 "eval_prompts": len(eval_prompts), "notices": counts.notices, "sites": counts.sites}
        state["stages"] = {"candidates": stage}  # later stages depend on these candidates
        write_text_atomic(out / "state.json", json.dumps(state, indent=2))
    candidates = [r for _, r in read_jsonl(out / "candidates.jsonl")]
    report_input_problems(stage)
    print_rule_summary(stage)

    dedup_info: dict[str, Any] = {}
    selected: list[dict[str, Any]] = []
    if not candidates_only:
        from .dedup import count_reasons, dedup
        from .select import select

        kept, dropped = dedup(candidates, recipe.dedup, seed=recipe.seed)
        write_jsonl_atomic(out / "dedup_dropped.jsonl", dropped)
        dedup_info = {"in": len(candidates), "kept": len(kept), "dropped": count_reasons(dropped)}
        sel_done = state["stages"].get("selected", {}).get("hash") == full_hash and (out / "selected.jsonl").exists()
        if sel_done:
            print(f"selected: reusing {out / 'selected.jsonl'}")
            selected = [r for _, r in read_jsonl(out / "selected.jsonl")]
        else:
            selected = select(kept, recipe.select, seed=recipe.seed, cache_dir=out / "cache")
            write_jsonl_atomic(out / "selected.jsonl", selected)
            state["stages"]["selected"] = {"hash": full_hash}
            write_text_atomic(out / "state.json", json.dumps(state, indent=2))

    manifest = {"config_hash": full_hash, "candidates_hash": cand_hash, "config": config, "inputs": inputs,
                "sites": stage.get("sites", []), "notices": stage.get("notices", []),
                "rules": stage["rules"], "bad_rows": stage["bad_rows"], "dedup": dedup_info,
                "counts": {"candidates": tally(candidates), "selected": tally(selected),
                           "eval_prompts": stage["eval_prompts"]},
                "outputs": [n for n in OUTPUTS if (out / n).exists() and n not in ("manifest.json", "state.json")]}
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    if recipe.report:
        from .curate_report import write_report

        write_report(out, manifest, candidates, selected)
    return out
