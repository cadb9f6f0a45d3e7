"""Hardware choices made once per process: torch threads and the precision to compute in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads explicitly (default: all cores) and return the count."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """bf16 on CUDA and on CPUs with native bf16 (AMX or AVX-512-bf16), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    return "bf16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "fp32"


#: Boxes per forward/backward pass on a CPU: the fastest of 4/8/16/32/64 in `jobs/bench_train.py`.
CPU_MICRO_BATCH = 8


def default_micro_batch(batch_size: int) -> int:
    """Boxes per pass when none is set: the whole batch on a GPU (plain BatchNorm), else
    `CPU_MICRO_BATCH` (capped at the batch)."""
    return batch_size if torch.cuda.is_available() else min(CPU_MICRO_BATCH, batch_size)
