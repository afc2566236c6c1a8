"""Ablation grid: cells run end to end on a tiny model, a killed grid resumes, cell ids are stable."""

from __future__ import annotations

import json

import pytest
from conftest import write_examples

import lima_align.analyze.ablate as ablate
from lima_align.analyze.ablate import AblationRecipe, Cell, cell_id, draw, plan_cells, run_grid, score_records
from lima_align.cli import main
from lima_align.config import load_recipe
from lima_align.errors import LimaError

PROMPTS = ["How do I boil an egg?", "Write a poem about the sea.", "What is the capital of Italy?"]


def write_prompts(path):
    path.write_text("".join(json.dumps({"id": f"p-{i}", "messages": [{"role": "user", "content": p}]}) + "\n"
                            for i, p in enumerate(PROMPTS)))
    return path


def base_yaml(path, model_dir):
    path.write_text(f"""model: {{name: "{model_dir}"}}
turns: {{format: plain}}
train: {{batch_size: 4, lr: 3.0e-3, lr_final: 3.0e-4, residual_dropout_top: 0.0, precision: fp32,
         micro_batch_tokens: 2048, state_every_steps: 100}}
generate: {{temperature: 0.0, batch_size: 4}}
""")
    return path


@pytest.fixture
def setup(tmp_path, tiny_llama):
    data = write_examples(tmp_path / "train.jsonl", n=10)
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    base = base_yaml(tmp_path / "base.yaml", tiny_llama)

    def recipe(*extra):
        return load_recipe(None, [f"base={base}", f"output_dir={tmp_path / 'grid'}", f"grid.source=[{data}]",
                                  "grid.examples=[4,8]", "grid.epochs=[1,2]", f"eval.prompts={prompts}",
                                  "eval.max_new_tokens=6", "eval.limit=null", "judge.n_boot=200", *extra],
                           cls=AblationRecipe)
    return recipe, tmp_path


def counting_train(monkeypatch, fail_on: int | None = None):
    calls = []
    real = ablate.train

    def fake(recipe, **kw):
        calls.append(recipe.train.output_dir)
        if fail_on is not None and len(calls) == fail_on:
            raise RuntimeError("killed")
        return real(recipe, **kw)
    monkeypatch.setattr(ablate, "train", fake)
    return calls


def test_grid_runs_resumes_after_a_kill_and_grows_without_retraining(setup, monkeypatch):
    recipe, tmp = setup
    r = recipe()
    calls = counting_train(monkeypatch, fail_on=2)
    with pytest.raises(RuntimeError, match="killed"):
        run_grid(r, log=lambda *a: None)
    assert len(calls) == 2
    first = tmp / "grid" / "cells" / json.loads((tmp / "grid" / "cells").glob("*/score.json").__next__()
                                                 .read_text())["id"]
    done_mtime = (first / "run" / "done.json").stat().st_mtime_ns

    calls = counting_train(monkeypatch)
    out = run_grid(r, log=lambda *a: None)
    assert len(calls) == 3  # the finished cell was not trained again; the killed one was
    assert (first / "run" / "done.json").stat().st_mtime_ns == done_mtime
    grid = json.loads((out / "grid.json").read_text())
    assert len(grid["cells"]) == 4 and grid["axis"] == "examples"
    for c in grid["cells"]:
        d = out / "cells" / c["id"]
        assert sum(1 for _ in (d / "data.jsonl").open()) == c["examples"] == c["trained_examples"]
        assert c["score"]["n"] == len(PROMPTS) and 0 <= c["score"]["value"] <= 1
        lo, hi = c["score"]["ci"]
        assert lo <= c["score"]["value"] <= hi
        assert json.loads((d / "run" / "run.json").read_text())["identity"]["train"]["epochs"] == c["epochs"]
    assert (out / "charts" / "grid.png").stat().st_size > 1000
    assert "Ablation grid" in (out / "grid.html").read_text()
    # a smaller draw is a subset of the larger one (same seed, same source)
    ids = {c["examples"]: {json.loads(line)["id"] for line in (out / "cells" / c["id"] / "data.jsonl").open()}
           for c in grid["cells"] if c["epochs"] == 1}
    assert ids[4] < ids[8]

    # Changing the grid: dropping an axis value trains nothing; a smaller eval.limit answers nothing new
    # and scores only the prompts still asked for.
    answers = sorted((out / "cells").glob("*/answers-*.jsonl"))
    before = [a.stat().st_mtime_ns for a in answers]
    calls = counting_train(monkeypatch)
    run_grid(recipe("grid.epochs=[1]", "eval.limit=2"), log=lambda *a: None)
    cells = json.loads((out / "grid.json").read_text())["cells"]
    assert calls == [] and len(cells) == 2 and all(c["score"]["n"] == 2 for c in cells)
    assert [a.stat().st_mtime_ns for a in answers] == before
    assert main(["ablate", "ablate-cpu", "--show"]) == 0


