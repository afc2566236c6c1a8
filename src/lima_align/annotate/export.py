"""Votes out of the database: judgments JSONL (the LLM judges' format), conversations, review decisions,
and the agreement numbers of the admin dashboard.

Exports are deterministic: records are ordered by item position then username, ids are content hashes,
timestamps are the stored vote times, and the file is replaced atomically, so exporting twice gives the
same bytes and `lima-align stats`/`report` read people exactly like model judges (judge = "human:<name>").
"""

from __future__ import annotations

import hashlib
import json
from itertools import combinations
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from ..dialogue.judging import turn_id
from ..errors import LimaError
from ..jsonl import write_jsonl_atomic
from ..stats import FLIP, agreement, cohen_kappa, load_judgments
from . import db
from .studies import RATED, get_study

NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": None}


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def _instructions(study: dict[str, Any]) -> dict[str, str]:
    """What the people were asked, hashed like a judge's instruction file (the text is on every item page)."""
    text = study["config"]["guidelines"]
    return {"name": f"human-{study['kind']}", "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _vote_rows(engine: Engine, sid: int) -> list[dict[str, Any]]:
    v, it, u = db.votes, db.items, db.users
    q = (select(v, it.c.key, it.c.payload, u.c.username).join(it, it.c.id == v.c.item_id)
         .join(u, u.c.id == v.c.user_id).where(v.c.study_id == sid).order_by(it.c.idx, u.c.username))
    with db.read(engine) as c:
        return [dict(r) for r in c.execute(q).mappings()]


def _score(study: dict[str, Any], value: str) -> str | int:
    return int(value) if study["config"]["scale"] == "helpfulness_6" else value


def _pair(study: dict[str, Any], key: str, payload: dict[str, Any]) -> tuple[str, str, str]:
    """(prompt_id, model_a, model_b) of a pairwise item: from its payload in a study of several pairs
    (key "p<j>:<prompt_id>"), from the study's config in a one-pair study (key = prompt_id)."""
    if "model_b" in payload:
        return payload["prompt_id"], payload["model_a"], payload["model_b"]
    return key, study["config"]["model_a"], study["config"]["model_b"]


def judgment_records(engine: Engine, study: dict[str, Any]) -> list[dict[str, Any]]:
    """Pairwise, absolute or turn-rating judgments, one per vote, in EVAL_SPEC's format.

    Items of multi-model studies are keyed by model position ("m0:q7", "p1:q7"); their records carry the
    answer's own prompt id and model names (from the payload), exactly as a one-model study's would."""
    ins = _instructions(study)
    out = []
    for r in _vote_rows(engine, study["id"]):
        p = json.loads(r["payload"])
        judge = f"human:{r['username']}"
        if study["kind"] == "pairwise":
            pid, model_a, model_b = _pair(study, r["key"], p)
            rec = {"id": _digest(["pairwise", judge, study["name"], pid, model_a, model_b]),
                   "type": "pairwise", "prompt_id": pid, "prompt": p["prompt"], "model_a": model_a,
                   "model_b": model_b,
                   "output_a": p["output_a"], "output_b": p["output_b"], "judge": judge, "instructions": ins,
                   # one person sees one order: one vote, its verdict already in original a/b terms
                   "votes": [{"order": r["shown_order"], "raw": r["raw"], "verdict": r["value"]}],
                   "verdict": r["value"], "consistent": None}
        elif study["kind"] == "turns":  # the records `judge turns` writes, with a person as the judge
            pid = turn_id(p["conversation_id"], p["turn"])
            rec = {"id": _digest(["absolute", judge, study["name"], pid, p["model"]]),
                   "type": "absolute", "prompt_id": pid, "prompt": p["prompt"], "model": p["model"],
                   "output": p["output"], "judge": judge, "instructions": ins, "scale": study["config"]["scale"],
                   "raw": r["raw"], "score": r["value"], "conversation_id": p["conversation_id"], "turn": p["turn"]}
        else:
            pid, model = _rated_key(study, r["key"], p)
            rec = {"id": _digest(["absolute", judge, study["name"], pid, model]),
                   "type": "absolute", "prompt_id": pid, "prompt": p["prompt"], "model": model,
                   "output": p["output"], "judge": judge, "instructions": ins, "scale": study["config"]["scale"],
                   "raw": r["raw"], "score": _score(study, r["value"])}
        out.append({**rec, "comment": r["comment"], "usage": NO_USAGE, "created": r["created"]})
    return out


def review_decisions(engine: Engine, study: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": r["key"], "decision": r["value"], "edited": json.loads(r["edited"]) if r["edited"] else None,
             "annotator": r["username"], "comment": r["comment"], "created": r["created"]}
            for r in _vote_rows(engine, study["id"])]


