"""Process-wide runtime settings shared by training and prediction: intra-op threads, bf16 support, and two
process tricks every command uses, glibc heap tuning (ctypes `mallopt`) and garbage-collector pausing.

The tricks trade portability and a little obscurity for memory and time: glibc alone has `mallopt`
(elsewhere the heap functions do nothing), and pausing the collector is safe only around code that makes
many long-lived objects without reference cycles. Their uses are few and named: scoring many rows
(`flat_heap`), encoding batches of text and importing torch (`gc_paused`). They are not behind a switch:
they bound start-up time and peak memory for every user. torch is imported where it is used, so the CLI can
import this module before torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from collections.abc import Iterator


def default_threads() -> int:
    """Intra-op threads per process: OMP_NUM_THREADS when it is set, else the cores this process may use,
    at most 4, shared by its node's ranks.

    A lone run trains faster on every core it has (scripts/bench.py measures 1 against 2). Processes
    that share the cores take their part instead: a sweep's --jobs gives each run cores / jobs, and where
    other work holds the cores OMP_NUM_THREADS or train.threads says how many, since an OpenMP thread that
    spins while another process holds its core stalls every op.
    """
    if given := _omp_threads():
        return given
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(4, usable_cores() // ranks_here))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _omp_threads() -> int | None:
    """OMP_NUM_THREADS when it holds one positive count, else None."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(given) if given.isdigit() and int(given) > 0 else None


def server_threads() -> int:
    """Intra-op threads for `serve`: OMP_NUM_THREADS when set, else half of default_threads(), since the
    server's event loop and its HTTP and JSON work need the other cores (scripts/loadtest.py measures it)."""
    return _omp_threads() or max(1, default_threads() // 2)


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: the given number, or default_threads()."""
    import torch

    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


def oversubscribed(threads: int | None) -> str | None:
    """A note when train.threads asks for more threads than this process has cores: the extra threads take
    turns on the same cores, and every op waits for the slowest of them."""
    cores = usable_cores()
    if threads is None or threads <= cores:
        return None
    return (f"Note: train.threads={threads} is more than the {cores} core(s) this process may use, which slows "
            f"every step; leave train.threads out to use the cores there are")


def native_bf16(device: str = "cpu") -> bool:
    """Whether the device computes in bf16 in hardware (AVX512-BF16 or AMX on x86, any bf16 GPU);
    elsewhere bf16 is emulated and can be slower than fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


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


def resolve_device(name: str):
    """train.device as a torch.device: auto picks CUDA when a GPU is visible."""
    import torch

    from sentiment_rnn.errors import SentimentRNNError

    if name == "cuda" and not torch.cuda.is_available():
        raise SentimentRNNError("train.device is cuda but no CUDA GPU is visible; use train.device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
