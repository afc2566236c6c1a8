"""Reddit Pushshift dumps (NDJSON, optionally .zst) -> WritingPrompts-style training pairs and
AskReddit-style evaluation prompts.

Submissions and comments may sit in separate files or in one; every file is read twice, in
constant memory per subreddit: pass 1 keeps the top-N submissions of each wanted subreddit (id,
score, title), pass 2 keeps, for those only, the best top-level comment (the one replying to the
submission itself, joined by link_id).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import setting
from ..errors import LimaError
from ..jsonl import json_error
from .inputs import BadRows, iter_lines
from .rules import RuleCounts, SourceRun, TitleRules, split_tag, title_problem

SOURCE = "reddit"
REMOVED = {"[deleted]", "[removed]", ""}


@dataclass
class RedditConfig:
    paths: list[str] = setting([], "Pushshift NDJSON files (.zst too) of submissions, comments, or both")
    answer_subreddits: list[str] = setting(["WritingPrompts"], "subreddits whose submissions become training pairs "
                                           "(prompt = title without its [tag], response = top comment)")
    eval_subreddits: list[str] = setting(["AskReddit"], "subreddits whose self-contained titles become evaluation "
                                         "prompts (eval_prompts.jsonl)")
    top_submissions_per_subreddit: int = setting(1000, "keep the N highest-scoring submissions of each subreddit",
                                                 above=0)
    skip_tags: list[str] = setting(["OT", "MP", "META"], "title tags of off-topic / meta posts (rule rd_meta_post)")
    min_comment_score: int = setting(10, "the top comment must score at least this")
    min_chars: int = setting(500, "shortest response kept", at_least=0)
    max_chars: int = setting(4096, "longest response kept", at_least=0)
    title: TitleRules = field(default_factory=TitleRules, metadata={"help": "self-contained rule for eval prompts"})
    license: str = setting("Reddit user content (Pushshift dump); check the terms before redistributing",
                           "licence written into every record")


def _objects(path: Path, bad: BadRows, desc: str, count_bad: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) for each NDJSON line; bad lines are recorded on the first pass only."""
    sink = bad if count_bad else BadRows()
    for n, raw in iter_lines(path, sink, desc):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            if count_bad:
                bad.skip(path, f":{n}", f"not UTF-8 (byte {e.start})", "re-save the file as UTF-8")
            continue
        except json.JSONDecodeError as e:
            if count_bad:
                bad.skip(path, f":{n}", json_error(e), "fix or delete this line")
            continue
        if isinstance(obj, dict):
            yield n, obj
        elif count_bad:
            bad.skip(path, f":{n}", f"expected a JSON object, got {type(obj).__name__}", "one object per line")


def _is_submission(obj: dict[str, Any]) -> bool:
    return "title" in obj and "link_id" not in obj


