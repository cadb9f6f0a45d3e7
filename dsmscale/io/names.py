"""Names of inputs: a tomogram, its OME-Zarr store and its particle table share a file stem."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dsmscale.errors import InputError

MRC_SUFFIXES = (".mrc", ".map", ".rec", ".mrcs")
COMPRESSION_SUFFIXES = (".gz", ".bz2")
_NAMED_SUFFIXES = (".zarr", *MRC_SUFFIXES, ".star", ".csv", ".json")


def _uncompressed(name: str) -> str:
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def is_mrc(path: str | os.PathLike) -> bool:
    """An MRC file name (any case, optionally .gz or .bz2 compressed)."""
    return _uncompressed(Path(str(path).rstrip("/")).name.lower()).endswith(MRC_SUFFIXES)


def input_stem(path: str | os.PathLike) -> str:
    """The name a tomogram or table goes by: its file name without the format suffix (and
    compression suffix), e.g. ``TS_01`` for ``TS_01.mrc.bz2``, ``TS_01.zarr`` and ``TS_01.star``;
    a tomogram in a copick project (``ExperimentRuns/RUN/VoxelSpacing…/TYPE.zarr``) is its run."""
    parts = Path(str(path).rstrip("/")).parts
    if len(parts) >= 4 and parts[-4] == "ExperimentRuns" and parts[-2].startswith("VoxelSpacing"):
        return parts[-3]
    name = _uncompressed(parts[-1] if parts else "")
    for suffix in _NAMED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


#: What tools append to a tomogram's name in their tables: Warp's ``.tomostar`` (``TS_01.tomostar``,
#: ``TS_01.mrc.tomostar``) and volume suffixes (``TS_01.rec``, a path ``…/TS_01.mrc``).
_TABLE_NAME_SUFFIXES = (".tomostar", ".zarr", *MRC_SUFFIXES, ".st")


def tomogram_name(name_in_table: str) -> str:
    """The name a table's tomogram column (``rlnTomoName``, ``rlnMicrographName``, a copick
    run) gives a tomogram, as `input_stem` names tomogram files: the file name without folders,
    Warp's ``.tomostar`` and a volume suffix, e.g. ``TS_01`` for ``TS_01.tomostar``,
    ``/data/TS_01.mrc`` and ``TS_01.mrc.tomostar``. A RELION image reference ``…:mrc`` loses its
    ``:mrc``."""
    name = str(name_in_table).strip().removesuffix(":mrc")
    name = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for suffix in _TABLE_NAME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def by_stem(paths: list[str], kind: str) -> dict[str, str]:
    """``{stem: path}``; two inputs of one name would overwrite each other's outputs, so they
    are an error naming both."""
    named: dict[str, str] = {}
    for path in paths:
        stem = input_stem(path)
        if stem in named:
            raise InputError(path, f"{kind} name {stem!r} is also the name of {named[stem]}: "
                             "inputs are named by file stem, rename one")
        named[stem] = path
    return named


def distinct_names(raw: pd.Series, path) -> pd.Series:
    """`tomogram_name` of each raw name; two raw names that give one name (``/a/TS_01.mrc`` and
    ``/b/TS_01.mrc``) are an `InputError`, not one tomogram."""
    raw = raw.astype(str)
    names = {name: tomogram_name(name) for name in raw.unique()}
    seen: dict[str, str] = {}
    for original, name in names.items():
        if seen.setdefault(name, original) != original:
            raise InputError(path, f"names tomograms {seen[name]!r} and {original!r}, which "
                                   f"both go by {name!r}: rename one")
    return raw.map(names)
