"""A whole copick project written for the ``copick`` library to open: its config (the pickable
objects, a local overlay root), the picks under the overlay, and the tomograms in copick's layout
``ExperimentRuns/{run}/VoxelSpacing{spacing:.3f}/{type}.zarr``: NGFF 0.4 on Zarr v2, the only kind
copick reads (it pins ``zarr < 3``), copied level by level from dsmscale's OME-Zarr, one slab of
chunks at a time."""

from __future__ import annotations

import os
from pathlib import Path

from dsmscale.errors import InputError
from dsmscale.io.omezarr import Tomogram, create_pyramid, open_tomogram
from dsmscale.io.particles import ParticleTable, write_copick, write_copick_config
from dsmscale.io.particles.copick import overlay_root

CONFIG = "copick_config.json"


def copick_tomogram_path(root: Path, run: str, voxel_size_a: float, tomogram_type: str) -> Path:
    """Where copick looks for a run's tomogram of one voxel spacing and type."""
    return root / "ExperimentRuns" / run / f"VoxelSpacing{voxel_size_a:.3f}" / f"{tomogram_type}.zarr"


def _levels(store: str) -> list[Tomogram]:
    levels, level = [], 0
    while True:
        try:
            levels.append(open_tomogram(store, level))
        except InputError:
            return levels
        level += 1


def copy_tomogram_for_copick(store: str, root: Path, run: str, tomogram_type: str) -> Path:
    """Copy an OME-Zarr tomogram (every level) into the project as NGFF 0.4 on Zarr v2."""
    levels = _levels(store)
    first = levels[0]
    path = copick_tomogram_path(root, run, first.voxel_size_a, tomogram_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = create_pyramid(path, first.shape, n_levels=len(levels), chunk=first.chunks[1],
                            voxel_size_a=first.voxel_size_a, origin_a=first.translation_a,
                            zarr_format=2, codec="lz4", clevel=5, name=run)
    for source, target in zip(levels, arrays, strict=True):
        step = source.chunks[0]
        for z in range(0, source.shape[0], step):
            target[z:z + step] = source.array[z:z + step]
    return path


def write_copick_project(
    table: ParticleTable, root: str | os.PathLike, tomograms: dict[str, str] | None = None,
    tomogram_type: str = "dsmscale", name: str = "dsmscale",
) -> Path:
    """A copick project in ``root``: ``copick_config.json`` (one pickable object per class name),
    the picks, and — for ``tomograms`` ``{run: OME-Zarr store}`` — the tomograms as
    ``{tomogram_type}.zarr``. Returns the config's path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    classes = (sorted(table.df["class_name"].astype(str).unique())
               if "class_name" in table.df.columns else ["particle"])
    write_copick(table, root)
    for run, store in (tomograms or {}).items():
        copy_tomogram_for_copick(store, root, run, tomogram_type)
    return write_copick_config(root / CONFIG, classes, root, name=name)


def project_tomograms(config: str | os.PathLike, tomogram_type: str | None = None,
                      voxel_spacing_a: float | None = None) -> list[str]:
    """The tomograms of a local copick project (``config``: its JSON), one per run:
    ``ExperimentRuns/RUN/VoxelSpacing{spacing:.3f}/{type}.zarr`` under its overlay root, of the
    type and spacing given. A run holding several (types or spacings) with none given is an
    `InputError` that lists them."""
    spacing = "*" if voxel_spacing_a is None else f"{voxel_spacing_a:.3f}"
    found = sorted(overlay_root(Path(config)).glob(
        f"ExperimentRuns/*/VoxelSpacing{spacing}/{tomogram_type or '*'}.zarr"))
    if not found:
        raise InputError(config, f"holds no tomograms of type {tomogram_type or 'any'} at "
                                 f"voxel spacing {spacing} (ExperimentRuns/RUN/VoxelSpacing…/"
                                 "TYPE.zarr)")
    runs = [p.parts[-3] for p in found]
    if len(set(runs)) < len(runs):
        kinds = sorted({f"{p.parent.name.removeprefix('VoxelSpacing')}/{p.stem}" for p in found})
        raise InputError(config, f"runs hold several tomograms (spacing/type: {', '.join(kinds)}): "
                                 "choose with copick_tomogram_type and copick_voxel_spacing_a")
    return [str(p) for p in found]
