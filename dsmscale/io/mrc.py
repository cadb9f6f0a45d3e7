"""Reading and writing MRC/MAP/REC volumes with mrcfile, validated at the boundary.

Conventions: arrays are indexed (z, y, x); voxel sizes and origins are in angstrom (Å).
Uncompressed files are memory-mapped so a tomogram is never fully loaded; ``.gz``/``.bz2``
files are decompressed once into memory (mrcfile cannot map them).
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
        data: the voxel array, shape (nz, ny, nx), possibly a read-only memmap.
        voxel_size_a: isotropic voxel size in Å.
        origin_a: position of voxel (0, 0, 0) in Å, ordered (z, y, x).
        header: the MRC header fields as JSON-serialisable values.
    """

    path: Path
    data: np.ndarray
    voxel_size_a: float
    origin_a: tuple[float, float, float]
    header: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]


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


def _voxel_size(path: Path, mrc) -> float:
    vs = mrc.voxel_size
    sizes = np.array([float(vs.x), float(vs.y), float(vs.z)])
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise InputError(path, f"voxel size must be positive, header gives {_xyz(sizes)} Å")
    if np.ptp(sizes) > 1e-3 * sizes.max():
        raise InputError(path, f"anisotropic voxel size {_xyz(sizes)} Å (x, y, z) is not supported")
    return float(sizes[0])


def _xyz(sizes: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:g}" for v in sizes) + ")"


@contextmanager
def open_volume(path: str | os.PathLike) -> Iterator[MrcVolume]:
    """Open a 3D MRC volume (``.mrc``, ``.map``, ``.rec``, optionally ``.gz``/``.bz2``).

    Raises:
        InputError: missing, not an MRC, truncated, not a 3D volume (2D image or image stack),
            unsupported mode, or a non-positive voxel size.
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
            data=mrc.data,
            voxel_size_a=_voxel_size(path, mrc),
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
