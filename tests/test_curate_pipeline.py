"""`lima-align curate run` end to end on tiny dumps: outputs, manifest counts, byte-identical
reruns, resume, refusing to mix configs, bad rows in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_curate_sources import (
    good_rows,
    ndjson,
    reddit_lines,
    rule_site_rows,
    wikihow_rows,
    write_site,
    write_wikihow_csv,
)

from lima_align.cli import main
from lima_align.config import load_recipe
from lima_align.curate.config import CurateRecipe
from lima_align.curate.pipeline import run_curate
from lima_align.errors import LimaError


@pytest.fixture()
def dumps(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "dumps"
    write_site(root / "se", "physics.stackexchange.com", rule_site_rows())
    write_site(root / "se", "chemistry.stackexchange.com", good_rows(5, base=100))
    write_site(root / "se", "cooking.stackexchange.com", good_rows(5, base=500))
    rows = wikihow_rows()
    rows.append(dict(rows[1], category="Other"))  # the same article again: rule duplicate_id
    rows.append(dict(rows[1], title="How to Fold a Shirt Neatly"))  # near duplicate: dedup drops it
    wh = write_wikihow_csv(root / "wikihow.csv", rows)
    subs, comments = reddit_lines()
    rd = root / "reddit.ndjson"
    rd.write_bytes(ndjson(subs + comments))
    recipe = tmp_path / "curate.yaml"
    recipe.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "out"), "seed": 3,
        "stackexchange": {"paths": [str(root / "se")], "top_questions_per_site": 7},
        "wikihow": {"paths": [str(wh)]}, "reddit": {"paths": [str(rd)], "top_submissions_per_subreddit": 4},
        "select": {"strategy": "lima", "quotas": {"stackexchange:stem": 4, "stackexchange:other": 3, "wikihow": 2,
                                                 "reddit": 1}},
    }))
    return {"root": root, "recipe": recipe, "out": tmp_path / "out", "tmp": tmp_path}


def test_cli_run_writes_every_output_with_counts(dumps, capsys):
    assert main(["curate", "run", str(dumps["recipe"])]) == 0
    out = dumps["out"]
    for name in ("candidates.jsonl", "selected.jsonl", "eval_prompts.jsonl", "dedup_dropped.jsonl", "manifest.json",
                 "report.html", "charts/domain_spread.png", "charts/response_lengths.png"):
        assert (out / name).exists(), name
    m = json.loads((out / "manifest.json").read_text())
    se = m["rules"]["stackexchange"]["dropped"]
    assert se["se_first_person"] == 1 and se["se_title_not_self_contained"] == 1 and se["se_not_top_question"] == 1
    assert m["rules"]["wikihow"]["dropped"] == {"wh_missing_fields": 1, "wh_too_short": 1, "wh_too_long": 1,
                                                "duplicate_id": 1}
    assert m["rules"]["reddit"]["dropped"]["rd_meta_post"] == 1
    assert m["dedup"]["dropped"] == {"exact_duplicate": 0, "near_duplicate": 1}
    assert m["counts"]["selected"]["group"] == {"reddit": 1, "stackexchange:other": 3, "stackexchange:stem": 4,
                                                "wikihow": 2}
    assert m["counts"]["eval_prompts"] == 1 and m["bad_rows"]["count"] == 0
    assert {i["source"] for i in m["inputs"]} == {"stackexchange", "wikihow", "reddit"}
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    assert m["config"]["seed"] == 3
    sel = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert all(r["meta"]["license"] and r["meta"]["original_id"] and r["meta"]["url"] for r in sel
               if r["meta"]["source"] != "wikihow")
    assert "se_first_person" in (out / "report.html").read_text()
    assert "curation folder" in capsys.readouterr().out


def test_same_config_and_seed_give_byte_identical_selection(dumps):
    a = run_curate(load_recipe(dumps["recipe"], [f"output_dir={dumps['tmp'] / 'a'}", "report=false"], cls=CurateRecipe))
    b = run_curate(load_recipe(dumps["recipe"], [f"output_dir={dumps['tmp'] / 'b'}", "report=false"], cls=CurateRecipe))
    assert (a / "selected.jsonl").read_bytes() == (b / "selected.jsonl").read_bytes()
    assert (a / "candidates.jsonl").read_bytes() == (b / "candidates.jsonl").read_bytes()
    c = run_curate(load_recipe(dumps["recipe"], [f"output_dir={dumps['tmp'] / 'c'}", "report=false", "seed=4"],
                               cls=CurateRecipe))
    assert (a / "selected.jsonl").read_bytes() != (c / "selected.jsonl").read_bytes()


def test_resume_reuses_candidates_and_refuses_other_configs(dumps, capsys):
    overrides = ["report=false"]
    recipe = load_recipe(dumps["recipe"], overrides, cls=CurateRecipe)
    out = run_curate(recipe, candidates_only=True)
    assert (out / "candidates.jsonl").exists() and not (out / "selected.jsonl").exists()
    stamp = (out / "candidates.jsonl").stat().st_mtime_ns
    run_curate(recipe)  # the full run picks up the finished stage
    assert (out / "candidates.jsonl").stat().st_mtime_ns == stamp
    assert "candidates: reusing" in capsys.readouterr().out
    assert (out / "selected.jsonl").exists()
    other = load_recipe(dumps["recipe"], overrides + ["stackexchange.min_answer_score=20"], cls=CurateRecipe)
    with pytest.raises(LimaError, match="another config") as e:
        run_curate(other)
    assert "--restart" in e.value.problems[0].fix
    assert main(["curate", "run", str(dumps["recipe"]), "report=false", "stackexchange.min_answer_score=20"]) == 2
    assert main(["curate", "run", str(dumps["recipe"]), "report=false", "stackexchange.min_answer_score=20",
                 "--restart"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["stackexchange"]["min_answer_score"] == 20


def test_another_selection_on_the_same_pool_replaces_only_the_selection(dumps, capsys):
    recipe = load_recipe(dumps["recipe"], ["report=false"], cls=CurateRecipe)
    out = run_curate(recipe)
    stamp = (out / "candidates.jsonl").stat().st_mtime_ns
    raw = yaml.safe_load(dumps["recipe"].read_text())
    raw["select"] = {"strategy": "longest", "n": 3}
    other = dumps["tmp"] / "longest.yaml"
    other.write_text(yaml.safe_dump(raw))
    longest = load_recipe(other, ["report=false"], cls=CurateRecipe)
    run_curate(longest)
    assert (out / "candidates.jsonl").stat().st_mtime_ns == stamp
    sel = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert [r["meta"]["selection"]["strategy"] for r in sel] == ["longest"] * 3
    assert json.loads((out / "manifest.json").read_text())["config"]["select"]["strategy"] == "longest"


def test_changed_input_file_is_another_run(dumps):
    recipe = load_recipe(dumps["recipe"], ["report=false"], cls=CurateRecipe)
    run_curate(recipe, candidates_only=True)
    wh = dumps["root"] / "wikihow.csv"
    wh.write_text(wh.read_text() + '"How to Whistle","","' + "Purse the lips and blow. " * 40 + '","Music"\n')
    with pytest.raises(LimaError, match="other inputs"):
        run_curate(recipe, candidates_only=True)


def test_bad_rows_reach_the_manifest_with_locations(dumps):
    xml = dumps["root"] / "se" / "cooking.stackexchange.com" / "Posts.xml"
    lines = xml.read_text().split("\n")
    lines[4] = "  <row Id=broken"
    xml.write_text("\n".join(lines))
    out = run_curate(load_recipe(dumps["recipe"], ["report=false"], cls=CurateRecipe), candidates_only=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["bad_rows"]["count"] == 1 and m["bad_rows"]["locations"][0]["where"] == f"{xml}:5"
    assert m["bad_rows"]["by_file"] == {str(xml): 1}


def test_recipe_errors_are_listed_at_once(tmp_path, capsys):
    assert main(["curate", "run", "curate-lima", f"--output-dir={tmp_path}", "stackexchange.min_answer_chars=5000",
                 "select.temprature=2"]) == 2
    err = capsys.readouterr().err
    assert "select.temperature" in err and "min_answer_chars" in err and "no input" in err


def test_shipped_recipe_loads():
    r = load_recipe("curate-lima", ["stackexchange.paths=[x]"], cls=CurateRecipe)
    assert r.select.quotas["wikihow"] == 200 and r.stackexchange.min_answer_score == 10


def test_missing_dataset_is_a_clear_error(tmp_path):
    recipe = load_recipe(None, [f"output_dir={tmp_path / 'out'}", f"datasets.paths=[{tmp_path / 'nope.jsonl'}]"],
                         cls=CurateRecipe)
    with pytest.raises(LimaError, match="dataset not found"):
        run_curate(recipe)


def test_existing_datasets_only_pipeline(tmp_path):
    recipe = load_recipe(None, [f"output_dir={tmp_path / 'out'}", "datasets.paths=[seed]", "report=false",
                                "select.strategy=random", "select.n=5"], cls=CurateRecipe)
    out = run_curate(recipe)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["selected"]["source"] == {"dataset": 5}
    assert m["inputs"][0]["source"] == "dataset" and m["rules"]["dataset"]["kept"] > 5
