"""The annotation app's multi-model studies: several models rated (absolute) or compared with one model A
(pairwise) in one blind study, their items interleaved, the models named only in what pages never show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_annotate_app import PW, cheap_hashes, person  # noqa: F401 - cheap_hashes: autouse fixture

from lima_align import stats
from lima_align.annotate import accounts, db, export, studies
from lima_align.annotate.app import create_app
from lima_align.annotate.client import Annotator, rate_all, write_generations
from lima_align.cli import main
from lima_align.errors import LimaError

# Names that must never reach an annotator's page; answers say only how good they are.
QUALITY = {"model-GOOD-secret": "Great", "model-MID-secret": "Plain", "model-BAD-secret": "Awful"}
RANK = {"Great": 2, "Plain": 1, "Awful": 0}
N = 4  # prompts per file


@pytest.fixture
def site(tmp_path: Path):
    app = create_app(f"sqlite:///{tmp_path / 'multi.db'}")
    engine = app.state.engine
    accounts.create_user(engine, "root", PW, "admin")
    uids = {n: accounts.create_user(engine, n, PW, "annotator") for n in ("alice", "bob")}
    files = {m: write_generations(tmp_path / f"{q.lower()}.jsonl", m, N, q + " answer {i}") for m, q in QUALITY.items()}
    return {"app": app, "engine": engine, "uids": uids, "tmp": tmp_path, "files": files,
            "url": f"sqlite:///{tmp_path / 'multi.db'}"}


def members(site: dict, sid: int) -> None:
    for uid in site["uids"].values():
        studies.add_member(site["engine"], sid, uid)


def items(engine, sid: int) -> list[tuple[str, dict]]:
    with db.read(engine) as c:
        rows = c.execute(db.items.select().where(db.items.c.study_id == sid).order_by(db.items.c.idx)).all()
    return [(r.key, json.loads(r.payload)) for r in rows]


def answers(html: str) -> list[str]:
    """The quality words of the answers shown, in screen order (prompt and form left out)."""
    shown = html[html.index('class="answer"'):html.index('class="vote"')]
    return re.findall(r"\b(Great|Plain|Awful) answer", shown)


def assert_blind(pages: list[str]) -> None:
    for html in pages:
        assert not any(part in html for m in QUALITY for part in (m, m.split("-")[1])), "a model is named"
        assert not re.search(r"\b[mp]\d+:p\d", html)  # item keys (model positions) stay off the page too


def test_absolute_study_of_three_models_is_blind_interleaved_and_exports_each_model(site, capsys):
    engine, tmp, files = site["engine"], site["tmp"], site["files"]
    paths = [str(f) for f in files.values()]
    assert main(["annotate", "create-study", "--db", site["url"], "--kind", "absolute", "--name", "rate3",
                 "--overlap", "2", "--seed", "4", "--a", *paths]) == 0
    with db.read(engine) as c:
        study = studies.get_study(c, name="rate3")
    sid = study["id"]
    assert study["config"]["models"] == list(QUALITY) and study["config"]["seed"] == 4
    rows = items(engine, sid)
    keys = [k for k, _ in rows]
    assert sorted(keys) == sorted(f"m{m}:p{i}" for m in range(3) for i in range(N))
    assert [k[:2] for k in keys] != sorted(k[:2] for k in keys)  # the models' answers are interleaved
    assert all(p["model"] == list(QUALITY)[int(k[1])] and p["prompt_id"] == k[3:] for k, p in rows)
    again = studies.create_study(engine, "rate3-again", "absolute", a=list(files.values()), seed=4)
    assert [k for k, _ in items(engine, again)] == keys  # the same seed, the same order
    other = studies.create_study(engine, "rate3-other", "absolute", a=list(files.values()), seed=5)
    assert [k for k, _ in items(engine, other)] != keys
    members(site, sid)

    def verdict(html: str) -> str:
        return {"Great": "excellent", "Plain": "pass", "Awful": "fail"}[answers(html)[0]]

    alice_pages = rate_all(person(site, "alice"), sid, verdict)
    # bob agrees, except that he passes the awful answer to p0
    bob_pages = rate_all(person(site, "bob"), sid,
                         lambda h: "pass" if "Awful answer 0" in h else verdict(h))
    assert len(alice_pages) == len(bob_pages) == 3 * N
    assert_blind(alice_pages + bob_pages)

    out = tmp / "human.jsonl"
    assert main(["annotate", "export", "--db", site["url"], "--study", "rate3", "--output", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 2 * 3 * N
    for r in recs:  # each record names the model that wrote its answer, under the answer's own prompt id
        assert QUALITY[r["model"]] == r["output"].split()[0] and r["prompt_id"] == f"p{r['output'].split()[-1]}"
        assert r["type"] == "absolute" and r["scale"] == "fail_pass_excellent"
    summary = stats.summarize_files([out], n_boot=20)["absolute"]
    assert sorted((a["model"], a["judge"], a["n"]) for a in summary) == \
        sorted((m, f"human:{p}", N) for m in QUALITY for p in ("alice", "bob"))
    first = out.read_bytes()
    export.export_study(engine, "rate3", out)
    assert out.read_bytes() == first  # repeatable

    # agreement: 12 items with two votes each, one differs; an LLM judge matched on (prompt id, model)
    llm = [{**r, "judge": "api:j", "id": "j" + r["id"]} for r in recs if r["judge"] == "human:alice"]
    flipped = next(r for r in llm if (r["model"], r["prompt_id"]) == ("model-GOOD-secret", "p1"))
    flipped["score"] = flipped["raw"] = "fail"  # against both people's "excellent"
    table = export.agreement_table(engine, study, llm)
    assert (table["exact"]["n"], table["exact"]["exact"]) == (3 * N, 11 / 12)
    (j,) = table["judges"]  # 24 votes: both on GOOD p1 and bob's on BAD p0 differ from the judge
    assert (j["judge"], j["n"], j["exact"]) == ("api:j", 2 * 3 * N, 21 / 24)
    groups = {g["label"]: g["exact"] for g in table["groups"]}
    assert groups["model-GOOD-secret"]["exact"] == 1.0 and groups["model-BAD-secret"]["exact"] == 0.75
    assert groups["model-BAD-secret"]["n"] == N
    admin = person(site, "root")
    page = admin.http.get(f"/admin/s/{sid}")
    assert page.status_code == 200 and "Identical labels on 91.7% of 12 pairs" in page.text
    assert "model-BAD-secret</td><td>4</td><td>75.0%" in page.text


def test_pairwise_study_of_a_against_two_models_exports_each_pair_in_model_terms(site):
    engine, tmp, files = site["engine"], site["tmp"], site["files"]
    a, good, bad = files["model-MID-secret"], files["model-GOOD-secret"], files["model-BAD-secret"]
    sid = studies.create_study(engine, "duel2", "pairwise", overlap=2, a=a, b=[good, bad], seed=1)
    with db.read(engine) as c:
        study = studies.get_study(c, sid=sid)
    assert study["config"] == {**study["config"], "model_a": "model-MID-secret",
                               "models_b": ["model-GOOD-secret", "model-BAD-secret"], "seed": 1}
    rows = items(engine, sid)
    keys = [k for k, _ in rows]
    assert sorted(keys) == sorted(f"p{j}:p{i}" for j in range(2) for i in range(N))
    assert [k[:2] for k in keys] != sorted(k[:2] for k in keys)
    assert all(p["model_b"] == study["config"]["models_b"][int(k[1])] for k, p in rows)
    members(site, sid)

    def better(html: str) -> str:  # the better answer, whichever side it is shown on
        first, second = answers(html)
        return "A" if RANK[first] > RANK[second] else "B"

    alice_pages = rate_all(person(site, "alice"), sid, better)
    # bob agrees, except "neither" on the MID vs BAD answers to p0
    bob_pages = rate_all(person(site, "bob"), sid,
                         lambda h: "neither" if sorted(answers(h)) == ["Awful", "Plain"] and "answer 0" in h
                         else better(h))
    assert len(alice_pages) == len(bob_pages) == 2 * N
    assert_blind(alice_pages + bob_pages)
    assert "Guidelines" in alice_pages[0]

    out = tmp / "duel.jsonl"
    export.export_study(engine, "duel2", out)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 2 * 2 * N
    for r in recs:
        assert r["model_a"] == "model-MID-secret" and r["prompt_id"] in {f"p{i}" for i in range(N)}
        assert (QUALITY[r["model_a"]], QUALITY[r["model_b"]]) == (r["output_a"].split()[0], r["output_b"].split()[0])
        v = r["votes"][0]
        assert r["verdict"] == v["verdict"] and (v["order"], v["raw"], v["verdict"]) in {
            ("ab", "A", "a"), ("ba", "B", "a"), ("ab", "B", "b"), ("ba", "A", "b"), ("ab", "neither", "tie"),
            ("ba", "neither", "tie")}
        expected = "b" if r["model_b"] == "model-GOOD-secret" else "a"
        if r["judge"] == "human:bob" and r["model_b"] == "model-BAD-secret" and r["prompt_id"] == "p0":
            expected = "tie"
        assert r["verdict"] == expected, r
    comps = {(p["model_a"], p["model_b"], p["judge"]): p["counts"]
             for p in stats.summarize_files([out], n_boot=20)["pairwise"]}
    assert comps[("model-MID-secret", "model-GOOD-secret", "human:alice")]["b"] == N
    assert comps[("model-MID-secret", "model-BAD-secret", "human:alice")]["a"] == N
    assert comps[("model-MID-secret", "model-BAD-secret", "human:bob")] == {**comps[(
        "model-MID-secret", "model-BAD-secret", "human:bob")], "a": N - 1, "tie": 1}

    # people agree on the winning model, whatever side each of them saw it on: 7 of 8 items, one tie-vs-a
    table = export.agreement_table(engine, study, [])
    assert table["people"]["n"] == 2 * N and table["people"]["tie_discounted_accuracy"] == pytest.approx(7.5 / 8)
    groups = {g["label"]: g["people"] for g in table["groups"]}
    assert groups["model-MID-secret vs model-GOOD-secret"]["tie_discounted_accuracy"] == 1.0
    assert groups["model-MID-secret vs model-BAD-secret"]["tie_discounted_accuracy"] == pytest.approx(3.5 / 4)
    # an LLM judge that agrees with alice everywhere, its GOOD pair written the other way round (GOOD as a)
    llm = []
    for r in recs:
        if r["judge"] != "human:alice":
            continue
        rec = {**r, "judge": "api:j", "id": "j" + r["id"]}
        if r["model_b"] == "model-GOOD-secret":
            rec.update(model_a=r["model_b"], model_b=r["model_a"], output_a=r["output_b"], output_b=r["output_a"],
                       verdict=stats.FLIP[r["verdict"]], votes=[{**r["votes"][0], "verdict": stats.FLIP[r["verdict"]]}])
        llm.append(rec)
    admin = person(site, "root")
    admin._csrf_from(admin.http.get(f"/admin/s/{sid}").text)
    body = "".join(json.dumps(r) + "\n" for r in llm).encode()
    assert admin.http.post(f"/admin/s/{sid}/judges", data={"csrf": admin.csrf},
                           files={"file": ("llm.jsonl", body)}).status_code == 303
    (j,) = export.agreement_table(engine, study, export.attached_judgments(engine, sid))["judges"]
    assert j["n"] == 2 * 2 * N and j["tie_discounted_accuracy"] == pytest.approx(15.5 / 16)
    page = admin.http.get(f"/admin/s/{sid}").text
    assert "people, model-MID-secret vs model-BAD-secret only" in page and "0.875" in page and "0.969" in page


def test_one_file_studies_keep_their_keys_and_records(site):
    engine, files = site["engine"], site["files"]
    good, bad = files["model-GOOD-secret"], files["model-BAD-secret"]
    sid = studies.create_study(engine, "one", "absolute", a=[good])
    assert [k for k, _ in items(engine, sid)] == [f"p{i}" for i in range(N)]
    assert all(set(p) == {"prompt", "output"} for _, p in items(engine, sid))
    pid = studies.create_study(engine, "pair", "pairwise", a=good, b=[bad], seed=7)
    assert [k for k, _ in items(engine, pid)] == [f"p{i}" for i in range(N)]
    with db.read(engine) as c:
        assert studies.get_study(c, sid=pid)["config"]["model_b"] == "model-BAD-secret"
    members(site, pid)
    alice = person(site, "alice")
    item = alice.next_item(pid)
    assert alice.vote(pid, item, "A").status_code == 303
    out = site["tmp"] / "one.jsonl"
    export.export_study(engine, "pair", out)
    (rec,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert list(rec) == ["id", "type", "prompt_id", "prompt", "model_a", "model_b", "output_a", "output_b", "judge",
                         "instructions", "votes", "verdict", "consistent", "comment", "usage", "created"]
    assert (rec["model_a"], rec["model_b"], rec["prompt_id"]) == ("model-GOOD-secret", "model-BAD-secret", "p0")


def test_files_of_one_model_twice_or_a_mixed_file_are_refused(site, capsys):
    engine, tmp, files = site["engine"], site["tmp"], site["files"]
    good, mid, bad = files["model-GOOD-secret"], files["model-MID-secret"], files["model-BAD-secret"]
    copy = tmp / "copy.jsonl"
    copy.write_text(good.read_text())
    with pytest.raises(LimaError, match="both come from model 'model-GOOD-secret'") as e:
        studies.create_study(engine, "x", "absolute", a=[good, bad, copy])
    assert str(copy) in str(e.value) and str(good) in str(e.value) and "one file per model" in str(e.value)
    mixed = tmp / "mixed.jsonl"
    mixed.write_text(good.read_text() + write_generations(tmp / "m.jsonl", "other", 1).read_text().replace(
        '"p0"', '"p9"'))
    with pytest.raises(LimaError, match="mixes models") as e:
        studies.create_study(engine, "x", "absolute", a=[bad, mixed])
    assert str(mixed) in str(e.value) and "one generations file per model" in str(e.value)
    with pytest.raises(LimaError, match="mixes models"):
        studies.create_study(engine, "x", "pairwise", a=bad, b=[good, mixed])
    with pytest.raises(LimaError, match="both come from model 'model-GOOD-secret'"):
        studies.create_study(engine, "x", "pairwise", a=mid, b=[good, copy])
    with pytest.raises(LimaError, match="both files come from model 'model-MID-secret'"):
        studies.create_study(engine, "x", "pairwise", a=mid, b=[good, mid])
    with pytest.raises(LimaError, match="one model A with each model B"):
        studies.create_study(engine, "x", "pairwise", a=[mid, good], b=[bad])
    short = write_generations(tmp / "short.jsonl", "short-model", N - 1)
    with pytest.raises(LimaError, match="1 prompt ids are in only one") as e:
        studies.create_study(engine, "x", "pairwise", a=mid, b=[good, short])
    assert str(short) in str(e.value)
    assert main(["annotate", "create-study", "--db", site["url"], "--kind", "absolute", "--name", "x",
                 "--a", str(good), str(copy)]) == 2  # a user error with its fix, not a traceback
    assert "one file per model" in capsys.readouterr().err
    assert items(engine, 1) == [] and main(["annotate", "progress", "--db", site["url"]]) == 0
    assert "no studies yet" in capsys.readouterr().out  # nothing half-created


def test_admin_creates_multi_model_studies_from_the_page(site):
    files = site["files"]
    admin = person(site, "root")
    admin._csrf_from(admin.http.get("/admin").text)
    up = [("a", (f.name, f.read_bytes())) for f in files.values()]
    r = admin.http.post("/admin/studies", data={"csrf": admin.csrf, "name": "page-abs", "kind": "absolute",
                                                "overlap": "2"}, files=up)
    assert r.status_code == 303
    mid, good, bad = (files[m] for m in ("model-MID-secret", "model-GOOD-secret", "model-BAD-secret"))
    up = [("a", (mid.name, mid.read_bytes())), ("b", (good.name, good.read_bytes())),
          ("b", (bad.name, bad.read_bytes()))]
    r = admin.http.post("/admin/studies", data={"csrf": admin.csrf, "name": "page-pair", "kind": "pairwise",
                                                "overlap": "2"}, files=up)
    assert r.status_code == 303
    with db.read(site["engine"]) as c:
        assert studies.get_study(c, name="page-abs")["config"]["models"] == list(QUALITY)
        pair = studies.get_study(c, name="page-pair")
    assert pair["config"]["models_b"] == ["model-GOOD-secret", "model-BAD-secret"]
    page = admin.http.get(f"/admin/s/{pair['id']}").text
    assert "against each of model-GOOD-secret, model-BAD-secret" in page  # admins see the models
