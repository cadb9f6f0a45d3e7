"""Benchmark: what the shipped model sees in a tomogram of another pixel size, by how its boxes are
brought to the model's 10 Å grid.

Usage: python jobs/bench_resampling.py [--seeds 1 2] [--shape 100 200 200] [--out results]

Simulated tomograms at 10 Å (SNR 0.06, the training setting, other seeds than the training
data) are Fourier-resampled (spectrum zero-padded or cropped) to 7.8125 Å and 13.33 Å; every
particle is cut at 10 Å and classified by the shipped default model:

- ``10``: the original; ``7.8`` and ``13.3``: dsmscale's Fourier resampling from those grids;
- ``13.3 spline``, ``13.3 trilinear``: the same boxes sampled with ``scipy.ndimage``
  (cubic B-spline, linear) instead;
- ``13.3 unresampled``: 40³ boxes cut at 13.3 Å as they are (what a tomogram got before);
- ``control``: the 10 Å tomogram band-limited to 13.3 Å's Nyquist, not resampled: what is left
  when the band a 13.3 Å tomogram lacks is gone, whatever the resampling.

Accuracy against the true classes, and agreement with the 10 Å classes, on all particles and
on those whose box lies inside the volume. Writes ``OUT/resampling.{md,json}`` (command,
commit, machine). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
from scipy import ndimage

from dsmscale.extraction import extract_subtomograms
from dsmscale.geometry import normalise_boxes
from dsmscale.hardware import machine_name
from dsmscale.inference import Predictor
from dsmscale.io.particles import make_particles
from dsmscale.io.pyramid import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.profiling import emit
from dsmscale.report.provenance import git_commit
from dsmscale.resampling import fourier_resize
from dsmscale.simulation.dataset import truth_table
from dsmscale.simulation.tomogram import TomogramConfig, simulate_tomogram
from dsmscale.weights import resolve_model

BOX, MODEL_A = 40, 10.0
GRIDS = {"10": 1.0, "7.8": 1.28, "13.3": 0.75}


def store_of(folder: Path, name: str, volume: np.ndarray, voxel_a: float) -> Path:
    mrc = folder / f"{name}.mrc"
    with mrcfile.new(mrc, overwrite=True) as out:
        out.set_data(np.ascontiguousarray(volume, dtype=np.float32))
        out.voxel_size = voxel_a
    return convert_mrc_to_ome_zarr(mrc, folder / f"{name}.zarr", ConvertConfig(chunk=32),
                                   progress=False)


def predicted(predictor: Predictor, boxes: np.ndarray) -> np.ndarray:
    probabilities = predictor(boxes)["probabilities"]
    return np.asarray(predictor.classes)[probabilities.argmax(1)]


def by_extraction(predictor, store, table, resample_to_a) -> tuple[np.ndarray, np.ndarray]:
    """Classes and padded flags in particle id order, boxes cut by dsmscale's extraction."""
    found, padded = {}, {}
    for batch in extract_subtomograms(store, table, box=BOX, normalise=True,
                                      resample_to_a=resample_to_a):
        ids = batch.particle_id.tolist()
        found.update(zip(ids, predicted(predictor, batch.boxes), strict=True))
        padded.update(zip(ids, batch.padded, strict=True))
    order = sorted(found)
    return np.array([found[i] for i in order]), np.array([padded[i] for i in order])


