"""Density templates from atomic models (gemmi) or maps, centred on their centre of mass.

Atomic models: the biological assembly where the file defines one, hydrogens and waters removed,
atom masses (Da) deposited trilinearly on a grid of ``voxel_size_a``, then blurred to
``resolution_a`` with the Situs convention σ = R / (2√3). Units: Da per voxel, so a template's
sum is its mass.

Maps (10 Å): resampled to ``voxel_size_a`` if needed, blurred by the Gaussian that brings a map
of ``map_resolution_a`` to ``resolution_a``, clipped at 0, and scaled so that their maximum equals
that of an atomic template of the same blur with the plateau density of protein, ``PROTEIN_DA_A3``
(1/1.21 Da/Å³, the Matthews volume) times ``MAP_PEAK_FRACTION``. This is an interpretation: the
maps carry no absolute scale.

Every template is a cube of odd edge with the centre of mass at its central voxel. Templates are
cached as ``.npy`` under ``$DSMSCALE_CACHE`` (default ``~/.cache/dsmscale``).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from dsmscale.errors import InputError
from dsmscale.io.atomic import write_file_atomic

PROTEIN_DA_A3 = 1 / 1.21  # Da per Å³ of protein (1.21 Å³/Da)
#: Peak of a 4 nm-blurred MDa complex relative to the protein plateau density, as measured on our
#: largest atomic templates (20S proteasome 0.56, RuBisCO 0.71): maps are scaled to this peak.
MAP_PEAK_FRACTION = 0.65


@dataclass(frozen=True)
class Template:
    """A density template: ``density`` (z, y, x), Da per voxel, centre of mass at the centre."""

    name: str
    density: np.ndarray
    voxel_size_a: float
    mass_da: float
    source: str

    @property
    def radius_px(self) -> float:
        """Radius (voxels) of the sphere about the centre holding 99 % of the mass."""
        n = self.density.shape[0]
        r = np.linalg.norm(np.indices(self.density.shape) - n // 2, axis=0).ravel()
        order = np.argsort(r)
        cumulative = np.cumsum(self.density.ravel()[order])
        return float(r[order][np.searchsorted(cumulative, 0.99 * cumulative[-1])])

    def contour(self) -> float:
        """Density threshold whose enclosed volume is the molecular volume 1.21 Å³/Da × mass."""
        n_voxels = int(round(self.mass_da / PROTEIN_DA_A3 / self.voxel_size_a**3))
        values = np.sort(self.density.ravel())[::-1]
        return float(values[min(max(n_voxels, 1), values.size) - 1])


def situs_sigma_px(resolution_a: float, voxel_size_a: float) -> float:
    """Gaussian σ (voxels) of a map at ``resolution_a`` (Situs: σ = R / (2√3))."""
    return resolution_a / (2 * math.sqrt(3)) / voxel_size_a


def _atoms(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Atom positions (Å, x y z) and masses (Da) of the biological assembly."""
    import gemmi

    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as exc:
        raise InputError(path, f"cannot read atomic model ({exc})") from exc
    st.setup_entities()
    st.remove_hydrogens()
    st.remove_ligands_and_waters()
    model = st[0]
    if st.assemblies:
        model = gemmi.make_assembly(st.assemblies[0], model, gemmi.HowToNameCopiedChain.AddNumber)
    pos, mass = [], []
    for chain in model:
        for residue in chain:
            for atom in residue:
                pos.append((atom.pos.x, atom.pos.y, atom.pos.z))
                mass.append(atom.element.weight)
    if not pos:
        raise InputError(path, "atomic model has no atoms")
    return np.asarray(pos), np.asarray(mass)


def _cube_edge(radius_px: float, sigma_px: float) -> int:
    return 2 * int(math.ceil(radius_px + 3 * sigma_px + 2)) + 1


