"""Averages of per-particle boxes brought into one reference frame by known orientations.

Convention (the simulator's, and RELION's ZYZ angles through
`dsmscale.rotations.rotation_matrix_zyz`): a particle with rotation R (acting on x, y, z) and
centre c (z, y, x voxels within its box, sub-voxel) holds ``box[q] = reference[R⁻¹ (q − c) + m]``
with m = B // 2 the reference centre (zyx voxels). `to_reference_frame` inverts that:
``out[o] = box[R (o − m) + c]`` (trilinear).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import ndimage

from dsmscale.geometry import centres_in_box
from dsmscale.io.job import JobFolder
from dsmscale.rotations import rotation_matrix_zyz, xyz_to_zyx


def to_reference_frame(box: np.ndarray, rotation_xyz: np.ndarray,
                       centre_zyx: np.ndarray) -> np.ndarray:
    """Rotate and shift one (B, B, B) box so its particle sits upright at the box centre."""
    if box.ndim != 3 or len(set(box.shape)) != 1:
        raise ValueError(f"expected a cubic (B, B, B) box, got shape {box.shape}")
    matrix = xyz_to_zyx(np.asarray(rotation_xyz, float))
    middle = np.full(3, box.shape[0] // 2, float)
    offset = np.asarray(centre_zyx, float) - matrix @ middle
    return ndimage.affine_transform(box, matrix, offset=offset, order=1, mode="constant", cval=0.0)


def aligned_average(boxes: Iterable[np.ndarray], rotations_xyz: Iterable[np.ndarray],
                    centres_zyx: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """Mean of the boxes in the reference frame, and how many were averaged (streamed)."""
    total, n = None, 0
    for box, rotation, centre in zip(boxes, rotations_xyz, centres_zyx, strict=True):
        upright = to_reference_frame(np.asarray(box, np.float64), rotation, centre)
        total = upright if total is None else total + upright
        n += 1
    if total is None:
        raise ValueError("no boxes to average")
    return (total / n).astype(np.float32), n


def average_recovered(job: JobFolder, members: pd.DataFrame) -> tuple[np.ndarray, int]:
    """The mean of a job's recovered densities of ``members`` (columns ``box_index``, centres
    ``z, y, x`` in pixels and ZYZ angles ``rot, tilt, psi`` in degrees), each brought upright
    by its given orientation — with the true orientations of a simulation, an oracle alignment.
    Boxes are read one at a time, in box order."""
    density = job.open_density()
    members = members.sort_values("box_index")
    box = density.shape[-1]
    centres = centres_in_box(members[["z", "y", "x"]].to_numpy(), box)
    rotations = (rotation_matrix_zyz(*a) for a in members[["rot", "tilt", "psi"]].to_numpy())
    boxes = (density[int(i)] for i in members["box_index"])
    return aligned_average(boxes, rotations, centres)
