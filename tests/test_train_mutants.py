"""Training behaviour that mutation testing (benchmarks/mutation.py) found unchecked: what one run writes
(metrics.jsonl fields, run.json, checkpoints, resumable state, log lines), gradient clipping, the seed of
each step, the recipe's effect on the built model, the data filters' edges, and bookkeeping on reruns."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import tqdm.auto
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import lima_align.train as train_mod
from conftest import write_examples
from lima_align import tracking
from lima_align.checkpoint import checkpoint_path
from lima_align.config import dump_recipe, load_recipe
from lima_align.errors import LimaError
from lima_align.loss import TrainedPositionLoss
from lima_align.mixture import load_training_set
from lima_align.models import load_model
from lima_align.packing import plan_steps
from lima_align.records import Conversation, Message
from lima_align.train import (build_model, eot_rows, load_training_conversations, lr_at, prepare_data,
                              resolve_precision, save_checkpoint, step_seed, train)
from lima_align.turns import TurnFormat, training_method

SEED = 3
MAX_GRAD_NORM = 0.05


def recipe(model_dir, data, out, *extra):
    return load_recipe(None, [f"model.name={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}",
                              "train.precision=fp32", "train.residual_dropout_top=0.0", *extra])


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def grad_norm(params):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])).item()


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
    """One run, watched: 8 examples, 4 per step, 3 epochs (6 steps), several packed rows per step, clipping
    that binds, checkpoints from epoch 2, state only at the ends of epochs."""
    tmp = tmp_path_factory.mktemp("trained")
    r = recipe(tiny_llama, write_examples(tmp / "train.jsonl"), tmp / "run", "train.batch_size=4",
               "train.epochs=3", "train.lr=1e-3", "train.lr_final=1e-4", f"train.seed={SEED}",
               "data.max_seq_len=48", "train.micro_batch_tokens=48", f"train.max_grad_norm={MAX_GRAD_NORM}",
               "train.save_from_epoch=2", "train.save_to_epoch=2", "train.state_every_steps=100",
               "train.adam_beta1=0.8", "train.adam_beta2=0.9", "train.weight_decay=0.05")
    seen = {"states": [], "seeds": [], "clipped": [], "logs": [], "adamw": [], "tracked": [], "bar": []}
    real_build, real_save_state = train_mod.build_model, train_mod._save_state

    def build(recipe, fmt, base):
        model = real_build(recipe, fmt, base)
        seen.update(model=model, fmt=fmt)
        # the packed forward goes through the decoder; each row sees the seed its step was given
        model.get_decoder().register_forward_pre_hook(lambda m, a: seen["seeds"].append(torch.initial_seed()))
        return model

    def save_state(acc, state_dir, step):
        seen["states"].append((step, sorted(p.name for p in state_dir.parent.iterdir())))
        real_save_state(acc, state_dir, step)

    def before_step(opt, args, kwargs):
        seen["clipped"].append(grad_norm([p for g in opt.param_groups for p in g["params"]]))
        seen["adamw"].append([(g["betas"], g["weight_decay"]) for g in opt.param_groups])

    class Bar(tqdm.auto.tqdm):  # the training progress bar the user watches (transformers has bars of its own)
        def __init__(self, *args, **kwargs):
            self.watched = kwargs.get("desc") == "train"
            if self.watched:
                seen["bar"].append(("open", kwargs["total"], kwargs["initial"], kwargs["unit"], kwargs["disable"]))
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if self.watched:
                seen["bar"].append(("update", n))
            return super().update(n)

        def set_postfix(self, **kwargs):
            if self.watched:
                seen["bar"].append(("postfix", kwargs))
            return super().set_postfix(**kwargs)

        def close(self):
            if getattr(self, "watched", False) and not self.disable:
                seen["bar"].append(("close",))
            return super().close()

    def tracked(name):
        real = getattr(tracking, name)
        return lambda *args, **kwargs: (seen["tracked"].append((name, args[1:], kwargs)), real(*args, **kwargs))[1]

    import accelerate

    real_accelerator = accelerate.Accelerator

    def accelerator(*args, **kwargs):  # (train imports it when it starts)
        seen["accelerator"] = kwargs
        return real_accelerator(*args, **kwargs)

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(accelerate, "Accelerator", accelerator)
            mp.setattr(train_mod, "build_model", build)
            mp.setattr(train_mod, "_save_state", save_state)
            mp.setattr(tqdm.auto, "tqdm", Bar)
            for name in ("start", "log_step", "finish"):
                mp.setattr(tracking, name, tracked(name))
            started = time.time()
            run = train(r, log=seen["logs"].append)
            seen["wall_s"] = time.time() - started
    finally:
        handle.remove()
    seen.update(run=run, recipe=r, metrics=metrics(run), base=str(tiny_llama))
    return seen


def test_a_machine_without_cuda_asks_accelerate_for_the_cpu(trained):
    # without CUDA a run is a CPU run: accelerate would otherwise take another device it finds (Apple's MPS,
    # Intel's XPU), where our precision settings are untested. (False on a CUDA machine: only a run there checks.)
    assert trained["accelerator"]["cpu"] is (not torch.cuda.is_available())


def test_metrics_lines_count_each_steps_examples_and_tokens(trained):
    m = trained["metrics"]
    info = json.loads((trained["run"] / "run.json").read_text())
    assert [x["step"] for x in m] == [1, 2, 3, 4, 5, 6]
    assert [x["epoch"] for x in m] == [1, 1, 2, 2, 3, 3]
    assert all(x["examples"] == 4 for x in m)
    encoded = prepare_data(trained["recipe"], trained["fmt"], load_training_conversations(trained["recipe"])).encoded
    plans = [plan_steps(8, 4, epoch, SEED) for epoch in range(3)]  # each step trains the examples its plan names
    assert [x["trained_tokens"] for x in m] == [sum(encoded[i].n_trained for i in plans[s // 2][s % 2])
                                                for s in range(6)]
    for epoch in (1, 2, 3):  # every example once per epoch: the steps' tokens add up to the data's
        assert sum(x["tokens"] for x in m if x["epoch"] == epoch) == info["data"]["tokens"]
        assert sum(x["trained_tokens"] for x in m if x["epoch"] == epoch) == info["data"]["trained_tokens"]
    assert [x["lr"] for x in m] == pytest.approx([lr_at(s, 6, trained["recipe"]) for s in range(6)], rel=1e-12)
    elapsed = [x["elapsed_s"] for x in m]
    assert 0 < elapsed[0] and elapsed == sorted(elapsed)
    seen = 0
    for x in m:  # the throughput is of every token so far over the time so far (both rounded when written)
        seen += x["tokens"]
        assert seen / (x["elapsed_s"] + 0.005) - 0.05 <= x["tokens_per_s"] <= seen / (x["elapsed_s"] - 0.005) + 0.05
    assert all(x["loss"] == round(x["loss"], 5) and x["grad_norm"] == round(x["grad_norm"], 4) for x in m)
    assert all(x["elapsed_s"] == round(x["elapsed_s"], 2) and x["tokens_per_s"] == round(x["tokens_per_s"], 1)
               for x in m)
    assert 0 < elapsed[0] <= elapsed[-1] <= trained["wall_s"]  # seconds since training began, not a clock reading
    # the measured values keep their decimals (round(v) or round(v, None) would write whole numbers)
    assert all(type(x[k]) is float for x in m for k in ("loss", "grad_norm", "tokens_per_s", "elapsed_s"))


def test_gradients_are_clipped_to_max_grad_norm_and_the_norm_before_is_logged(trained):
    assert len(trained["clipped"]) == 6  # one optimizer step per training step
    assert trained["clipped"] == pytest.approx([MAX_GRAD_NORM] * 6, rel=1e-3)
    assert all(x["grad_norm"] > 2 * MAX_GRAD_NORM for x in trained["metrics"])


def test_adamw_gets_the_recipes_betas_and_weight_decay(trained):
    assert trained["adamw"][0] == [((0.8, 0.9), 0.05), ((0.8, 0.9), 0.0)]


def test_progress_bar_and_trackers_follow_the_steps(trained):
    bar = trained["bar"]
    assert bar[0] == ("open", 6, 0, "step", False) and bar[-1] == ("close",)
    assert [b for b in bar if b[0] == "update"] == [("update", 1)] * 6
    postfixes = [b[1] for b in bar if b[0] == "postfix"]
    assert [sorted(p) for p in postfixes] == [["epoch", "loss", "tok_s"]] * 6
    for p, row in zip(postfixes, trained["metrics"]):  # the bar shows what the metrics line holds
        assert p["epoch"] == row["epoch"] and abs(float(p["loss"]) - row["loss"]) <= 0.00051
        assert abs(float(p["tok_s"]) - row["tokens_per_s"]) <= 0.55
    calls = trained["tracked"]
    assert [c[0] for c in calls] == ["start"] + ["log_step"] * 6 + ["finish"]
    report_to, recipe_dict, run = calls[0][1]
    assert (report_to, run, calls[0][2]) == ([], trained["run"], {"resumed_after": 0})
    assert recipe_dict["train"]["lr"] == 1e-3
    assert [c[1] for c in calls[1:-1]] == [([], row) for row in trained["metrics"]]


def test_each_step_runs_under_the_seed_of_its_step(trained):
    steps = []
    for s in trained["seeds"]:
        if not steps or steps[-1] != s:
            steps.append(s)
    assert steps == [step_seed(SEED, s, 0) for s in range(6)]
    assert len(trained["seeds"]) > 6  # several rows per step


def test_run_json_and_recipe_yaml_describe_the_run(trained):
    run, r, fmt, model = trained["run"], trained["recipe"], trained["fmt"], trained["model"]
    info = json.loads((run / "run.json").read_text())
    data = prepare_data(r, fmt, load_training_conversations(r))
    assert info["data"] == json.loads(json.dumps(data.report))
    assert info["base_model"] == trained["base"] and info["turn_format"] == fmt.describe()
    assert info["trainable_parameters"] == sum(p.numel() for p in model.parameters()) > 0
    assert (info["processes"], info["mixed_precision"], info["steps_per_epoch"], info["total_steps"]) == \
        (1, "no", 2, 6)
    assert info["identity"]["train"]["lr"] == 1e-3 and "output_dir" not in info["identity"]["train"]
    assert (run / "recipe.yaml").read_text() == dump_recipe(r)
    assert trained["logs"][:2] == [
        fmt.describe(),
        f"8 examples, {data.report['trained_tokens']} trained tokens; 6 steps (3 epochs x 2); "
        f"{info['trainable_parameters'] / 1e6:.1f}M trainable parameters; 1 process(es), mixed precision no"]


def test_checkpoints_from_save_from_epoch_and_the_last_hold_the_trained_weights(trained):
    run, m = trained["run"], trained["metrics"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-02", "epoch-03"]
    for epoch, step in ((2, 4), (3, 6)):
        meta = json.loads((checkpoint_path(run, epoch) / "lima_align_checkpoint.json").read_text())
        assert (meta["epoch"], meta["step"], meta["base_model"], meta["method"], meta["freeze_embeddings"]) == \
            (epoch, step, trained["base"], "full", False)
        assert meta["loss"] == pytest.approx(m[step - 1]["loss"], abs=1e-5)
        assert meta["turns"]["eot"] == trained["fmt"].tok.convert_ids_to_tokens(trained["fmt"].eot_id)
    saved = load_file(checkpoint_path(run, 3) / "model.safetensors")
    model = trained["model"].state_dict()
    assert set(saved) <= set(model) and "model.embed_tokens.weight" in saved
    assert all(torch.equal(saved[k], model[k]) for k in saved)
    done = json.loads((run / "done.json").read_text())
    assert done == {"final_checkpoint": str(checkpoint_path(run, 3)), "steps": 6}
    assert (run / "training.png").exists()


def test_state_is_saved_at_each_epochs_end_but_the_last_and_removed_when_done(trained):
    # state_every_steps=100: only the ends of epochs 1 and 2; the checkpoint of epoch 2 is already written
    assert [s for s, _ in trained["states"]] == [2, 4]
    assert "checkpoints" in trained["states"][1][1]
    assert not (trained["run"] / "state").exists()
    assert not any(p.name.startswith("state") for p in trained["run"].iterdir())


def test_a_finished_run_is_not_trained_again_and_bookkeeping_settings_may_change(trained, monkeypatch):
    run, r = trained["run"], trained["recipe"]
    before = (run / "metrics.jsonl").read_text()
    logs = []
    for extra in ("train.log_every_steps=2", "train.state_every_steps=5", "train.compile=true",
                  "train.attn_implementation=eager", "train.report_to=[tensorboard]"):
        changed = load_recipe(None, _overrides(r) + [extra])
        assert train(changed, log=logs.append) == run
    monkeypatch.chdir(run.parent)  # the same folder, named relative to the working directory
    relative = load_recipe(None, _overrides(r) + [f"train.output_dir={run.name}"])
    assert train(relative, log=logs.append).resolve() == run
    assert logs[:5] == [f"{run} is already finished; nothing to do (pass --restart to train again)"] * 5
    assert len(logs) == 6 and "already finished" in logs[5]
    assert (run / "metrics.jsonl").read_text() == before
    with pytest.raises(LimaError) as e:
        train(load_recipe(None, _overrides(r) + ["train.lr=2e-3"]))
    (p,) = e.value.problems
    assert (p.where, p.what) == ("train.output_dir", f"{run} holds a run with a different recipe")
    assert p.fix == "choose a new train.output_dir, or pass --restart to start this folder over"


def _overrides(r):
    """Overrides that rebuild recipe r (the fields the `trained` run set)."""
    t = r.train
    return [f"model.name={r.model.name}", f"data.train=[{r.data.train[0]}]", f"train.output_dir={t.output_dir}",
            "train.precision=fp32", "train.residual_dropout_top=0.0", "train.batch_size=4", "train.epochs=3",
            "train.lr=1e-3", "train.lr_final=1e-4", f"train.seed={SEED}", "data.max_seq_len=48",
            "train.micro_batch_tokens=48", f"train.max_grad_norm={MAX_GRAD_NORM}", "train.save_from_epoch=2",
            "train.save_to_epoch=2", "train.state_every_steps=100", "train.adam_beta1=0.8", "train.adam_beta2=0.9",
            "train.weight_decay=0.05"]


def test_restart_starts_the_folder_over_and_log_every_steps_thins_the_metrics(tiny_llama, examples_file, tmp_path):
    out = tmp_path / "run"
    train(recipe(tiny_llama, examples_file, out, "train.batch_size=8", "train.epochs=1"), log=lambda *_: None)
    (out / "left-over.txt").write_text("from the first run")
    run = train(recipe(tiny_llama, examples_file, out, "train.batch_size=8", "train.epochs=3",
                       "train.log_every_steps=2", "train.max_grad_norm=null", "train.save_from_epoch=9",
                       "train.save_to_epoch=9"), restart=True, log=lambda *_: None)
    assert not (run / "left-over.txt").exists()
    m = metrics(run)
    assert [x["step"] for x in m] == [2, 3]  # every second step, and the last one
    assert all(x["grad_norm"] is None for x in m)  # no clipping, nothing measured
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-03"]  # the last is always saved
    assert json.loads((run / "run.json").read_text())["total_steps"] == 3


def test_state_every_steps_saves_within_epochs_too(tiny_llama, examples_file, tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(train_mod, "_save_state", lambda acc, state_dir, step: saved.append(step))
    run = train(recipe(tiny_llama, examples_file, tmp_path / "run", "train.batch_size=3", "train.epochs=2",
                       "train.state_every_steps=2", "train.save_from_epoch=2", "train.save_to_epoch=2"),
                log=lambda *_: None)
    assert [x["examples"] for x in metrics(run)] == [3, 3, 2] * 2  # 8 examples: 3 steps an epoch, the last short
    assert saved == [2, 3, 4]  # every 2nd step and the end of epoch 1 (step 3); never after the last (6)


# ----------------------------------------------------------------- schedule, precision


def test_lr_schedule_edges():
    r = load_recipe(None, ["train.lr=1e-3", "train.lr_final=1e-4"])
    assert lr_at(0, 1, r) == 1e-3  # a one-step run trains at lr
    assert [lr_at(s, 2, r) for s in (0, 1)] == pytest.approx([1e-3, 1e-4])  # two steps: lr, then lr_final
    assert lr_at(7, 5, r) == pytest.approx(1e-4)  # past the last step it stays at lr_final
    w = load_recipe(None, ["train.lr=1e-3", "train.lr_final=1e-4", "train.warmup_steps=2"])
    assert [lr_at(s, 4, w) for s in range(4)] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-4])
    assert [lr_at(s, 3, w) for s in range(3)] == pytest.approx([5e-4, 1e-3, 1e-3])  # nothing left to decay


def test_precision_setting_to_accelerate_mixed_precision(monkeypatch):
    assert (resolve_precision("fp32"), resolve_precision("bf16")) == ("no", "bf16")
    monkeypatch.setattr(train_mod, "bf16_is_fast", lambda: True)
    assert (resolve_precision("auto"), resolve_precision("fp32")) == ("bf16", "no")
    monkeypatch.setattr(train_mod, "bf16_is_fast", lambda: False)
    assert (resolve_precision("auto"), resolve_precision("bf16")) == ("no", "bf16")


# ----------------------------------------------------------------- the model train() builds


def built(model_dir, *extra):
    r = load_recipe(None, [f"model.name={model_dir}", *extra])
    base = load_model(str(model_dir), dtype="float32")
    base.model.eval()
    fmt = TurnFormat(base.tokenizer, r.turns, method=training_method(r.train))
    n_before = base.model.get_input_embeddings().weight.shape[0]
    before = base.model.get_input_embeddings().weight.detach().clone()
    return build_model(r, fmt, base), fmt, before, n_before


def test_full_model_gets_a_new_eot_row_at_the_mean_and_trains_without_cache(tiny_llama):
    model, fmt, before, n_before = built(tiny_llama, "turns.eot=new")
    emb = model.get_input_embeddings().weight
    assert fmt.new_token is not None and emb.shape[0] == len(fmt.tok) == n_before + 1
    assert torch.allclose(emb[fmt.eot_id], before.mean(0), atol=1e-3)
    assert model.training and model.config.use_cache is False
    assert all(p.requires_grad for p in model.parameters())
    assert not model.is_gradient_checkpointing


def test_frozen_embeddings_freeze_an_untied_output_layer_too(tiny_llama):
    model, *_ = built(tiny_llama, "train.freeze_embeddings=true", "turns.eot=eos")
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"model.embed_tokens.weight", "lm_head.weight"}
    lora, *_ = built(tiny_llama, "train.freeze_embeddings=true", "turns.eot=eos", "train.method=lora")
    assert any("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)


def test_lora_settings_reach_the_adapter(tiny_llama):
    model, fmt, *_ = built(tiny_llama, "train.method=lora", "train.lora.r=4", "train.lora.alpha=12",
                           "train.lora.dropout=0.1", "train.lora.target_modules=[q_proj,v_proj]", "turns.eot=eos")
    cfg = model.peft_config["default"]
    # (alpha 12: peft's own default is 8, so 8 would pass without the recipe's value)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, set(cfg.target_modules)) == (4, 12, 0.1, {"q_proj", "v_proj"})
    assert cfg.task_type == "CAUSAL_LM"
    adapted = {n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"q_proj", "v_proj"}
    assert cfg.trainable_token_indices is None  # EOS is an existing token: no row to train
    every, *_ = built(tiny_llama, "train.method=lora", "turns.eot=eos")
    adapted = {n.split(".")[-1] for n, m in every.named_modules() if hasattr(m, "lora_A")}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"} <= adapted
    new, fmt, *_ = built(tiny_llama, "train.method=lora", "turns.eot=new")
    assert new.peft_config["default"].trainable_token_indices == {"model.embed_tokens": [fmt.eot_id],
                                                                  "lm_head": [fmt.eot_id]}


def test_eot_rows_name_the_output_row_only_when_it_is_not_tied(tiny_llama, tiny_gemma):
    llama = load_model(str(tiny_llama)).model
    gemma = load_model(str(tiny_gemma)).model
    assert eot_rows(llama, 7) == {"model.embed_tokens": [7], "lm_head": [7]}
    assert eot_rows(gemma, 7) == {"model.embed_tokens": [7]}


def test_gradient_checkpointing_and_lora_feed_gradients_into_the_checkpointed_layers(tiny_llama):
    full, *_ = built(tiny_llama, "train.gradient_checkpointing=true")
    assert full.is_gradient_checkpointing and full.training
    layer = full.get_decoder().layers[0]
    assert layer._gradient_checkpointing_func.keywords == {"use_reentrant": False}  # works with frozen inputs
    full(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    assert layer.mlp.up_proj.weight.grad is not None  # the checkpointed layer was recomputed and got gradients
    lora, *_ = built(tiny_llama, "train.gradient_checkpointing=true", "train.method=lora", "turns.eot=eos")
    assert lora.is_gradient_checkpointing
    out = lora.get_input_embeddings()(torch.tensor([[1, 2, 3]]))
    assert out.requires_grad  # the frozen embedding's output needs grad, or the checkpointed layers get none


def test_attention_kernel_and_neftune_come_from_the_recipe(tiny_llama):
    plain, *_ = built(tiny_llama)
    noisy, *_ = built(tiny_llama, "train.neftune_alpha=5", "train.attn_implementation=eager")
    assert noisy.config._attn_implementation == "eager" and plain.config._attn_implementation != "eager"
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(plain.get_input_embeddings()(ids), plain.get_input_embeddings()(ids))
        assert not torch.equal(noisy.get_input_embeddings()(ids), noisy.get_input_embeddings()(ids))


# ----------------------------------------------------------------- data


def conv(cid, *turns):
    roles = ["user", "assistant"] * len(turns)
    return Conversation(cid, [Message(role, text) for role, text in zip(roles, turns)])


@pytest.fixture(scope="module")
def llama_fmt(tiny_llama):
    from transformers import AutoTokenizer

    r = load_recipe(None, [f"model.name={tiny_llama}"])
    return TurnFormat(AutoTokenizer.from_pretrained(tiny_llama), r.turns, method="full")


def test_length_limits_keep_an_example_of_exactly_the_limit(tiny_llama, llama_fmt):
    c = conv("a", "Hi?", "Rome is the capital of Italy.")
    n = len(llama_fmt.encode(c).input_ids)
    for extra in ([f"data.max_seq_len={n}"], [f"data.max_example_tokens={n}"]):
        r = load_recipe(None, [f"model.name={tiny_llama}", *extra])
        rep = prepare_data(r, llama_fmt, [c]).report
        assert (rep["examples"], rep["trimmed_to_max_seq_len"], rep["dropped_too_long"], rep["tokens"]) == (1, 0, 0, n)
    r = load_recipe(None, [f"model.name={tiny_llama}", f"data.max_example_tokens={n - 1}"])
    with pytest.raises(LimaError) as e:
        prepare_data(r, llama_fmt, [c])
    (p,) = e.value.problems
    assert (p.where, p.what) == ("data.train", "no training examples left after encoding")
    assert p.fix == "check data.max_seq_len / data.max_example_tokens and that examples have assistant turns"


def test_an_example_with_one_trained_token_is_kept(tiny_llama, llama_fmt):
    c = conv("a", "Hi?", "Rome is the capital of Italy.")
    e = llama_fmt.encode(c)
    first = next(i for i, x in enumerate(e.labels) if x != -100)
    r = load_recipe(None, [f"model.name={tiny_llama}", f"data.max_seq_len={first + 1}"])
    data = prepare_data(r, llama_fmt, [c])
    assert data.encoded[0].n_trained == 1 and data.report["dropped_nothing_to_train"] == 0


def test_max_examples_keeps_a_seeded_sample_in_file_order(tiny_llama, llama_fmt):
    answers = ["Rome.", "Paris is in France.", "Nine minutes in boiling water.", "Waves fold under a grey sky.",
               "One, two, three.", "def add(a, b): return a + b", "Things with mass attract.", "The fox jumps."]
    convs = [conv(f"c{i}", "Hi?", a) for i, a in enumerate(answers)]

    def kept(seed):
        r = load_recipe(None, [f"model.name={tiny_llama}", "data.max_examples=3", f"train.seed={seed}"])
        return prepare_data(r, llama_fmt, convs)

    samples = {seed: kept(seed) for seed in range(4)}
    for seed, d in samples.items():
        assert len(d.ids) == 3 and d.ids == sorted(d.ids, key=lambda i: int(i[1:]))
        assert [e.input_ids for e in d.encoded] == [llama_fmt.encode(c).input_ids for c in convs
                                                    if c.id in d.ids]
        assert d.report["examples"] == 3
        assert sum(v["trained"] for v in d.report["mixture"].values()) == 3  # the report counts what is trained
        assert sum(v["drawn"] for v in d.report["mixture"].values()) == 8
    assert kept(0).ids == samples[0].ids  # the same seed, the same sample
    assert len({tuple(d.ids) for d in samples.values()}) > 1  # another seed, another sample


def test_report_gives_the_median_and_longest_example(tiny_llama, llama_fmt):
    convs = [conv("a", "Hi?", "Rome."), conv("b", "Hi?", "Rome is the capital of Italy, a country in Europe."),
             conv("c", "Hi?", "Rome is the capital of Italy.")]
    lens = sorted(len(llama_fmt.encode(c).input_ids) for c in convs)
    assert lens[0] < lens[1] < lens[2]
    rep = prepare_data(load_recipe(None, [f"model.name={tiny_llama}"]), llama_fmt, convs).report
    assert (rep["median_len"], rep["max_len"], rep["tokens"]) == (lens[1], lens[2], sum(lens))
    rep = prepare_data(load_recipe(None, [f"model.name={tiny_llama}"]), llama_fmt, convs[:2]).report
    assert rep["median_len"] == lens[2]  # of two, the upper one


def test_training_conversations_are_drawn_with_the_train_seed(tmp_path):
    main = write_examples(tmp_path / "main.jsonl", n=2)
    extra = write_examples(tmp_path / "extra.jsonl", n=8, dialogue=True)

    def drawn(seed):
        r = load_recipe(None, [f"data.train=[{main}]", f"data.mix=[{{dataset: '{extra}', count: 3}}]",
                               f"train.seed={seed}"])
        convs = load_training_conversations(r)
        assert [c.id for c in convs] == [c.id for c in load_training_set(r.data, seed)]
        return [c.id for c in convs]

    by_seed = {seed: drawn(seed) for seed in range(4)}
    assert all(len(ids) == 5 for ids in by_seed.values())
    assert len({tuple(ids) for ids in by_seed.values()}) > 1


# ----------------------------------------------------------------- checkpoints and state on disk


class OneProcess:
    """What save_checkpoint and _save_state ask of accelerate's Accelerator, for one process (or, with
    main=False, for a process other than the first)."""

    def __init__(self, main=True):
        self.is_main_process = main
        self.saved = []

    def get_state_dict(self, wrapped):
        return wrapped.state_dict()

    def unwrap_model(self, wrapped):
        return wrapped

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        self.saved.append(folder)
        (Path(folder) / "optimizer.bin").write_text("state")


def test_save_checkpoint_replaces_an_old_checkpoint_and_a_half_written_one(tiny_llama, tmp_path):
    model, fmt, *_ = built(tiny_llama, "turns.eot=eos", "turns.system=Answer briefly.")
    r = load_recipe(None, [f"model.name={tiny_llama}", "turns.eot=eos", "turns.system=Answer briefly."])
    path = tmp_path / "checkpoints" / "epoch-01"
    for folder in (path, path.with_name("epoch-01.tmp")):
        folder.mkdir(parents=True)
        (folder / "stale.txt").write_text("from a killed run")
    save_checkpoint(OneProcess(), TrainedPositionLoss(model), fmt, r, str(tiny_llama), path,
                    {"epoch": 1, "step": 2, "loss": 0.5})
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch-01"]
    assert not (path / "stale.txt").exists()
    saved = load_file(path / "model.safetensors")
    weights = model.state_dict()
    assert "model.embed_tokens.weight" in saved and all(torch.equal(saved[k], weights[k]) for k in saved)
    meta = json.loads((path / "lima_align_checkpoint.json").read_text())
    assert {k: meta[k] for k in ("epoch", "step", "loss", "base_model", "method", "freeze_embeddings")} == \
        {"epoch": 1, "step": 2, "loss": 0.5, "base_model": str(tiny_llama), "method": "full",
         "freeze_embeddings": False}
    assert meta["turns"] == {"format": fmt.kind, "eot": fmt.tok.convert_ids_to_tokens(fmt.eot_id),
                             "system": "Answer briefly."}  # (a checkpoint answers with its system message)
    other = tmp_path / "other" / "epoch-01"
    save_checkpoint(OneProcess(main=False), TrainedPositionLoss(model), fmt, r, str(tiny_llama), other, {})
    assert not other.parent.exists()  # only the first process writes


def test_checkpoint_records_frozen_embeddings_only_for_full_fine_tuning(tiny_llama, tmp_path):
    for method, want in (("full", True), ("lora", False)):
        extra = ["train.freeze_embeddings=true", "turns.eot=eos", f"train.method={method}"]
        model, fmt, *_ = built(tiny_llama, *extra)
        r = load_recipe(None, [f"model.name={tiny_llama}", *extra])
        path = tmp_path / method
        save_checkpoint(OneProcess(), TrainedPositionLoss(model), fmt, r, str(tiny_llama), path, {"epoch": 1})
        meta = json.loads((path / "lima_align_checkpoint.json").read_text())
        assert (meta["method"], meta["freeze_embeddings"]) == (method, want)


def test_state_is_swapped_in_whole(tmp_path):
    state = tmp_path / "state"
    acc = OneProcess()
    train_mod._save_state(acc, state, 4)
    assert json.loads((state / "progress.json").read_text()) == {"step": 4}
    assert (state / "accelerate" / "optimizer.bin").exists()
    (tmp_path / "state.tmp").mkdir()
    (tmp_path / "state.tmp" / "stale.txt").write_text("a save that was killed")
    train_mod._save_state(acc, state, 8)
    assert json.loads((state / "progress.json").read_text()) == {"step": 8}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # no .tmp, no .old left
    assert sorted(p.name for p in state.iterdir()) == ["accelerate", "progress.json"]
    other = tmp_path / "other" / "state"
    (other.parent / "state.tmp" / "accelerate").mkdir(parents=True)
    (other.parent / "state.tmp" / "accelerate" / "shard-0.bin").write_text("the first process's part")
    train_mod._save_state(OneProcess(main=False), other, 4)
    # another process adds its own part to the temporary folder, keeps the others'; the first one swaps it in
    assert sorted(p.name for p in other.parent.iterdir()) == ["state.tmp"]
    assert sorted(p.name for p in (other.parent / "state.tmp" / "accelerate").iterdir()) == \
        ["optimizer.bin", "shard-0.bin"]
    assert not (other.parent / "state.tmp" / "progress.json").exists()


def test_settings_the_machine_cannot_run_and_a_file_as_output_folder_fail_before_loading(tiny_llama, examples_file,
                                                                                         tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    if not torch.cuda.is_available():
        with pytest.raises(LimaError, match="train.attn_implementation"):
            train(recipe(tiny_llama, examples_file, tmp_path / "a", "train.attn_implementation=flash_attention_2"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LimaError, match="is a file; an output folder is needed here"):
        train(recipe(tiny_llama, examples_file, tmp_path / "file"))


def test_continuing_from_a_checkpoint_keeps_its_turn_format(trained, tmp_path):
    from lima_align.config import TurnsConfig
    from lima_align.models import load_tokenizer

    ckpt = checkpoint_path(trained["run"], 3)
    kind = trained["fmt"].kind
    # the checkpoint's tokenizer carries a chat template, which format 'auto' would otherwise switch to
    assert TurnFormat(load_tokenizer(str(ckpt)), TurnsConfig(), method="full").kind != kind
    run = train(recipe(ckpt, trained["recipe"].data.train[0], tmp_path / "more", "train.epochs=1",
                       "train.batch_size=8", "train.save_from_epoch=1", "train.save_to_epoch=1"), log=lambda *_: None)
    assert json.loads((run / "run.json").read_text())["turn_format"].startswith(f"turn format {kind!r};")


def kill_in_step_2(r, monkeypatch) -> None:
    """Train the recipe until its second step starts, then stop it as a kill would; lr_at is restored after."""
    real_lr_at = train_mod.lr_at

    def dies_in_step_2(step, total, recipe):
        if step == 1:
            raise KeyboardInterrupt("killed")
        return real_lr_at(step, total, recipe)

    monkeypatch.setattr(train_mod, "lr_at", dies_in_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(r, log=lambda *_: None)
    monkeypatch.setattr(train_mod, "lr_at", real_lr_at)


def test_a_run_killed_before_its_first_state_save_logs_each_step_once(tiny_llama, examples_file, tmp_path,
                                                                      monkeypatch):
    """Killed in step 2 of an epoch of 2 with no state saved yet: the rerun starts from step 0, and
    metrics.jsonl must not keep the killed run's line for step 1 next to the new one."""
    r = recipe(tiny_llama, examples_file, tmp_path / "run", "train.batch_size=4", "train.epochs=1",
               "train.save_from_epoch=1", "train.save_to_epoch=1")
    kill_in_step_2(r, monkeypatch)
    assert [x["step"] for x in metrics(tmp_path / "run")] == [1] and not (tmp_path / "run" / "state").exists()
    run = train(r, log=lambda *_: None)
    assert [x["step"] for x in metrics(run)] == [1, 2]


