"""Locating the shipped macromolecular structures (PDB models and 10 Å maps)."""

from __future__ import annotations

import os
from pathlib import Path

from dsmscale.errors import InputError

#: The 22 classes of the benchmark datasets A and B (DSM-Net's Table 1 set, our structures).
STANDARD_CLASSES = (
    "1BXN", "1QVR", "1S3X", "1U6G", "2CG9", "3CF3", "3D2F", "3GL1", "3H84", "3QM1", "4CR2",
    "5MRC", "4V94", "1F1B", "1YG6", "2BYU", "2H12", "1W6T", "2BO9", "2GHO", "3J9I", "4V1W",
)


def default_structures_dir() -> Path:
    """``$DSMSCALE_STRUCTURES``, else ``shared/structures`` beside the checkout."""
    if env := os.environ.get("DSMSCALE_STRUCTURES"):
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "structures"


def find_structure(pdb_id: str, root: str | os.PathLike | None = None) -> Path:
    """The file for ``pdb_id``: an atomic model (``atomic/{id}.pdb.gz`` / ``.cif.gz``) if there
    is one, else a density map (``maps/*/{id}_10A.mrc``)."""
    root = Path(root) if root else default_structures_dir()
    if not root.is_dir():
        raise InputError(root, "structures folder does not exist (set DSMSCALE_STRUCTURES)")
    key = pdb_id.lower()
    for pattern in (f"atomic/{key}.pdb.gz", f"atomic/{key}.cif.gz", f"atomic/{key}.pdb",
                    f"atomic/{key}.cif", f"maps/*/{key}_10A.mrc"):
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    raise InputError(root, f"no atomic model or map for {pdb_id}")
