"""A job's inputs: tomograms found and named by file stem, particle tables read and split by the
tomograms they name (one table for many tomograms, several tables, a copick project), then the
tomograms converted (MRC → OME-Zarr) and the particles put on each tomogram's grid. Names are
checked before the job folder exists."""

from __future__ import annotations

import glob
from dataclasses import dataclass, replace
from pathlib import Path

from dsmscale.conversion import convert_many
from dsmscale.errors import InputError
from dsmscale.io.copick_project import project_tomograms
from dsmscale.io.job import JobFolder
from dsmscale.io.names import by_stem, is_mrc
from dsmscale.io.omezarr import Tomogram
from dsmscale.io.particles import ParticleTable, concat_tables, read_particles
from dsmscale.io.particles.copick import is_copick_config
from dsmscale.picking import pick_particles
from dsmscale.pipeline.config import InputsConfig, RunConfig


def expand_inputs(patterns: list[str], kind: str, config: InputsConfig | None = None
                  ) -> list[str]:
    """Globs expanded (local paths), a copick project config to its tomograms; URLs passed
    through; missing local paths are errors that say which ``kind`` of input is missing."""
    found = []
    for pattern in patterns:
        if "://" in pattern:
            found.append(pattern)
            continue
        if is_copick_config(Path(pattern)):  # a copick project: its tomograms
            found += (project_tomograms(pattern, config.copick_tomogram_type,
                                        config.copick_voxel_spacing_a)
                      if kind == "tomogram" and config else [pattern])
            continue
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches or not all(Path(m).exists() for m in matches):
            raise InputError(pattern, f"no such {kind}")
        found += matches
    return found


@dataclass(frozen=True)
class JobInputs:
    """The job's inputs by name: ``{name: tomogram path}`` and ``{name: particles}`` (each
    tomogram's rows of every table, in the table's own pixel size). A tomogram without
    particles is picked with the DoG picker, or skipped (``without_particles``)."""

    tomograms: dict[str, str]
    particles: dict[str, ParticleTable]


def name_inputs(config: InputsConfig) -> JobInputs:
    """Every input exists and has a name of its own; the tables are read and split by tomogram
    (``rlnTomoName``, a copick run, …), and every tomogram they name is among the tomograms
    given. With one tomogram given, a table of one tomogram goes with it, whatever its name.
    Checked before the job folder exists."""
    tomograms = by_stem(expand_inputs(config.tomograms, "tomogram", config), "tomogram")
    if not config.particles:
        return JobInputs(tomograms, {})
    paths = expand_inputs(config.particles, "particle table")
    tables = {path: read_particles(path, config.voxel_size_a, config.class_column,
                                   config.tomogram_set) for path in paths}
    by_name: dict[str, list[ParticleTable]] = {}
    for path, table in tables.items():
        if len(tomograms) == 1 and table.df["tomogram"].nunique() == 1:
            table = replace(table, df=table.df.assign(tomogram=next(iter(tomograms))))
        for name, rows in table.df.groupby("tomogram", sort=True):
            if name not in tomograms:
                raise InputError(path, f"names tomogram {name!r}, which is not among the "
                                       f"tomograms given ({_some(tomograms)})")
            by_name.setdefault(str(name), []).append(replace(table, df=rows))
    return JobInputs(tomograms, {name: concat_tables(parts) for name, parts in by_name.items()})


def _some(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f", … {len(names)} in all" if len(names) > 5 else "")


def resolve_tomograms(inputs: JobInputs, config: RunConfig, job: JobFolder) -> dict[str, str]:
    """{name: OME-Zarr store}; MRC inputs are converted (in parallel) under JOB/tomograms."""
    mrcs = {stem: p for stem, p in inputs.tomograms.items() if is_mrc(p)}
    todo = [p for stem, p in mrcs.items() if not job.converted(stem).exists()]
    if todo:
        _, failed = convert_many(todo, job.tomograms, config.convert)
        if failed:
            raise InputError(next(iter(failed)), next(iter(failed.values())).split(": ", 1)[-1])
    return inputs.tomograms | {stem: str(job.converted(stem)) for stem in mrcs}


def resolve_particles(inputs: JobInputs, config: RunConfig,
                      tomograms: dict[str, Tomogram]) -> dict[str, ParticleTable]:
    """Each tomogram's particles: read from the tables (in their own pixel size: planning puts
    them on the tomogram's grid through Å), or picked with the DoG picker (a tomogram no table
    names, when ``without_particles`` is 'pick'; 'skip' leaves it out of the job)."""
    tables = {}
    for name, tomo in tomograms.items():
        if name in inputs.particles:
            tables[name] = inputs.particles[name]
        elif not inputs.particles or config.without_particles == "pick":
            tables[name] = pick_particles(tomo, config.pick.model_copy(
                update={"level": tomo.level}), name=name)
    return tables
