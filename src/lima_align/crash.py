"""What a user sees when a command fails in a way lima-align did not foresee.

Problems a user can fix are LimaError (errors.py). Anything else is our bug or the machine's (a full
disk, no memory): the user gets one line naming the exception and the path of a log holding the full
traceback, not the traceback itself, and exit status 1. A reader that stops reading early
(`lima-align stats J.jsonl | head`) ends the command quietly, as it ends `cat` or `grep`.
"""

from __future__ import annotations

import errno
import os
import platform
import select
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a tool stopped by a closed pipe
MAX_MESSAGE = 300  # characters of the exception's message shown; the log keeps all of it


def log_folders() -> list[Path]:
    """Where crash logs go: the cache's logs/ folder, else the system's temporary folder."""
    from .models import cache_root  # light: models imports torch only inside its functions

    return [cache_root() / "logs", Path(tempfile.gettempdir())]


def write_log(exc: BaseException, argv: list[str]) -> Path | None:
    """The full traceback with the command and versions, in the first folder that takes it (None: none did)."""
    from . import __version__

    text = (f"lima-align {__version__}, Python {platform.python_version()} on {platform.platform()}\n"
            f"command: lima-align {' '.join(argv)}\n\n" + "".join(traceback.format_exception(exc)))
    name = f"lima-align-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in log_folders():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def report_unexpected(exc: BaseException, argv: list[str]) -> int:
    """Say in one line what failed and where the details are; returns the exit status (1)."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    path = write_log(exc, argv)
    print(f"error: unexpected {type(exc).__name__}" + (f": {message}" if message else ""), file=sys.stderr)
    if path is None:  # nowhere to keep the details: show them rather than lose them
        traceback.print_exception(exc)
    else:
        print(f"    the full traceback is in {path} (include it if you report this as a bug)", file=sys.stderr)
    return 1


def stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (so a BrokenPipeError came from it,
    not from a socket or a child process, which would be a real failure)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an in-memory stream (tests)
        return False
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & select.POLLERR for _, ev in poller.poll(0))


def console(**kwargs: Any) -> Any:
    """A rich Console for a command's output. Rich ends the process itself on a closed pipe, with status 1
    and no word; this one raises BrokenPipeError instead, so the command ends like every other (141, quietly)."""
    from rich.console import Console

    class PipeAwareConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True  # write nothing more
            raise BrokenPipeError(errno.EPIPE, "standard output was closed")

    return PipeAwareConsole(**kwargs)


def end_quietly() -> int:
    """After the reader closed standard output: point it at /dev/null, so Python's final flush at exit
    raises nothing either, and return the status a shell reports for a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return SIGPIPE_STATUS
