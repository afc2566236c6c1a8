"""Judging behaviour that mutation testing (benchmarks/mutation.py) found unchecked: every error's where, what
and fix; record ids and cache keys (stored in files and caches that later versions must still read); the
absolute runner's records, resume and counts; the progress bar, logs, concurrency, cache location, and
that judges are closed."""

from __future__ import annotations

import asyncio

import pytest

from lima_align.errors import LimaError, Problem
from lima_align.jsonl import read_jsonl
from lima_align.judge import judge_absolute, judge_pairwise, match_pairs
from lima_align.judge_cache import JudgeCache, digest
from lima_align.judge_text import load_instructions
from lima_align.judges import LongestJudge, Price, Rating, Vote

FPE = "fail_pass_excellent"


class Judge:
    """Answers with `answer(shown_first, shown_second_or_None)`; records what it was asked and how many
    requests were in flight at once."""

    def __init__(self, name: str = "stub", answer=lambda a, b: "Verdict: tie", price: Price | None = None):
        self.name, self.answer, self.price = name, answer, price
        self.asked: list[tuple] = []
        self.in_flight = self.peak = 0
        self.closed = False

    async def _call(self, args: tuple, a: str, b: str | None) -> str:
        self.asked.append(args)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        return self.answer(a, b)

    async def judge_pair(self, prompt_messages, shown_a, shown_b, instructions) -> Vote:
        return Vote(await self._call((prompt_messages, shown_a, shown_b, instructions), shown_a, shown_b), 100, 10)

    async def rate(self, prompt_messages, text, scale, instructions) -> Rating:
        return Rating(await self._call((prompt_messages, text, scale, instructions), text, None), scale, 50, 5)

    async def aclose(self) -> None:
        self.closed = True


class Comparer(Judge):
    can_rate = False


def gens(model: str, outputs: dict[str, str], system: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": "question"}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return [{"prompt_id": pid, "model": model, "messages": [dict(m) for m in messages], "output": out}
            for pid, out in outputs.items()]


A = {"p1": "answer one from A", "p2": "A2", "p3": "A three", "p4": "A4"}
B = {"p1": "B1", "p2": "answer two from B", "p3": "B three", "p4": "B4"}


def pairwise(tmp_path, judges, a=None, b=None, out="j.jsonl", **kw):
    kw.setdefault("cache_path", tmp_path / "c.sqlite")
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda *_: None)
    a = gens("model-a", A) if a is None else a
    b = gens("model-b", B) if b is None else b
    return judge_pairwise(a, b, judges, tmp_path / out, **kw)


def absolute(tmp_path, judges, g=None, out="r.jsonl", scale=FPE, **kw):
    kw.setdefault("cache_path", tmp_path / "c.sqlite")
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda *_: None)
    return judge_absolute(gens("m", A) if g is None else g, judges, tmp_path / out, scale=scale, **kw)


def problems(call) -> list[Problem]:
    with pytest.raises(LimaError) as e:
        call()
    return e.value.problems


# ----------------------------------------------------------------- errors: where, what, fix


def test_judges_and_concurrency_are_checked_with_where_what_and_fix(tmp_path):
    no_judge = [Problem("", "no judge given", "name at least one judge (an API judge or 'longest')")]
    assert problems(lambda: pairwise(tmp_path, [])) == no_judge
    assert problems(lambda: absolute(tmp_path, [])) == no_judge
    twice = [LongestJudge(), Judge("x"), LongestJudge(), Judge("x")]
    assert problems(lambda: pairwise(tmp_path, twice)) == [Problem(
        "", "the same judge is named twice: longest, x",
        "give each judge once (records of one judge are identified by its name)")]
    at_least_one = [Problem("", "max_concurrency must be at least 1, got 0", "use 1 or more")]
    assert problems(lambda: pairwise(tmp_path, [Judge()], max_concurrency=0)) == at_least_one
    assert problems(lambda: absolute(tmp_path, [Judge()], max_concurrency=0)) == at_least_one
    assert problems(lambda: absolute(tmp_path, [Judge()], scale="1-10")) == [
        Problem("", "unknown scale '1-10'", "use one of fail_pass_excellent, helpfulness_6")]
    assert problems(lambda: absolute(tmp_path, [LongestJudge(), Judge("r"), Comparer("x")])) == [Problem(
        "", "judge(s) longest, x cannot rate single answers", "use them for pairwise judging; rate with an API judge")]
    assert not (tmp_path / "j.jsonl").exists() and not (tmp_path / "r.jsonl").exists()


