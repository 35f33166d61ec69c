"""Process tricks: glibc heap tuning (ctypes `mallopt`) and garbage-collector pausing.

They trade portability and a little obscurity for memory and time: glibc alone has `mallopt` (elsewhere
the heap functions do nothing), and pausing the collector is safe only around code that makes many
long-lived objects without reference cycles. Their uses are few and named: scoring many rows
(`flat_heap`), encoding batches of text and importing torch (`gc_paused`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
SCORING_MMAP_THRESHOLD = 1 << 20  # blocks over 1 MB are mmap'ed, so freeing them gives the memory back
TRAINING_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling: training's steady shapes reuse the heap


def _set_mmap_threshold(nbytes: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    libc.mallopt(M_MMAP_THRESHOLD, nbytes)


@contextlib.contextmanager
def flat_heap() -> Iterator[None]:
    """Score many rows without the heap keeping what they leave behind (glibc only).

    glibc returns a freed block to the system only if it was mmap'ed, and it raises its mmap threshold
    after each such free, so scoring hundreds of thousands of held-out rows grows RSS; a fixed 1 MB
    threshold keeps it flat. That threshold must not outlive the scoring: every training step frees a
    multi-MB embedding gradient, and mmap'ing it anew each step (page faults and zeroing) slows training.
    Outside, the threshold is glibc's ceiling.
    """
    _set_mmap_threshold(SCORING_MMAP_THRESHOLD)
    try:
        yield
    finally:
        _set_mmap_threshold(TRAINING_MMAP_THRESHOLD)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection while many long-lived, acyclic objects are made: a batch's encodings, or
    the command line's imports of torch and a run.

    Tens of thousands of new objects trigger full collections that walk everything the process holds
    (torch, datasets) and free nothing, since lists of ids hold no cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
