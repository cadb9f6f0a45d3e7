"""Reading and writing MRC/MAP/REC volumes with mrcfile, validated at the boundary.

Conventions: arrays are indexed (z, y, x); voxel sizes and origins are in angstrom (Å).
Uncompressed files are memory-mapped so a tomogram is never fully loaded; ``.gz``/``.bz2``
files are decompressed once into memory (mrcfile cannot map them).

Axis order: mrcfile gives the data indexed [section, row, column], and the header's ``mapc``,
``mapr``, ``maps`` name the physical axis (1 = x, 2 = y, 3 = z) of columns, rows and sections.
Files with another order than 1, 2, 3 (common among EMDB maps) are read as the view transposed
to (z, y, x) (`zyx_axes`). Voxel sizes are physical (``cella`` / ``mx, my, mz``, per x, y, z) and
may differ per axis; `MrcVolume.voxel_size_zyx_a` keeps all three.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from dsmscale.errors import InputError, InputWarning
from dsmscale.io.atomic import write_file_atomic

SUPPORTED_MODES = {0, 1, 2, 6, 12}


@dataclass(frozen=True)
class MrcVolume:
    """An open 3D MRC volume.

    Attributes:
        path: the file.
        data: the voxel array indexed (z, y, x) whatever the file's axis order, possibly a
            read-only memmap (or a transposed view of one).
        voxel_size_zyx_a: voxel size in Å per axis, (z, y, x).
        origin_a: position of voxel (0, 0, 0) in Å, ordered (z, y, x).
        header: the MRC header fields as JSON-serialisable values.
    """

    path: Path
    data: np.ndarray
    voxel_size_zyx_a: tuple[float, float, float]
    origin_a: tuple[float, float, float]
    header: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def voxel_size_a(self) -> float:
        """The isotropic voxel size in Å; an `InputError` for anisotropic voxels."""
        sizes = np.asarray(self.voxel_size_zyx_a)
        if np.ptp(sizes) > 1e-3 * sizes.max():
            raise InputError(self.path, f"anisotropic voxel size {_xyz(sizes[::-1])} Å (x, y, z) "
                                        "where one voxel size is needed")
        return float(sizes[0])


def _header_to_dict(header: np.recarray) -> dict:
    out = {}
    for name in header.dtype.names:
        value = header[name]
        if name == "label":
            labels = [bytes(v).rstrip(b"\0 ").decode("latin-1") for v in np.atleast_1d(value)]
            out[name] = [s for s in labels if s]
        elif value.dtype.names:  # nested records: cella, origin, ...
            out[name] = {k: value[k].item() for k in value.dtype.names}
        elif value.dtype.kind in "SV":
            out[name] = bytes(value).decode("latin-1").rstrip("\0")
        else:
            item = value.tolist()
            out[name] = item.decode("latin-1") if isinstance(item, bytes) else item
    return out


def _is_compressed(path: Path) -> bool:
    return path.suffix.lower() in {".gz", ".bz2"}


def _open_mrc(path: Path):
    """Open strictly; fall back to permissive mode (with a warning) for broken headers."""
    opener = mrcfile.open if _is_compressed(path) else mrcfile.mmap
    try:
        return opener(path, mode="r")
    except (ValueError, OSError, EOFError) as strict_exc:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                mrc = opener(path, mode="r", permissive=True)
            except Exception as exc:  # noqa: BLE001 - any failure here means "not readable"
                raise InputError(path, f"not a readable MRC file ({exc})") from exc
        if mrc.data is None:
            mrc.close()
            problem = str(strict_exc).splitlines()[0]
            if "data block" in problem or "too small" in problem.lower():
                raise InputError(path, f"truncated MRC file ({problem})") from strict_exc
            raise InputError(path, f"not a valid MRC file ({problem})") from strict_exc
        messages = "; ".join(str(w.message) for w in caught) or str(strict_exc)
        warnings.warn(f"{path}: opened in permissive mode: {messages}", InputWarning,
                      stacklevel=3)
        return mrc


def _voxel_size(path: Path, mrc) -> tuple[float, float, float]:
    """The voxel size per physical axis, (z, y, x), in Å."""
    vs = mrc.voxel_size
    sizes = np.array([float(vs.x), float(vs.y), float(vs.z)])
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise InputError(path, f"voxel size must be positive, header gives {_xyz(sizes)} Å")
    return float(sizes[2]), float(sizes[1]), float(sizes[0])


def zyx_axes(mapc: int, mapr: int, maps: int) -> tuple[int, int, int]:
    """The transpose taking data indexed [section, row, column] to (z, y, x): for each of z, y,
    x, the data axis that holds it (``mapc``/``mapr``/``maps``: the physical axis, 1 = x,
    2 = y, 3 = z, of columns, rows and sections). Identity for the standard 1, 2, 3."""
    held = (int(maps), int(mapr), int(mapc))  # physical axis of data axes 0, 1, 2
    if sorted(held) != [1, 2, 3]:
        raise ValueError(f"mapc, mapr, maps = {mapc}, {mapr}, {maps} is not an order of 1, 2, 3")
    return tuple(held.index(axis) for axis in (3, 2, 1))  # type: ignore[return-value]


def _zyx_data(path: Path, mrc) -> np.ndarray:
    """The data as a (z, y, x) view, transposed by the header's axis order."""
    header = mrc.header
    try:
        axes = zyx_axes(header.mapc, header.mapr, header.maps)
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc
    return mrc.data if axes == (0, 1, 2) else mrc.data.transpose(axes)


