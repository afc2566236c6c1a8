"""The package's import graph, read with `ast`: no import cycles between modules and no private name
(`_x`) imported from another module. Imports inside functions count: they are what hides a cycle.

The allow-lists below held the violations this check started with (5 cycles, 31 private imports); they
are empty now. An entry must say why and what removes it, and one no longer needed fails the test."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lima_align

PACKAGE = Path(lima_align.__file__).parent

# (importer, imported module): the import that closes a cycle, allowed until its cycle is broken.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {}

# (importer, imported module, name): a private name taken from another module.
ALLOWED_PRIVATE: dict[tuple[str, str, str], str] = {}

MAX_LINES = 500  # a module longer than this is split by what its parts are about
# module: why it may be longer for now
ALLOWED_LONG: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def read_graph() -> tuple[dict[str, set[str]], set[tuple[str, str, str]]]:
    """Every module's imports of other package modules (anywhere in the file), and the private names imported."""
    modules = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: set[tuple[str, str, str]] = set()
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "lima_align" and "." in a.name:
                        edges[mod].add(a.name.split(".", 1)[1])
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - (node.level - 1)]
                    target = ".".join(base + (node.module.split(".") if node.module else []))
                elif (node.module or "").split(".")[0] == "lima_align":
                    target = node.module.split(".", 1)[1] if "." in node.module else ""
                else:
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}" if target else a.name
                    if sub in modules:  # `from . import report`: the module itself
                        edges[mod].add(sub)
                        continue
                    edges[mod].add(target)
                    if is_private(a.name) and target != mod:
                        private.add((mod, target, a.name))
        # `from . import report` then `report._png(...)` is the same private use by another spelling
        aliases = {a.asname or a.name: m for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level
                   for a in node.names
                   for m in [".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else [])
                                      + [a.name])] if m in modules}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and is_private(node.attr)):
                private.add((mod, aliases[node.value.id], node.attr))
    for mod in edges:
        edges[mod].discard(mod)
        edges[mod].discard("")  # the package's __init__ (version only) is no module's dependency
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    edges, _ = read_graph()
    stale = [e for e in ALLOWED_CYCLE_EDGES if e[1] not in edges.get(e[0], set())]
    assert not stale, f"allowed cycle edges no longer imported; delete them from ALLOWED_CYCLE_EDGES: {stale}"
    cut = {m: {t for t in ts if (m, t) not in ALLOWED_CYCLE_EDGES} for m, ts in edges.items()}
    assert cycles(cut) == [], "import cycle(s): move the shared piece into the lower module or a new small one"
    unneeded = [e for e in ALLOWED_CYCLE_EDGES if not any(set(e) <= set(c) for c in cycles(edges))]
    assert not unneeded, f"allowed cycle edges that close no cycle; delete them: {unneeded}"


def test_no_private_names_imported_across_modules():
    _, private = read_graph()
    new = sorted(private - set(ALLOWED_PRIVATE))
    assert not new, f"private names imported from another module (make them public under an honest name): {new}"
    stale = sorted(set(ALLOWED_PRIVATE) - private)
    assert not stale, f"no longer imported; delete them from ALLOWED_PRIVATE: {stale}"


def test_the_checker_sees_cycles_hidden_in_functions_and_private_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "lima_align"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.c import _helper\n")
    (pkg / "sub" / "c.py").write_text("from .. import a\nfrom ..a import __version__\na._secret\n")
    monkeypatch.setattr(lima_align, "__file__", str(pkg / "__init__.py"))
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    edges, private = read_graph()
    assert cycles(edges) == [["a", "b", "sub.c"]]
    assert private == {("b", "sub.c", "_helper"), ("sub.c", "a", "_secret")}


def test_decoding_settings_import_without_torch():
    # The API client, the server's request checks and vLLM read Decoding and Reply; torch is the sampler's.
    code = "import sys, lima_align.decoding; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_building_the_command_line_parser_loads_no_heavy_module():
    # `lima-align --help` builds every command's parser; the judge runner's asyncio and SQLite cache, the HTTP
    # client and the model stack are loaded by the commands that use them, not by listing the flags.
    heavy = ("asyncio", "sqlite3", "ssl", "httpx", "torch", "transformers", "numpy")
    code = ("import sys; from lima_align.cli import make_parser; make_parser(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_module_over_500_lines():
    lengths = {module_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {m: n for m, n in lengths.items() if n > MAX_LINES}
    assert not set(long) - set(ALLOWED_LONG), f"modules over {MAX_LINES} lines: {long}"
    stale = [m for m in ALLOWED_LONG if lengths.get(m, 0) <= MAX_LINES]
    assert not stale, f"no longer over {MAX_LINES} lines; delete them from ALLOWED_LONG: {stale}"


def test_every_rich_console_is_the_pipe_aware_one():
    # Rich's own Console ends the process with status 1 and no word when stdout is a closed pipe
    # (`lima-align ... | head`); crash.console() makes that the quiet 141 every command gives.
    # Found: quickstart, curate review and analyze ablate built their own.
    own = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "crash.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "Console":
                own.append(f"{module_name(path)}:{node.lineno}")
    assert not own, f"build the console with crash.console() instead: {own}"
