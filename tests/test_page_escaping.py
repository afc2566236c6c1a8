"""Pages rendered from templates escape what records hold: a `<script>` in any text shows as text."""

from __future__ import annotations

from lima_align.analyze.grid_report import write_grid_page

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
