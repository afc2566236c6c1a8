"""Published pairwise judgments -> our judgments format, so a judge can be checked against people.

Two published formats:
- MT-Bench's human and GPT-4 pairwise votes (Zheng et al. 2023; FastChat's human_judgments.json and
  gpt4_pair_judgments.json, or their JSONL snapshots): {question_id, model_a, model_b, winner, judge, turn,
  conversation_a?, conversation_b?} with winner model_a / model_b / tie / "tie (inconsistent)".
- AlpacaEval's annotations (annotations.json): {instruction, output_1, output_2, generator_1, generator_2,
  annotator, preference}, preference 1 = output_1 better, 2 = output_2 better, 1.5 or 0 = a draw.

What is kept, and how:
- Model order exactly as published (model_a / generator_1 is "a"); ties stay ties. A GPT-4 verdict that
  changed when the answers were swapped ("tie (inconsistent)") is a tie with consistent: false (a model judge's
  other MT-Bench verdicts held in both orders: consistent: true; people's votes carry no such field), and the
  published label stays in meta.winner.
- Prompt ids are those of our MT-Bench and AlpacaEval prompts (importers.py): the question id for turn 1,
  "<question_id>-turn<k>" for turn k, and "ae-<sha256 prefix>" of the instruction. The turn is also a field.
- Judges keep their names; people get "human:NAME" (MT-Bench's expert_* and author_*, AlpacaEval annotators
  whose name starts with "human", or the prefixes given).
- Conversations, where the file has them, become the outputs (the answer of the judged turn) and the prompt
  (everything before it, as model a saw it; model b's own earlier turns in meta.prompt_b). Label-only files
  give empty outputs, marked meta.outputs = "absent".
- A judge's repeated vote on one item (same judge, prompt, turn and model pair, in either order) is kept once:
  the first one read. Each repeat is reported with both places and whether it says the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import LimaError, Problem, ProblemList
from .importers import alpaca_eval_id
from .jsonl import json_error, read_jsonl, read_text

MT_BENCH_PEOPLE = ("expert_", "author_")
ALPACA_EVAL_PEOPLE = ("human",)
MT_WINNERS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (inconsistent)": "tie"}
DRAWS = (1.5, 0)
MAX_PROBLEMS = 30
FLIPPED = {"a": "b", "b": "a", "tie": "tie", None: None}
DUPLICATE_RULE = "the first vote read is kept; later votes by the same judge on the same item are dropped"

Record = dict[str, Any]


def _objects(path: Path) -> list[tuple[str, Any]]:
    """(where, object) from a JSON list or a JSONL file, whichever the file is."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LimaError(Problem(f"{path}:{e.lineno}", json_error(e), "fix the JSON syntax")) from None
        return [(f"{path}[{i}]", obj) for i, obj in enumerate(data)]
    return [(f"{path}:{n}", obj) for n, obj in read_jsonl(path)]


KINDS = {"mt_bench_judgments": ("question_id", "winner"), "alpaca_eval_annotations": ("output_1", "preference"),
         "judgments": ("type", "verdict")}
KIND_WORDS = {"mt_bench_judgments": "MT-Bench votes", "alpaca_eval_annotations": "AlpacaEval annotations",
              "judgments": "a lima-align judgments file"}


def _check_kind(items: list[tuple[str, Any]], expected: str) -> None:
    """A file of another known kind is one clear error, not a problem for every field of every line."""
    where, first = items[0] if items else ("", None)
    if not isinstance(first, dict) or all(k in first for k in KINDS[expected]):
        return
    for kind, keys in KINDS.items():
        if kind != expected and all(k in first for k in keys):
            fix = ("it is already in our format: pass it to `lima-align stats` or `report`" if kind == "judgments"
                   else f"use `lima-align import {kind}`")
            raise LimaError(Problem(where, f"looks like {KIND_WORDS[kind]}, not {KIND_WORDS[expected]}", fix))


def person_name(judge: str, people: Sequence[str]) -> str:
    """"human:NAME" for a judge whose name starts with one of the people prefixes, the name itself otherwise."""
    return f"human:{judge}" if any(judge.startswith(p) for p in people) and not judge.startswith("human:") else judge


def _text(x: Any) -> bool:
    return isinstance(x, str) and x != ""


