"""Benchmark: DSM-Net training-step throughput on this machine, precision × memory format.

Usage: python jobs/bench_train.py [--batch 64] [--micro-batch 8] [--sweep 4 16 32] [--steps 3]
                                  [--threads N] [--precisions fp32 bf16] [--compile]

In one run: fp32 and bf16 autocast, each with contiguous and channels_last_3d tensors, each with
the batch in one pass and in micro-batches whose gradients are accumulated (what `dsmscale train`
does: TrainConfig.micro_batch), then the fastest precision + channels_last_3d at the --sweep
micro-batch sizes, and torch.compile of the best eager variant with --compile; on random 40³
batches with the full loss (seg + cls + rec). bf16 is timed by default only where training would
use it (`dsmscale.hardware.resolve_precision`: a CPU with AMX or AVX-512-bf16); elsewhere autocast
emulates it at a fraction of fp32's speed. Also measures the matmul peak of the best variant's
precision and reports the fraction of it reached (DSM-Net costs 9.88 GFLOP per training sample
at 40³). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import time

import torch

from dsmscale.hardware import CPU_MICRO_BATCH, configure_threads, resolve_precision
from dsmscale.models import DSMNet
from dsmscale.profiling import emit
from dsmscale.training.step import TrainStep

TRAIN_GFLOP_PER_SAMPLE = 9.88


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def samples_per_s(precision: str, channels_last: bool, batch: int, steps: int,
                  micro_batch: int | None = None, compile_model: bool = False) -> float:
    """Training samples per second of DSM-Net optimiser steps on random batches of ``batch``."""
    torch.manual_seed(0)
    model = DSMNet(22)
    step = TrainStep(model, precision=precision, channels_last=channels_last,
                     compile_model=compile_model, micro_batch=micro_batch)
    x = torch.randn(batch, 1, 40, 40, 40)
    target = {"label": torch.randint(0, 22, (batch,)), "mask": torch.randint(0, 2, (batch, 40, 40, 40)),
              "density": torch.rand(batch, 1, 40, 40, 40)}
    for _ in range(2):  # warm-up (and compilation)
        step(x, target)
    start = time.perf_counter()
    for _ in range(steps):
        step(x, target)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64, help="boxes per optimiser step")
    parser.add_argument("--micro-batch", type=int, default=CPU_MICRO_BATCH,
                        help="boxes per pass when split (default: dsmscale's CPU default)")
    parser.add_argument("--sweep", type=int, nargs="*", default=[4, 16, 32],
                        help="further micro-batch sizes timed in the fastest precision + channels_last_3d")
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=None,
                        help="precisions to time (default: fp32, and bf16 where the CPU has it)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    native = resolve_precision("auto", torch.device("cpu"))
    precisions = args.precisions or ["fp32"] + (["bf16"] if native == "bf16" else [])
    if "bf16" not in precisions:
        print("bf16 not timed: this CPU has no native bf16 (AMX / AVX-512-bf16), so training "
              "runs fp32 (--precisions fp32 bf16 times the emulation anyway)", flush=True)
    results = {}
    variants = {}
    for precision in precisions:
        for channels_last in (False, True):
            for micro in (None, args.micro_batch):
                key = (precision + ("_cl3d" if channels_last else "")
                       + (f"_micro{micro}" if micro else ""))
                variants[key] = (precision, channels_last, micro)
                results[key] = samples_per_s(precision, channels_last, args.batch, args.steps, micro)
                print(f"{key:>18}: {results[key]:6.2f} samples/s", flush=True)
    fastest = variants[max(results, key=results.get)][0]
    for micro in sorted(set(args.sweep) - {args.micro_batch}):
        key = f"{fastest}_cl3d_micro{micro}"
        variants[key] = (fastest, True, micro)
        results[key] = samples_per_s(fastest, True, args.batch, args.steps, micro)
        print(f"{key:>18}: {results[key]:6.2f} samples/s", flush=True)
    best = max(results, key=results.get)
    if args.compile:
        results[best + "_compiled"] = samples_per_s(*variants[best][:2], args.batch, args.steps,
                                                    variants[best][2], compile_model=True)
        print(f"{best + '_compiled':>18}: {results[best + '_compiled']:6.2f} samples/s")
        best = max(results, key=results.get)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {p: matmul_peak_gflops(dtypes[p]) for p in precisions}
    best_precision = variants[best][0]
    emit({
        "threads": threads, "batch": args.batch, "micro_batch": args.micro_batch,
        "native_precision": native, "samples_s": results,
        "fp32_samples_s": results.get("fp32"), "best_samples_s": results[best], "best_config": best,
        **{f"{p}_matmul_gflops": peak for p, peak in peaks.items()},
        "peak_fraction": results[best] * TRAIN_GFLOP_PER_SAMPLE / peaks[best_precision],
        "peak_precision": best_precision,
        "micro_over_whole_cl3d": results[f"{best_precision}_cl3d_micro{args.micro_batch}"]
        / results[f"{best_precision}_cl3d"],
    })


if __name__ == "__main__":
    main()
