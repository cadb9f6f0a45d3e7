"""OME-Zarr tomograms: NGFF 0.4 on Zarr v2 and NGFF 0.5 on Zarr v3, written and read.

Axes are (z, y, x) in angstrom. Level ``l`` of the pyramid is the 2×2×2 mean of level ``l-1``, so
its ``scale`` is ``voxel_size × 2**l`` and its ``translation`` is the MRC origin plus
`dsmscale.geometry.level_offset` voxels (the centre of the first averaged block). The voxel size
may differ per axis (NGFF's ``scale`` is per axis; EMDB maps can be anisotropic): `Tomogram`
carries ``voxel_size_zyx_a``, and its ``voxel_size_a`` is the one isotropic size, an
`InputError` for an anisotropic volume. Metadata is validated on read with ome-zarr-models.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Literal

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from dsmscale.errors import InputError
from dsmscale.geometry import level_offset

Codec = Literal["lz4", "zstd", "blosclz", "zlib", "none"]

if os.environ.get("DSMSCALE_ZARRS", "1") != "0":
    # The Rust codec pipeline decodes/encodes chunks in parallel: 2-4x faster bulk I/O here.
    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})


def compressor_for(zarr_format: int, codec: Codec, clevel: int):
    """The Blosc compressor object the given Zarr format accepts (None for no compression)."""
    if codec == "none":
        return None
    if zarr_format == 3:
        return BloscCodec(cname=codec, clevel=clevel, shuffle="shuffle")
    return numcodecs.Blosc(cname=codec, clevel=clevel, shuffle=numcodecs.Blosc.SHUFFLE)


def level_shapes(shape: tuple[int, ...], n_levels: int) -> list[tuple[int, ...]]:
    """Shapes of a 2×2×2 mean pyramid: each level is ceil(previous / 2)."""
    shapes = [tuple(int(n) for n in shape)]
    for _ in range(1, n_levels):
        shapes.append(tuple((n + 1) // 2 for n in shapes[-1]))
    return shapes


def voxel_sizes_zyx(voxel_size_a: float | tuple[float, float, float]) -> tuple[float, ...]:
    """One voxel size (Å) or three, (z, y, x), as three floats."""
    return tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_size_a, float), (3,)))


def multiscales_metadata(
    n_levels: int, voxel_size_a: float | tuple[float, float, float],
    origin_a: tuple[float, float, float], name: str, version: Literal["0.4", "0.5"],
) -> dict:
    """The NGFF ``multiscales`` entry for a (z, y, x) pyramid in Å (``voxel_size_a`` one size or
    three, z, y, x)."""
    voxels = voxel_sizes_zyx(voxel_size_a)
    datasets = []
    for level in range(n_levels):
        datasets.append({
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [v * 2.0**level for v in voxels]},
                {"type": "translation", "translation": [
                    o + level_offset(level) * v for o, v in zip(origin_a, voxels, strict=True)]},
            ],
        })
    entry = {
        "name": name,
        "axes": [{"name": ax, "type": "space", "unit": "angstrom"} for ax in "zyx"],
        "datasets": datasets,
        "type": "mean",
        "metadata": {"method": "2x2x2 block mean", "description": "dsmscale pyramid"},
    }
    if version == "0.4":
        entry["version"] = "0.4"
    return entry


def create_pyramid(
    path: str | os.PathLike, shape: tuple[int, int, int], *, n_levels: int, chunk: int,
    voxel_size_a: float | tuple[float, float, float], origin_a: tuple[float, float, float],
    zarr_format: Literal[2, 3], codec: Codec, clevel: int, name: str, extra_attrs: dict | None = None,
) -> list[zarr.Array]:
    """Create an empty OME-Zarr image group with one float32 array per pyramid level
    (``voxel_size_a``: level 0's voxel size in Å, one or per axis z, y, x)."""
    version = "0.5" if zarr_format == 3 else "0.4"
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    multiscale = multiscales_metadata(n_levels, voxel_size_a, origin_a, name, version)
    attrs = {"dsmscale": extra_attrs or {}}
    if zarr_format == 3:
        attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        attrs["multiscales"] = [multiscale]
    group.attrs.update(attrs)
    compressor = compressor_for(zarr_format, codec, clevel)
    arrays = []
    for level, level_shape in enumerate(level_shapes(shape, n_levels)):
        kwargs = {"dimension_names": ("z", "y", "x")} if zarr_format == 3 else {
            "chunk_key_encoding": {"name": "v2", "separator": "/"}}
        arrays.append(group.create_array(
            str(level), shape=level_shape, chunks=(min(chunk, level_shape[0]),) + (chunk,) * 2,
            dtype="float32", compressors=compressor, fill_value=0.0, **kwargs))
    return arrays


@dataclass(frozen=True)
class Tomogram:
    """One pyramid level of an OME-Zarr tomogram, opened lazily.

    Attributes:
        source: path or URL of the store.
        array: the zarr array of this level, indexed (z, y, x).
        level: pyramid level (0 = full resolution).
        voxel_size_zyx_a: voxel size of this level in Å per axis, (z, y, x).
        translation_a: position of voxel (0, 0, 0) of this level in Å, (z, y, x).
        ngff_version: "0.4" or "0.5".
        attrs: the group's dsmscale attributes (e.g. the MRC header).
        pyramid_voxel_zyx_a: voxel sizes (z, y, x, Å) of every level of the store's pyramid.
    """

    source: str
    array: zarr.Array
    level: int
    voxel_size_zyx_a: tuple[float, float, float]
    translation_a: tuple[float, float, float]
    ngff_version: str
    attrs: dict
    pyramid_voxel_zyx_a: tuple[tuple[float, float, float], ...] = ()

    @property
    def is_isotropic(self) -> bool:
        """Whether the voxel sizes agree within 0.1 %."""
        return bool(np.ptp(self.voxel_size_zyx_a) <= 1e-3 * max(self.voxel_size_zyx_a))

    @property
    def voxel_size_a(self) -> float:
        """The isotropic voxel size of this level in Å.

        Raises:
            InputError: the voxels are anisotropic (where one size is needed, e.g. to read a
                table in pixels; extraction resamples them to an isotropic grid instead).
        """
        if not self.is_isotropic:
            sizes = ", ".join(f"{v:g}" for v in self.voxel_size_zyx_a)
            raise InputError(self.source, f"anisotropic voxels (z, y, x = {sizes} Å) where one "
                                          "voxel size is needed (resample the volume first)")
        return self.voxel_size_zyx_a[0]


    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def chunks(self) -> tuple[int, int, int]:
        return tuple(self.array.chunks)  # type: ignore[return-value]

    @property
    def validated_voxels(self) -> ValidatedVoxels:
        """This level's voxels, read with the checks of `ValidatedVoxels`."""
        return ValidatedVoxels(self.array, self.source)


@dataclass(frozen=True)
class ValidatedVoxels:
    """Array-like reads of a tomogram level (``[z, y, x]`` slices; what `dask.array.from_array`
    needs) that raise `InputError`, naming the store and the region, when a chunk cannot be
    decoded or the voxels read hold NaN or Inf, instead of passing them on to a model."""

    array: zarr.Array
    source: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def __getitem__(self, key) -> np.ndarray:
        where = _region_text(key)
        try:
            voxels = np.asarray(self.array[key])
        except (ValueError, RuntimeError, zlib.error) as exc:  # what codecs raise for bad bytes
            raise InputError(self.source, f"cannot decode the chunks of {where} "
                                          f"({str(exc).splitlines()[0]})") from exc
        if not np.isfinite(voxels).all():
            n = int(np.count_nonzero(~np.isfinite(voxels)))
            raise InputError(self.source, f"{n} NaN/Inf voxel{'s' * (n != 1)} in {where}")
        return voxels


def _region_text(key) -> str:
    """'z 0–64, y 0–128' for a tuple of slices (voxels; ends exclusive, as in numpy; an axis
    taken whole is left out)."""
    key = key if isinstance(key, tuple) else (key,)
    parts = []
    for axis, k in zip("zyx", key, strict=False):
        if isinstance(k, slice) and (k.start is not None or k.stop is not None):
            parts.append(f"{axis} {k.start or 0}–{'end' if k.stop is None else k.stop}")
        elif not isinstance(k, slice):
            parts.append(f"{axis} {k}")
    return ", ".join(parts) if parts else "the whole level"


def _multiscale_entry(source: str, group: zarr.Group) -> tuple[dict, str]:
    from ome_zarr_models import open_ome_zarr

    try:
        open_ome_zarr(group)  # validates the metadata against the NGFF schema
    except Exception as exc:  # noqa: BLE001 - ome-zarr-models raises several types
        raise InputError(source, f"not a valid OME-Zarr image ({str(exc).splitlines()[0]})") from exc
    attrs = group.attrs.asdict()
    if "ome" in attrs:
        return attrs["ome"]["multiscales"][0], attrs["ome"]["version"]
    return attrs["multiscales"][0], attrs["multiscales"][0].get("version", "0.4")


def open_tomogram(source: str | os.PathLike, level: int = 0) -> Tomogram:
    """Open one level of an OME-Zarr tomogram (NGFF 0.4 or 0.5; local path or fsspec URL).

    Raises:
        InputError: not a Zarr group, invalid OME-Zarr metadata, non-spatial or non-Å axes, or
            a level the pyramid does not have.
    """
    source = str(source)
    try:
        group = zarr.open_group(source, mode="r")
    except Exception as exc:  # noqa: BLE001
        raise InputError(source, f"cannot open as a Zarr group ({exc})") from exc
    entry, version = _multiscale_entry(source, group)
    axes = [(a["name"], a.get("unit")) for a in entry["axes"]]
    if [a[0] for a in axes] != ["z", "y", "x"]:
        raise InputError(source, f"expected axes z, y, x, found {[a[0] for a in axes]}")
    if not 0 <= level < len(entry["datasets"]):
        raise InputError(source, f"pyramid level {level} does not exist "
                                 f"(the store has {len(entry['datasets'])} levels)")
    dataset = entry["datasets"][level]
    transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
    units_to_a = {"angstrom": 1.0, None: 1.0, "nanometer": 10.0}
    if axes[0][1] not in units_to_a:
        raise InputError(source, f"unsupported axis unit {axes[0][1]!r} (need angstrom or nm)")
    to_a = units_to_a[axes[0][1]]
    pyramid = [_scale_a(source, d, to_a) for d in entry["datasets"]]
    translation = np.array(
        transforms.get("translation", {}).get("translation", [0.0, 0.0, 0.0]), dtype=float) * to_a
    return Tomogram(
        source=source, array=group[dataset["path"]], level=level,
        voxel_size_zyx_a=pyramid[level], translation_a=tuple(float(t) for t in translation),
        ngff_version=version, attrs=group.attrs.asdict().get("dsmscale", {}),
        pyramid_voxel_zyx_a=tuple(pyramid),
    )


def _scale_a(source: str, dataset: dict, to_a: float) -> tuple[float, float, float]:
    """A level's ``scale`` in Å, (z, y, x), each positive."""
    transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
    scale = np.array(transforms["scale"]["scale"], dtype=float) * to_a
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise InputError(source, f"scale must be positive, found {scale.tolist()}")
    return tuple(float(v) for v in scale)
