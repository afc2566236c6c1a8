"""The quickstart's summary, printed table and compare page take their figures from answer_checks (the
training and generation steps are replaced by fakes: this checks the wiring, not the model)."""

from __future__ import annotations

import json
from pathlib import Path

from lima_align import answer_checks as ac
from lima_align.stats import wilson


def gen(pid: str, prompt: str, output: str, finish: str, tokens: int, model: str) -> dict:
    return {"id": f"{model}:{pid}", "prompt_id": pid, "model": model,
            "messages": [{"role": "user", "content": prompt}], "output": output, "finish_reason": finish,
            "tokens": {"prompt": 5, "output": tokens}, "decoding": {}}


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_quickstart_summary_and_page_use_the_same_figures(tmp_path, monkeypatch, capsys):
    from lima_align import quickstart as qs
    from lima_align.config import load_recipe

    prompts = [("t1", "Give me 3 bullet points on tea."), ("t2", "Why is the sea salty?")]

    def fake_generate(model_cfg, turns, gen_cfg, log=print):
        base = gen_cfg.model_label == "base"
        recs = [gen(pid, p, "tea tea tea tea tea tea tea tea" if base else "- green\n- black\n- oolong",
                    "length" if base else "eot", 160 if base else 12, gen_cfg.model_label) for pid, p in prompts]
        for r in recs:
            r["decoding"] = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2,
                             "max_new_tokens": gen_cfg.max_new_tokens, "seed": 0}
        return write(Path(gen_cfg.output), recs)

    def fake_train(recipe, log=print):
        run = Path(recipe.train.output_dir)
        run.mkdir(parents=True)
        (run / "done.json").write_text(json.dumps({"final_checkpoint": str(run / "checkpoints" / "epoch-02")}))
        return run

    monkeypatch.setattr(qs, "generate_file", fake_generate)
    monkeypatch.setattr(qs, "train", fake_train)
    recipe = load_recipe("quickstart", ["model.name=someone/base-model", f"quickstart.output_dir={tmp_path}",
                                        f"train.output_dir={tmp_path}/run"])
    out = qs.quickstart(recipe, log=lambda *a: None)
    summary = json.loads((out / "summary.json").read_text())
    base = ac.summarize(ac.read_answers(out / "base.jsonl"))
    assert summary["base"] == base and summary["aligned"]["ended_turn"]["k"] == 2
    assert summary["aligned"]["list_prompts_with_line_breaks"] == {"k": 1, "n": 1, **wilson(1, 1)}
    printed = capsys.readouterr().out
    assert "ended its turn" in printed and "line breaks, list/steps prompts" in printed
    page = (out / "compare.html").read_text()
    assert ac.fmt_share(summary["aligned"]["ended_turn"]) in page and ac.fmt_share(base["hit_length_cap"]) in page
    assert "temperature 0.7" in page and f"at most {recipe.quickstart.eval_max_new_tokens} new tokens" in page
    assert "output_dir" not in page and '"output"' not in page  # no config dump
