"""Typed recipe loading: a YAML file and `key=value` overrides into dataclasses, every problem at once.

A recipe is a tree of dataclasses whose fields come from `setting()`: a default, a help string and,
for a number, the values it may take. Loading coerces each value to its field's type, refuses NaN and
infinity, checks the range, then runs the recipe's own cross-field `check(problems)`. A value that
fails is replaced by its default before that check, so the cross-field rules still run on well-typed
values and every problem is listed in one go; a cross-field problem that names a field already
reported is left out, because it would be about the stand-in default and not about the user's value.
A problem in a value given as an override names the override, not the recipe file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import LimaError, Problem, ProblemList


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; either bound may be missing, open or closed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        # written so that NaN is never inside
        if self.lo is not None and not (v > self.lo if self.lo_open else v >= self.lo):
            return False
        return self.hi is None or bool(v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return "any finite number"


def _num(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() else repr(x)


def setting(default: Any, help: str, *, above: float | None = None, at_least: float | None = None,
            below: float | None = None, at_most: float | None = None, **kw: Any) -> Any:
    """A recipe field: default, help string (shown by `config show --fields`) and, for numbers, its range."""
    meta: dict[str, Any] = {"help": help}
    if (above, at_least, below, at_most) != (None, None, None, None):
        meta["range"] = Range(lo=above if above is not None else at_least, hi=below if below is not None else at_most,
                              lo_open=above is not None, hi_open=below is not None)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def range_of(f: dataclasses.Field) -> Range | None:
    return f.metadata.get("range")


def default_of(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


# ---------------------------------------------------------------- coercion


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {type_name(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


_HOW = {int: "write a whole number", float: "write a number, e.g. 0.5 or 1e-5", bool: "write true or false",
        str: "write text (quote it if YAML reads it as a number, list or mapping)"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Field:
    """What a value is checked against: where it sits, its range, and the default shown in fixes."""

    def __init__(self, where: str, rng: Range | None = None, default: Any = None):
        self.where, self.rng, self.default = where, rng, default

    def at(self, where: str) -> _Field:
        return _Field(where, self.rng, self.default)

    def example(self) -> str:
        d = self.default
        return f" (default: {d!r})" if d is not None and not isinstance(d, (list, dict)) else ""


def _check_number(value: Any, f: _Field, optional: bool, problems: ProblemList) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        allowed = f"a number {f.rng}" if f.rng else "a finite number"
        problems.add(f.where, f"must be a finite number, got {value}",
                     f"use {allowed}{f.example()}" + (", or null" if optional else ""))
    elif f.rng is not None and value not in f.rng:
        problems.add(f.where, f"must be {f.rng}, got {_num(value)}",
                     f"use a value {f.rng}{f.example()}" + (", or null" if optional else ""))


def _coerce(value: Any, tp: Any, f: _Field, problems: ProblemList, optional: bool = False) -> Any:
    origin, where = get_origin(tp), f.where
    if dataclasses.is_dataclass(tp):
        if value is None:  # a section with every key commented out
            value = {}
        if not isinstance(value, dict):
            problems.add(where, f"expected a section (mapping), got {type(value).__name__}",
                         "write it as a mapping, e.g. {key: value, ...}" if where.endswith("]") else
                         f"write its keys under it (key: value), or override one at a time: {where}.KEY=VALUE")
            return tp()
        return build(tp, value, where, problems)
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], f, problems, optional=type(None) in args)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            problems.add(where, f"{value!r} is not one of {', '.join(repr(a) for a in allowed)}",
                         f"did you mean {close[0]!r}?" if close else f"use one of these values{f.example()}")
        return value
    if origin is list:
        if isinstance(value, (str, int, float)):
            value = [value]  # a single item where a list is expected is a list of one
        if not isinstance(value, list):
            problems.add(where, f"expected a list, got {type(value).__name__}",
                         "write a list, e.g. [a, b] (a single item is a list of one)")
            return []
        return [_coerce(v, get_args(tp)[0], f.at(f"{where}[{i}]"), problems) for i, v in enumerate(value)]
    if tp is float and _is_number(value):
        # an int beyond float's range (YAML reads 1000...0 as one) is as unusable as infinity
        value = float(value) if isinstance(value, float) or abs(value) < 1e308 else math.inf if value > 0 else -math.inf
    elif tp is float and isinstance(value, str):
        try:
            value = float(value)  # YAML reads "1e-5" (no dot), "nan" and "inf" as strings
        except ValueError:
            pass
    elif tp is str and _is_number(value):
        return str(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        problems.add(where, f"expected {type_name(tp)}, got {'null' if value is None else repr(value)}",
                     _HOW[tp] + f.example() + (", or null" if optional else ""))
        return value
    if tp in (int, float):
        _check_number(value, f, optional, problems)
    return value


# Names users bring from TRL / transformers / other tools, mapped to ours for "did you mean".
ALIASES = {"learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs", "min_lr": "lr_final",
           "per_device_train_batch_size": "batch_size", "global_batch_size": "batch_size", "max_length": "max_seq_len",
           "max_seq_length": "max_seq_len", "warmup": "warmup_steps", "model_name_or_path": "name", "wd": "weight_decay",
           "top_k_p": "top_p", "temp": "temperature", "max_tokens": "max_new_tokens", "datasets": "train"}


def build(cls: type, raw: dict[str, Any], prefix: str, problems: ProblemList, failed: set[str] | None = None) -> Any:
    """An instance of `cls` from a mapping; every problem goes to `problems`, and a field whose value
    failed keeps its default (its dotted name is added to `failed`)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = [ALIASES[key]] if ALIASES.get(key) in fields else difflib.get_close_matches(str(key), list(fields), n=1)
            problems.add(where, "unknown key",
                         f"did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close
                         else f"valid keys here: {', '.join(fields)}")
            continue
        f, before = fields[key], len(problems.problems)
        kwargs[key] = _coerce(value, hints[key], _Field(where, range_of(f), default_of(f)), problems)
        if len(problems.problems) > before:
            if failed is not None:
                failed.update(p.where for p in problems.problems[before:])
            if not _holds_sections(hints[key]):  # sections (and lists of them) kept their sound fields
                kwargs[key] = default_of(f)
                if failed is not None:
                    failed.add(where)
    return cls(**kwargs)