def test_cell_ids_are_stable_and_follow_settings(setup):
    recipe, _ = setup
    r1, r2 = recipe(), recipe()
    b1, b2 = ablate.base_recipe(r1), ablate.base_recipe(r2)
    ids1 = [cell_id(c, b1, r1.seed, r1.dialogues_data) for c in plan_cells(r1)]
    ids2 = [cell_id(c, b2, r2.seed, r2.dialogues_data) for c in plan_cells(r2)]
    assert ids1 == ids2 and len(set(ids1)) == 4
    assert ids1[0].startswith("train-random-n4-e1-")
    other = ablate.base_recipe(recipe("overrides=[train.lr=1.0e-3]"))
    assert cell_id(plan_cells(r1)[0], other, 0, "seed:dialogues") != ids1[0]
    assert cell_id(plan_cells(r1)[0], b1, 1, "seed:dialogues") != ids1[0]  # another draw seed
    # eval and judge settings do not change what a cell trains
    r3 = recipe("eval.max_new_tokens=9", "judge.n_boot=500")
    assert [cell_id(c, ablate.base_recipe(r3), 0, r3.dialogues_data) for c in plan_cells(r3)] == ids1


def test_random_draws_are_seeded_and_nested(tmp_path):
    pool = [{"id": f"x{i}"} for i in range(20)]
    small = draw(pool, Cell("s", "random", 5, 1, False), 0, tmp_path, None)
    big = draw(pool, Cell("s", "random", 10, 1, False), 0, tmp_path, None)
    again = draw(pool, Cell("s", "random", 5, 1, False), 0, tmp_path, None)
    assert [p["id"] for p in small] == [p["id"] for p in again]
    assert {p["id"] for p in small} < {p["id"] for p in big}
    assert small != draw(pool, Cell("s", "random", 5, 1, False), 1, tmp_path, None)
    assert len(draw(pool, Cell("s", "random", 0, 1, False), 0, tmp_path, None)) == 20


def test_recipe_problems_are_listed_before_any_training(setup, monkeypatch):
    recipe, _ = setup
    with pytest.raises(LimaError) as e:
        recipe("judge.mode=absolute", "grid.epochs=[0]")
    text = str(e.value)
    assert "judge.mode" in text and "grid.epochs[0]" in text
    calls = counting_train(monkeypatch)
    with pytest.raises(LimaError, match="only 10 usable examples"):
        run_grid(recipe("grid.examples=[50]"), log=lambda *a: None)
    assert calls == []


