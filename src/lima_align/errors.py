"""One error type for everything a user can get wrong.

Every user-facing failure says where (file, line, field), what is wrong, and how to fix it.
The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    where: str  # "data.jsonl:12 messages[3].role", "recipe.yaml train.lr", ...
    what: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text}\n    fix: {self.fix}" if self.fix else text


class LimaError(Exception):
    """A problem with the user's input or environment, with every known problem listed at once."""

    def __init__(self, problems: list[Problem] | Problem | str, *, where: str = "", fix: str = ""):
        if isinstance(problems, str):
            problems = [Problem(where, problems, fix)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems:"]
        lines += [f"  {i + 1}. " + str(p).replace("\n", "\n     ") for i, p in enumerate(self.problems)]
        return "\n".join(lines)


@dataclass
class ProblemList:
    """Collects problems so validation can report all of them, then raise once."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, where: str, what: str, fix: str = "") -> None:
        self.problems.append(Problem(where, what, fix))

    def __bool__(self) -> bool:
        return bool(self.problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise LimaError(self.problems)
