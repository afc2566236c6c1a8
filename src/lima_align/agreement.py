"""Pooled agreement between groups of judges: all people against a model judge, and people among themselves.

This is the figure papers quote (MT-Bench's "agreement between GPT-4 and humans"), not one judge pair at a time.

- Judges are grouped: by default every person ("human:NAME") in the group "people" and every model judge alone,
  under its own name. `--group PREFIX=NAME` puts judges whose name starts with PREFIX into NAME (the first
  matching --group wins; judges no --group matches keep the default).
- An item is one prompt, turn and unordered model pair; verdicts are compared with the models in one order.
  "tie (inconsistent)" was imported as a tie, so it agrees with any tie. Null verdicts take part in no pair.
- Group against group: every pair (a vote from one group, a vote from the other) on the same item. Within a
  group: every pair of votes by two different members on the same item. With MT-Bench's one GPT-4 vote per
  item this counts each human vote once against GPT-4, as the paper's Table does.
- With ties: all pairs, agreed = the same label. Without ties: only pairs where neither vote is a tie.
  Tie-discounted accuracy (LIMA): 1 for the same label, 1/2 when exactly one vote is a tie, 0 otherwise.
  Cohen's kappa over the pairs' labels a / tie / b (within a group each pair counts in both orders, so it does
  not depend on which vote was read first).
- 95% intervals: a bootstrap over items (an item's pairs move together, they share the answers). Where that
  collapses, because every pair agreed or none did, or fewer than MIN_ITEMS items hold pairs, the interval is
  Wilson's over the pairs instead, and the row says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from .errors import LimaError, Problem
from .pooled import PEOPLE, cluster_sums, is_person, share
from .intervals import wilson
from .verdicts import cohen_kappa
from .text_tables import pct, text_table

MIN_ITEMS = 20
LABELS = ("a", "tie", "b")
FLIP = {"a": "b", "b": "a", "tie": "tie"}
BOOTSTRAP = "bootstrap over items"
WILSON = "Wilson over pairs (the item bootstrap collapses: all pairs alike or fewer than 20 items)"

Record = dict[str, Any]


def parse_groups(specs: Sequence[str] | None) -> list[tuple[str, str]]:
    """["human:expert_=experts", ...] -> [(prefix, name), ...]; a spec without "=" or with an empty side is an error."""
    out = []
    for spec in specs or []:
        prefix, eq, name = spec.partition("=")
        if not eq or not prefix or not name:
            raise LimaError(Problem("--group", f"expected PREFIX=NAME, got {spec!r}",
                                    "e.g. --group human:expert_=experts --group gpt4=gpt-4"))
        out.append((prefix, name))
    return out


def group_of(judge: str, groups: Sequence[tuple[str, str]]) -> str:
    for prefix, name in groups:
        if judge.startswith(prefix):
            return name
    return PEOPLE if is_person(judge) else judge  # the whole name: two endpoints of one model are two judges


def _items(records: Sequence[Record], groups: Sequence[tuple[str, str]]) -> dict[Any, dict[tuple, list]]:
    """turn -> item -> [(group, judge, verdict)], verdicts for the alphabetically first model as "a"."""
    by_turn: dict[Any, dict[tuple, list]] = {}
    for r in records:
        if r.get("type") != "pairwise" or r.get("verdict") is None:
            continue
        a, b = sorted((r["model_a"], r["model_b"]))
        v = r["verdict"] if r["model_a"] == a else FLIP[r["verdict"]]
        item = (r["prompt_id"], a, b)
        by_turn.setdefault(r.get("turn"), {}).setdefault(item, []).append((group_of(r["judge"], groups), r["judge"], v))
    return by_turn


def _pairs(votes: list, g1: str, g2: str) -> list[tuple[str, str]]:
    if g1 == g2:
        mine = [(j, v) for g, j, v in votes if g == g1]
        return [(u, v) for (j1, u), (j2, v) in combinations(mine, 2) if j1 != j2]
    return [(u, v) for ga, _, u in votes if ga == g1 for gb, _, v in votes if gb == g2]


def _tda(u: str, v: str) -> float:
    return 1.0 if u == v else 0.5 if (u == "tie") != (v == "tie") else 0.0


def _share(agreed: int, n: int, per_item: np.ndarray, boot: np.ndarray | None, confidence: float) -> dict[str, Any]:
    """agreed / n with an item-bootstrap interval, or Wilson's where the bootstrap collapses (see module doc)."""
    items = int((per_item[:, 1] > 0).sum())
    if n and (agreed in (0, n) or items < MIN_ITEMS or boot is None):
        return {"agreed": agreed, "n": n, "items": items, **wilson(agreed, n), "interval": WILSON}
    est = share(agreed, n, boot[:, 0], boot[:, 1], confidence) if n else {"value": None, "ci": [None, None]}
    return {"agreed": agreed, "n": n, "items": items, **est, "interval": BOOTSTRAP}


