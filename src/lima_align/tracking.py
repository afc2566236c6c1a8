"""Experiment trackers (`train.report_to`): TensorBoard, Weights & Biases, MLflow, Trackio.

They go through accelerate's own trackers, so a run under `accelerate launch` reports once, from the
main process. None of their packages is a dependency of lima-align: choosing one that is not
installed is a recipe problem, found when the recipe is loaded, before any model is.

What each step reports (every `train.log_every_steps` steps, as metrics.jsonl): the loss, the learning
rate, tokens per second, the gradient norm before clipping and the tokens the loss was taken over.
The resolved recipe goes in as hyperparameters, one flat `section.key` per setting.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from .errors import ProblemList

# Tracker name -> (modules, any one of which makes it usable; what to install).
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "trackio": (("trackio",), "trackio"),
}
PROJECT = "lima-align"  # W&B / Trackio project, MLflow experiment (unless MLFLOW_EXPERIMENT_NAME says otherwise)
TENSORBOARD_DIR = "tensorboard"  # inside the run folder


def installed(name: str) -> bool:
    return any(importlib.util.find_spec(m) is not None for m in TRACKERS[name][0])


def check_report_to(report_to: list[str], problems: ProblemList, where: str = "train.report_to") -> None:
    """A tracker named twice or whose package is missing (unknown names are refused by the field's type)."""
    seen: set[str] = set()
    for i, name in enumerate(report_to):
        if name not in TRACKERS:
            continue
        if name in seen:
            problems.add(f"{where}[{i}]", f"{name!r} is listed twice", "list each tracker once")
        seen.add(name)
        if not installed(name):
            pkg = TRACKERS[name][1]
            problems.add(f"{where}[{i}]", f"reporting to {name} needs the `{pkg}` package, which is not installed",
                         f"pip install {pkg}, or remove {name!r} from {where}")


def accelerator_options(report_to: list[str], run: Path) -> dict[str, Any]:
    """Keyword arguments for Accelerator(): none when nothing is tracked."""
    if not report_to:
        return {}
    from accelerate.utils import ProjectConfiguration

    return {"log_with": list(report_to),
            "project_config": ProjectConfiguration(project_dir=str(run), logging_dir=str(run / TENSORBOARD_DIR))}


def flat_hyperparameters(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1e-5}}` -> `{"train.lr": 1e-5}`; lists become JSON text, since trackers keep
    only numbers, text, booleans and None as hyperparameters."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hyperparameters(v, key + "."))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = json.dumps(v, ensure_ascii=False, default=str)
    return out


def start(acc: Any, report_to: list[str], recipe: dict[str, Any], run: Path, resumed_after: int = 0) -> None:
    """Open the trackers (all processes call this; accelerate starts them on the main process only).

    A resumed run redoes the steps after its last saved state; TensorBoard hides what the killed run
    logged from the first redone step on, as metrics.jsonl drops those lines."""
    if not report_to:
        return
    name = run.resolve().name
    kwargs: dict[str, dict[str, Any]] = {"wandb": {"name": name}, "mlflow": {"run_name": name},
                                         "trackio": {"name": name}}
    if resumed_after:
        kwargs["tensorboard"] = {"purge_step": resumed_after + 1}
    acc.init_trackers(PROJECT, config=flat_hyperparameters(recipe), init_kwargs=kwargs)


def step_values(row: dict[str, Any]) -> dict[str, float]:
    """The tracked numbers of one metrics.jsonl row, under the names the trackers show."""
    keys = {"loss": "train/loss", "lr": "train/learning_rate", "tokens_per_s": "train/tokens_per_s",
            "grad_norm": "train/grad_norm", "trained_tokens": "train/trained_tokens", "epoch": "train/epoch"}
    return {name: row[k] for k, name in keys.items() if row.get(k) is not None}


def log_step(acc: Any, report_to: list[str], row: dict[str, Any]) -> None:
    if report_to:
        acc.log(step_values(row), step=row["step"])


def finish(acc: Any) -> None:
    """Close the trackers (flush TensorBoard's events). Not acc.end_training(): that also ends the
    process group, and training goes on to synchronise its processes after this."""
    for tracker in acc.trackers:
        tracker.finish()
