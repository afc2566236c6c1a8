"""Handing freed memory back to the system during and after training (glibc's malloc_trim)."""

from __future__ import annotations

import functools
from typing import Any


def trim_heap() -> None:
    """Give the pages glibc's heap holds free back to the system (malloc_trim).

    Packed rows differ in length every step, so CPU tensors of ever-different sizes fragment the
    heap: the quickstart's resident memory crept from 6 to 9.5 GB over 20 steps without this, and
    4.0 GB stayed resident after training returned (0.6 GB after a trim).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


def release_freed_memory() -> None:
    """After training: drop unreachable objects and trim the heap, since callers go on in the same
    process (the quickstart loads the checkpoint and answers with it, ablate trains the next run)."""
    import gc

    gc.collect()
    trim_heap()
