"""Training mixtures: whole datasets (`data.train`) plus datasets sampled by count or weight (`data.mix`).

    data:
      train: []
      mix:
        - {dataset: seed, count: 40}
        - {dataset: "seed:dialogues", count: 30}

An entry with a `count` draws that many examples; entries with a `weight` share `data.mix_total`
examples in proportion to their weights (largest-remainder rounding, so the shares add up exactly);
an entry with neither is used whole. Draws are without replacement and seeded by `train.seed` and
the dataset's own name, so adding or removing another entry never changes which examples this one
draws: the "single-turn" and "with-dialogues" recipes train on the same single-turn examples.

Every loaded example is tagged `meta["mix_source"]` with its dataset, so training can report how
many of each were drawn and how many survived the length filters (`mixture_report`, in run.json).
"""

from __future__ import annotations

import math
import random

from .config import DataConfig
from .dataset_specs import load_dataset
from .errors import LimaError, Problem, ProblemList
from .records import Conversation

SOURCE_KEY = "mix_source"


def weighted_counts(weights: list[float], total: int) -> list[int]:
    """Split `total` in proportion to `weights`; the remainders go to the largest fractions (ties: first)."""
    s = sum(weights)
    exact = [total * w / s for w in weights]
    counts = [math.floor(x) for x in exact]
    by_fraction = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_fraction[: total - sum(counts)]:
        counts[i] += 1
    return counts


def plan(data: DataConfig, sizes: dict[str, int]) -> list[tuple[str, int | None]]:
    """(dataset, how many to draw or None for all) for every dataset, train entries first.

    `sizes` holds each dataset's number of examples; asking for more than a dataset holds is an error
    listing every such entry at once."""
    weighted = [m for m in data.mix if m.weight is not None]
    shares = dict(zip((m.dataset for m in weighted),
                      weighted_counts([float(m.weight) for m in weighted], data.mix_total or 0))) if weighted else {}
    out: list[tuple[str, int | None]] = [(spec, None) for spec in data.train]
    problems = ProblemList()
    for i, m in enumerate(data.mix):
        n = m.count if m.count is not None else shares.get(m.dataset)
        if n is not None and n > sizes[m.dataset]:
            how = f"count {n}" if m.count is not None else f"weight {m.weight} of data.mix_total {data.mix_total} = {n}"
            problems.add(f"data.mix[{i}]", f"{m.dataset!r} holds {sizes[m.dataset]} examples; {how} asks for more",
                         f"lower it to at most {sizes[m.dataset]} (examples are drawn without replacement)")
        out.append((m.dataset, n))
    problems.raise_if_any()
    return out


def draw(convs: list[Conversation], n: int | None, seed: int, spec: str) -> list[Conversation]:
    """n examples of convs (all when None), chosen with a generator seeded by (seed, spec), in file order."""
    if n is None or n >= len(convs):
        return list(convs)
    keep = sorted(random.Random(f"{seed}/{spec}").sample(range(len(convs)), n))
    return [convs[i] for i in keep]


def load_training_set(data: DataConfig, seed: int) -> list[Conversation]:
    """Every example the recipe trains on, each tagged with the dataset it came from."""
    specs = list(data.train) + [m.dataset for m in data.mix]
    loaded: dict[str, list[Conversation]] = {}
    for spec in specs:
        if spec not in loaded:
            loaded[spec] = load_dataset(spec, fmt=data.format, purpose="train")
    out: list[Conversation] = []
    for spec, n in plan(data, {s: len(c) for s, c in loaded.items()}):
        for c in draw(loaded[spec], n, seed, spec):
            c.meta = {**c.meta, SOURCE_KEY: spec}
            out.append(c)
    if not out:
        raise LimaError(Problem("data.train", "the datasets hold no examples", "check the files"))
    return out


def mixture_report(drawn: list[Conversation], kept: list[Conversation]) -> dict[str, dict[str, int]]:
    """Per dataset: examples drawn, and examples trained on after the length filters."""
    out: dict[str, dict[str, int]] = {}
    for key, convs in (("drawn", drawn), ("trained", kept)):
        for c in convs:
            spec = str(c.meta.get(SOURCE_KEY, "?"))
            row = out.setdefault(spec, {"drawn": 0, "trained": 0})
            row[key] += 1
    return out


def describe(data: DataConfig) -> str:
    """One line for logs: 'seed (all) + seed:dialogues x30'."""
    parts = [f"{s} (all)" for s in data.train]
    for m in data.mix:
        parts.append(f"{m.dataset} x{m.count}" if m.count is not None else
                     f"{m.dataset} w{m.weight}" if m.weight is not None else f"{m.dataset} (all)")
    return " + ".join(parts)

