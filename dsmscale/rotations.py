"""Rotations: RELION's Euler angles and 3×3 matrices, in one place.

A rotation matrix here is RELION's (``Euler_angles2matrix``): it acts on (x, y, z) column
vectors and turns the reference onto the particle (a structure placed with it, rendered with it,
is the particle; the CZ portal stores the same matrix in copick's ``transformation_``). Angles
are in degrees, RELION's ZYZ: intrinsic rotations by ``rot`` about z, ``tilt`` about the new y,
``psi`` about the new z, of the coordinate frame (passive), so the matrix is
``Rotation.from_euler("ZYZ", (rot, tilt, psi)).inv()``. Arrays are indexed (z, y, x):
`xyz_to_zyx` re-expresses a matrix for array coordinates.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.transform import Rotation

#: Reverses (x, y, z) ↔ (z, y, x).
_REVERSE = np.eye(3)[::-1]


def rotation_matrix_zyz(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's Euler angles (deg) as RELION's 3×3 matrix acting on (x, y, z): the rotation that
    turns the reference onto the particle (`relion_matrices` for one triple)."""
    return relion_matrices([rot, tilt, psi])[0]


def euler_zyz(matrix: np.ndarray) -> tuple[float, float, float]:
    """Inverse of `rotation_matrix_zyz`: (rot, tilt, psi) in degrees."""
    return tuple(float(v) for v in relion_angles(matrix)[0])


def xyz_to_zyx(rotation_xyz: np.ndarray) -> np.ndarray:
    """A rotation acting on (x, y, z) coordinates, re-expressed for (z, y, x) coordinates."""
    return _REVERSE @ rotation_xyz @ _REVERSE


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations (n, 3, 3) drawn uniformly from SO(3), acting on (x, y, z)."""
    return Rotation.random(n, random_state=rng).as_matrix() if n else np.empty((0, 3, 3))


def relion_matrices(angles_deg: np.ndarray) -> np.ndarray:
    """(n, 3) RELION Euler triples (rot, tilt, psi; deg) as RELION's own (n, 3, 3) matrices
    ``A`` (``Euler_angles2matrix``: intrinsic ZYZ, passive), the matrices RELION composes
    (``A_subtomogram · A_particle``) and copick stores as ``transformation_``."""
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3)
    return Rotation.from_euler("ZYZ", angles, degrees=True).inv().as_matrix()


def relion_angles(matrices: np.ndarray) -> np.ndarray:
    """Inverse of `relion_matrices`: (n, 3) triples, rot and psi in [−180°, 180°], tilt in
    [0°, 180°]."""
    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    if not len(matrices):
        return np.empty((0, 3))
    with warnings.catch_warnings():  # tilt 0° or 180°: rot + psi is all that is defined
        warnings.filterwarnings("ignore", "Gimbal lock", UserWarning)
        return Rotation.from_matrix(matrices).inv().as_euler("ZYZ", degrees=True)


def normalise_relion_angles(angles_deg: np.ndarray) -> np.ndarray:
    """The same rotations with `relion_angles`' ranges: tables written by other tools hold
    angles such as 3,867° or a negative tilt."""
    return relion_angles(relion_matrices(angles_deg))
