"""Hardware choices made once per process: torch threads and the precision to compute in."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads explicitly (default: all cores) and return the count."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _cpuinfo() -> str:
    """/proc/cpuinfo's text ("" where there is none: not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def native_bf16(cpuinfo: str) -> str | None:
    """Which native bf16 a CPU has, by its /proc/cpuinfo flags: "AMX", "AVX-512-bf16" or None."""
    flags = set(re.findall(r"\S+", "\n".join(
        line.split(":", 1)[1] for line in cpuinfo.splitlines() if line.startswith("flags"))))
    return "AMX" if "amx_bf16" in flags else "AVX-512-bf16" if "avx512_bf16" in flags else None


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """bf16 on CUDA and on CPUs with native bf16 (AMX or AVX-512-bf16), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_bf16(_cpuinfo()) else "fp32"


def machine_name(device: torch.device | None = None) -> str:
    """What computes on ``device`` (default: the GPU where there is one, else the CPU), as a
    results table names it: the GPU's name, or the CPU's model with its native bf16 and core
    count (e.g. "Intel(R) Xeon(R) Processor, AVX-512-bf16, 2 cores")."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = _cpuinfo()
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    parts = [model.group(1).strip() if model else platform.processor() or platform.machine(),
             native_bf16(info) or "no native bf16", f"{os.cpu_count() or 1} cores"]
    return ", ".join(parts)


#: Boxes per forward/backward pass on a CPU: the fastest of 4/8/16/32/64 in `jobs/bench_train.py`.
CPU_MICRO_BATCH = 8


def default_micro_batch(batch_size: int) -> int:
    """Boxes per pass when none is set: the whole batch on a GPU (plain BatchNorm), else
    `CPU_MICRO_BATCH` (capped at the batch)."""
    return batch_size if torch.cuda.is_available() else min(CPU_MICRO_BATCH, batch_size)