def agreement_row(pairs_by_item: list[list[tuple[str, str]]], symmetric: bool, *, n_boot: int = 2000,
                  seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Agreement over the vote pairs of each item (one list per item), see the module docstring."""
    per = np.array([[sum(u == v for u, v in ps), len(ps),
                     sum(u == v for u, v in ps if "tie" not in (u, v)), sum("tie" not in (u, v) for u, v in ps)]
                    for ps in pairs_by_item], dtype=float).reshape(-1, 4)
    boot = cluster_sums(per, n_boot, seed) if n_boot else None
    flat = [p for ps in pairs_by_item for p in ps]
    xs, ys = [u for u, _ in flat], [v for _, v in flat]
    if symmetric:
        xs, ys = xs + ys, ys + xs
    kappa = cohen_kappa(xs, ys, LABELS)
    with_t = _share(int(per[:, 0].sum()), int(per[:, 1].sum()), per[:, 0:2], None if boot is None else boot[:, 0:2],
                    confidence)
    without = _share(int(per[:, 2].sum()), int(per[:, 3].sum()), per[:, 2:4],
                     None if boot is None else boot[:, 2:4], confidence)
    return {"with_ties": with_t, "without_ties": without,
            "tie_discounted_accuracy": sum(_tda(u, v) for u, v in flat) / len(flat) if flat else None,
            "kappa": kappa, "kappa_note": None if kappa is not None else "one label only" if flat else "no pairs"}


def pooled_agreement(records: Sequence[Record], groups: Sequence[tuple[str, str]] = (), *, n_boot: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """Group-against-group and within-group agreement per turn (rows with no pair left out)."""
    rows = []
    for turn, items in _items(records, groups).items():
        members: dict[str, set[str]] = {}
        for votes in items.values():
            for g, j, _ in votes:
                members.setdefault(g, set()).add(j)
        names = list(members)
        for i, g1 in enumerate(names):
            for g2 in names[i:]:
                pairs = [ps for ps in (_pairs(votes, g1, g2) for votes in items.values()) if ps]
                if not pairs:
                    continue
                rows.append({"turn": turn, "group_1": g1, "group_2": g2, "within": g1 == g2,
                             "members_1": len(members[g1]), "members_2": len(members[g2]),
                             **agreement_row(pairs, g1 == g2, n_boot=n_boot, seed=seed)})
    return {"groups": [{"prefix": p, "name": n} for p, n in groups],
            "default_groups": f"people (human:*) together as {PEOPLE!r}, each model judge alone",
            "method": __doc__.split("\n\n", 1)[1].strip(), "min_items_for_bootstrap": MIN_ITEMS, "rows": rows}


def _cell(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "-"
    lo, hi = s["ci"]
    mark = "*" if s["interval"] == WILSON else ""
    return f"{s['agreed']}/{s['n']} {pct(s['value'])} [{pct(lo)[:-1]}, {pct(hi)}]{mark}"


def format_agreement(pooled: dict[str, Any]) -> str:
    rows = pooled["rows"]
    if not rows:
        return ""
    body = [["-" if r["turn"] is None else str(r["turn"]),
             f"{r['group_1']} ({r['members_1']})" + (" within" if r["within"] else f" ~ {r['group_2']} "
                                                                                   f"({r['members_2']})"),
             str(r["with_ties"]["items"]), _cell(r["with_ties"]), _cell(r["without_ties"]),
             pct(r["tie_discounted_accuracy"]), "-" if r["kappa"] is None else f"{r['kappa']:.3f}"] for r in rows]
    wilson_used = any(r[k]["interval"] == WILSON for r in rows for k in ("with_ties", "without_ties"))
    head = ("pooled judge agreement: groups (members), per turn; every pair of votes on the same item (prompt, "
            "turn, model pair), within a group only by different members; agreed/n, 95% CI "
            f"({BOOTSTRAP}" + ("; * = Wilson over pairs, where the item bootstrap collapses" if wilson_used else "")
            + ")")
    return head + "\n" + text_table(["turn", "groups", "items", "agreement with ties", "without ties",
                                     "tie-discounted", "kappa"], body)