def _turn_parts(conv: Any, turn: int) -> tuple[list[dict[str, str]], str] | None:
    """(prompt messages, answer) of the judged turn in a published conversation, None when it has no such turn."""
    if not isinstance(conv, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in conv):
        return None
    answers = [i for i, m in enumerate(conv) if m.get("role") == "assistant"]
    if len(answers) < turn:
        return None
    k = answers[turn - 1]
    return [{"role": m.get("role", "user"), "content": m["content"]} for m in conv[:k]], conv[k]["content"]


class _Dedup:
    """Keeps the first vote of a judge on an item and lists the repeats."""

    def __init__(self) -> None:
        self.first: dict[tuple, Record] = {}
        self.repeats: list[dict[str, Any]] = []

    def keep(self, r: Record) -> bool:
        key = (r["judge"], r["prompt_id"], frozenset((r["model_a"], r["model_b"])))
        first = self.first.get(key)
        if first is None:
            self.first[key] = r
            return True
        same_order = first["model_a"] == r["model_a"]
        same = first["verdict"] == (r["verdict"] if same_order else FLIPPED[r["verdict"]])
        self.repeats.append({"judge": r["judge"], "prompt_id": r["prompt_id"], "kept": first["meta"]["where"],
                             "dropped": r["meta"]["where"], "same_verdict": same})
        return False


def _entries(paths: Sequence[str | Path], kind: str, what: str, problems: ProblemList) -> Iterator[tuple[str, dict]]:
    """Every object of every file of `kind`, with where it is; a non-object is a problem, and a file's entries
    stop being read once MAX_PROBLEMS problems are listed."""
    for path in map(Path, paths):
        items = _objects(path)
        _check_kind(items, kind)
        for where, v in items:
            if len(problems.problems) >= MAX_PROBLEMS:
                break
            if not isinstance(v, dict):
                problems.add(where, f"expected an object, got {type(v).__name__}", f"each {what} is one {{...}}")
                continue
            yield where, v


def import_mt_bench_judgments(paths: Sequence[str | Path], *,
                              people: Sequence[str] = MT_BENCH_PEOPLE) -> tuple[list[Record], list[dict[str, Any]]]:
    """MT-Bench pairwise votes -> (pairwise judgment records, repeated votes dropped); see the module docstring."""
    problems = ProblemList()
    dedup = _Dedup()
    out: list[Record] = []
    for where, v in _entries(paths, "mt_bench_judgments", "vote", problems):
        qid, turn, winner, judge = v.get("question_id"), v.get("turn"), v.get("winner"), v.get("judge")
        if isinstance(judge, list) and judge and all(isinstance(j, str) for j in judge):
            judge = "/".join(judge)  # the full release names GPT-4 as ["gpt-4", "pair-v2"]
        bad = []
        if isinstance(qid, bool) or not isinstance(qid, int | str) or str(qid) == "":
            bad.append(("question_id", 'give "question_id": 81'))
        if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
            bad.append(("turn", 'give "turn": 1 or 2'))
        if winner not in MT_WINNERS:
            bad.append(("winner", 'use "model_a", "model_b", "tie" or "tie (inconsistent)"'))
        if not _text(judge):
            bad.append(("judge", 'give "judge": "expert_0"'))
        for key in ("model_a", "model_b"):
            if not _text(v.get(key)):
                bad.append((key, f'give "{key}": "gpt-4"'))
        if not bad and v["model_a"] == v["model_b"]:
            bad.append(("model_b", "name a different model than model_a"))
        for key, fix in bad:
            problems.add(f"{where} {key}", f"missing or invalid ({v.get(key)!r})"[:120], fix)
        if bad:
            continue
        pid = str(qid) if turn == 1 else f"{qid}-turn{turn}"
        name = person_name(judge, people)
        parts_a, parts_b = _turn_parts(v.get("conversation_a"), turn), _turn_parts(v.get("conversation_b"), turn)
        meta: dict[str, Any] = {"source": "mt_bench", "where": where, "question_id": qid, "winner": winner,
                                "outputs": "conversation" if parts_a and parts_b else "absent"}
        if parts_a and parts_b and parts_a[0] != parts_b[0]:  # a later turn: b answered after its own answers
            meta["prompt_b"] = parts_b[0]
        r: Record = {"id": f"mt_bench:{name}:{pid}:{v['model_a']}:{v['model_b']}", "type": "pairwise",
                     "prompt_id": pid, "turn": turn, "model_a": v["model_a"], "model_b": v["model_b"],
                     "judge": name, "prompt": parts_a[0] if parts_a and parts_b else [],
                     "output_a": parts_a[1] if parts_a and parts_b else "",
                     "output_b": parts_b[1] if parts_a and parts_b else "",
                     "verdict": MT_WINNERS[winner], "votes": [], "meta": meta}
        if name == judge:  # a model judge: MT-Bench's pairwise GPT-4 judged both orders, and says when they differ
            r["consistent"] = winner != "tie (inconsistent)"
        if dedup.keep(r):
            out.append(r)
    _finish(problems, out, paths, "MT-Bench votes")
    return out, dedup.repeats


