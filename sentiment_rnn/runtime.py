"""Process-wide runtime settings shared by training and prediction: intra-op threads and bf16 support.

torch is imported where it is used, so the CLI can import this module before torch. The heap and
garbage-collector tricks live in the speed opt-in (sentiment_rnn/speed/process.py).
"""

from __future__ import annotations

import os


def default_threads() -> int:
    """Intra-op threads per process: half the cores this process may use, at most 4, shared by its node's ranks.

    Small RNN matmuls gain little from more threads, and an OpenMP thread that spins while another
    process holds its core stalls every op, which on a busy machine costs far more than the extra
    thread gains (scripts/bench.py measures 1 against 2).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(4, cores // (2 * ranks_here)))


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: the given number, or default_threads()."""
    import torch

    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


def native_bf16(device: str = "cpu") -> bool:
    """Whether the device computes in bf16 in hardware (AVX512-BF16 or AMX on x86, any bf16 GPU);
    elsewhere bf16 is emulated and can be slower than fp32."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)
