"""HTML pieces shared by every page: rendering the templates (templates/, Jinja2 with autoescape; parts.html
holds the table), the stylesheet, escaping, trusted fragments, percentages and estimates with intervals."""

from __future__ import annotations

import html
from typing import Any

import jinja2
from markupsafe import Markup



def _as_html(value: Any) -> Any:
    """Every value a template prints, escaped as escape() does (quotes as &quot; and &#x27;, so a page reads
    the same whether a fragment came from Python or a template); Markup, our own fragments, as it is."""
    return value if hasattr(value, "__html__") else Markup(escape(value))


# autoescape stays on as the safety net: a value reaching the output unescaped would need to be Markup
PAGES = jinja2.Environment(loader=jinja2.PackageLoader("lima_align", "templates"), autoescape=True,
                           finalize=_as_html, undefined=jinja2.StrictUndefined)

REPORT_CSS = """
:root{--a:#3b6fb6;--b:#e0823d;--tie:#8a93a0;--ink:#1f2430;--mute:#6b7280;--line:#e4e7ec;--bg:#f6f7f9}
*{box-sizing:border-box} body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1280px;margin:0 auto;padding:28px 24px 60px}
header h1{margin:0 0 4px;font-size:24px} header .sub{color:var(--mute);font-size:13px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin-top:18px}
section h2{margin:0 0 12px;font-size:16px} .note{color:var(--mute);font-size:12.5px;margin:8px 0 0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:18px}
.card{flex:1 1 240px;background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .k{font-size:12px;color:var(--mute)} .card .v{font-size:22px;font-weight:650;margin:2px 0}
.card .bar{display:flex;height:8px;border-radius:4px;overflow:hidden;margin:8px 0 6px;background:var(--line)}
.card .bar span{display:block;height:100%}
img.chart{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:7px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:#374151;background:#fafbfc;vertical-align:bottom}
.scroll{overflow-x:auto} table:not(.items) td:first-child{white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} th.n{text-align:right}
.ci{color:var(--mute);font-size:11.5px} .sig{font-weight:650;color:#0f7b4f}
.filters{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 12px}
.filters button{border:1px solid var(--line);background:#fff;border-radius:16px;padding:4px 12px;cursor:pointer;
font:inherit;font-size:12.5px;color:var(--ink)}
.filters button.on{background:var(--ink);color:#fff;border-color:var(--ink)}
.filters .count{color:var(--mute);font-size:12px;align-self:center;margin-left:6px}
table.items td{width:36%} table.items td.p{width:28%;background:#fbfbfc}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;
font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.pid{color:var(--mute);font-size:11.5px;margin-top:6px}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:11.5px;margin:6px 4px 0 0;color:#fff}
.badge.a{background:var(--a)} .badge.b{background:var(--b)} .badge.tie{background:var(--tie)}
.badge.null{background:#fff;color:#b42318;border:1px solid #f3b8b2}
.badge.inconsistent{outline:2px dashed #b42318;outline-offset:1px}
details{margin-top:6px} summary{cursor:pointer;color:var(--mute);font-size:12px}
details pre{background:#f6f7f9;padding:6px 8px;border-radius:6px;margin-top:4px}
.len{color:var(--mute);font-size:11.5px;margin-bottom:4px}
"""
PAGES.globals["css"] = Markup(REPORT_CSS)  # page.html's stylesheet


def render_page(template: str, /, **context: Any) -> str:
    """templates/TEMPLATE rendered with `context`; values are escaped, Markup values are inserted as they are."""
    return PAGES.get_template(template).render(**context)


def trusted(html_text: str) -> Markup:
    """HTML our own code built (its values escaped, numbers formatted), inserted into a template as it is."""
    return Markup(html_text)


def fragment(fmt: str, *args: Any) -> Markup:
    """Our own markup `fmt` with each {} filled by an argument escaped as escape() does (Markup as it is):
    a table cell or line that a template inserts as it is."""
    return Markup(fmt).format(*(_as_html(a) for a in args))


def escape(x: Any) -> str:
    """Any value as HTML text, quotes included (safe inside attributes too)."""
    return html.escape(str(x), quote=True)


def format_pct(x: float | None, digits: int = 1) -> str:
    return "&ndash;" if x is None else f"{100 * x:.{digits}f}%"


def estimate(e: dict[str, Any] | None, pct: bool = True) -> str:
    """An estimate ({"value", "ci": [lo, hi]}) as HTML: the value, and its interval on a second, muted line."""
    if not e or e.get("value") is None:
        return "&ndash;"
    f = format_pct if pct else (lambda v: f"{v:.2f}")
    lo, hi = e["ci"]
    return f(e["value"]) + (f"<br><span class=ci>[{f(lo)}, {f(hi)}]</span>" if lo is not None else "")
