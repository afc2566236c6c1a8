"""The transformers backend's sampler: the one place that decides which token comes next.

Every backend (transformers, vLLM in vllm_backend.py, the API client) reads its settings from
`decoding.Decoding`; the transformers backend samples with `LimaSampler`, one logits processor
that does the whole step in LIMA's order:

    repetition penalty -> never-sampled special tokens -> temperature -> nucleus (top-p) -> draw

Why our own processor rather than transformers' warpers: transformers runs custom processors
*before* its temperature warper, so a custom top-p cut the nucleus at temperature 1 instead of
0.7; and its sampler draws from one random stream for the whole batch, so a prompt's answer
depended on which other prompts shared its batch. Here each prompt draws from its own generator,
seeded from the decoding seed and the prompt's token ids (`prompt_seed`, the same seed vLLM gets),
so a prompt's sampled answer is the same alone, in any batch, and after a resume. The processor
returns scores where only the drawn token is finite, and transformers runs in greedy mode, which
then picks exactly that token.

Scores and probabilities here are (rows, vocabulary) tensors: dimension 1 is the vocabulary.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .decoding import Decoding, prompt_seed


def nucleus(probs: torch.Tensor, top_p: float, k: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The nucleus of each row: (probabilities, token ids), most likely first; padded with zeros.

    A token is kept while the mass before it is below p (the most likely token always is).
    Sorting 262k probabilities per row per step took a third of Gemma's decoding time on CPU;
    the nucleus nearly always lies within the k most likely tokens, and when their mass reaches
    p the cut found among them is the exact one, so the full sort is only the fallback.
    """
    k = min(k, probs.shape[1])
    top, idx = probs.topk(k)
    cum = top.cumsum(1)
    if bool((cum[:, -1] < top_p).any()):
        top, idx = probs.sort(descending=True)
        cum = top.cumsum(1)
    keep = (cum - top) < top_p
    return top * keep, idx


class LimaSampler:
    """One decoding step for a batch: adjusted logits, then one draw per row from its own stream.

    prompt_ids: each row's prompt (without padding); rows are left-padded to `width`, so
    input_ids[:, width:] are the generated tokens. on_step(finished_rows) is called every step.
    A sampler serves one generate call: one model, so one vocabulary size and one device.
    """

    def __init__(self, dec: Decoding, prompts: list[list[int]], width: int, banned: list[int], *,
                 stop_ids: list[int] = (), on_step: Callable[[int], None] | None = None):
        self.dec, self.width, self.banned = dec, width, banned
        self.stop_ids = list(stop_ids)
        self.on_step = on_step
        self.gens = [torch.Generator().manual_seed(prompt_seed(dec.seed, p)) for p in prompts]
        # Prompt tokens to penalise under scope "all", as a rectangular index: padding positions
        # repeat the row's first token (a repeated index changes nothing), so the pad token is
        # never penalised by accident (it is often EOS, an end marker).
        self.prompt_index: torch.Tensor | None = None
        if dec.repetition_penalty_scope == "all":
            self.prompt_index = torch.tensor([p[:1] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        self.mask: torch.Tensor | None = None

    def adjust(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Logits after the repetition penalty and the ban, before temperature (float32)."""
        scores = scores.float()
        p = self.dec.repetition_penalty
        if p != 1.0:
            seen = input_ids[:, self.width:]
            if self.prompt_index is not None:
                seen = torch.cat([self.prompt_index.to(seen.device), seen], dim=1)
            if seen.shape[1]:
                s = scores.gather(1, seen)
                scores = scores.scatter(1, seen, torch.where(s > 0, s / p, s * p))
        if self.banned:
            if self.mask is None:
                self.mask = scores.new_zeros(scores.shape[1])
                self.mask[[i for i in self.banned if i < scores.shape[1]]] = -torch.inf
            scores = scores + self.mask
        return scores

    def distribution(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, token ids) to draw from: softmax(logits / T), then the nucleus."""
        probs = (scores / self.dec.temperature).softmax(1)
        if self.dec.top_p >= 1.0:
            return probs, torch.arange(probs.shape[1], device=probs.device).expand_as(probs)
        return nucleus(probs, self.dec.top_p)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.on_step is not None:
            self.on_step(self.finished_rows(input_ids))
        adjusted = self.adjust(input_ids, scores)
        if self.dec.temperature <= 0:
            chosen = adjusted.argmax(1)
        else:
            probs, idx = self.distribution(adjusted)
            probs, idx = probs.cpu(), idx.cpu()
            cum = probs.cumsum(1)
            picks = []
            for row in range(probs.shape[0]):
                # Inverse CDF with one uniform from the row's own stream per step: the first token whose
                # cumulative mass reaches u. A token of probability 0 (banned, or cut from the nucleus)
                # adds no mass, so it is never the first. The clamp only matters for a row of NaN logits.
                u = torch.rand(1, generator=self.gens[row], dtype=torch.float64).item() * cum[row, -1].item()
                j = min(int(torch.searchsorted(cum[row], u)), probs.shape[1] - 1)
                picks.append(int(idx[row, j]))
            chosen = torch.tensor(picks, device=scores.device)
        out = torch.full_like(scores, -torch.inf)
        return out.scatter(1, chosen[:, None], 0.0)

    def finished_rows(self, input_ids: torch.Tensor) -> int:
        gen = input_ids[:, self.width:]
        return int(torch.isin(gen, gen.new_tensor(self.stop_ids)).any(1).sum())


def generation_kwargs(sampler: LimaSampler) -> dict[str, Any]:
    """transformers.generate settings that leave every decision to the sampler: greedy over its
    one-hot scores, and none of the model's own penalties. A model's generation_config may set
    do_sample, temperature, top_k, top_p or a repetition penalty of its own; transformers applies
    the first four only when sampling (and then draws from torch's global random stream), the
    penalty always."""
    from transformers import LogitsProcessorList

    return dict(do_sample=False, repetition_penalty=None, logits_processor=LogitsProcessorList([sampler]))
