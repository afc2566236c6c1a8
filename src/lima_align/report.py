"""Pages people read: for now, the side-by-side comparison of two generation files."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .jsonl import write_text_atomic

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}}
table{{border-collapse:collapse;width:100%}} td,th{{border:1px solid #ccc;padding:.6em;vertical-align:top}}
th{{background:#f4f4f4}} td.p{{background:#fafafa;width:22%}} pre{{white-space:pre-wrap;margin:0;font:inherit}}
.meta{{color:#777;font-size:.85em;margin-top:.4em}}</style></head><body>
<h1>{title}</h1><p>{summary}</p><table><tr><th>prompt</th><th>{a}</th><th>{b}</th></tr>{rows}</table></body></html>"""


def side_by_side_html(a: list[dict[str, Any]], b: list[dict[str, Any]], path: str | Path, *, title: str,
                      names: tuple[str, str], summary: str = "") -> Path:
    """One row per prompt id present in both files, in the order of `a`."""
    by_id = {r["prompt_id"]: r for r in b}

    def cell(r: dict[str, Any]) -> str:
        meta = f"{r['tokens']['output']} tokens, ended by {r['finish_reason']}" if "tokens" in r else ""
        return f"<td><pre>{html.escape(r['output'])}</pre><div class=meta>{meta}</div></td>"

    rows = []
    for r in a:
        other = by_id.get(r["prompt_id"])
        if other is None:
            continue
        prompt = r["messages"][-1]["content"]
        rows.append(f"<tr><td class=p><pre>{html.escape(prompt)}</pre><div class=meta>{html.escape(r['prompt_id'])}"
                    f"</div></td>{cell(r)}{cell(other)}</tr>")
    page = PAGE.format(title=html.escape(title), summary=html.escape(summary), a=html.escape(names[0]),
                       b=html.escape(names[1]), rows="\n".join(rows))
    return write_text_atomic(path, page)
