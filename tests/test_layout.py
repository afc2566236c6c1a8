"""The README's Layout section names every module of the package, and no module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

import lima_align

PACKAGE = Path(lima_align.__file__).parent
ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def layout_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Layout")
    return text[start:text.index("\n```\n", text.index("```", start) + 3)]


def test_readme_layout_names_every_top_level_module_and_package():
    layout = layout_section()
    modules = [p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("__")]
    packages = [p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    missing = [m for m in modules + packages if not re.search(rf"(?<![\w/]){re.escape(m)}", layout)]
    assert not missing, f"add a line for each to the README's Layout section: {missing}"


def test_readme_layout_names_no_missing_module():
    named = set(re.findall(r"(?<![\w/.])([a-z_]+\.py)\b", layout_section()))
    benchmarks = ROOT / "benchmarks"
    present = {p.name for p in PACKAGE.rglob("*.py")} | {p.name for p in benchmarks.glob("*.py")}
    assert not named - present, f"the Layout section names modules that do not exist: {sorted(named - present)}"
