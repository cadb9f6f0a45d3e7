"""A job's inputs: tomograms and particle tables found, named by file stem, paired, then
converted (MRC → OME-Zarr) and read. Naming needs no reading, so it is checked before the job
folder exists."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from dsmscale.conversion import convert_many
from dsmscale.errors import InputError
from dsmscale.io.job import JobFolder
from dsmscale.io.names import by_stem, is_mrc
from dsmscale.io.omezarr import Tomogram, open_tomogram
from dsmscale.io.particles import ParticleTable, check_one_tomogram, read_particles
from dsmscale.picking import pick_particles
from dsmscale.pipeline.config import RunConfig


def expand_inputs(patterns: list[str], kind: str) -> list[str]:
    """Globs expanded (local paths); URLs passed through; missing local paths are errors that
    say which ``kind`` of input is missing."""
    found = []
    for pattern in patterns:
        if "://" in pattern:
            found.append(pattern)
            continue
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches or not all(Path(m).exists() for m in matches):
            raise InputError(pattern, f"no such {kind}")
        found += matches
    return found


@dataclass(frozen=True)
class JobInputs:
    """The job's inputs by name: ``{name: tomogram path}`` and ``{name: particle table path}``
    (empty: the DoG picker finds the particles)."""

    tomograms: dict[str, str]
    tables: dict[str, str]


def name_inputs(config: RunConfig) -> JobInputs:
    """Every input exists and has a name of its own, and every tomogram has exactly one table
    (matched by file stem; or the single table of a single tomogram). Checked before the job
    folder exists, from names alone."""
    tomograms = by_stem(expand_inputs(config.tomograms, "tomogram"), "tomogram")
    if not config.particles:
        return JobInputs(tomograms, {})
    paths = expand_inputs(config.particles, "particle table")
    if len(tomograms) == 1:
        if len(paths) > 1:
            raise InputError(paths[1], f"a second particle table for the one tomogram "
                             f"(first: {paths[0]}); merge them or give one tomogram each")
        return JobInputs(tomograms, {next(iter(tomograms)): paths[0]})
    tables = by_stem(paths, "particle table")
    for name, path in tables.items():
        if name not in tomograms:
            raise InputError(path, f"no tomogram named {name!r} among {sorted(tomograms)}")
    missing = sorted(set(tomograms) - set(tables))
    if missing:
        raise InputError(None, f"no particle table for tomograms {missing}")
    return JobInputs(tomograms, tables)


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
    """One table per tomogram: read, or picked with the DoG picker."""
    if not inputs.tables:
        return {name: pick_particles(tomo, config.pick.model_copy(update={"level": tomo.level}),
                                     name=name) for name, tomo in tomograms.items()}
    tables = {}
    for name, path in inputs.tables.items():
        full = open_tomogram(tomograms[name].source, 0)
        tables[name] = check_one_tomogram(read_particles(
            path, config.voxel_size_a, full.shape, full.voxel_size_a), path)
    return tables
