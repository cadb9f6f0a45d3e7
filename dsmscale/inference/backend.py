"""The inference backend a process chooses once: device, precision, memory format, compilation.

``InferenceModel`` wraps a trained model for batched prediction on normalised boxes:

- device: CUDA when torch sees a GPU (the Ray actor was given one), else CPU;
- precision: bf16 autocast on GPUs and on CPUs with native bf16 (AMX / AVX-512-bf16), else fp32;
- memory format: channels_last_3d (oneDNN's and cuDNN's fast 3D convolution layout);
- batch size: given, or ``"auto"``: the fastest of `BATCH_CANDIDATES` timed at start-up (CPU
  throughput peaks at a small batch whose activations stay in cache; a GPU's near the largest
  batch that fits in its memory);
- compilation: ``torch.compile`` (Inductor, with weight freezing on CPU) when a C++ compiler or
  CUDA is present. It compiles for one batch shape, so every mini-batch is padded to
  ``batch_size``; the one-off compile time is measured at start-up (``compile_s``) and must be
  amortised over the job (tens of seconds on 2 cores vs a job of minutes to days).
"""

from __future__ import annotations

import shutil
import time
from typing import Literal

import numpy as np
import torch

from dsmscale.hardware import resolve_precision

CompileMode = Literal["auto", "on", "off"]
BATCH_CANDIDATES = (4, 8, 16, 32, 64, 128, 256)
CPU_MAX_BATCH = 64  # larger CPU batches only add activation memory (GBs for DSM-Net at 40³)


def require_cuda_for_gpus(gpu_ids: list, cuda_available: bool) -> None:
    """Refuse to run on the CPU while holding GPUs: an actor Ray gave ``gpu_ids`` must see CUDA
    (it does not when torch is a CPU build, or a CUDA build newer than the node's driver)."""
    if gpu_ids and not cuda_available:
        raise RuntimeError(
            f"this actor holds GPU {', '.join(map(str, gpu_ids))} but torch {torch.__version__} "
            "sees no CUDA device: install a torch CUDA build the node's driver supports "
            "(deploy/Dockerfile's TORCH_INDEX)")


def should_compile(mode: CompileMode, device: torch.device) -> bool:
    """'auto': compile on CUDA, and on CPU when Inductor's C++ compiler is installed."""
    if mode != "auto":
        return mode == "on"
    return device.type == "cuda" or shutil.which("g++") is not None


class InferenceModel:
    """A model prepared for batched inference; call it on (n, B, B, B) float32 boxes."""

    def __init__(self, model: torch.nn.Module, batch_size: int | Literal["auto"], box: int = 40,
                 compile: CompileMode = "auto", precision: str = "auto",
                 device: torch.device | None = None):
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or an integer >= 1, got {batch_size!r}")
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.precision = resolve_precision(precision, self.device)
        self.box = box
        self.model = model.eval().to(self.device, memory_format=torch.channels_last_3d)
        self.batch_rates: dict[int, float] = {}  # boxes/s per candidate when tuned
        self.batch_size = self._tune_batch_size() if batch_size == "auto" else batch_size
        self.compiled = should_compile(compile, self.device)
        self.forward = self.model
        self.compile_s = 0.0
        if self.compiled:
            self.forward = self._compile()

    @torch.inference_mode()
    def _tune_batch_size(self) -> int:
        """Time the eager model on zero boxes at growing batch sizes; stop at the first that is
        out of memory or 5 % slower than the best so far, and return the best."""
        for size in BATCH_CANDIDATES:
            if self.device.type == "cpu" and size > CPU_MAX_BATCH:
                break
            x = self._to_device(np.zeros((size,) + (self.box,) * 3, np.float32))
            try:
                with self._autocast():
                    self.model(x)  # warm-up: kernels chosen, memory allocated
                    self._synchronise()
                    start = time.perf_counter()
                    self.model(x)
                    self._synchronise()
            except torch.OutOfMemoryError:
                break
            rate = size / (time.perf_counter() - start)
            if self.batch_rates and rate < 0.95 * max(self.batch_rates.values()):
                break
            self.batch_rates[size] = rate
        return max(self.batch_rates, key=self.batch_rates.get)

    def _synchronise(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _compile(self):
        """Compile and run once on a zero batch, timing the one-off cost."""
        if self.device.type == "cpu":
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # fold weights and BN into the graph (inference only)
        forward = torch.compile(self.model, dynamic=False)
        start = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            forward(self._to_device(np.zeros((self.batch_size,) + (self.box,) * 3, np.float32)))
        self.compile_s = time.perf_counter() - start
        return forward

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16")

    def _to_device(self, boxes: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(boxes, dtype=np.float32))[:, None]  # Ray's are read-only
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last_3d)

    @torch.inference_mode()
    def __call__(self, boxes: np.ndarray) -> dict[str, torch.Tensor]:
        """Model outputs for (n, B, B, B) normalised boxes, on the CPU, in mini-batches."""
        if boxes.ndim != 4 or boxes.shape[1:] != (self.box,) * 3:
            raise ValueError(f"expected boxes of shape (n, {self.box}, {self.box}, {self.box}), "
                             f"got {boxes.shape}")
        outs: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start:start + self.batch_size]
            n = len(chunk)
            if self.compiled and n < self.batch_size:  # one compiled shape: pad the last batch
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n,) + chunk.shape[1:],
                                                        chunk.dtype)])
            with self._autocast():
                out = self.forward(self._to_device(chunk))
            for key, value in out.items():
                outs.setdefault(key, []).append(value[:n].float().cpu())
        return {k: torch.cat(v) for k, v in outs.items()}
