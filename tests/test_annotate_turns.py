"""The annotation app's `turns` study: recorded conversations of several models rated turn by turn, blind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_annotate_app import PW, cheap_hashes, person  # noqa: F401 - cheap_hashes: autouse fixture

from lima_align import stats
from lima_align.annotate import accounts, db, export, studies
from lima_align.annotate.app import create_app
from lima_align.annotate.client import Annotator, rate_all
from lima_align.cli import main
from lima_align.dialogue.report import build
from lima_align.errors import LimaError

MODELS = ("model-ALPHA-secret", "model-BETA-secret")


def write_conversations(path: Path, model: str, quality: str) -> Path:
    """Two scripted conversations (2 and 3 user turns); every answer says `quality` and where it is."""
    with path.open("w", encoding="utf-8") as f:
        for cid, n in (("c1", 2), ("c2", 3)):
            msgs = []
            for t in range(1, n + 1):
                msgs += [{"role": "user", "content": f"User turn {t} of {cid}"},
                         {"role": "assistant", "content": f"{quality} reply, turn {t} of {cid}"}]
            f.write(json.dumps({"id": f"{model}:{cid}", "conversation_id": cid, "model": model, "mode": "scripted",
                                "messages": msgs, "finish_reasons": ["eot"] * n, "decoding": {}, "created": 0.0,
                                "meta": {"trimmed": []}}) + "\n")
    return path


@pytest.fixture
def site(tmp_path: Path):
    app = create_app(f"sqlite:///{tmp_path / 'turns.db'}")
    engine = app.state.engine
    accounts.create_user(engine, "root", PW, "admin")
    uids = {n: accounts.create_user(engine, n, PW, "annotator") for n in ("alice", "bob")}
    files = [write_conversations(tmp_path / "a.jsonl", MODELS[0], "Good"),
             write_conversations(tmp_path / "b.jsonl", MODELS[1], "Weak")]
    sid = studies.create_study(engine, "turns", "turns", overlap=2, conversations=files, seed=3)
    for uid in uids.values():
        studies.add_member(engine, sid, uid)
    return {"app": app, "engine": engine, "sid": sid, "uids": uids, "tmp": tmp_path, "files": files}


def test_turns_are_rated_blind_in_context_and_export_as_turn_ratings(site):
    engine, sid, tmp = site["engine"], site["sid"], site["tmp"]
    with db.read(engine) as c:
        n_items = len(c.execute(db.items.select().where(db.items.c.study_id == sid)).all())
    assert n_items == 10  # (2 + 3 assistant turns) x 2 models

    def shown(html: str) -> str:  # the reply to rate, not the context above it
        return html[html.index('id="answer"'):][:400]

    def verdict(html: str) -> str:
        return "excellent" if "Good reply" in shown(html) else "fail"

    pages = rate_all(person(site, "alice"), sid, verdict)
    assert len(pages) == 10
    for html in pages:
        assert not any(m in html or m.split("-")[1] in html for m in MODELS)  # the model is never named
    # in context: the page of turn 3 shows the two earlier exchanges before the reply to rate
    third = next(h for h in pages if "turn 3 of c2" in shown(h))
    ctx = third[:third.index('id="answer"')]
    assert all(f"User turn {t} of c2" in ctx for t in (1, 2, 3)) and "reply, turn 2 of c2" in ctx
    assert "reply, turn 3 of c2" not in ctx
    # bob rates too, disagreeing on the weak model's first turns
    rate_all(person(site, "bob"), sid, lambda h: "pass" if "Weak reply, turn 1" in shown(h) else verdict(h))

    out = tmp / "human-turns.jsonl"
    export.export_study(engine, "turns", out)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 20 and {r["judge"] for r in recs} == {"human:alice", "human:bob"}
    alice = [r for r in recs if r["judge"] == "human:alice"]
    assert {(r["model"], r["score"]) for r in alice} == {(MODELS[0], "excellent"), (MODELS[1], "fail")}
    assert {r["prompt_id"] for r in alice} == {f"c{c}#t{t}" for c, n in ((1, 2), (2, 3)) for t in range(1, n + 1)}
    r = next(x for x in alice if x["prompt_id"] == "c2#t2" and x["model"] == MODELS[0])
    assert (r["conversation_id"], r["turn"], r["type"], r["scale"]) == ("c2", 2, "absolute", "fail_pass_excellent")
    assert [m["content"] for m in r["prompt"]][-1] == "User turn 2 of c2" and len(r["prompt"]) == 3
    first = out.read_bytes()
    export.export_study(engine, "turns", out)
    assert out.read_bytes() == first  # repeatable

    with db.read(engine) as c:
        study = studies.get_study(c, sid=sid)
    # an LLM turn judge checked against people: one that rates exactly as alice did
    llm = "".join(json.dumps({**r, "judge": "api:turn-judge", "id": "j" + r["id"]}) + "\n" for r in alice)
    admin = person(site, "root")
    admin._csrf_from(admin.http.get(f"/admin/s/{sid}").text)
    assert admin.http.post(f"/admin/s/{sid}/judges", data={"csrf": admin.csrf},
                           files={"file": ("turns.jsonl", llm.encode())}).status_code == 303
    dashboard = admin.http.get(f"/admin/s/{sid}").text
    assert "Identical labels on 80.0% of 10 pairs" in dashboard and "Cohen's kappa 0.667" in dashboard
    assert "people vs api:turn-judge</td><td>20</td><td>90.0%" in dashboard  # alice 10 of 10, bob 8 of 10
    table = export.agreement_table(engine, study, export.attached_judgments(engine, sid))
    assert table["exact"] == {"n": 10, "exact": 0.8, "kappa": pytest.approx(0.4 / 0.6)}  # 2 of 10 differ
    (j,) = table["judges"]
    assert (j["judge"], j["n"], j["exact"]) == ("api:turn-judge", 20, 0.9)
    assert sorted((a["model"], a["judge"], a["n"]) for a in stats.summarize_files([out], n_boot=20)["absolute"]) \
        == [(m, f"human:{p}", 5) for m in MODELS for p in ("alice", "bob")]
    page = build([out], tmp / "report", conversation_paths=site["files"])
    data = json.loads((tmp / "report" / "dialogue.json").read_text())
    shares = {(s["model"], s["judge"]): s["shares"] for s in data["turns"]}
    assert page.exists() and shares[(MODELS[0], "human:alice")]["excellent"] == 1.0
    assert shares[(MODELS[1], "human:bob")] == {"fail": 0.6, "pass": 0.4, "excellent": 0.0}


def test_models_are_interleaved_by_the_seed(site):
    engine = site["engine"]

    made = iter(range(100))

    def order(seed: int) -> list[str]:
        name = f"study{next(made)}"
        sid = studies.create_study(engine, name, "turns", conversations=site["files"], seed=seed)
        with db.read(engine) as c:
            rows = c.execute(db.items.select().where(db.items.c.study_id == sid).order_by(db.items.c.idx)).all()
        return [r.key for r in rows]

    a, b = order(1), order(1_000)
    assert sorted(a) == sorted(b) and len(set(a)) == 10
    assert order(1) == a  # the same seed gives the same order
    assert any(order(s) != a for s in (2, 3, 4, 5))
    assert all(not any(m in k for m in MODELS) for k in a)  # keys name models by position only
    # within one conversation the turns come in order
    for conv in {k.split("#")[0] for k in a}:
        turns = [int(k.split("#t")[1]) for k in a if k.startswith(conv + "#")]
        assert turns == sorted(turns)


def test_turns_study_errors(site, capsys):
    engine, tmp, files = site["engine"], site["tmp"], site["files"]
    with pytest.raises(LimaError, match="needs conversation files"):
        studies.create_study(engine, "x", "turns")
    with pytest.raises(LimaError, match="fail/pass/excellent"):
        studies.create_study(engine, "x", "turns", conversations=files, scale="helpfulness_6")
    with pytest.raises(LimaError, match="appears twice"):
        studies.create_study(engine, "x", "turns", conversations=[files[0], files[0]])
    bad = tmp / "bad.jsonl"
    bad.write_text(json.dumps({"prompt_id": "p1", "output": "x"}) + "\n")
    with pytest.raises(LimaError) as e:
        studies.create_study(engine, "x", "turns", conversations=[bad])
    assert f"{bad}:1" in str(e.value)
    alice = person(site, "alice")
    item = alice.next_item(site["sid"])
    assert alice.vote(site["sid"], item, "5").status_code == 400  # not on the scale
    url = f"sqlite:///{tmp / 'turns.db'}"
    assert main(["annotate", "create-study", "--db", url, "--kind", "turns", "--name", "cli",
                 "--conversations", str(files[0]), str(files[1])]) == 0
    assert main(["annotate", "progress", "--db", url]) == 0
    assert "cli (turns, 10 items x 1): 0/10" in capsys.readouterr().out


def test_admin_creates_a_turns_study_from_the_page(site):
    admin = person(site, "root")
    admin._csrf_from(admin.http.get("/admin").text)
    files = {k: (f.name, f.read_bytes()) for k, f in zip(("a", "b"), site["files"])}
    r = admin.http.post("/admin/studies", data={"csrf": admin.csrf, "name": "page-turns", "kind": "turns",
                                                "overlap": "1"}, files=files)
    assert r.status_code == 303
    with db.read(site["engine"]) as c:
        study = studies.get_study(c, name="page-turns")
    assert study["kind"] == "turns" and study["config"]["models"] == sorted(MODELS)


def test_the_report_pools_people_and_counts_a_turn_failed_by_majority():
    from lima_align.dialogue.report import turn_summary

    def rec(judge: str, cid: str, turn: int, score: str) -> dict:
        return {"type": "absolute", "scale": "fail_pass_excellent", "model": "m", "judge": judge,
                "conversation_id": cid, "turn": turn, "score": score, "prompt_id": f"{cid}#t{turn}"}

    turns = [rec("human:a", "c1", 1, "fail"), rec("human:b", "c1", 1, "pass"),        # split: not a failure
             rec("human:a", "c2", 2, "fail"), rec("human:b", "c2", 2, "fail"),        # both: a failure
             rec("human:a", "c3", 4, "fail"), rec("human:b", "c3", 4, "fail"),        # after turn 3: not early
             rec("api:judge", "c1", 1, "excellent")]
    rows = {r["judge"]: r for r in turn_summary(turns)}
    assert set(rows) == {"human:a", "human:b", "people", "api:judge"}
    assert rows["people"]["n"] == 6 and rows["people"]["counts"] == {"fail": 5, "pass": 1, "excellent": 0}
    assert rows["people"]["failed_within_3_turns"] == 1 and rows["people"]["conversations"] == 3
    assert rows["human:a"]["failed_within_3_turns"] == 2


def test_charts_show_pooled_people_instead_of_each_rater(monkeypatch, tmp_path):
    from lima_align.dialogue import report as dialogue_report

    charted: list[list[str]] = []
    monkeypatch.setattr(dialogue_report, "shares_chart", lambda rows, path: charted.append([r["label"] for r in rows]) or "")
    monkeypatch.setattr(dialogue_report, "by_turn_chart", lambda rows, path: "")

    def rec(judge: str, model: str) -> dict:
        return {"type": "absolute", "scale": "fail_pass_excellent", "model": model, "judge": judge,
                "conversation_id": "c1", "turn": 1, "score": "pass", "prompt_id": "c1#t1", "output": "o",
                "prompt": [{"role": "user", "content": "q"}]}

    records = [rec("human:a", "m1"), rec("human:b", "m1"), rec("human:a", "m2"), rec("api:j", "m1")]
    page = dialogue_report.report_section(records, tmp_path)
    assert charted == [["m1 (api:j)", "m1 (people)", "m2 (human:a)"]]  # m2 has one rater: no pooled row
    assert "m1 (human:a)" in page and "m1 (human:b)" in page  # the tables keep every rater
