"""Checkpoint selection: every checkpoint answers, is judged and measured; the best is named; reruns resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import write_examples

import lima_align.analyze.select_ckpt as sel
import lima_align.generate as generate_mod
from lima_align.cli import main
from lima_align.config import ModelConfig, TurnsConfig, load_recipe
from lima_align.generate import load_for_generation
from lima_align.records import Conversation, Message
from lima_align.train import train
from lima_align.turns import IGNORE


def write_prompts(path):
    questions = ["How do I boil an egg?", "Write a poem about the sea.", "What is the capital of Italy?"]
    path.write_text("".join(json.dumps({"id": f"p-{i}", "messages": [{"role": "user", "content": q}]}) + "\n"
                            for i, q in enumerate(questions)))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_gemma):
    tmp = tmp_path_factory.mktemp("select")
    data = write_examples(tmp / "train.jsonl", n=8)
    r = load_recipe(None, [f"model.name={tiny_gemma}", f"data.train=[{data}]", f"train.output_dir={tmp / 'run'}",
                           "data.max_examples=6", "train.batch_size=3", "train.epochs=2", "train.lr=3e-3",
                           "train.lr_final=3e-4", "train.save_from_epoch=1", "train.save_to_epoch=2",
                           "train.precision=fp32", "train.residual_dropout_top=0.0", "generate.temperature=0"])
    return train(r, log=lambda *a: None), write_prompts(tmp / "prompts.jsonl"), tmp


def test_select_judges_every_checkpoint_and_resumes(tiny_run, monkeypatch, capsys):
    run, prompts, tmp = tiny_run
    out = tmp / "select"
    argv = ["select", str(run), "--prompts", str(prompts), "--max-new-tokens", "6", "--n-boot", "200",
            "--output", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "select.json").read_text())
    rows = {r["checkpoint"]: r for r in res["checkpoints"]}
    assert list(rows) == ["epoch-01", "epoch-02"] and res["reference"] == "epoch-01"
    assert res["best"] in rows and res["best_path"].endswith(res["best"])
    assert rows["epoch-01"]["score"]["value"] == 0.5  # the reference against itself
    assert rows["epoch-02"]["score"]["n"] == 3
    for r in rows.values():
        assert r["dev_perplexity"] > 1 and math.isclose(r["dev_perplexity"], math.exp(r["dev_loss"]))
    assert rows["epoch-01"]["dev_perplexity"] != rows["epoch-02"]["dev_perplexity"]
    ppl = json.loads((out / "perplexity.json").read_text())
    assert ppl["_examples"] == 2 and ppl["_data"] == "heldout"  # 8 examples, 6 trained
    assert "Checkpoint selection" in (out / "select.html").read_text()
    assert "best:" in capsys.readouterr().out

    # A rerun answers, measures and judges nothing again.
    answers = out / "answers" / "epoch-02.jsonl"
    before = answers.stat().st_mtime_ns, (out / "judgments.jsonl").stat().st_mtime_ns
    monkeypatch.setattr(sel, "perplexity", lambda *a, **k: pytest.fail("perplexity measured again"))
    monkeypatch.setattr(generate_mod, "load_for_generation", lambda *a, **k: pytest.fail("model loaded again"))
    assert main(argv) == 0
    assert (answers.stat().st_mtime_ns, (out / "judgments.jsonl").stat().st_mtime_ns) == before


def test_select_rejects_unknown_reference(tiny_run, capsys):
    run, prompts, tmp = tiny_run
    assert main(["select", str(run), "--prompts", str(prompts), "--reference", "epoch-07",
                 "--output", str(tmp / "x")]) == 2
    assert "epoch-01, epoch-02" in capsys.readouterr().err


def test_perplexity_matches_full_logits(tiny_run):
    run, _, _ = tiny_run
    lm, fmt = load_for_generation(ModelConfig(name=str(run / "checkpoints" / "epoch-02"), dtype="float32"),
                                  TurnsConfig())
    conv = Conversation("c", [Message("user", "How do I boil an egg?"), Message("assistant", "Boil it.")])
    got = sel.perplexity(lm, fmt, [conv], max_len=512, chunk_elems=64)  # several chunks
    e = fmt.encode(conv)
    with torch.no_grad():
        logits = lm.model(torch.tensor([e.input_ids])).logits[0, :-1].float()
    tgt = torch.tensor(e.labels[1:])
    keep = tgt != IGNORE
    want = torch.nn.functional.cross_entropy(logits[keep], tgt[keep]).item()
    assert got["tokens"] == int(keep.sum()) and got["loss"] == pytest.approx(want, rel=1e-4)


def test_a_run_on_its_whole_file_is_selected_by_judging_alone(tiny_run, tmp_path, capsys):
    """No held-out examples is LIMA's own setup: perplexity is skipped with a notice, not a failure."""
    import shutil

    run, prompts, _ = tiny_run
    whole = tmp_path / "whole-run"
    shutil.copytree(run, whole)
    recipe = (whole / "recipe.yaml").read_text()
    assert "max_examples: 6" in recipe
    (whole / "recipe.yaml").write_text(recipe.replace("max_examples: 6", "max_examples: null"))  # trained on all 8
    out = tmp_path / "select"
    assert main(["select", str(whole), "--prompts", str(prompts), "--max-new-tokens", "4", "--n-boot", "50",
                 "--output", str(out)]) == 0
    assert "perplexity skipped: the run trained on every example" in capsys.readouterr().out
    res = json.loads((out / "select.json").read_text())
    assert res["perplexity_data"] is None and res["lowest_perplexity"] is None
    assert all(r["dev_perplexity"] is None and r["score"]["n"] == 3 for r in res["checkpoints"])
    assert res["best"] in ("epoch-01", "epoch-02") and not (out / "perplexity.json").exists()
    assert "perplexity skipped (no held-out examples)" in (out / "select.html").read_text()
