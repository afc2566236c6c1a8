"""Judging: the order swap undone exactly, verdict parsing and combination, prompt-id checks before any
request, the answer cache, resume after an interruption, absolute scales, instruction hashes."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from pathlib import Path

import pytest

from lima_align.errors import LimaError
from lima_align.jsonl import read_jsonl
from lima_align.judge import judge_absolute, judge_pairwise
from lima_align.judges import ApiJudge, LongestJudge, Price, Rating, Vote
from lima_align.judge_text import (INSTRUCTIONS_DIR, RETRY_MARK, combine, load_instructions, parse_score, parse_verdict,
                                   show, unswap)



# ----------------------------------------------------------------- helpers


class StubJudge:
    """A judge whose answer is a function of what it is shown; counts its calls."""

    def __init__(self, name: str, answer, fail_after: int | None = None, price: Price | None = None):
        self.name, self.answer, self.fail_after, self.price = name, answer, fail_after, price
        self.calls = 0

    def _count(self) -> None:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("judge went away")  # an interruption mid-run
        self.calls += 1

    async def judge_pair(self, prompt_messages, shown_a, shown_b, instructions) -> Vote:
        self._count()
        await asyncio.sleep(0)
        return Vote(self.answer(shown_a, shown_b), 100, 10)

    async def rate(self, prompt_messages, text, scale, instructions) -> Rating:
        self._count()
        return Rating(self.answer(text, None), scale, 50, 5)


def prefers_longer(a: str, b: str) -> str:
    return f"A has {len(a)}, B has {len(b)}.\nVerdict: {'A' if len(a) > len(b) else 'B' if len(b) > len(a) else 'tie'}"


def always_a(a: str, b: str | None) -> str:
    return "Response A reads better to me.\n**Verdict: A**"


def gens(model: str, outputs: dict[str, str]) -> list[dict]:
    return [{"id": f"{model}:{pid}", "prompt_id": pid, "model": model,
             "messages": [{"role": "user", "content": f"question {pid} with {{braces}}"}], "output": out,
             "finish_reason": "eot", "tokens": None} for pid, out in outputs.items()]


A_OUT = {"p1": "a long answer from model A", "p2": "short A", "p3": "same!", "p4": "A {response_b} {x}"}
B_OUT = {"p1": "B short", "p2": "a much longer answer from model B", "p3": "same?", "p4": "B"}


def run_pairwise(tmp_path: Path, judges, out: str = "j.jsonl", a=A_OUT, b=B_OUT, **kw) -> tuple[dict, list[dict]]:
    kw.setdefault("cache_path", tmp_path / "cache.sqlite")
    summary = judge_pairwise(gens("model-a", a), gens("model-b", b), judges, tmp_path / out, progress=False,
                             log=lambda *_: None, **kw)
    return summary, [r for _, r in read_jsonl(tmp_path / out)]


# ----------------------------------------------------------------- the order swap


@pytest.mark.parametrize("order", ["ab", "ba"])
@pytest.mark.parametrize("label", ["A", "B", "tie", None])
def test_show_and_unswap_round_trip(order, label):
    a, b = "original a", "original b"
    shown = dict(zip("AB", show(a, b, order)))
    verdict = unswap(label, order)
    if label in ("A", "B"):
        # the answer the judge picked, found at its shown position, is the original the verdict names
        assert shown[label] == {"a": a, "b": b}[verdict]
    else:
        assert verdict == label
    assert show(a, b, "ab") == (a, b) and show(a, b, "ba") == (b, a)


def test_swap_is_undone_for_a_judge_that_prefers_the_longer_text(tmp_path):
    judge = StubJudge("longer", prefers_longer)
    summary, records = run_pairwise(tmp_path, [judge])
    by_id = {r["prompt_id"]: r for r in records}
    assert by_id["p1"]["verdict"] == "a" and by_id["p2"]["verdict"] == "b" and by_id["p3"]["verdict"] == "tie"
    for r in records:
        assert [v["order"] for v in r["votes"]] == ["ab", "ba"]
        assert r["votes"][0]["verdict"] == r["votes"][1]["verdict"] == r["verdict"]
        assert r["consistent"] is True
        assert r["model_a"] == "model-a" and r["output_a"] == A_OUT[r["prompt_id"]]
    # the "ba" order showed model_b's answer first: its raw says "Verdict: A" where model_b is longer
    assert by_id["p2"]["votes"][1]["raw"].endswith("Verdict: A")
    assert summary["calls"] == 8 and summary["pairs"] == 4 and judge.calls == 8


def test_a_judge_that_always_says_a_is_inconsistent(tmp_path):
    _, records = run_pairwise(tmp_path, [StubJudge("first-is-best", always_a)])
    for r in records:
        assert [v["verdict"] for v in r["votes"]] == ["a", "b"]
        assert r["verdict"] == "tie" and r["consistent"] is False


def test_longest_judge_matches_the_swap_and_ties_on_equal_length(tmp_path):
    _, records = run_pairwise(tmp_path, [LongestJudge()])
    by_id = {r["prompt_id"]: r for r in records}
    assert {p: r["verdict"] for p, r in by_id.items()} == {"p1": "a", "p2": "b", "p3": "tie", "p4": "a"}
    assert all(r["judge"] == "longest" and r["consistent"] for r in records)
    assert by_id["p3"]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": None}


COMBINED = {  # (ab, ba) -> (verdict, consistent), both in original terms
    ("a", "a"): ("a", True), ("b", "b"): ("b", True), ("tie", "tie"): ("tie", True),
    ("a", "b"): ("tie", False), ("b", "a"): ("tie", False),
    ("a", "tie"): ("tie", False), ("tie", "a"): ("tie", False),
    ("b", "tie"): ("tie", False), ("tie", "b"): ("tie", False),
}


def test_combination_table_covers_all_nine_pairs():
    assert set(COMBINED) == set(itertools.product(["a", "b", "tie"], repeat=2))
    for (ab, ba), expected in COMBINED.items():
        assert combine(ab, ba) == expected, (ab, ba)
    for other in ("a", "b", "tie", None):
        assert combine(None, other) == (None, None) and combine(other, None) == (None, None)


# ----------------------------------------------------------------- parsing


@pytest.mark.parametrize("raw,expected", [
    ("Both are fine but A is clearer.\nVerdict: A", "A"),
    ("verdict: b", "B"),
    ("**Verdict: B**", "B"),
    ("**Verdict:** tie", "tie"),
    ("## Verdict: **A**", "A"),
    ("Verdict: `tie`", "tie"),
    ("VERDICT: [[B]]", "B"),
    ("Verdict: Response A", "A"),
    ("Verdict: A (it answers the question)", "A"),
    ("Verdict: neither", "tie"),
    ("**Final verdict:** B", "B"),
    ("Verdict: A\nOn reflection B handles the edge case.\nVerdict: B", "B"),  # the last line wins
    ("Verdict: B\n\nVerdict: tie\n", "tie"),
    ("Verdict: a tie", None),  # not read as "A"
    ("I prefer A overall.", None),
    ("Verdict: C", None),
    ("", None),
    ("Verdict:", None),
])
def test_verdict_parser(raw, expected):
    assert parse_verdict(raw) == expected


@pytest.mark.parametrize("raw,expected", [
    ("Meets every requirement.\nRating: excellent", "excellent"),
    ("**Rating: Pass**", "pass"),
    ("rating: FAIL", "fail"),
    ("Rating: fail\nRating: pass", "pass"),
    ("Rating: good", None),
    ("It passes.", None),
])
def test_fail_pass_excellent_parser(raw, expected):
    assert parse_score(raw, "fail_pass_excellent") == expected


@pytest.mark.parametrize("n", range(1, 7))
def test_helpfulness_parser_reads_every_level(n):
    assert parse_score(f"Reasons.\nScore: {n}", "helpfulness_6") == n
    assert parse_score(f"**Score:** {n}/6", "helpfulness_6") == n


@pytest.mark.parametrize("raw", ["Score: 0", "Score: 7", "Score: 10", "Score: 4.5", "Score: five", "no score"])
def test_helpfulness_parser_rejects_values_off_the_scale(raw):
    assert parse_score(raw, "helpfulness_6") is None


# ----------------------------------------------------------------- checks before any request


def test_missing_and_extra_prompt_ids_are_reported_before_any_call(tmp_path):
    judge = StubJudge("longer", prefers_longer)
    a = dict(A_OUT, only_in_a="x")
    b = {k: v for k, v in B_OUT.items() if k != "p2"} | {"only_in_b": "y"}
    with pytest.raises(LimaError) as e:
        run_pairwise(tmp_path, [judge], a=a, b=b, sources=("A.jsonl", "B.jsonl"))
    text = str(e.value)
    assert "B.jsonl: lacks 2 prompt id(s)" in text and "only_in_a" in text and "p2" in text
    assert "A.jsonl: lacks 1 prompt id(s)" in text and "only_in_b" in text
    assert judge.calls == 0 and not (tmp_path / "j.jsonl").exists()

    summary, records = run_pairwise(tmp_path, [judge], a=a, b=b, allow_partial=True)
    assert sorted(r["prompt_id"] for r in records) == ["p1", "p3", "p4"]
    assert summary["skipped"] == 3 and judge.calls == 6


def test_different_prompts_under_one_id_are_an_error(tmp_path):
    ga, gb = gens("model-a", A_OUT), gens("model-b", B_OUT)
    gb[0]["messages"] = [{"role": "user", "content": "another question"}]
    judge = StubJudge("longer", prefers_longer)
    with pytest.raises(LimaError, match="different prompts"):
        judge_pairwise(ga, gb, [judge], tmp_path / "j.jsonl", cache_path=tmp_path / "c.sqlite", progress=False)
    assert judge.calls == 0


def test_the_same_judge_twice_is_an_error(tmp_path):
    with pytest.raises(LimaError, match="named twice"):
        run_pairwise(tmp_path, [LongestJudge(), LongestJudge()])


# ----------------------------------------------------------------- cache and resume


def test_rerun_to_a_new_output_file_makes_no_calls(tmp_path):
    first = StubJudge("longer", prefers_longer)
    s1, r1 = run_pairwise(tmp_path, [first], out="one.jsonl")
    again = StubJudge("longer", prefers_longer)
    s2, r2 = run_pairwise(tmp_path, [again], out="two.jsonl")
    assert again.calls == 0 and s2["calls"] == 0 and s2["cached"] == 8 and s1["calls"] == 8
    strip = lambda rs: sorted((json.dumps({k: v for k, v in r.items() if k != "created"}) for r in rs))  # noqa: E731
    assert strip(r1) == strip(r2)  # cached answers reproduce every vote, verdict and token count
    # the same output again: every record is already there
    s3, r3 = run_pairwise(tmp_path, [again], out="two.jsonl")
    assert s3["pairs"] == 0 and s3["existing"] == 4 and len(r3) == 4 and again.calls == 0
    # other instructions are another cache key: asked again
    custom = tmp_path / "mine.md"
    custom.write_text("Q: {prompt}\nA: {response_a}\nB: {response_b}\nEnd with Verdict: A, B or tie.")
    run_pairwise(tmp_path, [again], out="three.jsonl", instructions_path=custom)
    assert again.calls == 8


def test_resume_after_an_interruption_completes_without_duplicates(tmp_path):
    a = {f"p{i}": "a" * (i + 1) for i in range(10)}
    b = {f"p{i}": "b" * (10 - i) for i in range(10)}
    broken = StubJudge("longer", prefers_longer, fail_after=7)
    with pytest.raises(RuntimeError, match="went away"):
        run_pairwise(tmp_path, [broken], a=a, b=b, max_concurrency=1)
    out = tmp_path / "j.jsonl"
    written = [r for _, r in read_jsonl(out)]
    assert 1 <= len(written) < 10
    with out.open("a") as f:  # and the process died in the middle of the next line
        f.write('{"id": "half a rec')
    fresh = StubJudge("longer", prefers_longer)
    summary, records = run_pairwise(tmp_path, [fresh], a=a, b=b)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 10
    assert sorted(r["prompt_id"] for r in records) == sorted(a)
    assert summary["existing"] == len(written) and summary["pairs"] == 10 - len(written)
    # answers given before the interruption came from the cache, the rest were asked
    assert fresh.calls + summary["cached"] == 2 * (10 - len(written))
    assert summary["cached"] == 7 - 2 * len(written)


def test_a_request_that_fails_for_good_loses_only_its_own_judgment(tmp_path):
    from lima_align.api import ApiError
    from lima_align.errors import Problem

    def flaky(a: str, b: str) -> str:
        if "{response_b}" in a + b:  # p4's answer: say the endpoint rejected this one prompt
            raise ApiError(Problem("http://x/v1", "HTTP 400: prompt too long", "shorten it"), status=400)
        return prefers_longer(a, b)

    with pytest.raises(LimaError, match="1 of 4 judgments failed"):
        run_pairwise(tmp_path, [StubJudge("longer", flaky)])
    assert sorted(r["prompt_id"] for _, r in read_jsonl(tmp_path / "j.jsonl")) == ["p1", "p2", "p3"]
    fixed = StubJudge("longer", prefers_longer)
    summary, records = run_pairwise(tmp_path, [fixed])
    assert len(records) == 4 and summary["pairs"] == 1 and fixed.calls == 2

    def config_error(a: str, b: str) -> str:
        raise ApiError(Problem("http://x/v1", "HTTP 401: bad key", "set the key"), status=401, affects_all=True)

    with pytest.raises(ApiError, match="401"):  # every request would fail: stop at once, as it is
        run_pairwise(tmp_path, [StubJudge("broken", config_error)], out="k.jsonl")


# ----------------------------------------------------------------- records, hashes, usage


def test_record_fields_instruction_hash_and_cost(tmp_path):
    judge = StubJudge("priced", prefers_longer, price=Price(2.0, 10.0))
    summary, records = run_pairwise(tmp_path, [judge, LongestJudge()])
    sha = hashlib.sha256((INSTRUCTIONS_DIR / "pairwise.md").read_bytes()).hexdigest()
    assert len(records) == 8 and {r["judge"] for r in records} == {"priced", "longest"}
    r = next(r for r in records if r["judge"] == "priced")
    assert r["instructions"] == {"name": "pairwise", "sha256": sha}
    assert set(r) == {"id", "type", "prompt_id", "prompt", "model_a", "model_b", "output_a", "output_b", "judge",
                      "instructions", "votes", "verdict", "consistent", "usage", "created"}
    assert r["type"] == "pairwise"
    assert r["prompt"] == [{"role": "user", "content": f"question {r['prompt_id']} with {{braces}}"}]
    assert r["usage"] == {"prompt_tokens": 200, "completion_tokens": 20, "cost_usd": pytest.approx(0.0006)}
    assert summary["tokens"] == {"prompt": 800, "completion": 80}
    assert summary["cost_usd"] == pytest.approx(4 * 0.0006)
    assert len({r["id"] for r in records}) == 8


def test_custom_instructions_hash_and_brace_safe_filling(tmp_path):
    custom = tmp_path / "strict.md"
    custom.write_bytes("<!-- mine -->\nAsk: {prompt}\n[A]{response_a}[/A]\n[B]{response_b}[/B] {not_a_field}\n"
                       .encode())
    ins = load_instructions(custom, "pairwise")
    assert ins.sha256 == hashlib.sha256(custom.read_bytes()).hexdigest() and ins.name == "strict"
    filled = ins.fill({"prompt": "x {response_b} {0}", "response_a": "{prompt}", "response_b": "B"})
    assert filled == "Ask: x {response_b} {0}\n[A]{prompt}[/A]\n[B]B[/B] {not_a_field}\n"
    _, records = run_pairwise(tmp_path, [LongestJudge()], instructions_path=custom)
    assert all(r["instructions"] == {"name": "strict", "sha256": ins.sha256} for r in records)
    bad = tmp_path / "bad.md"
    bad.write_text("Judge {prompt} and {response_a}.")
    with pytest.raises(LimaError, match=r"\{response_b\}"):
        load_instructions(bad, "pairwise")


def test_packaged_instructions_have_their_placeholders_and_drop_the_comment():
    for kind, fields in (("pairwise", ["{prompt}", "{response_a}", "{response_b}"]),
                         ("fail_pass_excellent", ["{prompt}", "{response}"]),
                         ("helpfulness_6", ["{prompt}", "{response}"])):
        ins = load_instructions(None, kind)
        assert all(f in ins.template for f in fields) and not ins.template.startswith("<!--")
    assert "Verdict: tie" in load_instructions(None, "pairwise").template


# ----------------------------------------------------------------- the API judge


class FakeClient:
    """Stands in for api.ChatClient: scripted answers, records what it was sent."""

    def __init__(self, answers: list[str]):
        self.answers, self.sent = list(answers), []
        self.model, self.base_url = "judge-model", "http://127.0.0.1:9/v1"

    async def chat(self, messages, *, max_tokens, temperature, top_p=1.0, seed=None):
        from types import SimpleNamespace

        self.sent.append({"messages": [dict(m) for m in messages], "temperature": temperature})
        return SimpleNamespace(text=self.answers.pop(0), prompt_tokens=30, completion_tokens=3)


def test_api_judge_retries_once_with_a_reminder_then_keeps_null(tmp_path):
    ins = load_instructions(None, "pairwise")
    client = FakeClient(["A seems better.", "Verdict: A", "Hmm.", "Still thinking."])
    judge = ApiJudge(client)
    assert judge.name == "api:judge-model@http://127.0.0.1:9/v1"
    vote = asyncio.run(judge.judge_pair([{"role": "user", "content": "hi {there}"}], "one", "two", ins))
    assert vote.label == "A" and RETRY_MARK in vote.raw and vote.raw.startswith("A seems better.")
    assert (vote.prompt_tokens, vote.completion_tokens) == (60, 6)
    second = client.sent[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"] and "Verdict: tie" in second[2]["content"]
    assert all(s["temperature"] == 0.0 for s in client.sent)
    assert "[User]\nhi {there}" in client.sent[0]["messages"][0]["content"]
    vote = asyncio.run(judge.judge_pair([{"role": "user", "content": "q"}], "one", "two", ins))
    assert vote.label is None and "Hmm." in vote.raw and "Still thinking." in vote.raw and not client.answers


def test_unparseable_votes_are_counted_and_kept(tmp_path):
    client = FakeClient(["no idea"] * 16)
    summary, records = run_pairwise(tmp_path, [ApiJudge(client)])
    assert summary["unparseable"] == 8 and summary["retried"] == 8 and summary["calls"] == 8
    assert all(r["verdict"] is None and r["consistent"] is None for r in records)
    assert all(v["verdict"] is None and v["raw"].startswith("no idea") for r in records for v in r["votes"])


# ----------------------------------------------------------------- absolute ratings


def test_judge_absolute_on_both_scales(tmp_path):
    ratings = {"fine": "Rating: pass", "great": "**Rating: Excellent**", "wrong": "Rating: fail", "odd": "meh"}
    g = gens("model-a", {f"p{i}": text for i, text in enumerate(ratings)})
    judge = StubJudge("rater", lambda text, _: ratings[text])
    summary = judge_absolute(g, [judge], tmp_path / "fpe.jsonl", scale="fail_pass_excellent",
                             cache_path=tmp_path / "c.sqlite", progress=False)
    records = {r["output"]: r for _, r in read_jsonl(tmp_path / "fpe.jsonl")}
    assert {k: r["score"] for k, r in records.items()} == {"fine": "pass", "great": "excellent", "wrong": "fail",
                                                           "odd": None}
    assert summary["ratings"] == 4 and summary["unparseable"] == 1 and judge.calls == 4
    sha = hashlib.sha256((INSTRUCTIONS_DIR / "absolute_fpe.md").read_bytes()).hexdigest()
    assert records["fine"]["instructions"] == {"name": "absolute_fpe", "sha256": sha}
    assert records["odd"]["raw"] == "meh" and records["fine"]["type"] == "absolute"

    scored = gens("model-a", {f"p{n}": str(n) for n in range(1, 7)})
    judge6 = StubJudge("rater", lambda text, _: f"Fair.\nScore: {text}")
    judge_absolute(scored, [judge6], tmp_path / "h6.jsonl", scale="helpfulness_6", cache_path=tmp_path / "c.sqlite",
                   progress=False)
    assert sorted(r["score"] for _, r in read_jsonl(tmp_path / "h6.jsonl")) == [1, 2, 3, 4, 5, 6]
    # again into another file: all from the cache
    again = StubJudge("rater", lambda text, _: "never asked")
    s = judge_absolute(scored, [again], tmp_path / "h6b.jsonl", scale="helpfulness_6",
                       cache_path=tmp_path / "c.sqlite", progress=False)
    assert again.calls == 0 and s["cached"] == 6


def test_longest_judge_cannot_rate_and_says_so_before_any_call(tmp_path):
    judge = StubJudge("rater", lambda text, _: "Rating: pass")
    with pytest.raises(LimaError, match="longest"):
        judge_absolute(gens("m", A_OUT), [judge, LongestJudge()], tmp_path / "r.jsonl", scale="fail_pass_excellent",
                       cache_path=tmp_path / "c.sqlite", progress=False)
    assert judge.calls == 0
    with pytest.raises(LimaError, match="unknown scale"):
        judge_absolute(gens("m", A_OUT), [judge], tmp_path / "r.jsonl", scale="1-10", progress=False)


# ----------------------------------------------------------------- end to end over HTTP


def test_end_to_end_through_chat_client_and_fake_server(tmp_path):
    fake = pytest.importorskip("fake_openai", reason="tests/fake_openai.py (the scripted OpenAI server) is absent")
    api = pytest.importorskip("lima_align.api", reason="src/lima_align/api.py (ChatClient) is absent")

    def respond(request: dict) -> str:
        # A fair judge over HTTP: prefer the longer of the two responses it was shown.
        text = request["messages"][0]["content"]
        first = text.split("<response_a>\n", 1)[1].split("\n</response_a>", 1)[0]
        second = text.split("<response_b>\n", 1)[1].split("\n</response_b>", 1)[0]
        if len(request["messages"]) == 1 and "p4" in text:
            return "I cannot decide."  # answered properly only after the reminder
        return prefers_longer(first, second)

    with fake.FakeOpenAI(respond) as server:
        def judge() -> ApiJudge:
            return ApiJudge(api.ChatClient(server.base_url, "fake-judge", max_retries=0))

        summary, records = run_pairwise(tmp_path, [judge(), LongestJudge()], max_concurrency=4)
        assert server.requests == 10 and summary["calls"] == 16 and summary["retried"] == 2
        api_records = {r["prompt_id"]: r for r in records if r["judge"].startswith("api:")}
        longest = {r["prompt_id"]: r["verdict"] for r in records if r["judge"] == "longest"}
        assert {p: r["verdict"] for p, r in api_records.items()} == longest
        assert api_records["p1"]["judge"] == f"api:fake-judge@{server.base_url}"
        assert all(r["consistent"] for r in api_records.values())
        assert api_records["p1"]["usage"]["prompt_tokens"] > 0
        assert all(b["temperature"] == 0.0 for b in server.log)
        # a second run into another file asks the server nothing
        summary2, _ = run_pairwise(tmp_path, [judge()], out="again.jsonl")
        assert server.requests == 10 and summary2["calls"] == 0 and summary2["cached"] == 8


@pytest.mark.parametrize("cmd, compares", [(["judge", "pairwise"], True), (["judge", "conversations"], True),
                                           (["dialogue", "eval"], True), (["judge", "absolute"], False),
                                           (["judge", "turns"], False)])
def test_judge_choices_offer_only_judges_the_task_accepts(cmd, compares, tmp_path, capsys):
    """'longest' can only compare two answers: commands that rate single answers must not offer it."""
    from lima_align.cli import main

    with pytest.raises(SystemExit):
        main(cmd + ["--help"])
    assert ("{api,longest}" in capsys.readouterr().out) == compares
    if compares:
        return
    with pytest.raises(SystemExit) as e:
        main(cmd + ["x.jsonl", "--output", str(tmp_path / "o.jsonl"), "--judge", "longest"])
    assert e.value.code == 2 and "invalid choice: 'longest'" in capsys.readouterr().err
    if cmd[1] == "absolute":  # and the fix for a missing API judge does not suggest it either
        gens = tmp_path / "g.jsonl"
        gens.write_text(json.dumps({"prompt_id": "p", "model": "m", "messages": [{"role": "user", "content": "q"}],
                                    "output": "a"}) + "\n")
        assert main(cmd + [str(gens), "--output", str(tmp_path / "o.jsonl")]) == 2
        err = capsys.readouterr().err
        assert "needs --api-base" in err and "longest" not in err
