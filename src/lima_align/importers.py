"""Bring answers that already exist elsewhere into our generations format, so they can be judged.

AlpacaEval publishes each model's outputs as a JSON list of {instruction, output, generator,
dataset}; FastChat's llm_judge (MT-Bench) writes answers as JSONL of {question_id, model_id,
choices: [{turns: [...]}]} next to a question file of {question_id, turns: [...]}.

Prompt ids are what lets a judge pair two models' answers to the same prompt:
- AlpacaEval has no ids, so an id is made from the instruction text ("ae-" + the first 12 hex
  digits of its sha256): the same instruction gets the same id in every model's file, and our
  own models answer the same ids through `prompts_from_alpaca_eval`.
- FastChat's question_id is used as it is (as a string, as `records.read_conversations` does) for
  a first-turn answer; a later turn's record gets "<question_id>-turn<k>", because its prompt is a
  different, longer conversation and must never be paired with a first-turn answer.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from .errors import LimaError, Problem, ProblemList
from .jsonl import json_error, read_jsonl, read_text
from .records import Conversation, Message, imported_record


def alpaca_eval_id(instruction: str) -> str:
    return "ae-" + hashlib.sha256(instruction.encode("utf-8")).hexdigest()[:12]


def _json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise LimaError(Problem(f"{path}:{e.lineno}", json_error(e), "fix the JSON syntax")) from None
    if not isinstance(data, list):
        raise LimaError(Problem(str(path), f"expected a JSON list of outputs, got {type(data).__name__}",
                                'AlpacaEval files hold [{"instruction": ..., "output": ..., "generator": ...}, ...]'))
    return data


def _alpaca_items(path: Path, fields: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """Validated (where, item) pairs; every problem in the file is reported at once."""
    problems = ProblemList()
    out = []
    seen: dict[tuple[Any, str], str] = {}
    for i, item in enumerate(_json_list(path)):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            problems.add(where, f"expected an object, got {type(item).__name__}", "each output is one {...}")
            continue
        bad = False
        for name in fields:
            if not isinstance(item.get(name), str):
                what = "missing" if name not in item else f"must be a string, got {type(item[name]).__name__}"
                problems.add(f"{where} {name}", what, f'give "{name}": "..."')
                bad = True
        if "dataset" in item and not isinstance(item["dataset"], str):
            problems.add(f"{where} dataset", "must be a string", "drop the field or give the subset's name")
            bad = True
        if not bad and not item["instruction"].strip():
            problems.add(f"{where} instruction", "empty instruction", "remove this item")
            bad = True
        if bad:
            continue
        key = (item.get("generator"), alpaca_eval_id(item["instruction"]))
        if key in seen:
            problems.add(f"{where} instruction", f"the same instruction appears at {seen[key]}",
                         "keep one output per instruction and generator")
            continue
        seen[key] = where
        out.append((where, item))
    problems.raise_if_any()
    return out


def import_alpaca_eval(path: str | Path) -> list[dict[str, Any]]:
    """AlpacaEval model outputs -> generations records (finish reason, tokens and decoding unknown: null).

    An empty output is kept: it is what the model answered (text_davinci_003 has two).
    """
    path = Path(path)
    created = round(time.time(), 3)
    records = []
    for _, item in _alpaca_items(path, ("instruction", "output", "generator")):
        pid = alpaca_eval_id(item["instruction"])
        meta: dict[str, Any] = {"source": "alpaca_eval", "generator": item["generator"], "file": path.name}
        if "dataset" in item:
            meta["dataset"] = item["dataset"]
        records.append(imported_record(pid, item["generator"], [{"role": "user", "content": item["instruction"]}],
                                       item["output"], created=created, meta=meta))
    return records


def prompts_from_alpaca_eval(path: str | Path) -> list[Conversation]:
    """The instructions of an AlpacaEval file as prompts, with the ids `import_alpaca_eval` gives them."""
    path = Path(path)
    out = []
    for _, item in _alpaca_items(path, ("instruction",)):
        meta = {"dataset": item["dataset"]} if "dataset" in item else {}
        out.append(Conversation(alpaca_eval_id(item["instruction"]), [Message("user", item["instruction"])],
                                "alpaca_eval", meta))
    return out


def _question_id(obj: dict[str, Any], where: str, problems: ProblemList) -> str | None:
    qid = obj.get("question_id")
    if isinstance(qid, bool) or not isinstance(qid, int | str) or str(qid) == "":
        problems.add(f"{where} question_id", "missing" if qid is None else f"must be a number or string, got {qid!r}",
                     'give "question_id": 81')
        return None
    return str(qid)


def _string_turns(raw: Any, where: str, problems: ProblemList) -> list[str] | None:
    if not isinstance(raw, list) or not raw:
        problems.add(where, "must be a non-empty list of strings", '"turns": ["first turn", "second turn"]')
        return None
    bad = [i for i, t in enumerate(raw) if not isinstance(t, str)]
    if bad:
        problems.add(f"{where}[{bad[0]}]", f"must be a string, got {type(raw[bad[0]]).__name__}", "")
        return None
    return raw


def read_fastchat_questions(path: str | Path) -> dict[str, dict[str, Any]]:
    """question_id -> {"turns": [...], "category": ...} from a FastChat question.jsonl."""
    path = Path(path)
    problems = ProblemList()
    out: dict[str, dict[str, Any]] = {}
    for n, obj in read_jsonl(path):
        where = f"{path}:{n}"
        qid = _question_id(obj, where, problems)
        turns = _string_turns(obj.get("turns"), f"{where} turns", problems)
        if qid is None or turns is None:
            continue
        if qid in out:
            problems.add(f"{where} question_id", f"duplicate question_id {qid}", "make question ids unique")
            continue
        out[qid] = {"turns": turns, "category": obj.get("category")}
    problems.raise_if_any()
    return out


def import_fastchat_answers(path: str | Path, questions_path: str | Path | None = None) -> list[dict[str, Any]]:
    """FastChat llm_judge answers -> generations records, one per answer.

    The record is the answer's LAST turn: its messages hold the whole conversation before it
    (question turn 1, the model's own answer 1, ..., the last question turn), and its output is
    the last answer. That is what MT-Bench's second-turn judging looks at, and the earlier answers
    stay visible in messages. prompt_id is the question_id for a one-turn answer and
    "<question_id>-turn<k>" for a k-turn one (see the module docstring).
    Only choices[0] is used (FastChat writes one choice by default).

    The question file rebuilds the user turns; by default it is FastChat's layout,
    <bench>/question.jsonl next to <bench>/model_answer/<model>.jsonl.
    """
    path = Path(path)
    if questions_path is None:
        questions_path = path.parent.parent / "question.jsonl"
        if not questions_path.exists():
            raise LimaError(Problem(str(path), "FastChat answers hold no question text, and no question file was "
                                               f"found at {questions_path}",
                                    "pass the question file (e.g. data/mt_bench/question.jsonl)"))
    questions = read_fastchat_questions(questions_path)
    problems = ProblemList()
    records = []
    seen: dict[tuple[str, str], str] = {}
    created = round(time.time(), 3)
    for n, obj in read_jsonl(path):
        where = f"{path}:{n}"
        qid = _question_id(obj, where, problems)
        model = obj.get("model_id")
        if not isinstance(model, str) or not model:
            problems.add(f"{where} model_id", "missing or not a string", 'give "model_id": "my-model"')
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            problems.add(f"{where} choices", "must be a non-empty list of {\"turns\": [...]}",
                         '"choices": [{"index": 0, "turns": ["answer 1", "answer 2"]}]')
            continue
        answers = _string_turns(choices[0].get("turns"), f"{where} choices[0].turns", problems)
        if qid is None or answers is None or not isinstance(model, str) or not model:
            continue
        question = questions.get(qid)
        if question is None:
            problems.add(f"{where} question_id", f"question {qid} is not in {questions_path}",
                         "pass the question file these answers were made for")
            continue
        asked = question["turns"]
        if len(answers) > len(asked):
            problems.add(f"{where} choices[0].turns", f"{len(answers)} answers but question {qid} has "
                         f"{len(asked)} turns", "pass the question file these answers were made for")
            continue
        if (model, qid) in seen:
            problems.add(f"{where} question_id", f"a second answer by {model} to question {qid} "
                         f"(first at {seen[(model, qid)]})", "keep one answer per question")
            continue
        seen[(model, qid)] = where
        messages = []
        for q, a in zip(asked, answers[:-1]):
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": asked[len(answers) - 1]})
        meta = {"source": "fastchat", "file": path.name, "question_id": qid, "answer_id": obj.get("answer_id"),
                "turn": len(answers), "category": question.get("category")}
        pid = qid if len(answers) == 1 else f"{qid}-turn{len(answers)}"
        records.append(imported_record(pid, model, messages, answers[-1], created=created, meta=meta))
    problems.raise_if_any()
    return records
