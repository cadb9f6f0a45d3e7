"""The two Ray Data stages of a job: cutting a work unit's boxes (a CPU task) and predicting them
(an actor: the predictor predicts, the unit sink writes).

The actor loads the model once and picks its backend at start-up
(`dsmscale.inference.InferenceModel`: CUDA when it was given a GPU, bf16 autocast on GPUs and
CPUs with native bf16, channels_last_3d, optionally torch.compile). It writes through its own
`UnitSink` rather than handing the outputs (≈ 320 KB per particle) to a write stage through the
object store; `jobs/bench_pipeline.py` measures what that choice saves.
"""

from __future__ import annotations

import sys
import time
from functools import lru_cache

import numpy as np
import torch

from dsmscale.errors import naming_io_errors
from dsmscale.extraction import SlabGroup, cut_boxes
from dsmscale.failpoints import failpoint
from dsmscale.hardware import configure_threads
from dsmscale.inference import Predictor
from dsmscale.inference.backend import CompileMode, require_cuda_for_gpus
from dsmscale.io.job import JobFolder
from dsmscale.io.omezarr import open_tomogram
from dsmscale.pipeline.plan import WorkUnit
from dsmscale.pipeline.sink import CutUnit, UnitSink


@lru_cache(maxsize=16)
def _tomogram(store: str, level: int):
    return open_tomogram(store, level)


def cut_unit(batch: dict[str, np.ndarray], box: int) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function (``batch_size=1``): a `WorkUnit` row in, its
    normalised boxes (on the model's grid, resampled where the unit says) out (a one-row
    `CutUnit` batch)."""
    unit = WorkUnit.from_batch(batch)
    with naming_io_errors(f"reading {unit.store}"):
        failpoint("extract", unit.store)
        particles = unit.particles()
        tomogram = _tomogram(unit.store, unit.level)
        # the whole unit as one batch: its boxes are cut into one array, not copied again
        (cut,) = cut_boxes(tomogram, SlabGroup(0, particles), box, batch_size=len(particles),
                           normalise=True, resample_to_a=unit.grid_a)
    return CutUnit(
        unit_id=unit.unit_id, tomogram=unit.tomogram, first_box=unit.first_box,
        voxel_size_zyx_a=np.asarray(tomogram.voxel_size_zyx_a), level=tomogram.level,
        particle_id=cut.particle_id, centres=cut.centres_px, padded=cut.padded, boxes=cut.boxes).to_batch()


class InferenceActor:
    """Ray Data callable class: one model per process, one work unit per call; the predictor
    predicts and the unit sink writes. Returns a one-row batch of counts and timings."""

    def __init__(self, checkpoint: str, job: str, batch_size: int | str,
                 threads: int | None = None, compile: CompileMode = "off"):
        import ray

        require_cuda_for_gpus(ray.get_gpu_ids() if ray.is_initialized() else [],
                              torch.cuda.is_available())
        if not torch.cuda.is_available():
            configure_threads(threads)
        self.predictor = Predictor(checkpoint, batch_size, compile=compile)
        print(f"inference actor: {self.predictor.describe()}", file=sys.stderr)
        self.sink = UnitSink(JobFolder(job), self.predictor.classes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        unit = CutUnit.from_batch(batch)
        start = time.perf_counter()
        outputs = self.predictor(unit.boxes)
        model_s = time.perf_counter() - start
        self.sink.write(unit, outputs)
        return {"unit_id": np.array([unit.unit_id]), "n": np.array([len(unit)]),
                "node": np.array([ray.get_runtime_context().get_node_id()]),
                "model_s": np.array([model_s]),
                "write_s": np.array([time.perf_counter() - start - model_s])}
