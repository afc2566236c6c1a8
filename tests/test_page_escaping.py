"""Pages rendered from templates escape what records hold: a `<script>` in any text shows as text."""

from __future__ import annotations

import json

from lima_align.analyze.grid_report import write_grid_page
from lima_align.analyze.report_sections import analysis_sections
from lima_align.analyze.select_ckpt import write_select_page
from lima_align.curate.curate_report import write_report as write_curate_report
from lima_align.dialogue.report import build as build_dialogue_page
from lima_align.report import build_report
from lima_align.report_parts import ReportInputs

EVIL = "<script>alert('x')</script>"


def score(v):
    return {"value": v, "ci": [v - 0.1, v + 0.1], "n": 4}


def test_grid_page_escapes_cells_judge_and_recipe(tmp_path):
    cells = [{"id": f"{EVIL}{n}", "source": EVIL, "strategy": EVIL, "examples": n, "epochs": 1, "dialogues": False,
              "trained_examples": n, "final_loss": 1.25, "ended_their_turn": 3, "answers": 4, "score": score(0.6),
              "judge": EVIL} for n in (4, 8)]
    grid = {"cells": cells, "axis": "examples", "reference": EVIL,
            "recipe": {"judge": {"mode": "pairwise", "kind": EVIL}, "eval": {"prompts": EVIL}, "base": EVIL}}
    text = write_grid_page(grid, tmp_path).read_text()
    assert "<script>" not in text and "Ablation grid" in text
    assert text.count("&lt;script&gt;") == 10  # judge, reference, prompts, base recipe, 2 cells x (id, source, strategy)
    assert "<td class=n>1.250</td>" in text and "<td class=n>3/4</td>" in text and "0.600 [0.500, 0.700]" in text


def test_select_page_escapes_checkpoints_run_judge_and_data(tmp_path):
    cks = [{"checkpoint": f"epoch-0{i}{EVIL}", "epoch": i, "dev_loss": 1.5, "dev_perplexity": 4.5, "score": score(0.5),
            "ended_their_turn": 3, "answers": 4} for i in (1, 2)]
    result = {"checkpoints": cks, "mode": "pairwise", "run": EVIL, "judge": EVIL, "reference": EVIL, "prompts": EVIL,
              "perplexity_data": EVIL, "best": cks[1]["checkpoint"], "lowest_perplexity": cks[0]["checkpoint"]}
    text = write_select_page(result, tmp_path).read_text()
    assert "<script>" not in text and "Checkpoint selection" in text
    assert text.count("&lt;script&gt;") == 9  # run, judge, reference, prompts, data, best, lowest, 2 rows
    assert "<b>best</b>" in text  # our own mark stays markup


def test_training_section_escapes_the_run_folder_and_run_json(tmp_path):
    run = tmp_path / "<b>run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "epoch": 1, "loss": 2.5, "lr": 1e-5}) + "\n")
    (run / "run.json").write_text(json.dumps({"total_steps": EVIL, "data": {"examples": EVIL},
                                              "identity": {"train": {"method": EVIL}}}))
    text = build_report([run], tmp_path / "out", n_boot=0).read_text()
    assert text.count("<script>") == 1 and "<b>run" not in text  # the page's own filter script only
    assert text.count("&lt;script&gt;") == 3 and text.count("&lt;b&gt;run") == 2  # heading and note


def test_curation_report_escapes_sources_rules_inputs_and_notices(tmp_path):
    manifest = {"counts": {"candidates": {"group": {"g": 2}, "domain": {"d": 2}},
                           "selected": {"group": {"g": 1}, "domain": {"d": 1}}},
                "bad_rows": {"count": 1, "locations": [{"where": EVIL, "what": EVIL}]},
                "dedup": {"in": 2, "kept": 2, "dropped": {EVIL: 0}}, "config_hash": EVIL,
                "rules": {EVIL: {"seen": 2, "kept": 1, "dropped": {EVIL: 1}, "transforms": {EVIL: 1}}},
                "inputs": [{"path": EVIL, "source": EVIL, "bytes": 1e6, "sha256": "0" * 64}],
                "sites": [{"site": EVIL, "url": EVIL, "newest_question": EVIL}], "notices": [EVIL]}
    recs = [{"messages": [{"role": "assistant", "content": "an answer"}], "meta": {"source": "s", "license": EVIL}}]
    text = write_curate_report(tmp_path, manifest, recs * 2, recs).read_text()
    assert "<script>" not in text and "Curation report" in text
    # config, 3 rules rows, duplicate, 2 inputs cells, 3 sites cells, licence, notice, 2 bad-row cells
    assert text.count("&lt;script&gt;") == 14
    assert "<b>&lt;script&gt;" in text and "<code>0000000000000000</code>" in text  # our own markup stays


