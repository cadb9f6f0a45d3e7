"""Rendering rotated, sub-voxel-shifted templates into volumes (one function for every caller).

The tomogram and the target-only ground truth boxes use this same function, so a target's clean
density in its box has exactly the sub-voxel offset and blur it has in the tomogram.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dsmscale.rotations import xyz_to_zyx


def render_template(
    out: np.ndarray, out_origin: np.ndarray, template: np.ndarray, rotation_xyz: np.ndarray,
    centre: np.ndarray,
) -> None:
    """Add ``template`` rotated by ``rotation_xyz`` with its central voxel at ``centre`` into ``out``.

    Args:
        out: (z, y, x) volume, modified in place.
        out_origin: volume coordinates (z, y, x voxels) of ``out[0, 0, 0]``.
        template: (e, e, e) density, its centre of mass at voxel e//2.
        rotation_xyz: 3×3 rotation acting on (x, y, z).
        centre: molecule centre in volume coordinates (z, y, x voxels, sub-voxel allowed).
    """
    edge = template.shape[0]
    half = edge // 2 + 1
    centre = np.asarray(centre, float)
    lo = np.maximum(np.floor(centre).astype(int) - half, out_origin)
    hi = np.minimum(np.floor(centre).astype(int) + half + 2, np.asarray(out_origin) + out.shape)
    if np.any(hi <= lo):
        return
    inverse = xyz_to_zyx(rotation_xyz).T
    offset = inverse @ (lo - centre) + edge // 2
    patch = ndimage.affine_transform(template, inverse, offset=offset, output_shape=tuple(hi - lo),
                                     order=1, mode="constant", cval=0.0)
    s = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, out_origin, strict=True))
    out[s] += patch