def _holds_sections(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) or (get_origin(tp) is list and dataclasses.is_dataclass(get_args(tp)[0]))


def _names(text: str, path: str) -> bool:
    """Whether `text` names the setting `path` (or a part of it: data.mix names data.mix[0].count)."""
    return re.search(rf"(?<![\w.]){re.escape(path)}(?!\w)", text) is not None


def _about_failed(p: Problem, failed: set[str]) -> bool:
    """Whether a cross-field problem names a failed setting or a list or section holding one (not a
    top-level section: `train` would match every train.* rule)."""
    paths = set(failed)
    for f in failed:
        paths.update(f[:m.start()] for m in re.finditer(r"[.\[]", f) if "." in f[:m.start()])
    return any(_names(p.where, b) or _names(p.what, b) for b in paths)


# ---------------------------------------------------------------- overrides


def parse_overrides(overrides: list[str], problems: ProblemList,
                    sources: dict[str, str] | None = None) -> dict[str, Any]:
    """`train.lr=2e-4 data.train=[a.jsonl,b.jsonl]` -> nested dict; values parsed as YAML.
    `sources` collects dotted key -> the override that set it."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            problems.add(f"override {item}", "expected key=value", "e.g. train.epochs=3")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except (yaml.YAMLError, ValueError) as e:  # ValueError: an int of more digits than Python converts
            mark = getattr(e, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1} of the value)" if mark else ""
            problems.add(f"override {item}", f"not valid YAML{at}: {getattr(e, 'problem', None) or e}",
                         "close brackets and quotes ([a, b] is a list, {k: v} a mapping); text that starts with "
                         "[, {, a quote or contains ': ' must itself be quoted, as in key=\"'[text'\"")
            continue
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                problems.add(f"override {item}", f"{p} is set both as a value and as a section",
                             "give the section's keys one by one, e.g. train.lr=1e-5 train.epochs=3")
                break
        else:
            node[parts[-1]] = value
            if sources is not None:
                dotted = ".".join(parts)
                for k in [k for k in sources if k == dotted or k.startswith(dotted + ".")]:
                    del sources[k]  # a later override of a whole section replaces the earlier ones inside it
                sources[dotted] = item
    return nested


def merge(base: dict[str, Any], extra: dict[str, Any], cls: Any = None) -> dict[str, Any]:
    """Overrides replace values; they merge into a section only where the field is a dataclass section.
    So `select.quotas={wikihow: 50}` replaces the recipe's whole quotas mapping instead of adding to it."""
    out = dict(base)
    hints = typing.get_type_hints(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
    for k, v in extra.items():
        sub = hints.get(k)
        section = sub is not None and dataclasses.is_dataclass(sub)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and (section or cls is None):
            out[k] = merge(out[k], v, sub if section else None)
        else:
            out[k] = v
    return out


def _source(where: str, sources: dict[str, str]) -> str | None:
    """Where to report a problem at `where` that an override set: the override itself when its key is
    `where`, the override and `where` when the override set a section or list holding it."""
    hits = [k for k in sources if where == k or where.startswith((k + ".", k + "["))]
    if not hits:
        return None
    key = max(hits, key=len)
    return f"override {sources[key]}" + ("" if where == key else f": {where}")


# ---------------------------------------------------------------- files


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A recipe file's top-level mapping; every way of failing is a LimaError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LimaError(f"not UTF-8 text (byte {e.start})", where=str(path),
                        fix="save the recipe as UTF-8 YAML") from None
    except OSError as e:
        raise LimaError(f"cannot read the recipe: {e.strerror or e}", where=str(path),
                        fix="give a YAML file (a folder or unreadable file is not a recipe)") from None
    try:
        loaded = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an int of more digits than Python converts
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise LimaError(f"not valid YAML: {getattr(e, 'problem', None) or e}", where=f"{path}{at}",
                        fix="check indentation (spaces, not tabs), brackets and quoting at that line") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise LimaError(f"a recipe must be a mapping of sections, got {type(loaded).__name__}", where=str(path),
                        fix="write sections at the top level, e.g. 'train:' with its keys indented below")
    return loaded


def load(cls: type, path: Path | None, overrides: list[str]) -> Any:
    """Build `cls` from a file (None: the defaults) and overrides; check everything; raise once."""
    parse_problems, sources = ProblemList(), {}
    nested = parse_overrides(list(overrides), parse_problems, sources)
    raw: dict[str, Any] = {}
    try:
        raw = read_yaml_mapping(path) if path is not None else {}
    except LimaError as e:
        parse_problems.problems[:0] = e.problems
    parse_problems.raise_if_any()  # a file or value that is not YAML leaves nothing sound to build on
    problems, failed = ProblemList(), set()
    recipe = build(cls, merge(raw, nested, cls), "", problems, failed)
    if hasattr(recipe, "check"):
        cross = ProblemList()
        recipe.check(cross)
        problems.problems += [p for p in cross.problems if not _about_failed(p, failed)]
    file_where = str(path) if path is not None else "defaults"
    if problems:
        raise LimaError([Problem(_source(p.where, sources) or f"{file_where}: {p.where}", p.what, p.fix)
                         for p in problems.problems])
    return recipe
