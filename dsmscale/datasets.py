"""``dsmscale dataset``: a training dataset from the user's own tomograms, labelled particle
tables and class templates, in the format the simulator writes (`dsmscale.io.dataset`), as the
paper made its experimental dataset C.

For every labelled particle: its box on the model's grid (cut and resampled as ``dsmscale run``
cuts them: `dsmscale.extraction`), its class, and — where its class has a template and the
particle an orientation — the target's density (the template rotated by the particle's RELION
orientation and placed at its sub-voxel centre, `dsmscale.simulation.render`) and mask (that
density above the contour enclosing the molecular volume, or a stated contour). A box without
them is marked ``has_targets`` False: training then learns only its class
(`dsmscale.training.losses`). Templates are MRC maps at any voxel size or PDB/mmCIF models,
rendered by the simulator's density code (`dsmscale.simulation.density.load_template`: centred
on their centre of mass, blurred to ``resolution_a``).

Splits are made per tomogram by default: whole tomograms go to train, val and test, balanced by
their particle counts, so no tomogram feeds both training and test (``split_by: particle`` splits
particles, stratified by class, as the simulator does).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm.auto import tqdm

from dsmscale.conversion import convert_many
from dsmscale.errors import InputError
from dsmscale.extraction import choose_level, cut_boxes, group_by_slab
from dsmscale.geometry import centres_in_box, pixels_to_angstrom
from dsmscale.io.atomic import build_output_dir
from dsmscale.io.dataset import TABLE, create_dataset_arrays
from dsmscale.io.names import input_stem, is_mrc
from dsmscale.io.omezarr import Tomogram, open_tomogram
from dsmscale.io.particles import ANGLES, ParticleTable
from dsmscale.pipeline.config import InputsConfig
from dsmscale.pipeline.inputs import name_inputs
from dsmscale.resampling import needs_resampling
from dsmscale.rotations import relion_matrices
from dsmscale.simulation.dataset import assign_splits
from dsmscale.simulation.density import Template, load_template
from dsmscale.simulation.render import render_template

SPLITS = ("train", "val", "test")


class DatasetConfig(InputsConfig):
    """``dsmscale dataset``: tomograms + labelled tables (+ templates) → a dataset folder."""

    output: str = Field(description="dataset folder to write")
    templates: dict[str, str] = Field(
        default_factory=dict, description="class name -> template: an MRC map (any voxel size) "
        "or a PDB/mmCIF model; classes without one get classification targets only")
    contours: dict[str, float] = Field(
        default_factory=dict, description="class name -> mask contour of its template (Da per "
        "voxel at the boxes' voxel size); default: the contour enclosing the molecular volume")
    box: int = Field(40, ge=8, description="box edge in voxels (the model's)")
    box_voxel_a: float = Field(10.0, gt=0, description="voxel size of the boxes in Å (the "
                               "model's: tomograms are resampled to it)")
    resolution_a: float = Field(40.0, gt=0, description="templates are blurred to this")
    edge: Literal["pad", "skip"] = Field("skip", description="boxes crossing the volume edge")
    split_by: Literal["tomogram", "particle"] = "tomogram"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = Field(0, description="seed of the split")
    overwrite: bool = False


def make_dataset(config: DatasetConfig, progress: bool = True) -> dict:
    """Build the dataset folder ``config.output`` (whole or not at all); returns its summary."""
    inputs = name_inputs(config)
    if not inputs.particles:
        raise InputError(None, "a dataset needs labelled particle tables (--particles)")
    for name, table in inputs.particles.items():
        if "class_name" not in table.df.columns:
            raise InputError(name, "particles without class labels (name the column with "
                                   "--class-column)")
    classes = sorted({c for t in inputs.particles.values() for c in t.df["class_name"].unique()})
    unknown = sorted(set(config.templates) - set(classes))
    if unknown:
        raise InputError(config.templates[unknown[0]], f"template for class {unknown[0]!r}, "
                                                       "which no table holds")
    if config.split_by == "tomogram" and len(inputs.particles) < 3:
        raise InputError(None, f"{len(inputs.particles)} tomogram(s) cannot be split into "
                               "train, val and test by tomogram: give more, or split_by "
                               "'particle'")
    templates = {name: _template(path, name, config) for name, path in config.templates.items()}
    summary: dict = {}

    def build(tmp: Path) -> None:
        summary.update(_build(config, inputs, classes, templates, tmp, progress))

    build_output_dir(config.output, config.overwrite, build)
    return summary


def _template(path: str, name: str, config: DatasetConfig) -> Template:
    """A class's template on the boxes' grid; a file that is no readable map or model is an
    `InputError` naming it."""
    try:
        return load_template(path, name, config.box_voxel_a, config.resolution_a)
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(path, f"not a readable template for class {name!r} "
                               f"({str(exc).splitlines()[0]})") from exc


def _build(config: DatasetConfig, inputs, classes: list[str], templates: dict[str, Template],
           out: Path, progress: bool) -> dict:
    start = time.perf_counter()
    arrays = create_dataset_arrays(out, config.box, config.box_voxel_a)
    stores = _stores(inputs.tomograms, out / ".tomograms")
    rows = []
    for name in tqdm(sorted(inputs.particles), desc="dataset", unit="tomogram",
                     disable=not progress):
        rows.append(_add_tomogram(config, name, stores[name], inputs.particles[name], classes,
                                  templates, arrays, sum(len(r) for r in rows)))
    table = pd.concat(rows, ignore_index=True)
    table["split"] = (tomogram_splits(table, config.split_fractions, config.seed)
                      if config.split_by == "tomogram" else
                      assign_splits(table["class_name"].to_numpy(), config.split_fractions, (),
                                    config.seed))
    table.to_parquet(out / TABLE, index=False)
    counts = table.groupby(["class_name", "split"]).size().unstack(fill_value=0)
    summary = {"config": config.model_dump(mode="json"), "n_subtomograms": len(table),
               "classes": classes, "with_targets": int(table["has_targets"].sum()),
               "per_class": {c: {s: int(v) for s, v in row.items()} for c, row in counts.iterrows()},
               "tomograms_per_split": {s: sorted(table.loc[table["split"] == s, "tomogram"].unique())
                                       for s in SPLITS},
               "wall_s": time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(out / ".tomograms", ignore_errors=True)
    return summary


def _stores(tomograms: dict[str, str], folder: Path) -> dict[str, str]:
    """OME-Zarr stores of the tomograms: MRC files converted (into ``folder``, removed when the
    dataset is done)."""
    mrcs = {name: path for name, path in tomograms.items() if is_mrc(path)}
    if mrcs:
        done, failed = convert_many(list(mrcs.values()), folder)
        if failed:
            raise InputError(next(iter(failed)), next(iter(failed.values())).split(": ", 1)[-1])
    return tomograms | {name: str(folder / f"{input_stem(path)}.zarr")
                        for name, path in mrcs.items()}


def _add_tomogram(config: DatasetConfig, name: str, store: str, table: ParticleTable,
                  classes: list[str], templates: dict[str, Template], arrays: dict,
                  first_index: int) -> pd.DataFrame:
    """Append one tomogram's boxes and targets to ``arrays``; returns its table rows."""
    full = open_tomogram(store, 0)
    tomo = open_tomogram(store, choose_level(None, full.pyramid_voxel_zyx_a, config.box_voxel_a))
    grid = config.box_voxel_a if needs_resampling(tomo.voxel_size_zyx_a,
                                                  config.box_voxel_a) else None
    groups = group_by_slab(tomo, table, config.box, config.edge, resample_to_a=grid)
    rows = table.df.set_index("particle_id")
    parts = []
    for group in groups.groups:
        for batch in cut_boxes(tomo, group, config.box, 64, normalise=False, resample_to_a=grid):
            meta = rows.loc[batch.particle_id]
            density, mask, has = _targets(meta, batch.centres_px, templates, config, grid)
            arrays["subtomograms"].append(batch.boxes)
            arrays["density"].append(density)
            arrays["mask"].append(mask)
            parts.append(_rows(meta, batch, has, name, tomo, classes))
    if not parts:
        raise InputError(store, f"no box of {name}'s particles lies inside the volume "
                                "(edge 'skip'): use edge 'pad'")
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "index", np.arange(first_index, first_index + len(frame)))
    return frame


