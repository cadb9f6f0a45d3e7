"""``dsmscale convert``: MRC tomograms to OME-Zarr pyramids, one in process
(`convert_mrc_to_ome_zarr`, from `dsmscale.io.pyramid`) or many in parallel as Ray tasks
(`convert_many`).

Each volume is streamed in z-slabs (checked for NaN/Inf), so memory is bounded by about one chunk
row per level. A store is built under a temporary name and renamed only when complete, so a crash
never leaves a store that looks finished.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from dsmscale.io.names import by_stem
from dsmscale.io.pyramid import ConvertConfig, convert_mrc_to_ome_zarr

__all__ = ["ConvertConfig", "convert_many", "convert_mrc_to_ome_zarr"]


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

