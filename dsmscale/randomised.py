"""``dsmscale simulate-randomised``: simulated tomograms, each under its own drawn microscope and
sample conditions (`dsmscale.simulation.conditions`), brought in as a user's data would be.

Each tomogram is simulated at its drawn voxel size, SNR, defocus, Cs, tilt range and step,
thickness and crowding, and written as an MRC with a RELION 3.1-style STAR of its molecules
(true class, centre and RELION angles). `dsmscale.make_dataset` then cuts the boxes on the model's
grid (resampled as ``dsmscale run`` resamples) with mask and density targets from the class
templates, splitting whole tomograms. Layout of ``OUTPUT``::

    randomised.json               the config (ranges, classes, seed): a rerun must give the same
    tomograms/TS_000.mrc          the noisy tomogram at its drawn voxel size
    tomograms/TS_000.star         its molecules (pixels of that voxel size, RELION angles)
    tomograms/TS_000.json         what it drew and what it measured (written last: a tomogram
                                  with its JSON is done and skipped when the command is rerun)
    conditions.parquet            one row per tomogram: the JSONs as a table
    dataset/                      the training dataset (`dsmscale.io.dataset`), split by tomogram
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm.auto import tqdm

from dsmscale.config import JobConfig
from dsmscale.datasets import DatasetConfig, make_dataset
from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import write_star
from dsmscale.simulation.conditions import ConditionRanges, draw_conditions, tomogram_config
from dsmscale.simulation.dataset import truth_table
from dsmscale.simulation.structures import STANDARD_CLASSES, find_structure
from dsmscale.simulation.tomogram import TomogramConfig, simulate_tomogram


class RandomisedConfig(JobConfig):
    """``dsmscale simulate-randomised``: tomograms under drawn conditions → a dataset."""

    ranges: ConditionRanges = Field(default_factory=ConditionRanges)
    classes: tuple[str, ...] = Field(STANDARD_CLASSES, min_length=1, description="PDB/EMDB ids")
    lateral_nm: float = Field(400.0, gt=0, description="x and y extent of each tomogram in nm")
    n_tomograms: int = Field(24, ge=3, description="tomograms to simulate")
    seed: int = Field(0, description="tomogram t draws from seed (seed, t)")
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train/val/test shares of the particles, whole tomograms")
    resolution_a: float = Field(40.0, gt=0, description="template resolution in Å")
    structures_dir: str | None = Field(None, description="default: shared/structures")


def simulate_randomised(config: RandomisedConfig, output: str | os.PathLike,
                        progress: bool = True) -> dict:
    """Simulate ``config.n_tomograms`` tomograms into ``output`` (skipping those already done)
    and build ``output/dataset``; returns the dataset's summary with the conditions drawn."""
    out = Path(output)
    (out / "tomograms").mkdir(parents=True, exist_ok=True)
    recorded, asked = out / "randomised.json", config.model_dump(mode="json")
    if recorded.is_file() and _draws(json.loads(recorded.read_text())) != _draws(asked):
        raise InputError(recorded, "this folder was simulated with another config: give a new "
                                   "output folder")
    write_file_atomic(recorded, lambda tmp: tmp.write_text(json.dumps(asked, indent=2)))
    base = TomogramConfig(classes=config.classes, resolution_a=config.resolution_a,
                          structures_dir=config.structures_dir)
    records = [simulate_one(config, base, t, out / "tomograms")
               for t in tqdm(range(config.n_tomograms), desc="simulate", unit="tomogram",
                             disable=not progress)]
    conditions = pd.DataFrame(records)
    conditions.to_parquet(out / "conditions.parquet", index=False)
    names = conditions["tomogram"]
    summary = make_dataset(DatasetConfig(
        tomograms=[str(out / "tomograms" / f"{n}.mrc") for n in names],
        particles=[str(out / "tomograms" / f"{n}.star") for n in names],
        templates={c: str(find_structure(c, config.structures_dir)) for c in config.classes},
        output=str(out / "dataset"), resolution_a=config.resolution_a,
        split_fractions=config.split_fractions, seed=config.seed, overwrite=True),
        progress=progress)
    return summary | {"conditions": records}


def _draws(config: dict) -> dict:
    """What fixes tomogram t: everything but the count, so a folder can grow (``--tomograms``
    more) and keep the tomograms it has."""
    return {k: v for k, v in config.items() if k != "n_tomograms"}


def simulate_one(config: RandomisedConfig, base: TomogramConfig, t: int, folder: Path) -> dict:
    """Tomogram ``t``: its MRC, STAR and JSON record in ``folder`` (read back if done)."""
    name = f"TS_{t:03d}"
    record_path = folder / f"{name}.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    rng = np.random.default_rng((config.seed, t))
    conditions = draw_conditions(config.ranges, rng)
    tomogram, templates = tomogram_config(conditions, base, config.lateral_nm)
    sim = simulate_tomogram(tomogram, seed=int(rng.integers(2**31)), templates=templates)
    noisy, measured_snr = sim.noisy(conditions.snr)
    write_volume(folder / f"{name}.mrc", noisy, tomogram.voxel_size_a)  # each atomic
    write_star(truth_table(sim, name, t * 1_000_000), folder / f"{name}.star")
    record = {"tomogram": name, **conditions.model_dump(), "shape_zyx": list(tomogram.shape_zyx),
              "copies_per_class": tomogram.copies_per_class, "molecules": len(sim.placement),
              "volume_fraction_placed": sim.placement.volume_fraction(tomogram.shape_zyx),
              "snr_measured": measured_snr}
    write_file_atomic(record_path, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
    return record
