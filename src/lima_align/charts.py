"""Charts shared by every report page: the colours, a matplotlib figure without pyplot, axes in the
reports' style, 100% stacked bars, and saving a figure as a PNG that is also inlined as base64."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Colours: a wins / tie / b wins (LIMA Figure 1 style), and fail / pass / excellent (LIMA Figure 3 style).
C_A, C_TIE, C_B = "#3b6fb6", "#c7ccd4", "#e0823d"
C_FAIL, C_PASS, C_EXC = "#d1495b", "#edae49", "#3c9d74"


def new_figure(width: float, height: float) -> Any:
    """A matplotlib figure drawn with Agg, outside pyplot."""
    # matplotlib is imported by the first chart, not when a report module is imported
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(fig)  # render with Agg directly: no pyplot state, no display needed
    return fig


def save_png(fig: Any, path: Path) -> str:
    """Save the figure to `path` and return it base64-encoded for an <img src="data:...">."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return base64.b64encode(data).decode("ascii")


def style_axes(ax: Any) -> None:
    """The reports' look: no frame but the bottom axis, quiet ticks."""
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_color("#999")
    ax.tick_params(axis="y", length=0, labelsize=10)
    ax.tick_params(axis="x", colors="#555", labelsize=8)


def stacked_bars(labels: list[str], segments: list[tuple[str, str, list[float]]], notes: list[str],
                 title: str, *, midline: bool) -> Any:
    """Horizontal 100% stacked bars, top to bottom in the order given, percentages written in the segments."""
    n = len(labels)
    fig = new_figure(9.5, 0.9 + 0.55 * n)
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(n))[::-1]
    left = [0.0] * n
    for name, color, values in segments:
        ax.barh(ys, values, left=left, color=color, height=0.62, label=name, edgecolor="white", linewidth=1)
        for y, x0, v in zip(ys, left, values, strict=True):
            if v >= 0.06:  # narrower segments cannot hold a label without overlapping
                dark = color in (C_TIE, C_PASS)
                ax.text(x0 + v / 2, y, f"{100 * v:.0f}%", ha="center", va="center", fontsize=9,
                        color="#222" if dark else "white", fontweight="bold")
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, note in zip(ys, notes, strict=True):
        ax.text(1.01, y, note, ha="left", va="center", fontsize=8, color="#666", transform=ax.get_yaxis_transform())
    ax.set_yticks(ys, labels)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0%", "25%", "50%", "75%", "100%"])
    if midline:  # where "no preference" lies
        ax.axvline(0.5, color="#888", lw=0.6, ls=":", zorder=0)
    style_axes(ax)
    ax.set_title(title, loc="left", fontsize=11, color="#222", pad=24)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(segments), frameon=False, fontsize=9,
              handlelength=1.2, columnspacing=1.4, borderaxespad=0.2)
    return fig
