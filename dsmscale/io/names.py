"""Names of inputs: a tomogram, its OME-Zarr store and its particle table share a file stem."""

from __future__ import annotations

import os
from pathlib import Path

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
    compression suffix), e.g. ``TS_01`` for ``TS_01.mrc.bz2``, ``TS_01.zarr`` and ``TS_01.star``."""
    name = _uncompressed(Path(str(path).rstrip("/")).name)
    for suffix in _NAMED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
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
