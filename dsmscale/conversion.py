"""``dsmscale convert``: MRC tomograms to OME-Zarr pyramids, one in process or many as Ray tasks.

Each volume is streamed in z-slabs (checked for NaN/Inf) into the pyramid writer of
`dsmscale.io.pyramid`, so memory is bounded by about one chunk row per level. A store is built
under a temporary name and renamed only when complete, so a crash never leaves a store that looks
finished.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dsmscale.errors import InputError
from dsmscale.io.atomic import build_output_dir
from dsmscale.io.mrc import open_volume
from dsmscale.io.names import by_stem
from dsmscale.io.pyramid import ConvertConfig, write_ome_zarr

__all__ = ["ConvertConfig", "convert_many", "convert_mrc_to_ome_zarr"]



def _finite_slabs(source: Path, data: np.ndarray, planes: int, progress: bool
                  ) -> Iterator[np.ndarray]:
    """``data`` as float32 slabs of ``planes`` z planes, each checked to hold no NaN/Inf."""
    for z0 in tqdm(range(0, data.shape[0], planes), desc=f"convert {source.name}", unit="slab",
                   disable=not progress, leave=False):
        slab = np.asarray(data[z0:z0 + planes], dtype=np.float32)
        # a sum is non-finite whenever a voxel is (cheap); only then count the culprits exactly
        if not np.isfinite(slab.sum()) and not np.isfinite(slab).all():
            bad = int(np.count_nonzero(~np.isfinite(slab)))
            raise InputError(source, f"{bad} NaN/Inf voxels in z planes {z0}..{z0 + len(slab) - 1}")
        yield slab


def convert_mrc_to_ome_zarr(
    source: str | os.PathLike, destination: str | os.PathLike,
    config: ConvertConfig | None = None, progress: bool = True,
) -> Path:
    """Convert one MRC/MAP/REC (optionally .gz/.bz2) volume to an OME-Zarr pyramid.

    Args:
        source: the MRC file; its voxel size (Å) and origin become the NGFF scale/translation.
        destination: the ``.zarr`` directory to create (local path).
        config: pyramid, chunk and codec settings.
        progress: show a progress bar.

    Returns:
        The destination path.

    Raises:
        InputError: bad MRC (see `open_volume`), NaN/Inf voxels, or an existing destination
            without ``overwrite``. Nothing is left at ``destination`` on failure.
    """
    config = config or ConvertConfig()
    source = Path(source)

    def build(tmp: Path) -> None:
        with open_volume(source) as vol:
            write_ome_zarr(tmp, _finite_slabs(source, vol.data, config.chunk, progress),
                           vol.shape, vol.voxel_size_a, vol.origin_a, config, name=source.name,
                           attrs={"source": str(source), "mrc_header": vol.header})

    dst = build_output_dir(destination, config.overwrite, build)
    return dst


def convert_many(
    sources: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
    config: ConvertConfig | None = None,
) -> tuple[list[Path], dict[str, str]]:
    """Convert many tomograms in parallel as Ray tasks (one CPU each).

    Returns:
        (converted stores, {source: error message} for the inputs that failed). Failures do not
        stop the others.
    """
    import ray

    from dsmscale.parallel import ensure_ray

    config = config or ConvertConfig()
    ensure_ray()
    task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=[OSError])(
        convert_mrc_to_ome_zarr)
    out = Path(output_dir)
    named = by_stem([str(s) for s in sources], "tomogram")
    refs = {s: task.remote(s, out / f"{stem}.zarr", config, False) for stem, s in named.items()}
    done, failed = [], {}
    for source, ref in tqdm(refs.items(), desc="convert", unit="tomogram"):
        try:
            done.append(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            failed[source] = str(cause).splitlines()[0]
    return done, failed