def _xyz(sizes: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:g}" for v in sizes) + ")"


@contextmanager
def open_volume(path: str | os.PathLike) -> Iterator[MrcVolume]:
    """Open a 3D MRC volume (``.mrc``, ``.map``, ``.rec``, optionally ``.gz``/``.bz2``).

    Raises:
        InputError: missing, not an MRC, truncated, not a 3D volume (2D image or image stack),
            unsupported mode, an axis order that is no order of x, y, z, or a non-positive
            voxel size.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    mrc = _open_mrc(path)
    try:
        if int(mrc.header.mode) not in SUPPORTED_MODES:
            raise InputError(path, f"unsupported MRC mode {int(mrc.header.mode)}")
        if mrc.data.ndim != 3 or mrc.data.shape[0] < 2:
            raise InputError(path, f"expected a 3D volume, found a {mrc.data.ndim}D image "
                                   f"of shape {mrc.data.shape}")
        if mrc.is_image_stack():
            raise InputError(path, "expected a 3D volume, found an image stack (ispg 0)")
        origin = mrc.header.origin
        yield MrcVolume(
            path=path,
            data=_zyx_data(path, mrc),
            voxel_size_zyx_a=_voxel_size(path, mrc),
            origin_a=(float(origin.z), float(origin.y), float(origin.x)),
            header=_header_to_dict(mrc.header),
        )
    finally:
        mrc.close()


def write_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size_a: float,
    origin_a: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Path:
    """Write a (z, y, x) float32 volume as MRC (mode 2), atomically (temp name, then rename).

    Args:
        path: destination ``.mrc`` file.
        data: 3D array indexed (z, y, x).
        voxel_size_a: voxel size in Å (> 0).
        origin_a: position of voxel (0, 0, 0) in Å, (z, y, x).
    """
    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"write_volume needs a 3D (z, y, x) array, got shape {data.shape}")
    if not voxel_size_a > 0:
        raise ValueError(f"voxel_size_a must be > 0, got {voxel_size_a}")

    def write(tmp: Path) -> None:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data, dtype=np.float32))
            mrc.set_volume()
            mrc.voxel_size = voxel_size_a
            mrc.header.origin = (origin_a[2], origin_a[1], origin_a[0])

    return write_file_atomic(path, write)
