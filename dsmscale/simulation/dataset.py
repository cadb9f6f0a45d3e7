"""Benchmark datasets of subtomograms with class labels, target-only densities and masks.

For every simulated molecule whose 40³ box lies fully inside its tomogram the builder stores:
the noisy box at each SNR (same clean tomograms, different noise), the clean density of the target
alone (rendered by the same function, at the same sub-voxel offset, as in the tomogram; neighbours
excluded) and its segmentation mask = target density above the contour enclosing the molecular
volume (1.21 Å³/Da × mass). Splits are stratified by class (train/val/test); held-out classes get
split ``heldout``.

Layout of ``OUTPUT``::

    tomograms/tomo_000_{A,B,...}.mrc   noisy tomograms, one per dataset SNR (and .zarr with ome_zarr)
    tomograms/tomo_000_noise_free.mrc  S, the noise-free reconstruction
    tomograms/tomo_000_density.mrc     the clean rendered density (ground truth volume)
    truth/tomo_000.parquet, .star      class, centre (z, y, x px), rotation (ZYZ deg) per molecule
    datasets/{A,B}/subtomograms.zarr   (N, 40, 40, 40) float32 noisy boxes
    datasets/{A,B}/density.zarr        (N, 40, 40, 40) float32 target-only density
    datasets/{A,B}/mask.zarr           (N, 40, 40, 40) uint8 target mask
    datasets/{A,B}/particles.parquet   index, particle_id, tomogram, class_name, class_index,
                                       z, y, x, rot, tilt, psi, split
    summary.json                       counts per class and split, measured SNRs, timings, and the
                                       versions of the libraries the simulation drew on
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm.auto import tqdm

from dsmscale.config import JobConfig
from dsmscale.geometry import box_starts, boxes_inside
from dsmscale.io.atomic import build_output_dir
from dsmscale.io.dataset import TABLE, create_dataset_arrays
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import make_particles, write_star
from dsmscale.io.pyramid import convert_mrc_to_ome_zarr
from dsmscale.rotations import euler_zyz
from dsmscale.simulation.render import render_template
from dsmscale.simulation.tomogram import SimulatedTomogram, TomogramConfig, simulate_tomogram

APPEND_BOXES = 256  # boxes per append: bounds the builder's memory


class SimulateConfig(JobConfig):
    """``dsmscale simulate``: tomograms and the benchmark datasets (default: A and B)."""

    tomogram: TomogramConfig = Field(default_factory=TomogramConfig)
    n_tomograms: int = Field(1, ge=1, description="tomograms to simulate")
    datasets: dict[str, float] = Field({"A": 0.06, "B": 0.01}, description="name -> SNR")
    box: int = Field(40, ge=8, description="subtomogram edge in voxels")
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    holdout_classes: tuple[str, ...] = Field((), description="classes kept out of the splits")
    seed: int = Field(0, description="random seed")
    write_tomograms: bool = Field(True, description="write noisy/clean tomograms as MRC")
    ome_zarr: bool = Field(False, description="also convert the noisy tomograms to OME-Zarr")
    figures: bool = Field(True, description="write PNG figures")


def _targets(sim: SimulatedTomogram, box: int) -> np.ndarray:
    starts = box_starts(sim.placement.centres, box)
    return np.flatnonzero(boxes_inside(starts, box, sim.density.shape))


def _target_boxes(sim: SimulatedTomogram, index: int, box: int) -> tuple[np.ndarray, np.ndarray]:
    """(target-only density, mask) in the box around molecule ``index``."""
    placement = sim.placement
    template = sim.templates[placement.class_index[index]]
    start = box_starts(placement.centres[index][None], box)[0]
    density = np.zeros((box,) * 3, np.float32)
    render_template(density, start, template.density, placement.rotations[index],
                    placement.centres[index])
    return density, (density > template.contour()).astype(np.uint8)


def _crop(volume: np.ndarray, start: np.ndarray, box: int) -> np.ndarray:
    z, y, x = start
    return volume[z:z + box, y:y + box, x:x + box]


def truth_table(sim: SimulatedTomogram, name: str, id_offset: int):
    p = sim.placement
    angles = np.array([euler_zyz(r) for r in p.rotations]).reshape(-1, 3)
    classes = [sim.config.classes[c] for c in p.class_index]
    return make_particles(p.centres, name, sim.config.voxel_size_a,
                          ids=np.arange(len(p)) + id_offset, rot=angles[:, 0], tilt=angles[:, 1],
                          psi=angles[:, 2], class_name=classes,
                          class_index=p.class_index.astype(np.int64))


#: Libraries whose versions can change what one seed simulates (random streams, rotations,
#: atomic models), recorded in summary.json.
SIMULATION_LIBRARIES = ("dsmscale", "numpy", "scipy", "gemmi")


def library_versions() -> dict[str, str]:
    """Python's and `SIMULATION_LIBRARIES`' versions: under other versions the same seed may
    simulate different data."""
    return {"python": platform.python_version()} | {
        name: metadata.version(name) for name in SIMULATION_LIBRARIES}


def assign_splits(classes: np.ndarray, fractions, holdout, seed: int) -> np.ndarray:
    """Stratified split: within each class a seeded shuffle, then val/test by fraction (at least one
    each when the class has three or more examples) and the rest train."""
    rng = np.random.default_rng(seed)
    split = np.full(len(classes), "heldout", dtype=object)
    for cls in np.unique(classes):
        if cls in holdout:
            continue
        idx = rng.permutation(np.flatnonzero(classes == cls))
        n_val = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        if len(idx) >= 3:  # small classes still get one val and one test example
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        n_train = len(idx) - n_val - n_test
        split[idx[:n_train]] = "train"
        split[idx[n_train:n_train + n_val]] = "val"
        split[idx[n_train + n_val:]] = "test"
    return split


def build_datasets(config: SimulateConfig, output: str | os.PathLike, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Simulate ``config.n_tomograms`` tomograms and write the datasets; returns the summary."""
    summary: dict = {}

    def build(tmp: Path) -> None:
        summary.update(_build(config, tmp, progress))

    build_output_dir(output, overwrite, build)
    return summary