def test_dialogue_page_escapes_title_models_judges_and_conversations(tmp_path):
    rs = [{"id": f"r{c}{t}", "type": "absolute", "prompt_id": f"{c}#t{t}", "prompt": [{"role": "user", "content": EVIL}],
           "model": EVIL, "output": EVIL, "judge": f"human:{EVIL}", "instructions": {"name": "turn", "sha256": "0"},
           "scale": "fail_pass_excellent", "raw": "", "score": "pass", "usage": {}, "created": 0,
           "conversation_id": f"{c}{EVIL}", "turn": t} for c in ("c1", "c2") for t in (1, 2)]
    path = tmp_path / "turns.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rs))
    text = build_dialogue_page([path], tmp_path / "out", title=EVIL).read_text()
    assert "<script>" not in text and "<title>&lt;script&gt;" in text and "<h1>&lt;script&gt;" in text
    assert text.count("&lt;script&gt;") > 10  # tables, transcripts and conversation ids too


def test_analysis_sections_escape_labels_tokens_models_and_subjects(tmp_path):
    est = {"value": 0.5, "ci": [0.4, 0.6]}
    shift = {"kind": "shift", "file": "s.json", "label": EVIL, "answers": 2, "tokens": 4,
             "shares": {k: est for k in ("unshifted", "marginal", "shifted")},
             "by_position": [{"bin": [0, 1], "tokens": 4, "shifted": 0.5, "marginal": 0.25}],
             "top_shifted": [{"token": EVIL, "shifted": 1, "occurrences": 2, "share_shifted": 0.5,
                              "examples": [{"before": EVIL, "base_top": EVIL, "rank": 5, "prompt_id": EVIL}]}]}
    mcq = {"accuracy": est, "accuracy_raw": est, "n": 2, "by_subject": {EVIL: {"n": 2, "accuracy": est}}}
    retention = {"kind": "retention", "file": "r.json", "base": "b", "aligned": EVIL, "difference": {"accuracy": est},
                 "models": [{"role": EVIL, "model": EVIL, "perplexity": est, "mcq": mcq}]}
    inputs = ReportInputs(records=[], summary={}, shown={}, left_out="", charts_dir=tmp_path,
                          analyses=[shift, retention])
    text = analysis_sections(inputs).html
    assert "<script>" not in text and "id=shift" in text and "id=retention" in text
    # shift: label twice, token twice, before, base's token, prompt id; retention: role, subject (model names
    # are shown by their last path part, "script&gt;")
    assert text.count("&lt;script&gt;") == 9 and text.count("<td>script&gt;</td>") == 1
    assert "<td class=n>50.0%<br><span class=ci>[40.0%, 60.0%]</span></td>" in text  # estimates stay markup


def test_report_agreement_and_pooled_rows_escape_people_and_models(tmp_path):
    def vote(pid, v, judge):
        return {"id": f"{judge}:{pid}", "type": "pairwise", "prompt_id": pid, "prompt": [{"role": "user", "content": "q"}],
                "model_a": EVIL, "model_b": "base", "output_a": "x", "output_b": "y", "judge": judge,
                "instructions": {"name": "pairwise", "sha256": "0" * 64},
                "votes": [{"order": "ab", "raw": v, "verdict": v}, {"order": "ba", "raw": v, "verdict": v}],
                "verdict": v, "consistent": True, "usage": {}, "created": 1.0}

    recs = [vote(f"p{i}", v, f"human:{name}{EVIL}") for name, vs in (("ana", ["a", "a", "b", "tie"]),
                                                                     ("bo", ["a", "b", "b", "tie"]))
            for i, v in enumerate(vs)]
    path = tmp_path / "j.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = build_report([path], tmp_path / "out", n_boot=20).read_text()
    assert "Judge agreement" in text and "People, pooled" in text and "Per judge pair" in text
    assert text.count("<script>") == 1  # the page's own filter script
