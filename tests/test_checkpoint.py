"""checkpoint.py: the metadata a run writes into its checkpoints and done.json, written and read in one place."""

from __future__ import annotations

import json
import shutil

import pytest

from lima_align import checkpoint as ck
from lima_align.cli import main
from lima_align.config import TurnsConfig
from lima_align.errors import LimaError

# Exactly what train.save_checkpoint wrote before checkpoint.py existed (the first from the first release,
# before freeze_embeddings was recorded; the second since).
FIRST_RELEASE = {"base_model": "/models/gemma", "method": "lora",
                 "turns": {"format": "plain", "eot": "<eos>", "system": None}, "epoch": 3, "step": 30, "loss": 1.25}
WITH_FREEZE = {"base_model": "/models/gemma", "method": "full", "freeze_embeddings": True,
               "turns": {"format": "template", "eot": "<end_of_turn>", "system": "Be brief."},
               "epoch": 2, "step": 20, "loss": 0.5}


def test_written_metadata_is_the_file_the_previous_code_wrote_and_reads_back(tmp_path):
    meta = ck.CheckpointMeta(TurnsConfig(format="template", eot="<end_of_turn>", system="Be brief."),
                             base_model="/models/gemma", method="full", freeze_embeddings=True, epoch=2, step=20,
                             loss=0.5)
    path = ck.write_meta(tmp_path, meta)
    assert path.name == "lima_align_checkpoint.json"
    assert path.read_text() == json.dumps(WITH_FREEZE, indent=2)  # same keys, same order, same layout
    assert ck.read_meta(tmp_path) == meta
    assert ck.is_checkpoint(tmp_path) and ck.epoch_of(tmp_path) == 2 and ck.trained_method(tmp_path) == "frozen"


def test_old_checkpoints_still_read(tmp_path):
    (tmp_path / ck.META_FILE).write_text(json.dumps(FIRST_RELEASE, indent=2))
    meta = ck.read_meta(tmp_path)
    assert meta.turns == TurnsConfig(format="plain", eot="<eos>", system=None)
    assert (meta.method, meta.freeze_embeddings, meta.base_model, meta.epoch) == ("lora", False, "/models/gemma", 3)
    assert ck.trained_method(tmp_path) == "lora"
    # Only the turns are needed; a key we do not know survives a rewrite.
    (tmp_path / ck.META_FILE).write_text(json.dumps({"turns": {"format": "plain", "eot": "<|eot|>"}, "note": "x"}))
    meta = ck.read_meta(tmp_path)
    assert meta.turns.system is None and meta.method is None and ck.trained_method(tmp_path) is None
    ck.write_meta(tmp_path, meta)
    assert json.loads((tmp_path / ck.META_FILE).read_text())["note"] == "x"


def test_turns_come_from_the_checkpoint_else_from_the_request_with_eos_for_auto(tmp_path):
    asked = TurnsConfig(format="plain", eot="auto", system="S")
    assert ck.turns_for(tmp_path, asked) == TurnsConfig(format="plain", eot="eos", system="S")  # not a checkpoint
    assert ck.turns_for(tmp_path, TurnsConfig(eot="new")) == TurnsConfig(eot="new")
    (tmp_path / ck.META_FILE).write_text(json.dumps(WITH_FREEZE))
    assert ck.turns_for(tmp_path, asked) == TurnsConfig(format="template", eot="<end_of_turn>", system="Be brief.")


@pytest.mark.parametrize("content, where, what", [
    ("{not json", "lima_align_checkpoint.json:1", "not valid JSON"),
    ("[1, 2]", "lima_align_checkpoint.json", "must hold a JSON object, not list"),
    ("{}", "lima_align_checkpoint.json turns", "missing"),
    ('{"turns": {"format": "chatml", "eot": "<eos>"}}', "turns.format", "must be one of plain, template, not 'chatml'"),
    ('{"turns": {"format": "plain", "eot": ""}}', "turns.eot", "non-empty string"),
    ('{"turns": {"format": "plain", "eot": "<eos>"}, "method": "qlora"}', "method", "must be one of full, lora"),
    ('{"turns": {"format": "plain", "eot": "<eos>"}, "epoch": "3"}', "epoch", "whole number"),
    ('{"turns": {"format": "plain", "eot": "<eos>"}, "freeze_embeddings": "yes"}', "freeze_embeddings", "true or false"),
])
def test_a_broken_metadata_file_says_where_and_what(tmp_path, content, where, what):
    (tmp_path / ck.META_FILE).write_text(content)
    with pytest.raises(LimaError) as e:
        ck.read_meta(tmp_path)
    p = e.value.problems[0]
    assert where in p.where and what in p.what and p.fix
    assert ck.trained_method(tmp_path) is None  # only describes the end of turn: loaders report the error


