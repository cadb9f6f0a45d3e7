"""The two Ray Data stages: extraction of a work unit (CPU task) and the model actor.

The actor loads the model once, picks its backend at start-up (``backend.InferenceModel``: CUDA
when it was given a GPU, bf16 autocast on GPUs and CPUs with native bf16, channels_last_3d,
optionally torch.compile), runs a unit in mini-batches and is its own sink: it writes the unit's rows of the
per-particle Zarr outputs (chunk-aligned, so no chunk has two writers) and then, atomically, the
unit's Parquet part. A part file on disk therefore means the unit is complete.
"""

from __future__ import annotations

import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import zarr

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.errors import naming_io_errors
from dsmscale.extract import WorkUnit, extract_unit
from dsmscale.failpoints import failpoint
from dsmscale.hardware import configure_threads
from dsmscale.infer.backend import CompileMode, InferenceModel, require_cuda_for_gpus
from dsmscale.infer.units import unit_particles
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.particles import pixels_to_angstrom


@lru_cache(maxsize=16)
def _tomogram(store: str, level: int):
    return open_tomogram(store, level)


def extract_batch(batch: dict[str, np.ndarray], box: int) -> dict[str, np.ndarray]:
    """Ray Data map_batches function (batch_size=1): cut one unit's normalised boxes."""
    store = str(batch["store"][0])
    with naming_io_errors(f"reading {store}"):
        failpoint("extract", store)
        particles = unit_particles(str(batch["plan"][0]), str(batch["tomogram"][0]),
                                   str(batch["unit_id"][0]))
        tomo = _tomogram(store, int(batch["level"][0]))
        unit = WorkUnit(0, particles)
        parts = list(extract_unit(tomo, unit, box, batch_size=256, normalise=True))
    return {
        "unit_id": batch["unit_id"], "tomogram": batch["tomogram"], "row0": batch["row0"],
        "voxel_size_a": np.array([tomo.voxel_size_a]), "level": np.array([tomo.level]),
        "particle_id": np.concatenate([p.particle_id for p in parts])[None],
        "centres": np.concatenate([p.centres_px for p in parts])[None],
        "padded": np.concatenate([p.padded for p in parts])[None],
        "boxes": np.concatenate([p.boxes for p in parts])[None],
    }


class Predictor:
    """Actor: one model per process, one work unit per call."""

    def __init__(self, checkpoint: str, output: str, batch_size: int | str,
                 threads: int | None = None,
                 compile: CompileMode = "off", box: int = 40):
        import ray

        require_cuda_for_gpus(ray.get_gpu_ids() if ray.is_initialized() else [],
                              torch.cuda.is_available())
        if not torch.cuda.is_available():
            configure_threads(threads)
        ckpt = load_checkpoint(checkpoint)
        self.classes = ckpt["classes"]
        self.density_scale = float(ckpt["normalisation"]["density_scale"])
        self.model = InferenceModel(model_from_checkpoint(ckpt, checkpoint), batch_size, box,
                                    compile=compile)
        print(f"inference actor: {self.model.device}, {self.model.precision}, batch "
              f"{self.model.batch_size}{' (tuned)' if batch_size == 'auto' else ''}, compiled "
              f"{self.model.compiled} ({self.model.compile_s:.1f} s)", file=sys.stderr)
        self.output = Path(output)
        self.seg = zarr.open_array(str(self.output / "segmentation.zarr"), mode="r+")
        self.rec = zarr.open_array(str(self.output / "density.zarr"), mode="r+")

    @property
    def precision(self) -> str:
        return self.model.precision

    def predict(self, boxes: np.ndarray) -> dict[str, np.ndarray]:
        """The per-particle outputs for (n, B, B, B) normalised boxes, as numpy."""
        out = self.model(boxes)
        result = {}
        if "logits" in out:
            result["probabilities"] = torch.softmax(out["logits"], 1).numpy()
            result["features"] = out["features"].numpy()
        if "seg" in out:
            result["seg"] = out["seg"].argmax(1).to(torch.uint8).numpy()
        if "rec" in out:
            result["rec"] = (out["rec"][:, 0] * self.density_scale).numpy()
        return result

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        unit_id, row0 = str(batch["unit_id"][0]), int(batch["row0"][0])
        boxes, ids = batch["boxes"][0], batch["particle_id"][0]
        start = time.perf_counter()
        out = self.predict(boxes)
        model_s = time.perf_counter() - start
        rows = slice(row0, row0 + len(ids))
        with naming_io_errors(f"writing unit {unit_id} to {self.output}"):
            failpoint("write", self.output)
            if "seg" in out:
                self.seg[rows] = out["seg"]
            if "rec" in out:
                self.rec[rows] = out["rec"]
            self._write_part(batch, out)
        import ray

        return {"unit_id": np.array([unit_id]), "n": np.array([len(ids)]),
                "node": np.array([ray.get_runtime_context().get_node_id()]),
                "model_s": np.array([model_s]),
                "write_s": np.array([time.perf_counter() - start - model_s])}

    def _write_part(self, batch: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> None:
        ids, centres = batch["particle_id"][0], batch["centres"][0]
        centres_a = pixels_to_angstrom(centres, float(batch["voxel_size_a"][0]),
                                       int(batch["level"][0]))
        row0 = int(batch["row0"][0])
        columns = {
            "particle_id": pa.array(ids.astype(np.int64)),
            "tomogram": pa.array([str(batch["tomogram"][0])] * len(ids)),
            "unit_id": pa.array([str(batch["unit_id"][0])] * len(ids)),
            "row": pa.array(np.arange(row0, row0 + len(ids), dtype=np.int64)),
            **{ax: pa.array(centres[:, i]) for i, ax in enumerate("zyx")},
            **{f"{ax}_a": pa.array(centres_a[:, i]) for i, ax in enumerate("zyx")},
            "padded": pa.array(batch["padded"][0].astype(bool)),
        }
        if "probabilities" in out:
            probs = out["probabilities"]
            best = probs.argmax(1)
            columns["class_index"] = pa.array(best.astype(np.int64))
            columns["class_name"] = pa.array([self.classes[i] for i in best])
            columns["score"] = pa.array(probs.max(1).astype(np.float64))
            columns["probabilities"] = _fixed_list(probs)
            columns["features"] = _fixed_list(out["features"])
        if "seg" in out:
            columns["target_voxels"] = pa.array(out["seg"].reshape(len(ids), -1).sum(1))
        part = self.output / "particles.parquet" / f"{batch['unit_id'][0]}.parquet"
        write_file_atomic(part, lambda tmp: pq.write_table(pa.table(columns), tmp))


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