def _num(obj: dict[str, Any], key: str) -> int | None:
    v = obj.get(key, 0)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def reddit_records(cfg: RedditConfig, counts: RuleCounts, bad: BadRows,
                   eval_out: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield training pairs; evaluation prompts are appended to `eval_out` (a separate output file)."""
    paths = [Path(p) for p in cfg.paths]
    for p in paths:
        if not p.is_file():
            raise LimaError(f"Reddit dump not found: {p}", where="reddit.paths", fix="check the path")
    answer_subs = {s.lower() for s in cfg.answer_subreddits}
    eval_subs = {s.lower() for s in cfg.eval_subreddits}
    skip_tags = {t.upper() for t in cfg.skip_tags}
    heaps: dict[str, list[tuple[int, str]]] = {}
    chosen: dict[str, dict[str, Any]] = {}  # submission id -> kept fields
    chosen_eval: dict[str, dict[str, Any]] = {}  # submission id -> evaluation prompt record
    for path in paths:  # pass 1: submissions
        rows = 0
        for n, obj in _objects(path, bad, "submissions", count_bad=True):
            rows += 1
            if not _is_submission(obj):
                continue
            sub = str(obj.get("subreddit", "")).lower()
            if sub not in answer_subs and sub not in eval_subs:
                continue
            sid, score, title = str(obj.get("id", "")), _num(obj, "score"), obj.get("title")
            if not sid or score is None or not isinstance(title, str):
                bad.skip(path, f":{n}", "submission without a string id/title or a numeric score", "fix this line")
                continue
            counts.seen[SOURCE] += 1
            tag, text = split_tag(title)
            if tag in skip_tags:
                counts.drop(SOURCE, "rd_meta_post")
                continue
            if sub in eval_subs:
                if title_problem(text, cfg.title):
                    counts.drop(SOURCE, "rd_eval_title_not_self_contained")
                    continue
                chosen_eval[sid] = {"id": f"reddit:{sub}:{sid}", "source": SOURCE,
                                 "messages": [{"role": "user", "content": text}],
                                 "meta": {"source": SOURCE, "group": f"{SOURCE}:eval", "stratum": obj.get("subreddit"),
                                          "domain": "eval", "subreddit": obj.get("subreddit"), "original_id": sid,
                                          "url": f"https://www.reddit.com{obj.get('permalink', '')}",
                                          "license": cfg.license, "score": score}}
            else:
                chosen[sid] = {"score": score, "title": text, "tag": tag, "subreddit": obj.get("subreddit"),
                               "permalink": obj.get("permalink", ""), "best": None}
            heap = heaps.setdefault(sub, [])
            heapq.heappush(heap, (score, sid))
            if len(heap) > cfg.top_submissions_per_subreddit:  # bounded memory: only the top N stay
                _, out = heapq.heappop(heap)
                chosen.pop(out, None)
                chosen_eval.pop(out, None)
                counts.drop(SOURCE, "rd_not_top_submission")
        bad.check_file(path, rows)
    for sid in sorted(chosen_eval, key=lambda k: (-chosen_eval[k]["meta"]["score"], k)):
        counts.kept[SOURCE + ":eval"] += 1
        eval_out.append(chosen_eval[sid])
    for path in paths:  # pass 2: the best top-level comment of each chosen submission
        for _, obj in _objects(path, bad, "comments", count_bad=False):
            if _is_submission(obj):
                continue
            link = str(obj.get("link_id", ""))
            s = chosen.get(link.removeprefix("t3_"))
            body, score = obj.get("body"), _num(obj, "score")
            if s is None or str(obj.get("parent_id", link)) != link or not isinstance(body, str) or score is None:
                continue
            if body.strip() in REMOVED:
                continue
            cid = str(obj.get("id", ""))
            if s["best"] is None or (score, cid) > (s["best"][0], s["best"][1]):
                s["best"] = (score, cid, body.strip())
    for sid in sorted(chosen, key=lambda k: (-chosen[k]["score"], k)):
        s = chosen[sid]
        if s["best"] is None:
            counts.drop(SOURCE, "rd_no_comment")
            continue
        score, cid, body = s["best"]
        if score < cfg.min_comment_score:
            counts.drop(SOURCE, "rd_comment_score")
            continue
        if not cfg.min_chars <= len(body) <= cfg.max_chars:
            counts.drop(SOURCE, "rd_comment_length")
            continue
        counts.kept[SOURCE] += 1
        sub = str(s["subreddit"])
        yield {"id": f"reddit:{sub.lower()}:{sid}", "source": SOURCE,
               "messages": [{"role": "user", "content": s["title"]}, {"role": "assistant", "content": body}],
               "meta": {"source": SOURCE, "group": SOURCE, "stratum": sub, "domain": "creative", "subreddit": sub,
                        "original_id": sid, "comment_id": cid, "tag": s["tag"],
                        "url": f"https://www.reddit.com{s['permalink']}", "license": cfg.license,
                        "score": s["score"], "answer_score": score}}


def read(cfg: RedditConfig, run: SourceRun) -> Iterator[dict[str, Any]]:
    """This source's candidate records (the signature every source shares, see sources.py); evaluation
    prompts go to run.eval_prompts."""
    if cfg.paths:
        yield from reddit_records(cfg, run.counts, run.bad, run.eval_prompts)


def input_files(cfg: RedditConfig) -> list[Path]:
    """The files read, for the manifest's hashes; a missing one is an error now, before any reading."""
    for p in cfg.paths:
        if not Path(p).is_file():
            raise LimaError(f"reddit dump not found: {p}", where="reddit.paths", fix="check the path")
    return [Path(p) for p in cfg.paths]
