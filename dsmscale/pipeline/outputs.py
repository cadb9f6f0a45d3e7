"""Job outputs assembled from the finished units: tables per tomogram and tomogram-scale maps.

Maps are pasted back by one writer per tomogram, unit by unit in z order, reading and writing
only the slab of the map that a unit's boxes cover: memory is bounded by one slab.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsmscale.geometry import box_starts
from dsmscale.io.job import JobFolder
from dsmscale.io.omezarr import create_pyramid, open_tomogram
from dsmscale.io.particles import make_particles, write_copick, write_star
from dsmscale.pipeline.plan import JobPlan


def write_job_tables(job: JobFolder, plan: JobPlan) -> dict[str, str]:
    """STAR (RELION 3.1) and copick picks per tomogram, with predicted classes and scores (one
    tomogram's rows in memory at a time)."""
    written = {}
    for name in plan.units["tomogram"].unique():
        rows = job.read_particles(tomogram=str(name))
        store = plan.units.loc[plan.units["tomogram"] == name, "store"].iloc[0]
        tomo = open_tomogram(store, int(plan.units["level"].iloc[0]))
        extra = {}
        if "class_name" in rows:
            extra = {"class_name": rows["class_name"].astype(str).to_numpy(),
                     "score": rows["score"].to_numpy()}
        table = make_particles(rows[["z", "y", "x"]].to_numpy(), str(name), tomo.voxel_size_a,
                               tomo.level, ids=rows["particle_id"].to_numpy(), **extra)
        write_star(table, job.star(str(name)))
        write_copick(table, job.copick)
        written[str(name)] = str(job.star(str(name)))
    return written


def write_maps(job: JobFolder, plan: JobPlan, box: int) -> None:
    """Per tomogram: ``maps/{name}_labels.zarr`` (class index + 1 inside predicted masks) and
    ``maps/{name}_density.zarr`` (maximum of the recovered densities), as OME-Zarr images."""
    seg, rec = job.open_segmentation(), job.open_density()
    for name, units in plan.units.groupby("tomogram", sort=False):
        tomo = open_tomogram(units["store"].iloc[0], int(units["level"].iloc[0]))
        maps = {kind: create_pyramid(
            job.map(str(name), kind), tomo.shape, n_levels=1, chunk=tomo.chunks[1],
            voxel_size_a=tomo.voxel_size_a, origin_a=tomo.translation_a, zarr_format=3,
            codec="lz4", clevel=5, name=f"{name} {kind}")[0] for kind in ("labels", "density")}
        particles = job.read_particles(tomogram=str(name))  # one tomogram's rows at a time
        for _, rows in particles.groupby("unit_id", sort=False):
            _paste_unit(rows, seg, rec, maps, box, np.asarray(tomo.shape))


def _paste_unit(rows: pd.DataFrame, seg, rec, maps, box: int, shape: np.ndarray) -> None:
    """Paste one unit's predicted masks (as class index + 1) and recovered densities (by
    maximum) into the slab of the maps its boxes cover."""
    starts = box_starts(rows[["z", "y", "x"]].to_numpy(), box)
    z0, z1 = max(starts[:, 0].min(), 0), min(starts[:, 0].max() + box, shape[0])
    labels = maps["labels"][z0:z1]
    density = maps["density"][z0:z1]
    first, last = int(rows["box_index"].min()), int(rows["box_index"].max()) + 1
    seg_boxes, rec_boxes = seg[first:last], rec[first:last]
    classes = (rows["class_index"].fillna(0).to_numpy(int) + 1 if "class_index" in rows
               else np.ones(len(rows), int))
    for (z, y, x), i, cls in zip(starts, rows["box_index"].to_numpy() - first, classes,
                                 strict=True):
        lo = np.maximum([z, y, x], [z0, 0, 0])
        hi = np.minimum([z + box, y + box, x + box], [z1, shape[1], shape[2]])
        src = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, (z, y, x), strict=True))
        dst = (slice(lo[0] - z0, hi[0] - z0), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        mask = seg_boxes[i][src] > 0
        labels[dst][mask] = cls
        np.maximum(density[dst], rec_boxes[i][src], out=density[dst])
    maps["labels"][z0:z1] = labels
    maps["density"][z0:z1] = density