def _deposit(points_px: np.ndarray, weights: np.ndarray, edge: int) -> np.ndarray:
    """Trilinear splat of weighted points (z, y, x voxel coordinates) onto an edge³ grid."""
    grid = np.zeros((edge,) * 3, dtype=np.float64)
    base = np.floor(points_px).astype(np.int64)
    frac = points_px - base
    for corner in np.ndindex(2, 2, 2):
        offset = np.asarray(corner)
        w = weights * np.prod(np.where(offset, frac, 1 - frac), axis=1)
        idx = base + offset
        np.add.at(grid, tuple(idx.T), w)
    return grid


def atomic_template(path: Path, name: str, voxel_size_a: float, resolution_a: float) -> Template:
    pos, mass = _atoms(path)
    com = (pos * mass[:, None]).sum(0) / mass.sum()
    zyx = (pos - com)[:, ::-1] / voxel_size_a
    sigma = situs_sigma_px(resolution_a, voxel_size_a)
    edge = _cube_edge(np.linalg.norm(zyx, axis=1).max(), sigma)
    grid = _deposit(zyx + edge // 2, mass, edge)
    density = ndimage.gaussian_filter(grid, sigma, mode="constant").astype(np.float32)
    return Template(name, density, voxel_size_a, float(mass.sum()), str(path))


def map_template(path: Path, name: str, voxel_size_a: float, resolution_a: float,
                 map_resolution_a: float = 10.0) -> Template:
    import mrcfile

    with mrcfile.open(path, permissive=True) as mrc:
        data = np.asarray(mrc.data, dtype=np.float64)
        map_vs = float(mrc.voxel_size.x)
    if data.ndim != 3 or not np.isfinite(data).all() or data.max() <= 0:
        raise InputError(path, "density map must be a finite 3D volume with positive density")
    if abs(map_vs - voxel_size_a) > 1e-3 * voxel_size_a:
        data = ndimage.zoom(data, map_vs / voxel_size_a, order=1)
    data = np.clip(data, 0, None)
    extra = math.sqrt(max(situs_sigma_px(resolution_a, voxel_size_a) ** 2
                          - situs_sigma_px(map_resolution_a, voxel_size_a) ** 2, 0.0))
    com = np.asarray(ndimage.center_of_mass(data))
    r = np.linalg.norm(np.indices(data.shape) - com[:, None, None, None], axis=0)
    edge = _cube_edge(float(r[data > 1e-3 * data.max()].max()), extra)
    placed = ndimage.affine_transform(data, np.eye(3), offset=com - edge // 2,
                                      output_shape=(edge,) * 3, order=1)
    density = ndimage.gaussian_filter(placed, extra, mode="constant") if extra > 0 else placed
    density *= MAP_PEAK_FRACTION * PROTEIN_DA_A3 * voxel_size_a**3 / density.max()
    density = density.astype(np.float32)
    return Template(name, density, voxel_size_a, float(density.sum()), str(path))


def _cache_path(path: Path, voxel_size_a: float, resolution_a: float) -> Path:
    root = Path(os.environ.get("DSMSCALE_CACHE", Path.home() / ".cache" / "dsmscale"))
    digest = hashlib.md5(path.read_bytes()).hexdigest()[:10]
    return root / "templates" / f"{path.name}_{voxel_size_a:g}A_{resolution_a:g}A_{digest}_v1.npz"


def load_template(path: str | os.PathLike, name: str, voxel_size_a: float = 10.0,
                  resolution_a: float = 40.0) -> Template:
    """Template from an atomic model (``.pdb``/``.cif``, gz ok) or a map (``.mrc``), cached."""
    path = Path(path)
    cache = _cache_path(path, voxel_size_a, resolution_a)
    if cache.is_file():
        with np.load(cache) as f:
            return Template(name, f["density"], voxel_size_a, float(f["mass"]), str(path))
    if ".mrc" in path.suffixes or ".map" in path.suffixes:
        template = map_template(path, name, voxel_size_a, resolution_a)
    else:
        template = atomic_template(path, name, voxel_size_a, resolution_a)
    cache.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, density=template.density, mass=template.mass_da)

    write_file_atomic(cache, write)
    return template