def _conversation_rows(engine: Engine, sid: int) -> list[dict[str, Any]]:
    cv, u = db.conversations, db.users
    q = (select(cv, u.c.username).join(u, u.c.id == cv.c.user_id).where(cv.c.study_id == sid)
         .order_by(cv.c.created, cv.c.id))
    with db.read(engine) as c:
        return [dict(r) for r in c.execute(q).mappings()]


def dialogue_records(engine: Engine, study: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(turn ratings as absolute judgments, conversations)."""
    cfg, ins = study["config"], _instructions(study)
    convs = _conversation_rows(engine, study["id"])
    with db.read(engine) as c:
        ratings = {(cid, t): (s, created) for cid, t, s, created in c.execute(
            select(db.turn_ratings.c.conversation_id, db.turn_ratings.c.turn, db.turn_ratings.c.score,
                   db.turn_ratings.c.created))}
    judgments, conversations = [], []
    for cv in convs:
        messages = json.loads(cv["messages"])
        if not messages:
            continue
        conversations.append({"id": cv["id"], "model": cfg["model"], "messages": messages, "mode": "human",
                              "created": cv["created"], "annotator": cv["username"]})
        turn = 0
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            turn += 1
            if (cv["id"], turn) not in ratings:
                continue
            score, created = ratings[(cv["id"], turn)]
            judge = f"human:{cv['username']}"
            pid = f"{cv['id']}#t{turn}"
            judgments.append({"id": _digest(["absolute", judge, study["name"], pid, cfg["model"]]),
                              "type": "absolute", "prompt_id": pid, "prompt": messages[:i], "model": cfg["model"],
                              "output": m["content"], "judge": judge, "instructions": ins,
                              "scale": "fail_pass_excellent", "raw": score, "score": score,
                              "conversation_id": cv["id"], "turn": turn, "usage": NO_USAGE, "created": created})
    return judgments, conversations


def export_study(engine: Engine, name: str, output: Path, conversations_output: Path | None = None) -> dict[str, Any]:
    """Write the study's results; returns {"written": {path: n_records}}."""
    with db.read(engine) as c:
        study = get_study(c, name=name)
    written: dict[str, int] = {}
    if study["kind"] in ("pairwise", "absolute", "turns"):
        recs = judgment_records(engine, study)
    elif study["kind"] == "review":
        recs = review_decisions(engine, study)
    else:
        recs, convs = dialogue_records(engine, study)
        conv_path = conversations_output or output.with_name(output.stem + ".conversations.jsonl")
        if conv_path == output:
            raise LimaError("the conversations and the ratings would overwrite each other", where=str(output),
                            fix="pass a different --conversations path")
        write_jsonl_atomic(conv_path, convs)
        written[str(conv_path)] = len(convs)
    write_jsonl_atomic(output, recs)
    written[str(output)] = len(recs)
    return {"study": name, "kind": study["kind"], "written": written}


# ----------------------------------------------------------------- agreement


def _labels(rec: dict[str, Any], model_a: str) -> str | None:
    """A pairwise verdict oriented so that "a" means the study's model_a."""
    return rec["verdict"] if rec["model_a"] == model_a else FLIP[rec["verdict"]]


def _exact(x: list[str], y: list[str]) -> dict[str, Any]:
    """Share of identical labels, the agreement measure for ratings (no tie to discount), and Cohen's kappa,
    which discounts the agreement two raters would reach by chance: when nearly every answer fails, two
    people agree on almost everything without that saying much (kappa None: one label only)."""
    return {"n": len(x), "exact": sum(u == v for u, v in zip(x, y, strict=True)) / len(x) if x else None,
            "kappa": cohen_kappa(x, y, sorted(set(x) | set(y))) if x else None}


def _with_judge(by_item: dict[str, dict[str, str]], labels: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """Every person's vote paired with the judge's label of the same item (items the judge saw)."""
    hx, jy = [], []
    for key, votes in by_item.items():
        if key in labels:
            for value in votes.values():
                hx.append(value)
                jy.append(labels[key])
    return hx, jy


def _rated_key(study: dict[str, Any], item_key: str, payload: dict[str, Any]) -> tuple[str, str]:
    """(prompt_id, model) of a rated item: what an LLM judge's absolute record of the same answer carries."""
    if study["kind"] == "turns":
        return turn_id(payload["conversation_id"], payload["turn"]), payload["model"]
    if "model" in payload:  # an absolute study of several models
        return payload["prompt_id"], payload["model"]
    return item_key, study["config"]["model"]


def _between_people(by_item: dict[str, dict[str, str]], keys: Any = None) -> tuple[list[str], list[str]]:
    """Every pair of annotators' labels on a shared item (of `keys`, or all items)."""
    x, y = [], []
    for key, votes in by_item.items():
        if keys is not None and key not in keys:
            continue
        for u, w in combinations(sorted(votes), 2):
            x.append(votes[u])
            y.append(votes[w])
    return x, y


def agreement_table(engine: Engine, study: dict[str, Any], judge_records: list[dict[str, Any]]) -> dict[str, Any]:
    """Pairwise: LIMA's tie-discounted accuracy (and the rest of stats.agreement) between people, pooled over
    every pair of annotators that voted on the same item, and between people and each attached LLM judge.
    Absolute, turns and review: the share of identical labels and Cohen's kappa between people; for the
    rating kinds also between people and each attached judge's absolute records of the same answers (matched
    on prompt id and model), which is how an LLM turn judge is checked against people before it is trusted.

    An item is one answer (or one pair of answers) of one model (pair), so votes are only ever compared with
    votes on the same answers; pairwise votes are stored in model terms ("a": the study's model A won,
    whichever side it was shown on), so they agree when people pick the same model. Studies of several
    models (or pairs) add `groups`: the same numbers between people for each model (pair) on its own."""
    votes_ = _vote_rows(engine, study["id"])
    by_item: dict[str, dict[str, str]] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for r in votes_:
        by_item.setdefault(r["key"], {})[r["username"]] = r["value"]
        payloads.setdefault(r["key"], json.loads(r["payload"]))
    x, y = _between_people(by_item)
    if study["kind"] not in ("pairwise", *RATED):
        return {"people": None, "exact": _exact(x, y) if x else None, "judges": [], "groups": []}
    if study["kind"] in RATED:
        scale = study["config"]["scale"]
        judged: dict[str, dict[tuple[str, str], str]] = {}
        for rec in judge_records:
            if rec.get("type") == "absolute" and rec.get("scale") == scale and rec.get("score") is not None:
                judged.setdefault(rec["judge"], {})[(rec["prompt_id"], rec["model"])] = str(rec["score"])
        keys = {k: _rated_key(study, k, p) for k, p in payloads.items()}
        judge_rows = []
        for judge, scores in sorted(judged.items()):
            hx, jy = _with_judge(by_item, {k: scores[keys[k]] for k in by_item if keys[k] in scores})
            if hx:
                judge_rows.append({"judge": judge, **_exact(hx, jy)})
        groups = []
        if len(study["config"].get("models", ())) > 1:
            for model in study["config"]["models"]:
                gx, gy = _between_people(by_item, {k for k, (_, m) in keys.items() if m == model})
                groups.append({"label": model, "exact": _exact(gx, gy) if gx else None, "people": None})
        return {"people": None, "exact": _exact(x, y) if x else None, "judges": judge_rows, "groups": groups}
    people = agreement(x, y) if x else None
    pairs = {k: _pair(study, k, p) for k, p in payloads.items()}  # item key -> (prompt_id, model_a, model_b)
    cfg = study["config"]
    studied = {frozenset((cfg["model_a"], b)) for b in cfg.get("models_b") or [cfg["model_b"]]}
    judges: dict[str, dict[tuple[str, frozenset[str]], dict[str, Any]]] = {}
    for rec in judge_records:
        pair = frozenset((rec.get("model_a"), rec.get("model_b")))
        if rec.get("type") == "pairwise" and pair in studied:
            judges.setdefault(rec["judge"], {})[(rec["prompt_id"], pair)] = rec
    rows = []
    for judge, recs in sorted(judges.items()):
        verdicts = {}
        for key, (pid, a, b) in pairs.items():
            rec = recs.get((pid, frozenset((a, b))))
            if rec is not None:
                verdicts[key] = _labels(rec, a)  # oriented like the people's votes on this item
        hx, jy = _with_judge(by_item, verdicts)
        rows.append({"judge": judge, **agreement(hx, jy)})
    groups = []
    if len(cfg.get("models_b", ())) > 1:
        for model_b in cfg["models_b"]:
            gx, gy = _between_people(by_item, {k for k, (_, _, b) in pairs.items() if b == model_b})
            groups.append({"label": f"{cfg['model_a']} vs {model_b}", "people": agreement(gx, gy) if gx else None,
                           "exact": None})
    return {"people": people, "exact": None, "judges": rows, "groups": groups}


def attach_judgments(engine: Engine, sid: int, name: str, path: Path) -> int:
    """Check an LLM judgments file with stats.load_judgments and keep it for the dashboard; returns its size."""
    import time

    recs = [{k: v for k, v in r.items() if k != "_where"} for r in load_judgments([path])]
    with db.write(engine) as c:
        c.execute(db.judge_files.insert().values(study_id=sid, name=name, records=db.dumps(recs), created=time.time()))
    return len(recs)


def attached_judgments(engine: Engine, sid: int) -> list[dict[str, Any]]:
    with db.read(engine) as c:
        rows = c.execute(select(db.judge_files.c.records).where(db.judge_files.c.study_id == sid)
                         .order_by(db.judge_files.c.id)).all()
    return [rec for (text,) in rows for rec in json.loads(text)]
