"""Charts and the HTML page of `lima-align ablate` grids (LIMA Figures 5 and 6), reused by `lima-align select`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..charts import C_A, C_B, new_figure, save_png, style_axes
from ..html_parts import render_page
from ..jsonl import write_text_atomic

AXES = ("source", "strategy", "examples", "epochs", "dialogues")  # what an ablation grid varies (grid.*)

# ----------------------------------------------------------------- chart and page (LIMA Figures 5 and 6)

Y_LABELS = {"pairwise": "preference vs reference (0.5 = no preference)", "helpfulness_6": "mean helpfulness (1-6)",
            "fail_pass_excellent": "mean rating (Fail 1, Pass 2, Excellent 3)"}


def score_chart(series: dict[str, list[tuple[Any, dict[str, Any]]]], x_label: str, y_label: str, path: Path, *,
                title: str, midline: float | None = None) -> str:
    """Mean score with its 95% interval at each x, one line per series; numbers on a log2 axis when they
    span a factor of 4 or more (LIMA Figure 6), categories evenly spaced (Figure 5)."""
    xs = [x for pts in series.values() for x, _ in pts]
    numeric = all(isinstance(x, int) and not isinstance(x, bool) for x in xs)
    cats = [] if numeric else list(dict.fromkeys(str(x) for x in xs))
    vals = sorted(set(xs)) if numeric else []
    log2 = bool(vals) and vals[0] > 0 and vals[-1] / vals[0] >= 4
    span = (vals[-1] - vals[0]) if len(vals) > 1 else 1
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    colors = [C_A, C_B, "#3c9d74", "#8e6bbf", "#d1495b", "#6b7280"]
    for k, (name, pts) in enumerate(series.items()):
        pts = [(x, s) for x, s in pts if s["value"] is not None]
        if not pts:
            continue
        shift = (k - (len(series) - 1) / 2) * 0.04  # lines side by side, so their intervals stay readable
        if not numeric:
            px = [cats.index(str(x)) + shift for x, _ in pts]
        else:
            px = [x * 2 ** shift if log2 else x + shift * span for x, _ in pts]
        py = [s["value"] for _, s in pts]
        lo = [v - (s["ci"][0] if s["ci"][0] is not None else v) for v, (_, s) in zip(py, pts, strict=True)]
        hi = [(s["ci"][1] if s["ci"][1] is not None else v) - v for v, (_, s) in zip(py, pts, strict=True)]
        ax.errorbar(px, py, yerr=[lo, hi], marker="o", ms=6, capsize=4, lw=1.6, color=colors[k % len(colors)],
                    label=name or None)
    if midline is not None:
        ax.axhline(midline, color="#888", lw=0.8, ls=":", zorder=0)
    if numeric:
        if log2:
            ax.set_xscale("log", base=2)
        ax.set_xticks(vals, [str(v) for v in vals])
    else:
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.5, len(cats) - 0.5)
    ax.grid(axis="y", color="#eee")
    style_axes(ax)
    ax.tick_params(axis="x", labelsize=9)
    ax.set_xlabel(x_label, fontsize=10)
    ax.set_ylabel(y_label, fontsize=10)
    ax.set_title(title, loc="left", fontsize=11, color="#222")
    if any(series):
        ax.legend(frameon=False, fontsize=8.5)
    return save_png(fig, path)


def format_score(s: dict[str, Any]) -> str:
    """A cell's score with its 95% interval, as the tables print it."""
    v, (lo, hi) = s["value"], s["ci"]
    if v is None:
        return "-"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{v:.3f}"


def grid_series(cells: list[dict[str, Any]], axis: str) -> dict[str, list[tuple[Any, dict[str, Any]]]]:
    """Cells grouped into lines: x is the plotted axis, a line per setting of the other axes that vary."""
    varying = [a for a in AXES if a != axis and len({json.dumps(c[a]) for c in cells}) > 1]
    series: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for c in cells:
        name = ", ".join(f"{a}={c[a]}" for a in varying)
        x = c[axis] if axis != "examples" else (c["trained_examples"] if c["examples"] == 0 else c["examples"])
        series.setdefault(name, []).append((x, c["score"]))
    for pts in series.values():
        pts.sort(key=lambda p: (isinstance(p[0], str), p[0]))
    return series


def write_grid_page(grid: dict[str, Any], out: Path) -> Path:
    """out/grid.html (templates/grid.html): the score chart along the grid's axis and a row per cell."""
    cells, axis = grid["cells"], grid["axis"]
    j = grid["recipe"]["judge"]
    y_label = Y_LABELS["pairwise" if j["mode"] == "pairwise" else j["scale"]]
    chart = score_chart(grid_series(cells, axis), axis, y_label, out / "charts" / "grid.png",
                        title=f"Score per cell along '{axis}', 95% intervals",
                        midline=0.5 if j["mode"] == "pairwise" else None) if cells else ""
    rows = [[c["id"], c["source"], c["strategy"], c["examples"] or "all", c["epochs"],
             "yes" if c["dialogues"] else "no", c["trained_examples"],
             "-" if c["final_loss"] is None else f"{c['final_loss']:.3f}", f"{c['ended_their_turn']}/{c['answers']}",
             format_score(c["score"])] for c in cells]
    page = render_page("grid.html", title="lima-align ablation grid", heading="Ablation grid", cells=cells,
                       judge=cells[0]["judge"] if cells else j["kind"], mode=j["mode"], reference=grid.get("reference"),
                       prompts=grid["recipe"]["eval"]["prompts"], base=grid["recipe"]["base"], y_label=y_label,
                       chart=chart, rows=rows)
    return write_text_atomic(out / "grid.html", page)