def _build(config: SimulateConfig, out: Path, progress: bool) -> dict:
    start = time.perf_counter()
    names = list(config.datasets)
    (out / "tomograms").mkdir(parents=True)
    (out / "truth").mkdir()
    arrays = {name: create_dataset_arrays(out / "datasets" / name, config.box,
                                          config.tomogram.voxel_size_a) for name in names}
    rows, measured = [], {"snr": {n: [] for n in names}, "volume_fraction": [], "defocus_um": []}
    for t in tqdm(range(config.n_tomograms), desc="simulate", unit="tomogram", disable=not progress):
        tag = f"tomo_{t:03d}"
        sim = simulate_tomogram(config.tomogram, seed=config.seed * 1000 + t, n_noise=len(names))
        truth = truth_table(sim, tag, id_offset=t * 1_000_000)
        truth.df.to_parquet(out / "truth" / f"{tag}.parquet", index=False)
        write_star(truth, out / "truth" / f"{tag}.star")
        targets = _targets(sim, config.box)
        for r, name in enumerate(names):  # one noisy volume in memory at a time
            measured["snr"][name].append(
                _write_noisy(sim, config, name, r, out / "tomograms" / tag, targets, arrays[name]))
        if config.write_tomograms:
            write_volume(out / "tomograms" / f"{tag}_noise_free.mrc", sim.noise_free,
                         config.tomogram.voxel_size_a)
            write_volume(out / "tomograms" / f"{tag}_density.mrc", sim.density,
                         config.tomogram.voxel_size_a)
        _append_targets(sim, targets, config.box, arrays)
        rows.append(truth.df.iloc[targets])
        measured["volume_fraction"].append(sim.placement.volume_fraction(config.tomogram.shape_zyx))
        measured["defocus_um"].append(sim.defocus_um)
        del sim
    table = _write_tables(config, out, pd.concat(rows, ignore_index=True))
    summary = _summary(config, table, measured, time.perf_counter() - start)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if config.figures:
        from dsmscale.simulation.figures import dataset_figures

        dataset_figures(out, names)
    return summary


def _write_noisy(sim: SimulatedTomogram, config: SimulateConfig, name: str, realisation: int,
                 stem: Path, targets: np.ndarray, arrays: dict) -> float:
    """Dataset ``name``'s noisy tomogram (as MRC and OME-Zarr when asked) and its boxes around
    ``targets``; returns the SNR measured."""
    voxel_size_a, box = config.tomogram.voxel_size_a, config.box
    noisy, snr = sim.noisy(config.datasets[name], realisation=realisation)
    if config.write_tomograms or config.ome_zarr:
        mrc = write_volume(f"{stem}_{name}.mrc", noisy, voxel_size_a)
        if config.ome_zarr:
            convert_mrc_to_ome_zarr(mrc, mrc.with_suffix(".zarr"), progress=False)
    starts = box_starts(sim.placement.centres[targets], box)
    for part in np.array_split(starts, max(1, len(starts) // APPEND_BOXES)):
        arrays["subtomograms"].append(np.stack([_crop(noisy, s, box) for s in part]))
    return snr


def _append_targets(sim: SimulatedTomogram, targets: np.ndarray, box: int,
                    arrays: dict[str, dict]) -> None:
    """Every dataset's target-only densities and masks of the boxes around ``targets``."""
    for part in np.array_split(targets, max(1, len(targets) // APPEND_BOXES)):
        pairs = [_target_boxes(sim, i, box) for i in part]
        for dataset in arrays.values():
            dataset["density"].append(np.stack([p[0] for p in pairs]))
            dataset["mask"].append(np.stack([p[1] for p in pairs]))


def _write_tables(config: SimulateConfig, out: Path, table: pd.DataFrame) -> pd.DataFrame:
    """The datasets' tables: the targets' truth rows with their box index and split."""
    table.insert(0, "index", np.arange(len(table)))
    table["split"] = assign_splits(table["class_name"].to_numpy(), config.split_fractions,
                                    config.holdout_classes, config.seed)
    for name, snr in config.datasets.items():
        table.assign(snr=snr).to_parquet(out / "datasets" / name / TABLE, index=False)
    return table


def _summary(config: SimulateConfig, table: pd.DataFrame, measured: dict, wall_s: float) -> dict:
    counts = table.groupby(["class_name", "split"]).size().unstack(fill_value=0)
    return {
        "config": config.model_dump(mode="json"),
        "n_subtomograms": {name: int(len(table)) for name in config.datasets},
        "snr_target": dict(config.datasets),
        "snr_measured": {n: float(np.mean(v)) for n, v in measured["snr"].items()},
        "volume_fraction": float(np.mean(measured["volume_fraction"])),
        "defocus_um": measured["defocus_um"],
        "per_class": {c: {s: int(v) for s, v in row.items()} for c, row in counts.iterrows()},
        "wall_s": wall_s, "environment": library_versions(),
    }
