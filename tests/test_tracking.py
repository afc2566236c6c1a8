"""train.report_to (experiment trackers through accelerate), the run folder's training chart, and its
section in `lima-align report RUN_DIR`. TensorBoard is checked offline by reading its event files back."""

from __future__ import annotations

import json

import pytest

import lima_align.train as train_mod
import lima_align.training_report as training_report
from lima_align import tracking
from lima_align.config import load_recipe
from lima_align.errors import LimaError
from lima_align.train import train

pytest.importorskip("tensorboard")


def recipe_for(model_dir, data, out, *extra):
    # 8 examples, 2 a step: 4 steps an epoch, 8 in all; resumable state after steps 3, 4 and 6.
    return load_recipe(None, [f"model.name={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}",
                              "train.batch_size=2", "train.epochs=2", "train.lr=3e-3", "train.lr_final=3e-4",
                              "train.save_from_epoch=2", "train.save_to_epoch=2", "train.state_every_steps=3",
                              "train.precision=fp32", "train.report_to=[tensorboard]", *extra])


def scalars(run):
    """tag -> [(step, value)] over every event file of the run, as TensorBoard shows them (a restart's
    purge applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard" / tracking.PROJECT))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def hyperparameters(run):
    """The hparams TensorBoard holds for the run: name -> number or text."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = {}
    for path in (run / "tensorboard").rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                    for k, hp in data.session_start_info.hparams.items():
                        out[k] = hp.WhichOneof("kind") and getattr(hp, hp.WhichOneof("kind"))
    return out


def test_tensorboard_gets_every_metrics_line_and_the_recipe(tiny_gemma, examples_file, tmp_path):
    run = train(recipe_for(tiny_gemma, examples_file, tmp_path / "run"), log=lambda *_: None)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    got = scalars(run)
    assert [s for s, _ in got["train/loss"]] == list(range(1, 9))
    for tag, key in (("train/loss", "loss"), ("train/learning_rate", "lr"), ("train/grad_norm", "grad_norm"),
                     ("train/trained_tokens", "trained_tokens"), ("train/tokens_per_s", "tokens_per_s")):
        assert [v for _, v in got[tag]] == pytest.approx([r[key] for r in rows], rel=1e-6), tag
    hp = hyperparameters(run)
    assert hp["train.lr"] == pytest.approx(3e-3) and hp["train.batch_size"] == 2
    assert hp["model.name"] == str(tiny_gemma) and hp["train.report_to"] == '["tensorboard"]'
    assert hp["data.train"] == json.dumps([str(examples_file)])
    assert (run / training_report.CHART).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resumed_run_keeps_one_value_per_step_and_charts_every_step(tiny_gemma, examples_file, tmp_path,
                                                                       monkeypatch):
    real_lr_at = train_mod.lr_at

    def dies_at_step_6(step, total, recipe):
        if step == 5:  # steps 1-5 logged; state was last saved after step 4, so step 5 is redone
            raise KeyboardInterrupt("killed")
        return real_lr_at(step, total, recipe)

    monkeypatch.setattr(train_mod, "lr_at", dies_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(recipe_for(tiny_gemma, examples_file, tmp_path / "run"), log=lambda *_: None)
    assert [s for s, _ in scalars(tmp_path / "run")["train/loss"]] == [1, 2, 3, 4, 5]
    assert not (tmp_path / "run" / training_report.CHART).exists()  # drawn when training ends
    monkeypatch.setattr(train_mod, "lr_at", real_lr_at)
    charted = []
    real_chart = training_report.chart_png
    monkeypatch.setattr(training_report, "chart_png",
                        lambda rows, title: charted.append([r["step"] for r in rows]) or real_chart(rows, title))
    run = train(recipe_for(tiny_gemma, examples_file, tmp_path / "run"), log=lambda *_: None)
    assert [s for s, _ in scalars(run)["train/loss"]] == list(range(1, 9))  # step 5 once, not twice
    assert charted == [list(range(1, 9))]


def test_report_to_an_uninstalled_tracker_fails_at_recipe_loading(monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda name: name != "mlflow")
    with pytest.raises(LimaError) as e:
        load_recipe(None, ["train.report_to=[tensorboard, mlflow]"])
    (p,) = e.value.problems
    assert p.where == "override train.report_to=[tensorboard, mlflow]: train.report_to[1]"
    assert "needs the `mlflow` package, which is not installed" in p.what and p.fix.startswith("pip install mlflow")
    assert load_recipe(None, ["train.report_to=[tensorboard]"]).train.report_to == ["tensorboard"]
    assert load_recipe(None).train.report_to == []


def test_hyperparameters_are_flat_and_of_types_trackers_keep():
    flat = tracking.flat_hyperparameters({"train": {"lr": 1e-5, "lora": {"r": 16, "target_modules": ["q", "v"]}},
                                          "data": {"max_examples": None, "mix": [{"dataset": "seed", "count": 3}]}})
    assert flat == {"train.lr": 1e-5, "train.lora.r": 16, "train.lora.target_modules": '["q", "v"]',
                    "data.max_examples": None, "data.mix": '[{"dataset": "seed", "count": 3}]'}


def test_report_of_a_run_folder_shows_its_training_chart(tmp_path):
    from lima_align.cli import main

    run = tmp_path / "myrun"
    run.mkdir()
    rows = [{"step": s, "epoch": 1 + (s > 2), "loss": 3.0 - s / 2, "lr": 1e-5 * (5 - s) / 4, "tokens_per_s": 100.0}
            for s in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "run.json").write_text(json.dumps({"total_steps": 4, "data": {"examples": 8, "trained_tokens": 99},
                                              "identity": {"train": {"method": "lora"}}}))
    assert main(["report", str(run), "--output", str(tmp_path / "report"), "--n-boot", "0"]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Training: myrun</h2>" in html and 'alt="loss and learning rate by step"' in html
    assert "2.5 &rarr; 1.0" in html  # first and last loss
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["training"][0]["steps"] == 4 and report["training"][0]["method"] == "lora"
    assert report["charts"]["training_0"] == "charts/training_0.png"
    assert (tmp_path / "report" / "charts" / "training_0.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / training_report.CHART).exists()  # (re)drawn into the run folder too