def test_one_request_at_a_time_is_allowed_and_eight_by_default(tmp_path):
    one, default = Judge("one"), Judge("default")
    pairwise(tmp_path, [one], max_concurrency=1)
    many = {f"p{i}": f"answer {i}" for i in range(10)}
    pairwise(tmp_path, [default], a=gens("model-a", many), b=gens("model-b", many), out="k.jsonl")
    assert one.peak == 1 and len(one.asked) == 8
    assert default.peak == 8  # 20 questions, at most 8 in flight
    rated_one, rated_default = Judge("one"), Judge("default")
    absolute(tmp_path, [rated_one], max_concurrency=1)
    absolute(tmp_path, [rated_default], g=gens("m", many), out="s.jsonl")
    assert rated_one.peak == 1 and rated_default.peak == 8


def test_malformed_generations_are_listed_by_side_and_record_number(tmp_path):
    good = gens("model-a", {"p1": "x"})[0]
    broken = [good, {**good, "prompt_id": 7}, {**good, "output": None}, {k: v for k, v in good.items() if k != "model"},
              {**good, "messages": "question"}]
    fix = "use a generations file written by `lima-align generate`"
    what = "needs string 'prompt_id', 'model', 'output' and a 'messages' list"
    assert problems(lambda: match_pairs(broken, [good], sources=("a.jsonl", "b.jsonl"))) == [
        Problem(f"a.jsonl record {i}", what, fix) for i in (2, 3, 4, 5)]
    assert problems(lambda: match_pairs([good], broken[:2], sources=("a.jsonl", "b.jsonl"))) == [
        Problem("b.jsonl record 2", what, fix)]
    assert problems(lambda: absolute(tmp_path, [Judge()], g=broken[1:3])) == [
        Problem("generations record 1", what, fix), Problem("generations record 2", what, fix)]


def test_prompt_ids_answered_twice_are_reported_per_side(tmp_path):
    a = gens("model-a", {"p1": "x", "p2": "y"}) * 2 + gens("model-a", {"p3": "z"})
    b = gens("model-b", {"p1": "x", "p2": "y", "p3": "z"})
    fix = "keep one answer per prompt (one model per generations file)"
    assert problems(lambda: match_pairs(a, b, sources=("a.jsonl", "b.jsonl"))) == [
        Problem("a.jsonl", "2 prompt id(s) answered more than once: p1, p2", fix)]
    assert problems(lambda: match_pairs(b, a, sources=("a.jsonl", "b.jsonl"))) == [
        Problem("b.jsonl", "2 prompt id(s) answered more than once: p1, p2", fix)]
    # absolute: one answer per model and prompt id (two models may answer the same prompt)
    g = gens("m", {"p1": "x", "p2": "y"}) * 2 + gens("n", {"p1": "x"})
    assert problems(lambda: absolute(tmp_path, [Judge()], g=g)) == [Problem(
        "generations", "2 answer(s) appear more than once: m:p1, m:p2", "keep one answer per model and prompt id")]
    assert problems(lambda: absolute(tmp_path, [Judge()], g=[])) == [
        Problem("", "nothing to rate: no generations", "check the input file")]


