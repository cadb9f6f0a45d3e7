"""Where a job's predictions go: the unit sink writes one predicted work unit into the job folder.

A unit's boxes occupy rows ``first_box …`` of ``segmentation.zarr`` and ``density.zarr``, which
start on a chunk boundary (`dsmscale.pipeline.plan`), so no chunk has two writers. The unit's
Parquet part is written last and atomically: a part on disk means the unit is complete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from dsmscale.errors import naming_io_errors
from dsmscale.failpoints import failpoint
from dsmscale.geometry import pixels_to_angstrom
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.job import JobFolder
from dsmscale.io.subtomograms import create_box_array
from dsmscale.pipeline.plan import BOXES_PER_CHUNK


@dataclass
class CutUnit:
    """A work unit's boxes, cut: ``boxes`` (n, B, B, B) normalised, of particles
    ``particle_id`` at ``centres`` (n, 3) (z, y, x pixels at ``level``, voxel sizes
    ``voxel_size_zyx_a`` Å per axis), ``padded`` where a box crossed the volume edge. Travels between the
    Ray Data stages as a one-row batch (`to_batch`, `from_batch`)."""

    unit_id: str
    tomogram: str
    first_box: int
    voxel_size_zyx_a: np.ndarray
    level: int
    particle_id: np.ndarray
    centres: np.ndarray
    padded: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.particle_id)

    def to_batch(self) -> dict[str, np.ndarray]:
        """A one-row Ray Data batch: each field an array of length one."""
        return {name: np.asarray([value]) if np.isscalar(value) else np.asarray(value)[None]
                for name, value in vars(self).items()}

    @classmethod
    def from_batch(cls, batch: dict[str, np.ndarray]) -> CutUnit:
        """The unit of a one-row Ray Data batch."""
        return cls(unit_id=str(batch["unit_id"][0]), tomogram=str(batch["tomogram"][0]),
                   first_box=int(batch["first_box"][0]),
                   voxel_size_zyx_a=np.asarray(batch["voxel_size_zyx_a"][0], float),
                   level=int(batch["level"][0]),
                   **{k: batch[k][0] for k in ("particle_id", "centres", "padded", "boxes")})


def create_outputs(job: JobFolder, n_boxes: int, box: int) -> None:
    """The job's per-particle arrays and parts folder, unless a run before made them."""
    for path, dtype in ((job.segmentation, "uint8"), (job.density, "float32")):
        if not path.exists():
            create_box_array(path, n_boxes, box, dtype, chunk_boxes=BOXES_PER_CHUNK)
    job.parts.mkdir(exist_ok=True)


class UnitSink:
    """Writes predicted units into a job folder (one sink per process; see `create_outputs`)."""

    def __init__(self, job: JobFolder, classes: list[str]):
        self.job = job
        self.classes = classes
        self.segmentation = zarr.open_array(str(job.segmentation), mode="r+")
        self.density = zarr.open_array(str(job.density), mode="r+")

    def write(self, unit: CutUnit, outputs: dict[str, np.ndarray]) -> None:
        """Write ``outputs`` (`dsmscale.inference.Predictor`'s, for the unit's boxes): the
        arrays' rows first, the Parquet part last."""
        boxes = slice(unit.first_box, unit.first_box + len(unit))
        with naming_io_errors(f"writing unit {unit.unit_id} to {self.job.root}"):
            failpoint("write", self.job.root)
            if "seg" in outputs:
                self.segmentation[boxes] = outputs["seg"]
            if "rec" in outputs:
                self.density[boxes] = outputs["rec"]
            table = pa.table(self.columns(unit, outputs))
            write_file_atomic(self.job.part(unit.unit_id), lambda tmp: pq.write_table(table, tmp))

    def columns(self, unit: CutUnit, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """The unit's rows of the per-particle table."""
        n, centres = len(unit), unit.centres
        centres_a = pixels_to_angstrom(centres, unit.voxel_size_zyx_a, unit.level)
        columns = {
            "particle_id": pa.array(unit.particle_id.astype(np.int64)),
            "tomogram": pa.array([unit.tomogram] * n), "unit_id": pa.array([unit.unit_id] * n),
            "box_index": pa.array(np.arange(unit.first_box, unit.first_box + n, dtype=np.int64)),
            **{ax: pa.array(centres[:, i]) for i, ax in enumerate("zyx")},
            **{f"{ax}_a": pa.array(centres_a[:, i]) for i, ax in enumerate("zyx")},
            "padded": pa.array(unit.padded.astype(bool)),
        }
        if "probabilities" in outputs:
            probabilities = outputs["probabilities"]
            best = probabilities.argmax(1)
            columns["class_index"] = pa.array(best.astype(np.int64))
            columns["class_name"] = pa.array([self.classes[i] for i in best])
            columns["score"] = pa.array(probabilities.max(1).astype(np.float64))
            columns["probabilities"] = _fixed_list(probabilities)
            columns["features"] = _fixed_list(outputs["features"])
        if "seg" in outputs:
            columns["target_voxels"] = pa.array(outputs["seg"].reshape(n, -1).sum(1))
        return columns


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