def _targets(meta: pd.DataFrame, centres_px: np.ndarray, templates: dict[str, Template],
             config: DatasetConfig, grid: float | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target densities, masks and which boxes have them, for a batch's particles: the class
    template turned by the particle's orientation onto its centre in the box (the box's centre
    voxel ``B // 2`` when resampled, else the sub-voxel offset `centres_in_box` gives)."""
    box = config.box
    density = np.zeros((len(meta), box, box, box), np.float32)
    mask = np.zeros(density.shape, np.uint8)
    oriented = (np.isfinite(meta[ANGLES].to_numpy(float)).all(axis=1)
                if set(ANGLES) <= set(meta.columns) else np.zeros(len(meta), bool))
    has = oriented & meta["class_name"].isin(list(templates)).to_numpy()
    if not has.any():
        return density, mask, has
    centres = (np.full((len(meta), 3), float(box // 2)) if grid is not None
               else centres_in_box(centres_px, box))
    matrices = relion_matrices(np.nan_to_num(meta[ANGLES].to_numpy(float)))
    for i in np.flatnonzero(has):
        template = templates[meta["class_name"].iloc[i]]
        render_template(density[i], np.zeros(3, int), template.density, matrices[i], centres[i])
        contour = config.contours.get(template.name, template.contour())
        mask[i] = density[i] > contour
    return density, mask, has


def _rows(meta: pd.DataFrame, batch, has: np.ndarray, name: str, tomo: Tomogram,
          classes: list[str]) -> pd.DataFrame:
    """A batch's rows of the dataset table: ids, tomogram, class, centre (pixels of the level
    cut from, and Å), orientation, whether it has targets and was padded."""
    frame = pd.DataFrame({"particle_id": batch.particle_id, "tomogram": name,
                          "class_name": meta["class_name"].astype(str).to_numpy()})
    frame["class_index"] = frame["class_name"].map({c: i for i, c in enumerate(classes)})
    centres_a = pixels_to_angstrom(batch.centres_px, np.asarray(tomo.voxel_size_zyx_a),
                                   tomo.level)
    for i, axis in enumerate("zyx"):
        frame[axis] = batch.centres_px[:, i]
        frame[f"{axis}_a"] = centres_a[:, i]
    for column in (c for c in ANGLES if c in meta.columns):
        frame[column] = meta[column].to_numpy()
    frame["has_targets"], frame["padded"] = has, batch.padded
    return frame


def tomogram_splits(table: pd.DataFrame, fractions, seed: int) -> np.ndarray:
    """A split per row such that each tomogram's rows share one: tomograms in a seeded random
    order, each to the split furthest below its share of the particles (test and val get one
    tomogram first, so each split has one where there are three or more)."""
    counts = table.groupby("tomogram").size()
    if len(counts) < 3:
        raise InputError(None, f"{len(counts)} tomogram(s) cannot be split into train, val "
                               "and test by tomogram: give more, or split_by 'particle'")
    order = np.random.default_rng(seed).permutation(counts.index.to_numpy())
    assigned = {order[0]: "test", order[1]: "val"}
    done = {"train": 0, "val": int(counts[order[1]]), "test": int(counts[order[0]])}
    total = int(counts.sum())
    for name in order[2:]:
        deficit = {s: f - done[s] / total for s, f in zip(SPLITS, fractions, strict=True)}
        split = max(SPLITS, key=lambda s: deficit[s])
        assigned[name] = split
        done[split] += int(counts[name])
    return table["tomogram"].map(assigned).to_numpy()