def test_missing_prompt_ids_name_both_sides_and_are_cut_after_twenty():
    fix = "generate the missing answers, or judge only the shared prompts (allow_partial / --partial)"
    shared = {"s": "x"}
    a = gens("model-a", shared | {f"q{i:02d}": "x" for i in range(25)})
    b = gens("model-b", shared | {f"r{i:02d}": "x" for i in range(20)})
    listed_a = ", ".join(f"q{i:02d}" for i in range(20))
    listed_b = ", ".join(f"r{i:02d}" for i in range(20))
    # the default is to refuse: allow_partial must be asked for
    assert problems(lambda: match_pairs(a, b, sources=("a.jsonl", "b.jsonl"))) == [
        Problem("b.jsonl", f"lacks 25 prompt id(s) that a.jsonl answers: {listed_a} ... and 5 more", fix),
        Problem("a.jsonl", f"lacks 20 prompt id(s) that b.jsonl answers: {listed_b}", fix)]
    pairs, skipped = match_pairs(a, b, allow_partial=True)
    assert [(x["prompt_id"], y["prompt_id"]) for x, y in pairs] == [("s", "s")] and skipped == 45


def test_sides_that_cannot_be_paired_say_why():
    a, b = gens("model-a", {"p1": "x", "p2": "y"}), gens("model-b", {"p1": "x", "p2": "y"})
    b[1]["messages"] = [{"role": "user", "content": "another question"}]
    assert problems(lambda: match_pairs(a, b, sources=("a.jsonl", "b.jsonl"))) == [Problem(
        "a.jsonl vs b.jsonl", "1 prompt id(s) hold different prompts on the two sides: p2",
        "generate both files from the same prompts file")]
    assert problems(lambda: match_pairs(a, [], allow_partial=True, sources=("a.jsonl", "b.jsonl"))) == [
        Problem("a.jsonl vs b.jsonl", "nothing to judge: a side has no answers", "check the inputs")]
    assert problems(lambda: match_pairs(a, gens("model-b", {"p3": "z"}), allow_partial=True,
                                        sources=("a.jsonl", "b.jsonl"))) == [
        Problem("", "a.jsonl and b.jsonl share no prompt id", "judge answers to the same prompts")]


def test_a_system_prompt_on_one_side_only_is_still_the_same_prompt():
    # the user (and assistant) turns are compared; a system prompt is a generation setting, not the prompt
    pairs, skipped = match_pairs(gens("model-a", A, system="Be brief."), gens("model-b", B))
    assert len(pairs) == 4 and skipped == 0


def test_judgments_that_failed_for_good_are_counted_in_one_error(tmp_path):
    from lima_align.api import ApiError

    failure = ApiError(Problem("http://x/v1", "HTTP 400: prompt too long", "shorten it"), status=400)

    def answer(a, b):
        if "A4" in (a, b):
            raise failure
        return "Verdict: A"

    judge = Judge("flaky", answer)
    assert problems(lambda: pairwise(tmp_path, [judge])) == [Problem(
        str(tmp_path / "j.jsonl"), f"1 of 4 judgments failed after retries and were not written; first: {failure}",
        "rerun the same command: written judgments are kept and cached answers reused")]
    assert judge.closed  # and the judge's connections were closed all the same


# ----------------------------------------------------------------- what is stored: ids, cache keys, records


def test_record_ids_and_cache_keys_keep_their_stored_form(tmp_path):
    """Output files and the answer cache outlive a version: a rerun must find what an earlier one stored."""
    sha = load_instructions(None, "pairwise").sha256
    judge = Judge("j", lambda a, b: "never asked")
    cache = JudgeCache(tmp_path / "c.sqlite")
    ga, gb = gens("model-a", A), gens("model-b", B)
    for x, y in zip(ga, gb):
        for order, first, second in (("ab", x["output"], y["output"]), ("ba", y["output"], x["output"])):
            key = digest(["pairwise", "j", sha, order, x["messages"], first, second])
            cache.put(key, "j", f"stored {order}\nVerdict: A", 7, 1)
    cache.close()
    pairwise(tmp_path, [judge], a=ga, b=gb)
    records = [r for _, r in read_jsonl(tmp_path / "j.jsonl")]
    assert judge.asked == [] and len(records) == 4
    assert {(v["order"], v["raw"]) for r in records for v in r["votes"]} == {
        ("ab", "stored ab\nVerdict: A"), ("ba", "stored ba\nVerdict: A")}
    assert sorted(r["id"] for r in records) == sorted(
        digest(["pairwise", "j", sha, x["prompt_id"], "model-a", "model-b", x["output"], y["output"]])
        for x, y in zip(ga, gb))

    sha = load_instructions(None, FPE).sha256
    g = gens("m", A)
    cache = JudgeCache(tmp_path / "c.sqlite")
    for x in g:
        cache.put(digest(["absolute", "j", sha, FPE, x["messages"], x["output"], ""]), "j", "Rating: pass", 7, 1)
    cache.close()
    absolute(tmp_path, [judge], g=g)
    records = [r for _, r in read_jsonl(tmp_path / "r.jsonl")]
    assert judge.asked == [] and [r["score"] for r in records] == ["pass"] * 4
    assert sorted(r["id"] for r in records) == sorted(
        digest(["absolute", "j", sha, FPE, x["prompt_id"], "m", x["output"]]) for x in g)


