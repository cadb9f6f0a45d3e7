import bz2
import gzip
import shutil

import mrcfile
import numpy as np
import pytest
import zarr
from ome_zarr_models.v04 import Image as ImageV04
from ome_zarr_models.v05 import Image as ImageV05

from dsmscale.conversion import ConvertConfig, convert_many, convert_mrc_to_ome_zarr
from dsmscale.io.mrc import write_volume
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.pyramid import downsample_mean


@pytest.fixture()
def odd_volume(tmp_path):
    vol = np.random.default_rng(0).normal(size=(37, 45, 51)).astype(np.float32)
    path = write_volume(tmp_path / "odd.mrc", vol, voxel_size_a=7.5, origin_a=(10.0, 20.0, 30.0))
    return path, vol


@pytest.mark.parametrize("zarr_format,model", [(3, ImageV05), (2, ImageV04)])
def test_convert_writes_valid_pyramid(tmp_path, odd_volume, zarr_format, model):
    path, vol = odd_volume
    cfg = ConvertConfig(levels=3, chunk=16, zarr_format=zarr_format)
    store = convert_mrc_to_ome_zarr(path, tmp_path / "odd.zarr", cfg, progress=False)
    model.from_zarr(zarr.open_group(str(store), mode="r"))  # NGFF validation by ome-zarr-models
    level0, level1, level2 = (open_tomogram(store, lv) for lv in range(3))
    assert level0.ngff_version == ("0.5" if zarr_format == 3 else "0.4")
    np.testing.assert_array_equal(level0.array[:], vol)
    assert level1.shape == (19, 23, 26) and level2.shape == (10, 12, 13)
    np.testing.assert_allclose(level1.array[:], downsample_mean(vol), rtol=1e-6)
    np.testing.assert_allclose(level2.array[:], downsample_mean(downsample_mean(vol)), rtol=1e-5)
    assert level0.voxel_size_a == pytest.approx(7.5) and level2.voxel_size_a == pytest.approx(30.0)
    assert level0.translation_a == pytest.approx((10.0, 20.0, 30.0))
    # level 1's first voxel averages voxels 0 and 1: its centre is half a voxel further on
    assert level1.translation_a == pytest.approx((13.75, 23.75, 33.75))
    assert level0.attrs["mrc_header"]["nx"] == 51


def test_odd_chunk_is_refused():
    """An odd chunk of z planes would be halved with a padded plane inside the volume."""
    with pytest.raises(ValueError, match="multiple of 2"):
        ConvertConfig(chunk=17)


def test_downsample_mean_odd_edges():
    block = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out = downsample_mean(block)
    assert out.shape == (2, 2, 2)
    assert out[0, 0, 0] == pytest.approx(block[:2, :2, :2].mean())
    assert out[1, 1, 1] == pytest.approx(block[2, 2, 2])


@pytest.mark.parametrize("opener,suffix", [(gzip.open, ".gz"), (bz2.open, ".bz2")])
def test_convert_compressed_mrc(tmp_path, odd_volume, opener, suffix):
    path, vol = odd_volume
    packed = tmp_path / f"odd.mrc{suffix}"
    with open(path, "rb") as src, opener(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    store = convert_mrc_to_ome_zarr(packed, tmp_path / "packed.zarr", ConvertConfig(levels=1),
                                    progress=False)
    np.testing.assert_array_equal(open_tomogram(store).array[:], vol)


def test_convert_integer_modes(tmp_path):
    data = np.random.default_rng(1).integers(-100, 100, size=(8, 9, 10)).astype(np.int16)
    path = tmp_path / "int.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 5.0
    store = convert_mrc_to_ome_zarr(path, tmp_path / "int.zarr", ConvertConfig(levels=1, chunk=16),
                                    progress=False)
    tomo = open_tomogram(store)
    assert tomo.array.dtype == np.float32
    np.testing.assert_array_equal(tomo.array[:], data.astype(np.float32))


def test_existing_output_is_kept_without_overwrite(tmp_path, odd_volume):
    path, _ = odd_volume
    store = convert_mrc_to_ome_zarr(path, tmp_path / "a.zarr", progress=False)
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(ValueError, match="output exists"):
        convert_mrc_to_ome_zarr(path, store, progress=False)
    assert sorted(p.name for p in store.rglob("*")) == before
    convert_mrc_to_ome_zarr(path, store, ConvertConfig(overwrite=True), progress=False)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_many_with_ray(tmp_path, odd_volume, ray_session):
    path, vol = odd_volume
    second = write_volume(tmp_path / "second.mrc", vol * 2, voxel_size_a=7.5)
    broken = tmp_path / "broken.mrc"
    broken.write_bytes(b"not an mrc" * 100)
    done, failed = convert_many([path, second, broken], tmp_path / "out",
                                ConvertConfig(levels=2, chunk=16))
    assert sorted(p.name for p in done) == ["odd.zarr", "second.zarr"]
    assert list(failed) == [str(broken)] and "broken.mrc" in failed[str(broken)]
    np.testing.assert_array_equal(open_tomogram(tmp_path / "out" / "second.zarr").array[:], vol * 2)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["odd.zarr", "second.zarr"]
