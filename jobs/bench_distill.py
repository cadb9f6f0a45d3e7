"""Benchmark: teacher vs distilled students — size, cost, speed and accuracy, in one run.

Usage: python jobs/bench_distill.py --data data/sim/datasets/A [--teacher default]
                                    [--student student] [--student guo_s=runs/x/best.pt]

For the teacher and each student: parameters, GFLOP per 40³ subtomogram (torch's FLOP counter),
subtomograms/s with the best backend (the job's own `InferenceModel`: bf16 where the CPU/GPU has
it, channels_last_3d, torch.compile with freezing; batch 16; compile time excluded and reported),
and object accuracy and mIoU on the dataset's test split (`evaluate_checkpoint`). The first
student named is the one scored in the top-level keys. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.evaluation import evaluate_checkpoint
from dsmscale.hardware import configure_threads
from dsmscale.inference.backend import InferenceModel
from dsmscale.profiling import boxes_per_second, emit
from dsmscale.weights import resolve_model


def gflop_per_sample(model: torch.nn.Module) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 1, 40, 40, 40))
    return counter.get_total_flops() / 1e9


def throughput(model: torch.nn.Module, batch: int, seconds: float) -> tuple[float, float]:
    """(subtomograms/s, compile seconds) on random normalised boxes."""
    backend = InferenceModel(model, batch, compile="auto")
    return boxes_per_second(backend, batch, seconds), backend.compile_s


def measure(name: str, checkpoint: str, data: str, batch: int, seconds: float) -> dict:
    path = resolve_model(checkpoint)
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    rate, compile_s = throughput(model_from_checkpoint(ckpt, path), batch, seconds)
    metrics = evaluate_checkpoint(path, data, "test")
    row = {"name": name, "model": ckpt["model"], "checkpoint": str(path),
           "params": sum(p.numel() for p in model.parameters()),
           "gflop_per_sample": gflop_per_sample(model), "per_s": rate, "compile_s": compile_s,
           "obj_acc": metrics.get("obj_acc"), "miou": metrics.get("miou")}
    print(f"{name:>10} ({row['model']}): {row['params'] / 1e6:.2f} M params, "
          f"{row['gflop_per_sample']:.2f} GFLOP, {rate:.1f}/s, acc {row['obj_acc']}, "
          f"mIoU {row['miou']}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (e.g. .../datasets/A)")
    parser.add_argument("--teacher", default="default")
    parser.add_argument("--student", action="append", default=None,
                        help="'student' (shipped) or NAME=CHECKPOINT; repeatable")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    configure_threads(args.threads)
    teacher = measure("teacher", args.teacher, args.data, args.batch, args.seconds)
    students = [measure(*(s.split("=", 1) if "=" in s else (s, s)), args.data, args.batch,
                        args.seconds) for s in (args.student or ["student"])]
    best = students[0]
    emit({"teacher_per_s": teacher["per_s"], "student_per_s": best["per_s"],
          "speedup": best["per_s"] / teacher["per_s"], "teacher_acc": teacher["obj_acc"],
          "student_acc": best["obj_acc"], "teacher_miou": teacher["miou"],
          "student_miou": best["miou"], "student_name": best["name"],
          "teacher": teacher, "students": students})


if __name__ == "__main__":
    main()