def test_an_absolute_record_holds_everything_about_its_rating(tmp_path, monkeypatch):
    monkeypatch.setattr("lima_align.judge.time.time", lambda: 1700000000.123456)
    ratings = {"one": "Good.\nRating: pass", "two": "meh", "three": "hmm", "four": "Rating: excellent"}
    judge = Judge("rater", lambda text, _: ratings[text], price=Price(1.234567, 0.0))
    g = gens("m", {f"p{i}": text for i, text in enumerate(ratings)})
    summary = absolute(tmp_path, [judge], g=g)
    ins = load_instructions(None, FPE)
    records = {r["prompt_id"]: r for _, r in read_jsonl(tmp_path / "r.jsonl")}
    assert records["p0"] == {
        "id": digest(["absolute", "rater", ins.sha256, FPE, "p0", "m", "one"]), "type": "absolute",
        "prompt_id": "p0", "prompt": [{"role": "user", "content": "question"}], "model": "m", "output": "one",
        "judge": "rater", "instructions": {"name": "absolute_fpe", "sha256": ins.sha256}, "scale": FPE,
        "raw": "Good.\nRating: pass", "score": "pass",
        # 50 tokens at $1.234567 per million: $0.0000617..., kept to a millionth of a dollar
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "cost_usd": 6.2e-05}, "created": 1700000000.123}
    assert [records[f"p{i}"]["score"] for i in range(4)] == ["pass", None, None, "excellent"]
    assert summary == {"ratings": 4, "existing": 0, "calls": 4, "cached": 0, "unparseable": 2, "retried": 0,
                       "tokens": {"prompt": 200, "completion": 20}, "cost_usd": 0.000247}
    # the judge was given the conversation, the answer, the scale and the instructions
    assert judge.asked[0] == ([{"role": "user", "content": "question"}], "one", FPE, ins)


def test_a_pairwise_record_keeps_its_time_to_the_millisecond_and_an_unpriced_run_no_cost(tmp_path, monkeypatch):
    monkeypatch.setattr("lima_align.judge.time.time", lambda: 1700000000.123456)
    summary = pairwise(tmp_path, [LongestJudge()])
    assert {r["created"] for _, r in read_jsonl(tmp_path / "j.jsonl")} == {1700000000.123}
    assert summary["cost_usd"] is None and summary["calls"] == 8


def test_absolute_ratings_with_custom_instructions(tmp_path):
    mine = tmp_path / "mine.md"
    mine.write_text("Rate {response} to {prompt}. End with Score: 1-6.")
    judge = Judge("rater", lambda text, _: "Score: 5")
    absolute(tmp_path, [judge], scale="helpfulness_6", instructions_path=mine)
    records = [r for _, r in read_jsonl(tmp_path / "r.jsonl")]
    ins = load_instructions(mine, "helpfulness_6")
    assert {r["instructions"]["name"] for r in records} == {"mine"} and {r["score"] for r in records} == {5}
    assert {asked[2:] for asked in judge.asked} == {("helpfulness_6", ins)}


# ----------------------------------------------------------------- resume, logs, cache location