def test_every_problem_of_a_metadata_file_is_listed_at_once(tmp_path):
    (tmp_path / ck.META_FILE).write_text(json.dumps({"turns": {"format": "x", "eot": 5}, "loss": "low"}))
    with pytest.raises(LimaError) as e:
        ck.read_meta(tmp_path)
    assert [p.where.split()[-1] for p in e.value.problems] == ["turns.format", "turns.eot", "loss"]


def test_a_folder_that_is_not_a_checkpoint(tmp_path):
    assert ck.read_meta(tmp_path) is None and not ck.is_checkpoint(tmp_path)
    with pytest.raises(LimaError, match="is not a lima-align checkpoint"):
        ck.require_meta(tmp_path)
    (tmp_path / ck.META_FILE).write_text(json.dumps({"turns": {"format": "plain", "eot": "<eos>"}}))
    with pytest.raises(LimaError, match="does not say which epoch"):
        ck.epoch_of(tmp_path)


def test_a_runs_checkpoints_in_epoch_order_without_unfinished_ones(tmp_path):
    for ep in (10, 2, 5):
        ck.write_meta(ck.checkpoint_path(tmp_path, ep).mkdir(parents=True) or ck.checkpoint_path(tmp_path, ep),
                      ck.CheckpointMeta(TurnsConfig(format="plain", eot="<eos>"), epoch=ep))
    (tmp_path / "checkpoints" / "epoch-11").mkdir()  # being written: no metadata yet
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["epoch-02", "epoch-05", "epoch-10"]
    assert [ck.epoch_of(p) for p in ck.list_checkpoints(tmp_path)] == [2, 5, 10]


def test_done_round_trip_and_errors(tmp_path):
    assert ck.read_done(tmp_path) is None and not ck.is_done(tmp_path)
    with pytest.raises(LimaError, match="no finished single-turn run") as e:
        ck.final_checkpoint(tmp_path, what="single-turn", fix="train it")
    assert e.value.problems[0].where == str(tmp_path) and e.value.problems[0].fix == "train it"
    ck.write_done(tmp_path, ck.checkpoint_path(tmp_path, 3), 30)
    assert json.loads((tmp_path / "done.json").read_text()) == {
        "final_checkpoint": str(tmp_path / "checkpoints" / "epoch-03"), "steps": 30}
    assert ck.is_done(tmp_path) and ck.read_done(tmp_path) == ck.Done(str(tmp_path / "checkpoints" / "epoch-03"), 30)
    (tmp_path / "done.json").write_text(json.dumps({"final_checkpoint": "x"}))  # as tests and old runs left it
    assert ck.final_checkpoint(tmp_path) == "x"
    (tmp_path / "done.json").write_text(json.dumps({"steps": 3}))
    with pytest.raises(LimaError, match="missing"):
        ck.read_done(tmp_path)


def test_generating_from_a_checkpoint_with_broken_metadata_is_a_clear_error(tiny_gemma, tmp_path, capsys):
    ckpt = tmp_path / "epoch-01"
    shutil.copytree(tiny_gemma, ckpt)
    (ckpt / ck.META_FILE).write_text('{"turns": {"format": "plain"}}')
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    code = main(["generate", "--model", str(ckpt), "--prompts", str(prompts), "--output", str(tmp_path / "o.jsonl"),
                 "generate.max_new_tokens=2"])
    err = capsys.readouterr().err
    assert code == 2 and "turns.eot" in err and "Traceback" not in err
