"""`lima-align curate select / review / apply-review`: registered by curate/cli.py on the curate group."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path


def add_select_commands(group: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`group` is the subparsers object of `lima-align curate`."""
    s = group.add_parser(
        "select", help="pick a subset of a candidate pool with one strategy",
        description="Select from POOL (any supported dataset format, or 'seed') with a strategy: lima (per-group "
        "quotas, temperature over strata), random, longest, kcenter / facility_location (MiniLM embeddings), "
        "quality (a model's score). Same pool, config and seed: same selection.")
    s.add_argument("pool", help="candidate pool: JSONL/JSON in any supported format, or a seed split")
    s.add_argument("--strategy", help="lima, random, longest, kcenter, facility_location, quality")
    s.add_argument("--n", type=int, help="how many to select")
    s.add_argument("--quotas", help="for lima: group=count,... e.g. stackexchange:stem=200,wikihow=200")
    s.add_argument("--temperature", type=float, help="for lima: strata drawn with p ~ size^(1/T) (LIMA: 3)")
    s.add_argument("--config", help="YAML file of select settings (fields as in `SelectConfig`)")
    s.add_argument("--output", required=True, help="selected JSONL (written atomically)")
    s.add_argument("--seed", type=int, default=0, help="selection seed")
    s.add_argument("--dedup", action="store_true", help="drop exact and near duplicates (MinHash) before selecting")
    s.add_argument("--cache-dir", help="where embeddings and quality scores are cached (default: next to OUTPUT)")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="any select setting, e.g. fl_ground=20000 length_unit=tokens shortfall=take_all")
    s.set_defaults(func=cmd_select)

    r = group.add_parser("review", help="accept, reject or edit selected examples in the terminal (resumable)",
                         description="Step through SELECTED: a accept, r reject, e edit ($EDITOR, or inline), "
                         "s skip, u undo, q quit. Each decision is appended to DECISIONS at once; rerun to resume.")
    r.add_argument("selected", help="selected JSONL (never modified)")
    r.add_argument("--decisions", required=True, help="decisions JSONL (appended to; created if missing)")
    r.add_argument("--editor", help="editor command for 'e' (default: $VISUAL or $EDITOR; '' = type inline)")
    r.add_argument("--reviewer", help="your name, written into each decision")
    r.set_defaults(func=cmd_review)

    a = group.add_parser("apply-review", help="write the accepted (and edited) examples of a review",
                         description="Write SELECTED's accepted examples, with edits applied, to OUTPUT.")
    a.add_argument("selected")
    a.add_argument("--decisions", required=True)
    a.add_argument("--output", required=True)
    a.set_defaults(func=cmd_apply_review)


def _parse_quotas(text: str) -> dict[str, int]:
    from ..errors import LimaError

    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.rpartition("=")
        if not sep or not name or not count.strip().isdigit():
            raise LimaError(f"bad quota {part!r}", where="--quotas", fix="write group=count,... e.g. wikihow=200")
        out[name.strip()] = int(count)
    return out


def cmd_select(args: argparse.Namespace) -> int:
    from ..config import load_recipe
    from ..jsonl import write_jsonl_atomic, write_text_atomic
    from ..dataset_specs import load_dataset
    from .dedup import DedupConfig, count_reasons, dedup
    from .select import SelectConfig, group_of, select

    overrides = []
    for flag in ("strategy", "n", "temperature"):
        if getattr(args, flag) is not None:
            overrides.append(f"{flag}={getattr(args, flag)}")
    if args.quotas:
        overrides.append("quotas=" + json.dumps(_parse_quotas(args.quotas)))
    cfg = load_recipe(args.config, overrides + list(args.overrides or []), cls=SelectConfig)
    pool = [c.to_dict() for c in load_dataset(args.pool, purpose="train")]
    pool_size = len(pool)
    print(f"pool: {pool_size} records from {args.pool}")
    dedup_counts = None
    if args.dedup:
        pool, dropped = dedup(pool, DedupConfig(), seed=args.seed)
        counts = dedup_counts = count_reasons(dropped)
        print(f"dedup: dropped {counts['exact_duplicate']} exact and {counts['near_duplicate']} near duplicates, "
              f"{len(pool)} left")
    out = Path(args.output)
    cache = Path(args.cache_dir) if args.cache_dir else out.parent / ".select-cache"
    chosen = select(pool, cfg, seed=args.seed, cache_dir=cache)
    write_jsonl_atomic(out, chosen)
    per_group = Counter(group_of(r) for r in chosen)
    # What produced this file, so a rerun can be checked against it (same pool hash, config, seed).
    manifest = {"command": "curate select", "pool": args.pool, "pool_sha256": _file_hash(args.pool), "seed": args.seed,
                "config": dataclasses.asdict(cfg), "dedup": dedup_counts, "pool_size": pool_size,
                "selected": len(chosen), "per_group": dict(sorted(per_group.items()))}
    manifest_path = out.with_name(out.stem + ".manifest.json")
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"selected {len(chosen)} with {cfg.strategy}: "
          + ", ".join(f"{g} {c}" for g, c in sorted(per_group.items())))
    print(f"wrote {out} and {manifest_path.name}")
    return 0


def _file_hash(spec: str) -> str | None:
    import hashlib

    path = Path(spec)
    if not path.is_file():
        return None  # a seed split: its version is the package's
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cmd_review(args: argparse.Namespace) -> int:
    from .review import review

    review(args.selected, args.decisions, editor=args.editor, reviewer=args.reviewer)
    return 0


def cmd_apply_review(args: argparse.Namespace) -> int:
    from .review import apply_review

    t = apply_review(args.selected, args.decisions, args.output)
    print(f"wrote {t['written']} examples to {args.output} (accepted {t['accept']}, edited {t['edit']}; "
          f"left out: rejected {t['reject']}, undecided {t['undecided']})")
    return 0