def test_scores_pairwise_and_absolute():
    def pw(pid, a, b, v):
        return {"type": "pairwise", "judge": "j", "prompt_id": pid, "model_a": a, "model_b": b, "verdict": v}
    recs = [pw("1", "m", "ref", "a"), pw("2", "m", "ref", "a"), pw("3", "ref", "m", "b"), pw("4", "m", "ref", "tie"),
            pw("5", "m", "ref", "b"), pw("6", "other", "ref", "a")]
    s = score_records(recs, "m", "j", "pairwise", prompt_ids={"1", "2", "3", "4", "5", "6"}, n_boot=300,
                      reference="ref")
    assert s["n"] == 5 and s["value"] == pytest.approx((3 + 0.5) / 5)  # prompt 3 was judged the other way round
    ab = [{"type": "absolute", "judge": "j", "prompt_id": str(i), "model": "m", "score": v}
          for i, v in enumerate(["fail", "pass", "excellent", "excellent", None])]
    s = score_records(ab, "m", "j", "absolute", prompt_ids={"0", "1", "2", "3", "4"}, n_boot=300)
    assert s["n"] == 5 and s["n_parsed"] == 4 and s["value"] == pytest.approx((1 + 2 + 3 + 3) / 4)
    assert s["ci"][0] <= s["value"] <= s["ci"][1]


def test_dialogues_are_appended_after_the_draw(setup, monkeypatch):
    recipe, tmp = setup
    calls = counting_train(monkeypatch, fail_on=1)  # every draw is written before the first training
    with pytest.raises(RuntimeError):
        run_grid(recipe("grid.examples=[4]", "grid.epochs=[1]", "grid.dialogues=[true]"), log=lambda *a: None)
    (data,) = (tmp / "grid" / "cells").glob("*-dlg-*/data.jsonl")
    rows = [json.loads(line) for line in data.open()]
    kinds = [sum(m["role"] == "user" for m in r["messages"]) > 1 for r in rows]
    assert len(calls) == 1 and len(rows) == 4 + 30 and not any(kinds[:4]) and all(kinds[4:])


def test_strategies_other_than_random_go_through_curate_select(tmp_path):
    pytest.importorskip("lima_align.curate.select")
    pool = [{"id": f"x{i}", "source": "t", "meta": {},
             "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * (i + 1)}]}
            for i in range(6)]
    picked = draw(pool, Cell("s", "longest", 2, 1, False), 0, tmp_path, None)
    assert sorted(p["id"] for p in picked) == ["x4", "x5"]


@pytest.mark.parametrize("name", ["ablate-cpu", "ablate-gpu"])
def test_shipped_grids_load_and_validate(name):
    r = load_recipe(name, cls=AblationRecipe)
    assert len(plan_cells(r)) >= 4 and ablate.pick_axis(r) == "examples"


def test_the_7b_grid_trains_with_limas_smaller_model_values():
    t = ablate.base_recipe(load_recipe("ablate-gpu", cls=AblationRecipe)).train
    assert (t.batch_size, t.residual_dropout_top) == (64, 0.2)  # LIMA's 32 and 0.3 were for 65B


def test_absolute_scores_through_an_api_judge(setup):
    fake = pytest.importorskip("fake_openai")
    recipe, _ = setup

    def respond(request):
        text = request["messages"][0]["content"]
        return "Fine.\nScore: 5" if "What is the capital of Italy?" in text else "Score: 2"

    with fake.FakeOpenAI(respond) as server:
        r = recipe("grid.examples=[4]", "grid.epochs=[1]", "judge.kind=api", "judge.mode=absolute",
                   f"judge.api_base={server.base_url}", "judge.api_model=fake", "judge.scale=helpfulness_6")
        out = run_grid(r, log=lambda *a: None)
        assert server.requests == 1 + len(PROMPTS)  # the reachability check, then one rating per answer
    (cell,) = json.loads((out / "grid.json").read_text())["cells"]
    assert cell["judge"] == f"api:fake@{server.base_url}" and cell["scale"] == "helpfulness_6"
    assert cell["score"]["value"] == pytest.approx((5 + 2 + 2) / 3) and cell["score"]["n_parsed"] == 3
    assert not (out / "reference").exists() and not list(out.glob("reference-*.jsonl"))  # no pairwise reference
