"""Job outputs assembled from the finished units: tables per tomogram and tomogram-scale maps.

Tables keep the coordinates in pixels of the tomogram level the boxes were cut from, with that
level's voxel size. Maps are on the grid of the boxes (`map_grid`): the tomogram level's own
grid when the boxes were cut from it, else the model's grid the boxes were resampled to — voxel
size the model's, the same translation (voxel 0 at the level's voxel 0), and as many voxels
as fit within the level's extent (``floor((n − 1)·v / v_model) + 1`` per axis). A box is pasted
at the map voxel nearest its centre, so a resampled box sits up to half a model voxel off.

Maps are pasted back by one writer per tomogram, unit by unit in z order, reading and writing
only the slab of the map that a unit's boxes cover: memory is bounded by one slab.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dsmscale.geometry import box_starts
from dsmscale.io.job import JobFolder
from dsmscale.io.omezarr import Tomogram, create_pyramid, open_tomogram
from dsmscale.io.particles import (
    ParticleTable,
    concat_tables,
    write_copick,
    write_copick_config,
    write_relion5,
    write_star,
)
from dsmscale.io.particles.table import from_angstrom
from dsmscale.pipeline.plan import JobPlan
from dsmscale.resampling import needs_resampling


def _job_table(job: JobFolder, name: str, store: str) -> tuple[ParticleTable, Tomogram]:
    """One tomogram's particles as a table in pixels of its level 0 (positions from the job's Å
    columns), with predicted classes and scores; and its level 0."""
    rows = job.read_particles(tomogram=name)
    full = open_tomogram(store, 0)
    extra = {}
    if "class_name" in rows:
        extra = {"class_name": rows["class_name"].astype(str).to_numpy(),
                 "score": rows["score"].to_numpy()}
    table = from_angstrom(rows[["z_a", "y_a", "x_a"]].to_numpy(), min(full.voxel_size_zyx_a),
                          ids=rows["particle_id"].to_numpy(), tomogram=name, **extra)
    return table, full


def write_job_tables(job: JobFolder, plan: JobPlan) -> dict[str, str]:
    """Per tomogram, a RELION 3.1-style STAR and copick picks; for the job, a RELION 5 set of
    every tomogram (``relion5/``: particles in centred Å, tomograms, optimisation set;
    isotropic tomograms) and the copick project's config naming the predicted classes
    (``copick/copick_config.json``). The RELION 5 particles file is one table, so the driver
    holds every particle's position, class and score (about 80 B each, no features: 80 MB at
    10⁶ particles) while writing it."""
    written, relion5, geometry, classes = {}, [], {}, set()
    for name, units in plan.units.groupby("tomogram", sort=False):
        table, full = _job_table(job, str(name), units["store"].iloc[0])
        write_star(table, job.star(str(name)))
        write_copick(table, job.copick)
        written[str(name)] = str(job.star(str(name)))
        classes |= set(table.df.get("class_name", pd.Series(["particle"])))
        if full.is_isotropic:  # RELION's tomograms have one pixel size
            relion5.append(table)
            geometry[str(name)] = (full.shape, full.voxel_size_a)
    if relion5:  # the job's positions and classes (no features): O(particles) small columns
        write_relion5(concat_tables(relion5), job.relion5, geometry)
    write_copick_config(job.copick / "copick_config.json", sorted(classes), job.copick)
    return written


def map_grid(tomo: Tomogram, resample_to_a: float) -> tuple[tuple[int, ...], float, np.ndarray | None]:
    """(shape, voxel size in Å, factor taking level pixels to map voxels or None) of a
    tomogram's maps whose boxes were resampled to ``resample_to_a`` (NaN: not resampled)."""
    if math.isnan(resample_to_a) or not needs_resampling(tomo.voxel_size_zyx_a, resample_to_a):
        return tomo.shape, tomo.voxel_size_a, None
    factor = np.asarray(tomo.voxel_size_zyx_a) / resample_to_a
    shape = np.floor((np.asarray(tomo.shape) - 1) * factor + 1e-6).astype(int) + 1
    return tuple(int(n) for n in shape), float(resample_to_a), factor


def write_maps(job: JobFolder, plan: JobPlan, box: int) -> None:
    """Per tomogram: ``maps/{name}_labels.zarr`` (class index + 1 inside predicted masks) and
    ``maps/{name}_density.zarr`` (maximum of the recovered densities), as OME-Zarr images on
    the boxes' grid (`map_grid`)."""
    seg, rec = job.open_segmentation(), job.open_density()
    for name, units in plan.units.groupby("tomogram", sort=False):
        tomo = open_tomogram(units["store"].iloc[0], int(units["level"].iloc[0]))
        shape, voxel_a, factor = map_grid(tomo, float(units["resample_to_a"].iloc[0]))
        maps = {kind: create_pyramid(
            job.map(str(name), kind), shape, n_levels=1, chunk=tomo.chunks[1],
            voxel_size_a=voxel_a, origin_a=tomo.translation_a, zarr_format=3,
            codec="lz4", clevel=5, name=f"{name} {kind}")[0] for kind in ("labels", "density")}
        particles = job.read_particles(tomogram=str(name))  # one tomogram's rows at a time
        for _, rows in particles.groupby("unit_id", sort=False):
            _paste_unit(rows, seg, rec, maps, box, np.asarray(shape), factor)


def _paste_unit(rows: pd.DataFrame, seg, rec, maps, box: int, shape: np.ndarray,
                to_map: np.ndarray | None = None) -> None:
    """Paste one unit's predicted masks (as class index + 1) and recovered densities (by
    maximum) into the slab of the maps its boxes cover (centres in level pixels, times
    ``to_map`` per axis when the map is on another grid)."""
    centres = rows[["z", "y", "x"]].to_numpy()
    starts = box_starts(centres if to_map is None else centres * to_map, box)
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
        if np.any(hi <= lo):
            continue  # a box wholly outside the map (a padded box near its far faces)
        src = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, (z, y, x), strict=True))
        dst = (slice(lo[0] - z0, hi[0] - z0), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        mask = seg_boxes[i][src] > 0
        labels[dst][mask] = cls
        np.maximum(density[dst], rec_boxes[i][src], out=density[dst])
    maps["labels"][z0:z1] = labels
    maps["density"][z0:z1] = density