def preference_verdict(p: Any) -> str | None | bool:
    """AlpacaEval preference -> "a" / "b" / "tie", None for no preference given (null or NaN), False when invalid.

    A weighted annotator's preference is 1 + P(output_2 is better), anywhere in [1, 2]: the side of 1.5 it lies
    on decides, and the published value stays in meta.preference."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return None
    if isinstance(p, bool) or not isinstance(p, int | float):
        return False
    if p in DRAWS:
        return "tie"
    if 1 <= p <= 2:
        return "a" if p < 1.5 else "b"
    return False


def import_alpaca_eval_annotations(paths: Sequence[str | Path], *, people: Sequence[str] = ALPACA_EVAL_PEOPLE,
                                   judge: str | None = None) -> tuple[list[Record], list[dict[str, Any]]]:
    """AlpacaEval annotations -> (pairwise judgment records, repeated votes dropped); see the module docstring.
    judge names the annotator of annotations that carry none."""
    problems = ProblemList()
    dedup = _Dedup()
    out: list[Record] = []
    for where, v in _entries(paths, "alpaca_eval_annotations", "annotation", problems):
        bad = [(k, f'give "{k}": "..."') for k in ("instruction", "generator_1", "generator_2")
               if not _text(v.get(k))]
        bad += [(k, f'give "{k}": "..." ("" for an empty answer)') for k in ("output_1", "output_2")
                if not isinstance(v.get(k), str)]
        annotator = v.get("annotator", judge)
        if not _text(annotator):
            bad.append(("annotator", "give the annotator's name, or pass --judge NAME for the whole file"))
        verdict = preference_verdict(v.get("preference"))
        if verdict is False:
            bad.append(("preference", "use 1 (output_1 better), 2 (output_2 better), 1.5 or 0 (a draw), "
                                      "a value between 1 and 2, or null"))
        if not bad and v["generator_1"] == v["generator_2"]:
            bad.append(("generator_2", "name a different model than generator_1"))
        for key, fix in bad:
            problems.add(f"{where} {key}", f"missing or invalid ({v.get(key)!r})"[:120], fix)
        if bad:
            continue
        pid = alpaca_eval_id(v["instruction"])
        name = person_name(annotator, people)
        meta = {"source": "alpaca_eval", "where": where, "preference": v.get("preference"), "outputs": "given"}
        if isinstance(v.get("dataset"), str):
            meta["dataset"] = v["dataset"]
        r = {"id": f"alpaca_eval:{name}:{pid}:{v['generator_1']}:{v['generator_2']}", "type": "pairwise",
             "prompt_id": pid, "model_a": v["generator_1"], "model_b": v["generator_2"], "judge": name,
             "prompt": [{"role": "user", "content": v["instruction"]}], "output_a": v["output_1"],
             "output_b": v["output_2"], "verdict": verdict, "votes": [], "meta": meta}
        if dedup.keep(r):
            out.append(r)
    _finish(problems, out, paths, "AlpacaEval annotations")
    return out, dedup.repeats


def _finish(problems: ProblemList, out: list[Record], paths: Sequence[str | Path], what: str) -> None:
    if len(problems.problems) >= MAX_PROBLEMS:
        problems.add("", f"stopped after {MAX_PROBLEMS} problems", "fix these and rerun to see the rest")
    problems.raise_if_any()
    if not out:
        raise LimaError(Problem(", ".join(map(str, paths)), f"holds no {what}", "pass the published judgments file"))


def describe_repeats(repeats: list[dict[str, Any]], limit: int = 10) -> list[str]:
    """Lines for the terminal: how many repeated votes were dropped, by which rule, and the first few."""
    if not repeats:
        return []
    lines = [f"{len(repeats)} repeated vote(s) dropped ({DUPLICATE_RULE}):"]
    for d in repeats[:limit]:
        lines.append(f"  {d['judge']} on {d['prompt_id']}: kept {d['kept']}, dropped {d['dropped']} "
                     f"({'same verdict' if d['same_verdict'] else 'a DIFFERENT verdict'})")
    if len(repeats) > limit:
        lines.append(f"  ... and {len(repeats) - limit} more")
    return lines
