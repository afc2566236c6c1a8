"""The judge kinds a user can name (`--judge`, an ablation's `judge.kind`) and `make_judges`, which builds
them for every command that judges: `judge ...` and `dialogue eval` (cli_options.py), `ablate` and `select`
(analyze/ablate.py).

A new kind is a class following `judges.Judge` and one entry in `KINDS`; the CLI's choices, the ablation
recipe's `judge.kind` values and the rating checks all read `KINDS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import LimaError
from .judges import ApiJudge, Judge, LongestJudge, Price


@dataclass(frozen=True)
class JudgeSpec:
    """Which judges to build and the settings the kinds read; each caller fills it from its own flags or recipe."""

    kinds: tuple[str, ...] = ("api",)
    api_base: str | None = None
    api_models: tuple[str, ...] = ()  # an API judge per model
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8  # requests in flight per API judge
    max_tokens: int = 1024
    price: Price | None = None


@dataclass(frozen=True)
class JudgeKind:
    cls: type  # the judge class; its `can_rate` says whether it can rate one answer
    build: Callable[[JudgeSpec], list[Judge]]
    help: str
    label: str  # how messages name a judge of this kind ("an API judge needs ...")
    needs: dict[str, str] = dataclasses.field(default_factory=dict)  # JudgeSpec fields it needs -> an example
    # one tiny request (closing the judge after) before a long run, so an unreachable judge fails first;
    # None: nothing to reach
    ping: Callable[[Any], Awaitable[None]] | None = None

    @property
    def can_rate(self) -> bool:
        return bool(self.cls.can_rate)


def _api_judges(spec: JudgeSpec) -> list[Judge]:
    # imported only when an API judge is built, so commands that never judge start without httpx
    from .api import ChatClient

    return [ApiJudge(ChatClient(spec.api_base or "", model, api_key_env=spec.api_key_env,
                                max_concurrency=spec.concurrency), price=spec.price, max_tokens=spec.max_tokens)
            for model in spec.api_models]


async def _ping_api(judge: ApiJudge) -> None:
    try:
        await judge.client.chat([{"role": "user", "content": "Reply with OK."}], max_tokens=1, temperature=0.0)
    finally:  # its connections belong to this event loop
        await judge.aclose()


KINDS: dict[str, JudgeKind] = {
    "api": JudgeKind(ApiJudge, _api_judges, "an OpenAI-compatible judge model", "an API judge",
                     needs={"api_base": "http://127.0.0.1:8000/v1", "api_models": "local"}, ping=_ping_api),
    "longest": JudgeKind(LongestJudge, lambda spec: [LongestJudge()],
                         "the offline length baseline, longest answer wins; pairwise only", "the 'longest' judge"),
}

# The recipe type of a judge kind, so the recipe loader accepts exactly the kinds above
# (a Literal built from the registry: subscripting with a tuple is how Literal takes several values).
KindName = Literal[tuple(KINDS)]  # type: ignore[valid-type]


def kind_names(*, rates: bool = False) -> list[str]:
    """The kinds a user can name; with rates, only those that can rate a single answer."""
    return [name for name, kind in KINDS.items() if kind.can_rate or not rates]


def kinds_help(names: list[str] | None = None) -> str:
    """One line describing the kinds, for flag and recipe help."""
    return ", ".join(f"'{n}' ({KINDS[n].help})" for n in (names if names is not None else list(KINDS)))


def unmet(spec: JudgeSpec, spell: dict[str, str], sep: str) -> list[tuple[str, str, str]]:
    """(where, what, fix) for each kind in spec that lacks a setting it needs. `spell` maps JudgeSpec fields to
    the caller's names for them (flags or recipe keys); `sep` joins a name to its example ('=' or ' ')."""
    out = []
    for name in dict.fromkeys(spec.kinds):
        kind = KINDS[name]
        if any(not getattr(spec, f) for f in kind.needs):
            names = [spell[f] for f in kind.needs]
            out.append((names[0], f"{kind.label} needs {' and '.join(names)}",
                        "e.g. " + " ".join(f"{spell[f]}{sep}{example}" for f, example in kind.needs.items())))
    return out


def make_judges(spec: JudgeSpec) -> list[Judge]:
    """The judges spec asks for, in its order. Callers check `unmet` first, to name the settings as their users
    write them."""
    unknown = [k for k in spec.kinds if k not in KINDS]
    if unknown:
        raise LimaError(f"unknown judge kind(s): {', '.join(unknown)}", fix=f"use one of {', '.join(KINDS)}")
    for where, what, fix in unmet(spec, {f.name: f.name for f in dataclasses.fields(JudgeSpec)}, "="):
        raise LimaError(what, where=where, fix=fix)
    return [judge for name in spec.kinds for judge in KINDS[name].build(spec)]


def ping_judges(spec: JudgeSpec) -> None:
    """Ping each judge whose kind can be unreachable (an API judge), so it fails before hours of training,
    not after."""
    pinged = [(KINDS[name].ping, judge) for name in dict.fromkeys(spec.kinds) if KINDS[name].ping is not None
              for judge in make_judges(dataclasses.replace(spec, kinds=(name,)))]
    if not pinged:
        return
    import asyncio  # here, not at the top: the command line parser lists KINDS and should not load asyncio

    async def ping_all() -> None:
        for ping, judge in pinged:
            await ping(judge)
    asyncio.run(ping_all())