def test_a_resumed_run_says_so_and_drops_a_half_written_metrics_line(tiny_llama, examples_file, tmp_path,
                                                                      monkeypatch):
    r = recipe(tiny_llama, examples_file, tmp_path / "run", "train.batch_size=8", "train.epochs=2",
               "train.save_from_epoch=9", "train.save_to_epoch=9")
    kill_in_step_2(r, monkeypatch)
    assert json.loads((tmp_path / "run" / "state" / "progress.json").read_text()) == {"step": 1}
    with (tmp_path / "run" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "epo')  # killed while writing the line of a step the state does not hold
    logs = []
    run = train(r, log=logs.append)
    assert "resuming after step 1 of 2" in logs
    assert [x["step"] for x in metrics(run)] == [1, 2]


def test_a_save_killed_before_it_cleared_the_old_state_does_not_block_the_next(tmp_path):
    """A kill after the swap but during the removal of the previous state leaves state.old behind; the next
    save must not fail on it (renaming a folder onto a non-empty one fails)."""
    state = tmp_path / "state"
    train_mod._save_state(OneProcess(), state, 2)
    (tmp_path / "state.old" / "accelerate").mkdir(parents=True)
    (tmp_path / "state.old" / "accelerate" / "optimizer.bin").write_text("half removed")
    train_mod._save_state(OneProcess(), state, 4)
    assert json.loads((state / "progress.json").read_text()) == {"step": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


@pytest.mark.parametrize("loss_on", ["last_assistant", "all"])
def test_prepare_data_trains_the_positions_the_recipes_loss_on_names(tiny_llama, loss_on):
    from transformers import AutoTokenizer

    r = load_recipe(None, [f"model.name={tiny_llama}", f"data.loss_on={loss_on}"])
    fmt = TurnFormat(AutoTokenizer.from_pretrained(tiny_llama), r.turns, method="full")
    two_turns = Conversation("c", [Message("user", "Hi?"), Message("assistant", "Hello."),
                                   Message("user", "Capital of Italy?"), Message("assistant", "Rome.")])
    data = prepare_data(r, fmt, [two_turns])
    assert data.encoded == [fmt.encode(two_turns, loss_on)]
    assert data.encoded[0].n_trained != fmt.encode(two_turns, "assistant").n_trained  # (the default differs)


class _Loaded(Exception):
    """Stops a run right after it has asked for its base model."""


def test_the_base_model_is_loaded_as_the_recipe_names_it(tiny_llama, tmp_path, monkeypatch):
    asked = []

    def load_model(name, **kwargs):
        asked.append((name, kwargs))
        raise _Loaded

    monkeypatch.setattr(train_mod, "load_model", load_model)
    r = recipe(tiny_llama, write_examples(tmp_path / "train.jsonl"), tmp_path / "run", "model.revision=v2",
               f"model.cache_dir={tmp_path / 'models'}")
    with pytest.raises(_Loaded):
        train(r, log=lambda _: None)
    # fp32 master weights whatever the checkpoint's dtype; the revision a hub id is pinned to; the cache of
    # prepared models the recipe points at
    assert asked == [(str(tiny_llama), {"dtype": "float32", "revision": "v2", "cache_dir": str(tmp_path / "models")})]


def test_a_4bit_recipe_loads_a_quantized_base_for_qlora(tiny_llama, tmp_path, monkeypatch):
    import lima_align.distributed as distributed

    asked = []

    def load_quantized(model_cfg, gradient_checkpointing):
        asked.append((model_cfg, gradient_checkpointing))
        raise _Loaded

    monkeypatch.setattr(distributed, "check_speed_options", lambda t: None)  # (4-bit needs CUDA and bitsandbytes)
    monkeypatch.setattr(distributed, "load_quantized", load_quantized)
    monkeypatch.setattr(train_mod, "load_model", lambda *a, **k: pytest.fail("a 4-bit run loaded a plain base"))
    for checkpointing in (True, False):
        r = recipe(tiny_llama, write_examples(tmp_path / "train.jsonl"), tmp_path / f"run{checkpointing}",
                   "train.method=lora", "train.quantization=4bit", f"train.gradient_checkpointing={checkpointing}")
        with pytest.raises(_Loaded):
            train(r, log=lambda _: None)
        assert asked[-1] == (r.model, checkpointing)


def test_every_step_seed_is_a_whole_number_torch_takes():
    # (a float would be cut to an int by torch.manual_seed: 7e6 + 1e-9 seeds rank 1 like rank 0)
    seeds = [step_seed(7, s, r) for s in range(50) for r in range(8)]
    assert all(type(x) is int for x in seeds)
    with torch.random.fork_rng():  # (the other tests' random state stays as it was)
        for x in seeds[:3] + seeds[-3:]:
            torch.manual_seed(x)  # raises for a seed outside torch's range


def test_a_run_folder_may_be_several_folders_deep_in_new_ones(tiny_llama, tmp_path):
    r = recipe(tiny_llama, write_examples(tmp_path / "train.jsonl", n=2), tmp_path / "new" / "deeper" / "run",
               "data.max_seq_len=48", "train.micro_batch_tokens=48", "train.save_from_epoch=1", "train.epochs=1")
    run = train(r, log=lambda _: None)
    assert run == tmp_path / "new" / "deeper" / "run" and (run / "run.json").is_file()
