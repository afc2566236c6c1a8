#!/usr/bin/env python
"""StackExchange curation throughput and memory: MB/s of Posts.xml through the source and LIMA's
rules, and peak resident memory, at two dump sizes (memory should stay flat as the dump grows).

    python benchmarks/curate_throughput.py                  # 1,000 MB and 250 MB dumps (generated once, cached)
    python benchmarks/curate_throughput.py --size-mb 20     # a quick check that it works
    python benchmarks/curate_throughput.py --json-out bench.json

The synthetic dump (one site, posts in Id order like the real dumps: each question followed by 1-3
answers, HTML bodies with paragraphs, code and lists, 70% of titles self-contained, answers of
800-5,000 characters, a share in the first person) is written to --dir (default:
$LIMA_ALIGN_CACHE/bench or ~/.cache/lima-align/bench) and reused by later runs of the same size.
Each size runs in a fresh subprocess so its peak RSS (getrusage ru_maxrss) is its own.
Targets (issue 4): >= 20 MB/s, peak memory <= 500 MB, and flat across sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

WORDS = ("the a of to and in is that for it as with was on be by this are or from at an which one can have all "
         "their there been if more when will would who so no energy signal layer value system method heat "
         "water light current field force pressure sample model result process surface function output "
         "reaction element number structure material circuit protein orbit wave lens filter kernel").split()


def _para(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))).capitalize() + "."
        out.append(s)
        n += len(s) + 1
    return " ".join(out)


def _answer_html(rng: random.Random) -> str:
    target = rng.randint(800, 5000)
    parts = [f"<p>{_para(rng, target // 3)}</p>", "<pre><code>for item in items:\n    total += item\n</code></pre>",
             "<ul><li>" + _para(rng, 80) + "</li><li>" + _para(rng, 80) + "</li></ul>",
             f'<p>See <a href="https://example.org/{rng.randint(1, 999)}">the notes</a>. {_para(rng, target // 3)}</p>']
    if rng.random() < 0.15:
        parts.insert(0, "<p>I tried this myself.</p>")
    return "".join(parts)


def _attr(value: str) -> str:
    return quoteattr(value, {"\n": "&#xA;"})


def generate(path: Path, size_mb: int, seed: int = 0) -> Path:
    """Write a Posts.xml of about size_mb megabytes (bodies drawn from a pool, ids and scores vary)."""
    if path.exists() and path.stat().st_size >= size_mb * 1e6 * 0.99:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    answers = [_attr(_answer_html(rng)) for _ in range(400)]
    bodies = [_attr(f"<p>{_para(rng, rng.randint(200, 900))}</p>") for _ in range(200)]
    titles = [_attr(f"How does the {rng.choice(WORDS[40:])} {rng.choice(WORDS[40:])} change with "
                    f"{rng.choice(WORDS[40:])}?") for _ in range(300)]
    bad_titles = [_attr(f"Why does this {rng.choice(WORDS[40:])} fail") for _ in range(50)]
    tmp = path.with_name(path.name + ".tmp")
    pid, limit = 0, size_mb * 1_000_000
    with tmp.open("w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n')
        written = 0
        while written < limit:
            pid += 1
            qid = pid
            title = rng.choice(titles) if rng.random() < 0.7 else rng.choice(bad_titles)
            buf = [(f'  <row Id="{qid}" PostTypeId="1" Score="{rng.randint(-2, 500)}" ViewCount="{rng.randint(1, 99999)}" '
                    f'Body={rng.choice(bodies)} Title={title} Tags="&lt;x&gt;" AnswerCount="2" />\n')]
            for _ in range(rng.randint(1, 3)):
                pid += 1
                buf.append(f'  <row Id="{pid}" PostTypeId="2" ParentId="{qid}" Score="{rng.randint(-1, 120)}" '
                           f'Body={rng.choice(answers)} />\n')
            text = "".join(buf)
            f.write(text)
            written += len(text)
        f.write("</posts>\n")
    os.replace(tmp, path)
    return path


def worker(xml: Path) -> dict:
    """Run the StackExchange source + rules over one dump; report throughput and peak RSS."""
    from lima_align.curate.config import StackExchangeConfig
    from lima_align.curate.inputs import BadRows
    from lima_align.curate.rules import RuleCounts
    from lima_align.curate.stackexchange import stackexchange_records

    cfg = StackExchangeConfig(paths=[str(xml)])
    counts, bad = RuleCounts(), BadRows()
    t0 = time.perf_counter()
    kept = sum(1 for _ in stackexchange_records(cfg, 0, counts, bad))
    seconds = time.perf_counter() - t0
    mb = xml.stat().st_size / 1e6
    return {"mb": round(mb, 1), "seconds": round(seconds, 2), "mb_per_s": round(mb / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "kept": kept, "rules": counts.to_manifest(), "bad_rows": bad.count}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=1000, help="the larger dump; the smaller is a quarter of it")
    p.add_argument("--dir", type=Path, default=None, help="where the synthetic dumps are kept")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0
    cache = args.dir or Path(os.environ.get("LIMA_ALIGN_CACHE", Path.home() / ".cache" / "lima-align")) / "bench"
    results = []
    for size in (max(1, args.size_mb // 4), args.size_mb):
        xml = generate(cache / f"bench-{size}mb.stackexchange.com" / "Posts.xml", size)
        env = dict(os.environ, TQDM_DISABLE="1")
        out = subprocess.run([sys.executable, __file__, "--worker", str(xml)], capture_output=True, text=True,
                             env=env, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['mb']:>8.1f} MB  {r['seconds']:>7.1f} s  {r['mb_per_s']:>6.1f} MB/s  peak RSS {r['peak_rss_mb']:>6.1f} MB"
              f"  kept {r['kept']}")
    small, large = results
    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"memory growth for {large['mb'] / small['mb']:.1f}x the data: {growth:.2f}x "
          f"(targets: >= 20 MB/s, <= 500 MB, flat)")
    if args.json_out:
        args.json_out.write_text(json.dumps({"machine": platform.platform(), "cpu_count": os.cpu_count(),
                                             "results": results, "rss_growth": growth}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
