"""Job outputs assembled from the finished units: tables per tomogram and tomogram-scale maps.

Maps are pasted back by one writer per tomogram, unit by unit in z order, reading and writing
only the slab of the map that a unit's boxes cover: memory is bounded by one slab.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from dsmscale.extract import box_starts
from dsmscale.infer.units import Plan
from dsmscale.io.omezarr import create_pyramid, open_tomogram
from dsmscale.io.particles import make_particles, write_copick, write_star

TABLE_COLUMNS = ["particle_id", "tomogram", "unit_id", "row", "z", "y", "x", "z_a", "y_a", "x_a",
                 "padded", "class_index", "class_name", "score"]


def read_results(out: Path, columns: list[str] | None = None,
                 tomogram: str | None = None) -> pd.DataFrame:
    """The per-particle table (all finished parts, or one tomogram's rows), without the wide
    list columns by default."""
    import pyarrow.dataset as pads

    dataset = pads.dataset(out / "particles.parquet", format="parquet")
    cols = columns or [c for c in TABLE_COLUMNS if c in dataset.schema.names]
    where = None if tomogram is None else pads.field("tomogram") == tomogram
    return dataset.to_table(columns=cols, filter=where).to_pandas()


def write_job_tables(out: Path, plan: Plan) -> dict[str, str]:
    """STAR (RELION 3.1) and copick picks per tomogram, with predicted classes and scores (one
    tomogram's rows in memory at a time)."""
    written = {}
    for name in plan.units["tomogram"].unique():
        rows = read_results(out, tomogram=str(name))
        store = plan.units.loc[plan.units["tomogram"] == name, "store"].iloc[0]
        tomo = open_tomogram(store, int(plan.units["level"].iloc[0]))
        extra = {}
        if "class_name" in rows:
            extra = {"class_name": rows["class_name"].astype(str).to_numpy(),
                     "score": rows["score"].to_numpy()}
        table = make_particles(rows[["z", "y", "x"]].to_numpy(), str(name), tomo.voxel_size_a,
                               tomo.level, ids=rows["particle_id"].to_numpy(), **extra)
        write_star(table, out / f"{name}_particles.star")
        write_copick(table, out / "copick")
        written[str(name)] = str(out / f"{name}_particles.star")
    return written


def write_maps(out: Path, plan: Plan, box: int) -> None:
    """Per tomogram: ``maps/{name}_labels.zarr`` (class index + 1 inside predicted masks) and
    ``maps/{name}_density.zarr`` (maximum of the recovered densities), as OME-Zarr images."""
    seg = zarr.open_array(str(out / "segmentation.zarr"), mode="r")
    rec = zarr.open_array(str(out / "density.zarr"), mode="r")
    for name, units in plan.units.groupby("tomogram", sort=False):
        tomo = open_tomogram(units["store"].iloc[0], int(units["level"].iloc[0]))
        maps = {kind: create_pyramid(
            out / "maps" / f"{name}_{kind}.zarr", tomo.shape, n_levels=1, chunk=tomo.chunks[1],
            voxel_size_a=tomo.voxel_size_a, origin_a=tomo.translation_a, zarr_format=3,
            codec="lz4", clevel=5, name=f"{name} {kind}")[0] for kind in ("labels", "density")}
        particles = read_results(out, tomogram=str(name))  # one tomogram's rows at a time
        for _, rows in particles.groupby("unit_id", sort=False):
            _paste_unit(rows, seg, rec, maps, box, np.asarray(tomo.shape))


def _paste_unit(rows: pd.DataFrame, seg, rec, maps, box: int, shape: np.ndarray) -> None:
    starts = box_starts(rows[["z", "y", "x"]].to_numpy(), box)
    z0, z1 = max(starts[:, 0].min(), 0), min(starts[:, 0].max() + box, shape[0])
    labels = maps["labels"][z0:z1]
    density = maps["density"][z0:z1]
    r0, r1 = int(rows["row"].min()), int(rows["row"].max()) + 1
    seg_rows, rec_rows = seg[r0:r1], rec[r0:r1]
    classes = (rows["class_index"].fillna(0).to_numpy(int) + 1 if "class_index" in rows
               else np.ones(len(rows), int))
    for (z, y, x), row, cls in zip(starts, rows["row"].to_numpy() - r0, classes, strict=True):
        lo = np.maximum([z, y, x], [z0, 0, 0])
        hi = np.minimum([z + box, y + box, x + box], [z1, shape[1], shape[2]])
        src = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, (z, y, x), strict=True))
        dst = (slice(lo[0] - z0, hi[0] - z0), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        mask = seg_rows[row][src] > 0
        labels[dst][mask] = cls
        np.maximum(density[dst], rec_rows[row][src], out=density[dst])
    maps["labels"][z0:z1] = labels
    maps["density"][z0:z1] = density
