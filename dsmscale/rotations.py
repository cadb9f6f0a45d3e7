"""Rotations: RELION's ZYZ Euler angles and 3×3 matrices, in one place.

A rotation matrix here acts on (x, y, z) column vectors, as RELION's and copick's do; arrays are
indexed (z, y, x), so `xyz_to_zyx` re-expresses a matrix for array coordinates. Angles are in
degrees: ``rot`` about z, then ``tilt`` about the new y, then ``psi`` about the new z.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

#: Reverses (x, y, z) ↔ (z, y, x).
_REVERSE = np.eye(3)[::-1]


def rotation_matrix_zyz(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's ZYZ Euler angles (deg) as a 3×3 rotation matrix acting on (x, y, z)."""
    a, b, g = np.deg2rad([rot, tilt, psi])

    def about_z(t):
        return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])

    def about_y(t):
        return np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])

    return about_z(g) @ about_y(b) @ about_z(a)


def euler_zyz(matrix: np.ndarray) -> tuple[float, float, float]:
    """Inverse of `rotation_matrix_zyz`: (rot, tilt, psi) in degrees."""
    tilt = np.arccos(np.clip(matrix[2, 2], -1, 1))
    if np.sin(tilt) > 1e-8:
        rot = np.arctan2(matrix[2, 1], -matrix[2, 0])
        psi = np.arctan2(matrix[1, 2], matrix[0, 2])
    else:
        rot, psi = 0.0, np.arctan2(matrix[1, 0], matrix[0, 0])
        if matrix[2, 2] < 0:
            psi = np.arctan2(-matrix[1, 0], -matrix[0, 0])
    return tuple(float(v) for v in np.rad2deg([rot, tilt, psi]))


def xyz_to_zyx(rotation_xyz: np.ndarray) -> np.ndarray:
    """A rotation acting on (x, y, z) coordinates, re-expressed for (z, y, x) coordinates."""
    return _REVERSE @ rotation_xyz @ _REVERSE


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations (n, 3, 3) drawn uniformly from SO(3), acting on (x, y, z)."""
    return Rotation.random(n, random_state=rng).as_matrix() if n else np.empty((0, 3, 3))
