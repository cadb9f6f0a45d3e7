"""MRC files as EMDB ships them: permuted axes (MAPC/MAPR/MAPS other than 1, 2, 3) read as
(z, y, x), anisotropic voxels kept per axis in the OME-Zarr ``scale``, and both cut at 10 Å
where a blob's Å position says."""

from __future__ import annotations

import itertools
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import zarr

from dsmscale.errors import InputError
from dsmscale.extraction import extract_subtomograms
from dsmscale.io.mrc import open_volume, zyx_axes
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.particles import make_particles
from dsmscale.io.pyramid import ConvertConfig, convert_mrc_to_ome_zarr

#: An EMDB-like anisotropic voxel, (x, y, z) Å.
VOXEL_XYZ = (0.448, 0.3925, 0.459)
PERMUTATIONS = list(itertools.permutations((1, 2, 3)))


def write_mrc(path: Path, volume_zyx: np.ndarray, voxel_xyz, axes=(1, 2, 3),
              origin_xyz=(0.0, 0.0, 0.0)) -> Path:
    """``volume_zyx`` (physical z, y, x) stored with columns, rows, sections along the physical
    axes ``axes`` = (mapc, mapr, maps) (1 = x, 2 = y, 3 = z), as EMDB does: the header's
    ``mx, my, mz`` and ``cella`` along x, y, z."""
    mapc, mapr, maps = axes
    physical = {3: 0, 2: 1, 1: 2}  # axis of volume_zyx holding x (1), y (2), z (3)
    stored = volume_zyx.transpose(physical[maps], physical[mapr], physical[mapc])
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(stored, dtype=np.float32))
        header = mrc.header
        header.mapc, header.mapr, header.maps = mapc, mapr, maps
        nz, ny, nx = volume_zyx.shape
        header.mx, header.my, header.mz = nx, ny, nz
        header.cella = (voxel_xyz[0] * nx, voxel_xyz[1] * ny, voxel_xyz[2] * nz)
        header.origin = origin_xyz
    return path


def test_the_transpose_follows_the_header():
    assert zyx_axes(1, 2, 3) == (0, 1, 2)
    assert zyx_axes(3, 2, 1) == (2, 1, 0)  # columns are z, sections x
    assert zyx_axes(2, 3, 1) == (1, 2, 0)  # columns y, rows z, sections x → (z, y, x) = (1, 2, 0)
    with pytest.raises(ValueError, match="is not an order of 1, 2, 3"):
        zyx_axes(1, 1, 3)


@pytest.mark.parametrize("axes", PERMUTATIONS, ids=lambda a: "".join(map(str, a)))
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_permuted_anisotropic_mrc_converts_to_zyx_with_per_axis_scale(tmp_path, axes,
                                                                       zarr_format):
    volume = np.random.default_rng(1).normal(size=(6, 8, 10)).astype(np.float32)
    mrc = write_mrc(tmp_path / "emdb.map", volume, VOXEL_XYZ, axes, origin_xyz=(1.0, 2.0, 3.0))
    with open_volume(mrc) as vol:
        np.testing.assert_array_equal(vol.data, volume)
        np.testing.assert_allclose(vol.voxel_size_zyx_a, VOXEL_XYZ[::-1], rtol=1e-6)
        assert vol.origin_a == (3.0, 2.0, 1.0)
    store = convert_mrc_to_ome_zarr(mrc, tmp_path / "emdb.zarr",
                                    ConvertConfig(chunk=16, levels=2, zarr_format=zarr_format),
                                    progress=False)
    np.testing.assert_array_equal(zarr.open_group(str(store), mode="r")["0"][:], volume)
    tomo = open_tomogram(store)
    np.testing.assert_allclose(tomo.voxel_size_zyx_a, VOXEL_XYZ[::-1], rtol=1e-6)
    level1 = open_tomogram(store, 1)
    np.testing.assert_allclose(level1.voxel_size_zyx_a, np.multiply(VOXEL_XYZ[::-1], 2), rtol=1e-6)
    # level 1's voxel 0 is the centre of level 0's first 2×2×2 block, per axis
    np.testing.assert_allclose(level1.translation_a, np.add((3.0, 2.0, 1.0),
                                                            np.multiply(VOXEL_XYZ[::-1], 0.5)))
    assert not tomo.is_isotropic
    with pytest.raises(InputError, match=r"anisotropic voxels \(z, y, x = 0.459, 0.3925, 0.448 Å\)"):
        tomo.voxel_size_a  # noqa: B018 - one size where there are three is an error
def test_a_broken_axis_order_is_one_line(tmp_path):
    mrc = write_mrc(tmp_path / "bad.mrc", np.zeros((4, 5, 6), np.float32), (1.0,) * 3)
    with mrcfile.open(mrc, mode="r+", permissive=True) as f:
        f.header.mapr = 1
    with pytest.raises(InputError, match="mapc, mapr, maps = 1, 1, 3 is not an order"), \
            open_volume(mrc):
        pass


@pytest.mark.parametrize("axes", [(1, 2, 3), (3, 1, 2), (2, 3, 1)],
                         ids=lambda a: "".join(map(str, a)))
def test_a_blob_in_a_permuted_anisotropic_map_lands_at_its_angstrom_position(tmp_path, axes):
    """A Gaussian blob (σ 25 Å) at a known Å position in a map of (x, y, z) = 7.5 × 9 × 12 Å
    voxels, stored with permuted axes: cut at 10 Å around a particle given in Å, its centroid
    is at box index B // 2 + (blob − particle) / 10 Å within 0.1 voxel."""
    voxel_xyz = (7.5, 9.0, 12.0)
    voxel_zyx = np.array(voxel_xyz[::-1])
    shape = tuple(int(n) for n in np.round(640 / voxel_zyx))
    blob_a = np.array([301.3, 287.9, 312.6])  # z, y, x from voxel 0
    grid = np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, voxel_zyx, strict=True)],
                       indexing="ij")
    volume = np.exp(-sum((g - b) ** 2 for g, b in zip(grid, blob_a, strict=True)) / (2 * 25.0**2))
    mrc = write_mrc(tmp_path / "blob.map", volume, voxel_xyz, axes)
    store = convert_mrc_to_ome_zarr(mrc, tmp_path / "blob.zarr", ConvertConfig(chunk=32),
                                    progress=False)
    particle_a = blob_a + np.array([-9.2, 14.4, 6.1])
    table = make_particles(particle_a[None], "blob", 1.0)  # Å, as copick gives them
    (batch,) = extract_subtomograms(store, table, box=40, resample_to_a=10.0)
    box = batch.boxes[0].astype(np.float64)
    centroid = [np.sum(box * g) / box.sum() for g in np.indices(box.shape)]
    np.testing.assert_allclose(centroid, 20 + (blob_a - particle_a) / 10.0, atol=0.1)
    np.testing.assert_allclose(batch.centres_px[0], particle_a / voxel_zyx)  # level pixels