def test_reruns_count_what_is_already_there_and_say_so(tmp_path):
    said: list[str] = []
    first = pairwise(tmp_path, [LongestJudge()])
    both = pairwise(tmp_path, [LongestJudge(), Judge("x")], log=said.append)
    assert (first["pairs"], both["pairs"], both["existing"]) == (4, 4, 4)
    again = pairwise(tmp_path, [LongestJudge(), Judge("x")], log=said.append)
    assert (again["pairs"], again["existing"]) == (0, 8)
    assert said == [f"{tmp_path / 'j.jsonl'}: all 8 judgments already there"]

    half = {k: A[k] for k in ("p1", "p2")}
    rater = Judge("rater", lambda text, _: "Rating: pass")
    absolute(tmp_path, [rater], g=gens("m", half))
    s = absolute(tmp_path, [rater, Judge("other", lambda text, _: "Rating: fail")], log=said.append)
    assert (s["ratings"], s["existing"]) == (6, 2) and len(rater.asked) == 4
    s = absolute(tmp_path, [rater, Judge("other")], log=said.append)
    assert (s["ratings"], s["existing"]) == (0, 8)
    assert said[-1] == f"{tmp_path / 'r.jsonl'}: all 8 ratings already there"
    ids = [r["id"] for _, r in read_jsonl(tmp_path / "r.jsonl")]
    assert len(ids) == len(set(ids)) == 8


def test_judging_part_of_the_prompts_says_how_many_were_skipped(tmp_path):
    said: list[str] = []
    a = gens("model-a", A | {"extra": "x"})
    summary = pairwise(tmp_path, [LongestJudge()], a=a, allow_partial=True, log=said.append)
    assert said == ["judging the 4 prompt ids both sides answer; 1 prompt id(s) on one side only skipped"]
    assert summary["skipped"] == 1


def test_without_a_cache_path_the_cache_lives_in_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMA_ALIGN_CACHE", str(tmp_path / "root"))
    default = tmp_path / "root" / "judge_cache.sqlite"
    pairwise(tmp_path, [LongestJudge()], cache_path=None)
    assert default.exists()
    default.unlink()
    absolute(tmp_path, [Judge()], cache_path=tmp_path / "mine.sqlite")
    assert (tmp_path / "mine.sqlite").exists() and not default.exists()
    absolute(tmp_path, [Judge()], out="r2.jsonl", cache_path=None)
    assert default.exists()


# ----------------------------------------------------------------- the progress bar


def last_frame(err: str, desc: str) -> str:
    return [f for f in err.replace("\n", "\r").split("\r") if desc in f][-1]


def test_the_progress_bar_counts_calls_made_and_cached(tmp_path, capsys):
    judge_pairwise(gens("model-a", A), gens("model-b", B), [LongestJudge()], tmp_path / "j.jsonl",
                   cache_path=tmp_path / "c.sqlite", log=lambda *_: None)  # a bar unless asked not to
    frame = last_frame(capsys.readouterr().err, "judge pairwise")
    assert frame.startswith("judge pairwise: 100%") and "| 8/8 [" in frame and "cached=0, made=8]" in frame
    assert "call/s" in frame or "s/call" in frame
    pairwise(tmp_path, [LongestJudge()], out="again.jsonl", progress=True)
    frame = last_frame(capsys.readouterr().err, "judge pairwise")
    assert "| 8/8 [" in frame and "cached=8, made=0]" in frame

    judge_absolute(gens("m", A), [Judge()], tmp_path / "r.jsonl", scale=FPE, cache_path=tmp_path / "c.sqlite",
                   log=lambda *_: None)
    frame = last_frame(capsys.readouterr().err, "judge fail_pass_excellent")
    assert frame.startswith("judge fail_pass_excellent: 100%") and "| 4/4 [" in frame and "cached=0, made=4]" in frame
    pairwise(tmp_path, [LongestJudge()], out="quiet.jsonl")
    assert capsys.readouterr().err == ""


def test_judges_are_closed_when_a_run_ends(tmp_path):
    judge = Judge()
    pairwise(tmp_path, [judge, LongestJudge()])
    assert judge.closed

    def broken(a, b):
        raise RuntimeError("judge went away")

    failing = Judge("broken", broken)
    with pytest.raises(RuntimeError):
        absolute(tmp_path, [failing])
    assert failing.closed
