"""Shift and retention on the real embedded Gemma 3 270M (slow: a few minutes on CPU)."""

from __future__ import annotations

import json

import pytest

from lima_align.cli import main

pytestmark = pytest.mark.slow


def test_the_model_against_its_own_greedy_answers_is_almost_all_rank_1(tmp_path):
    # Greedy answers are the model's own first choices; only re-tokenising the decoded text can move a rank.
    out = tmp_path / "shift.json"
    assert main(["analyze", "shift", "--base", "embedded", "--aligned-model", "embedded", "--limit", "2",
                 "--max-new-tokens", "24", "--n-boot", "50", "--output", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["tokens"] > 20
    assert s["shares"]["unshifted"]["value"] >= 0.95 and s["shares"]["shifted"]["value"] <= 0.03


def test_base_model_knows_the_shipped_questions_better_than_chance():
    from lima_align.analyze.retention import evaluate_model, load_mcq, load_texts
    from lima_align.models import load_model

    lm = load_model("embedded")
    texts, questions = load_texts()[:5], load_mcq()
    ppl, preds = evaluate_model(lm.model, lm.tokenizer, texts, questions, window=1024, batch_tokens=1024)
    accuracy = sum(p["correct"] for p in preds) / len(preds)
    assert accuracy > 0.45  # chance is 25%; measured 68% (notes/analysis.md)
    per_token = sum(r["nll"] for r in ppl) / sum(r["tokens"] for r in ppl)
    assert 1.0 < per_token < 4.0  # perplexity between e and e^4 on plain factual English