def by_ndimage(predictor, volume, centres_px, step, order) -> np.ndarray:
    """Classes of boxes sampled with ``ndimage.map_coordinates`` at the model grid's positions
    ``c + (a − B // 2) · step`` (source voxels; ``step`` = model voxel / source voxel)."""
    offsets = (np.arange(BOX) - BOX // 2) * step
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"))
    classes = []
    for start in range(0, len(centres_px), 32):
        boxes = np.stack([ndimage.map_coordinates(volume, grid + c[:, None, None, None],
                                                  order=order, mode="nearest")
                          for c in centres_px[start:start + 32]]).astype(np.float32)
        classes.append(predicted(predictor, normalise_boxes(boxes)))
    return np.concatenate(classes)


def one_seed(seed: int, shape, predictor: Predictor, folder: Path) -> tuple[dict, np.ndarray,
                                                                            np.ndarray]:
    """{variant: classes}, true classes and the inside mask of one simulated tomogram."""
    for ratio in GRIDS.values():  # the voxel size is 10 Å / ratio only for whole-voxel shapes
        if not all(float(n * ratio).is_integer() for n in shape):
            raise SystemExit(f"--shape {shape}: × {ratio} is not a whole number of voxels")
    sim = simulate_tomogram(TomogramConfig(shape_zyx=tuple(shape), copies_per_class=12), seed=seed)
    noisy, _ = sim.noisy(0.06)
    truth = truth_table(sim, "t", 0).df.sort_values("particle_id")
    centres = truth[["z", "y", "x"]].to_numpy()
    keep = np.all((centres >= 0) & (centres <= np.subtract(shape, 2)), axis=1)
    truth, centres = truth[keep], centres[keep]
    volumes = {name: fourier_resize(noisy, tuple(int(n * r) for n in shape)) if r != 1 else noisy
               for name, r in GRIDS.items()}
    volumes["control"] = fourier_resize(volumes["13.3"], tuple(shape))
    classes, padded = {}, {}
    for name, volume in volumes.items():
        ratio = GRIDS.get(name, 1.0)
        store = store_of(folder, f"{seed}_{name}", volume, MODEL_A / ratio)
        table = make_particles(centres * ratio, "t", MODEL_A / ratio,
                               ids=truth["particle_id"].to_numpy())
        classes[name], padded[name] = by_extraction(predictor, store, table, MODEL_A)
    small = volumes["13.3"]
    classes["13.3 unresampled"] = by_extraction(predictor, store_of(
        folder, f"{seed}_raw", small, MODEL_A / 0.75), make_particles(
        centres * 0.75, "t", MODEL_A / 0.75, ids=truth["particle_id"].to_numpy()), None)[0]
    for label, order in (("13.3 spline", 3), ("13.3 trilinear", 1)):
        classes[label] = by_ndimage(predictor, small, centres * 0.75, 0.75, order)
    return classes, truth["class_name"].to_numpy(), ~padded["10"]


def summarise(classes: dict, true: np.ndarray, inside: np.ndarray) -> dict[str, dict]:
    return {name: {"accuracy": float(np.mean(c == true)),
                   "accuracy_inside": float(np.mean((c == true)[inside])),
                   "agreement_with_10": float(np.mean(c == classes["10"])),
                   "agreement_with_control": float(np.mean(c == classes["control"]))}
            for name, c in classes.items()}


def write_results(out: Path, rows: dict, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "resampling.json").write_text(json.dumps({**meta, "variants": rows}, indent=2))
    lines = [f"# Other pixel sizes: boxes brought to the model's {MODEL_A:g} Å grid", "",
             f"`{meta['command']}` — commit {meta['commit']}, {meta['machine']}, "
             f"{meta['wall_s']:.0f} s. Shipped default model; simulated tomograms "
             f"{tuple(meta['shape'])} at 10 Å, SNR 0.06, seeds {meta['seeds']} "
             f"({meta['particles']} particles, {meta['inside']} with boxes inside the volume), "
             "Fourier-resampled to 7.8125 Å and 13.33 Å; see `jobs/bench_resampling.py`.", "",
             "| variant | accuracy | accuracy (inside) | same class as 10 Å | same class as "
             "control |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['accuracy']:.3f} | {r['accuracy_inside']:.3f} | "
                     f"{r['agreement_with_10']:.3f} | {r['agreement_with_control']:.3f} |")
    (out / "resampling.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--shape", type=int, nargs=3, default=[100, 200, 200])
    parser.add_argument("--out", type=Path, default=None, help="folder for resampling.{md,json}")
    args = parser.parse_args()
    start = time.perf_counter()
    predictor = Predictor(resolve_model("default"), 16)
    merged, true, inside = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            classes, t, i = one_seed(seed, args.shape, predictor, Path(tmp))
            for name, c in classes.items():
                merged.setdefault(name, []).append(c)
            true.append(t)
            inside.append(i)
    classes = {name: np.concatenate(c) for name, c in merged.items()}
    rows = summarise(classes, np.concatenate(true), np.concatenate(inside))
    for name, r in rows.items():
        print(f"{name:>17}: accuracy {r['accuracy']:.3f} (inside {r['accuracy_inside']:.3f}), "
              f"same as 10 Å {r['agreement_with_10']:.3f}, as control "
              f"{r['agreement_with_control']:.3f}")
    meta = {"command": "python jobs/bench_resampling.py " + " ".join(sys.argv[1:]),
            "commit": git_commit(), "machine": f"{machine_name()}, {predictor.describe()}",
            "seeds": args.seeds, "shape": args.shape,
            "particles": int(sum(len(t) for t in true)),
            "inside": int(sum(i.sum() for i in inside)), "wall_s": time.perf_counter() - start}
    if args.out:
        write_results(args.out, rows, meta)
    emit({k: v for k, v in meta.items() if k != "machine"}
         | {f"{name.replace(' ', '_')}_{k}": v for name, r in rows.items() for k, v in r.items()})


if __name__ == "__main__":
    main()
