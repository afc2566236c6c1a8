"""The training chart of a run folder (training.png: loss and learning rate by step), and its section in
`lima-align report`.

Training writes the chart when it ends, a resumed run included (it is drawn from the whole
metrics.jsonl, so it covers the steps before the interruption too). `lima-align report RUN_DIR` takes
run folders beside judgment files: `split_run_folders` picks them out, and `training_sections` (one of
report.SECTIONS) gives one section per run, redrawing the chart from metrics.jsonl, and the runs' numbers
for report.json (under "training").
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

from .html_parts import fragment, render_page
from .jsonl import read_jsonl
from .report_parts import ReportInputs, Section

CHART = "training.png"
C_LOSS, C_LR = "#3b6fb6", "#e0823d"


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / "metrics.jsonl").is_file()


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a last line cut off by a kill is left out, as when training resumes."""
    return [r for _, r in read_jsonl(run / "metrics.jsonl", allow_partial_tail=True)]


def chart_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Loss (left axis) and learning rate (right axis) by optimizer step, epochs marked."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6), dpi=120)
    FigureCanvasAgg(fig)  # Agg directly: no pyplot state, no display needed
    ax = fig.add_subplot(1, 1, 1)
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], "o-" if len(rows) < 40 else "-", color=C_LOSS, lw=1.8, ms=3,
            label="loss")
    ax.set_xlabel("optimizer step", fontsize=9, color="#555")
    ax.set_ylabel("loss (mean over trained tokens)", fontsize=9, color=C_LOSS)
    ax.grid(axis="y", color="#eee")
    lr = ax.twinx()
    lr.plot(steps, [r["lr"] for r in rows], "--", color=C_LR, lw=1.4, label="learning rate")
    lr.set_ylabel("learning rate", fontsize=9, color=C_LR)
    lr.set_ylim(0, None)
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ends = [a["step"] for a, b in zip(rows, rows[1:]) if b.get("epoch") != a.get("epoch")]
    for x in ends:  # the last logged step of each epoch but the final one
        ax.axvline(x, color="#ccc", lw=0.8, ls=":")
    for a in (ax, lr):
        a.tick_params(labelsize=8, colors="#555")
        a.spines["top"].set_visible(False)
    ax.set_title(title, loc="left", fontsize=11, color="#222")
    handles = ax.get_legend_handles_labels()[0] + lr.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], frameon=False, fontsize=8, loc="upper right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def write_chart(run: Path) -> Path | None:
    """Draw run/training.png from run/metrics.jsonl (None when there are no rows yet)."""
    rows = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    if not rows:
        return None
    data = chart_png(rows, f"Training: {run.resolve().name}")
    out = run / CHART
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


# ----------------------------------------------------------------- report section


def split_run_folders(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(other inputs, run folders) from the report's file list, order kept."""
    others, runs = [], []
    for p in paths:
        (runs if is_run_folder(Path(p)) else others).append(p)
    return others, runs


def run_summary(run: Path) -> dict[str, Any]:
    rows = read_metrics(run)
    info = json.loads((run / "run.json").read_text(encoding="utf-8")) if (run / "run.json").is_file() else {}
    last = rows[-1] if rows else {}
    return {"run": str(run), "steps": last.get("step"), "total_steps": info.get("total_steps"),
            "epochs": last.get("epoch"), "first_loss": rows[0]["loss"] if rows else None,
            "final_loss": last.get("loss"), "tokens_per_s": last.get("tokens_per_s"),
            "examples": (info.get("data") or {}).get("examples"),
            "trained_tokens": (info.get("data") or {}).get("trained_tokens"),
            "method": ((info.get("identity") or {}).get("train") or {}).get("method")}


def _section(run: Path, summary: dict[str, Any], png: bytes) -> str:
    def text(x: Any) -> Any:
        return "" if x is None else x

    cells = [("steps", f"{text(summary['steps'])} of {text(summary['total_steps'])}"),
             ("epochs", text(summary["epochs"])), ("method", text(summary["method"])),
             ("examples", text(summary["examples"])), ("trained tokens", text(summary["trained_tokens"])),
             ("loss", fragment("{} &rarr; {}", text(summary["first_loss"]), text(summary["final_loss"]))),
             ("tokens/s", text(summary["tokens_per_s"]))]
    return render_page("training_section.html", name=run.resolve().name, run=run, cells=cells,
                       png=base64.b64encode(png).decode("ascii"))


def training_sections(inputs: ReportInputs) -> Section | None:
    """The report's section per run folder (runs without metrics rows are left out); each run's chart is
    redrawn into its folder and into the report's charts/, and the runs' numbers go under "training"."""
    if not inputs.runs:
        return None
    parts, summaries, charts = [], [], []
    for i, run in enumerate(inputs.runs):
        run = Path(run)
        rows = read_metrics(run)
        if not rows:
            continue
        png = chart_png(rows, f"Training: {run.resolve().name}")
        for target in (run / CHART, inputs.charts_dir / f"training_{i}.png"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png)
        charts.append(f"training_{i}")
        summaries.append(run_summary(run))
        parts.append(_section(run, summaries[-1], png))
    # report.json is strict JSON: a diverged run's NaN or infinite loss is written there as null
    finite = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
              for r in summaries]
    return Section("".join(parts), {"training": finite}, tuple(charts))
