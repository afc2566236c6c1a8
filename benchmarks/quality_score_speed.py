"""Speed of the `quality` selection strategy's model scores: lima-align's batched scorer against one forward
pass per example with every logit materialised (how ModelScorer worked before), same model, same run.

Run from the project root (the embedded model is prepared on first use):
    .venv/bin/python benchmarks/quality_score_speed.py --n 64            # seed examples, embedded Gemma 270M
    .venv/bin/python benchmarks/quality_score_speed.py --n 8 --model PATH --method judge
Prints seconds for each, the ratio, and the largest difference between the two sets of scores.
"""

from __future__ import annotations

import argparse
import json
import time


def one_by_one(scorer, pairs: list[tuple[str, str]]) -> list[float]:
    """The reference: one example per forward pass, logits for every position."""
    import torch

    from lima_align.curate.select import JUDGE_QUESTION
    from lima_align.records import Message

    lm, fmt = scorer._load()
    tok, model = lm.tokenizer, lm.model
    out = []
    with torch.no_grad():
        for prompt, response in pairs:
            r_ids = tok(response, add_special_tokens=False)["input_ids"][:scorer.max_tokens]
            if scorer.method == "judge":
                q = JUDGE_QUESTION.format(prompt=prompt[:4 * scorer.max_tokens], response=tok.decode(r_ids))
                logp = torch.log_softmax(model(input_ids=torch.tensor([fmt.encode_prompt([Message("user", q)])]))
                                         .logits[0, -1].float(), -1)
                yes, no = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
                out.append(float(logp[yes] - logp[no]))
                continue
            p_ids = fmt.encode_prompt([Message("user", prompt)])[-scorer.max_tokens:]
            logits = model(input_ids=torch.tensor([p_ids + r_ids])).logits[0, len(p_ids) - 1:-1].float()
            out.append(float(torch.log_softmax(logits, -1).gather(1, torch.tensor(r_ids)[:, None]).mean()))
    return out


def main() -> None:
    from lima_align.curate.select import ModelScorer
    from lima_align.dataset_specs import load_dataset

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=64, help="seed training examples to score")
    p.add_argument("--model", default="embedded")
    p.add_argument("--method", choices=("logprob", "judge"), default="logprob")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--batch-tokens", type=int, help="rows x longest row per pass (default: the scorer's own)")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    convs = load_dataset("seed", purpose="train")[:a.n]
    pairs = [(c.messages[0].content, c.messages[1].content) for c in convs]
    scorer = ModelScorer(a.model, a.method, a.max_tokens, a.batch_tokens)
    scorer._load()  # loading is not timed
    scorer(pairs[:2])
    one_by_one(scorer, pairs[:2])  # warm-up of both paths
    t_batched, t_ref = [], []
    for r in range(a.rounds):  # interleaved, alternating which goes first; the fastest round of each counts
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            if which == 0:
                batched = scorer(pairs)
                t_batched.append(time.perf_counter() - t)
            else:
                ref = one_by_one(scorer, pairs)
                t_ref.append(time.perf_counter() - t)
    t_batched, t_ref = min(t_batched), min(t_ref)
    print(json.dumps({"examples": len(pairs), "method": a.method, "model": a.model,
                      "batched_s": round(t_batched, 2), "one_by_one_s": round(t_ref, 2),
                      "speedup": round(t_ref / t_batched, 2),
                      "max_abs_diff": max(abs(x - y) for x, y in zip(batched, ref))}, indent=2))


if __name__ == "__main__":
    main()
