"""Averages of per-particle boxes brought into one reference frame: by known orientations, or by
orientations found without a reference (`reference_free_average`).

Convention (the simulator's, and RELION's ZYZ angles through
`dsmscale.rotations.rotation_matrix_zyz`): a particle with rotation R (acting on x, y, z) and
centre c (z, y, x voxels within its box, sub-voxel) holds ``box[q] = reference[R⁻¹ (q − c) + m]``
with m = B // 2 the reference centre (zyx voxels). `to_reference_frame` inverts that:
``out[o] = box[R (o − m) + c]`` (trilinear). Boxes are (B, B, B) arrays indexed (z, y, x); an
alignment finds, per box, that R and the shift c − m.

Alignment to a reference (`align_to_reference`): a global search over `rotation_grid` on 2×2×2
binned boxes — the reference rotated by every grid rotation, (n_rot × voxels), against the boxes,
(voxels × n_boxes), in one matrix product of normalised cross-correlations inside a sphere — then
local searches at full size on finer and finer lattices of rotations around each box's best one,
each box's shift found by FFT cross-correlation. `reference_free_average` iterates alignment and
averaging from one of the boxes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial.transform import Rotation

from dsmscale.geometry import centres_in_box, to_level
from dsmscale.io.job import JobFolder
from dsmscale.io.pyramid import downsample_mean
from dsmscale.rotations import relion_matrices, rotation_matrix_zyz, xyz_to_zyx

#: Boxes read several times, by slices of positions: an (n, B, B, B) NumPy or Zarr array, a list
#: of (B, B, B) arrays, or `BoxRows`.
Boxes = Sequence[np.ndarray] | np.ndarray
#: Grid rotations rotated and sampled at a time in the global search (bounds its memory).
_ROTATION_CHUNK = 512


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


@dataclass(frozen=True)
class BoxRows:
    """The rows ``index`` (sorted) of an (N, B, B, B) box array, read by slices of ``index``
    (a Zarr array reads each chunk once per slice): e.g. a cluster's members in a job's
    ``density.zarr``, as `Boxes`."""

    array: Any
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.asarray(self.array[self.index[rows]])


@dataclass(frozen=True)
class Alignment:
    """Per box: ``rotations`` (n, 3, 3; acting on x, y, z) turn the reference onto it,
    ``shifts`` (n, 3; z, y, x voxels) move it from the box centre B // 2, and ``scores`` (n,)
    are the normalised cross-correlations with the reference so placed, inside the mask."""

    rotations: np.ndarray
    shifts: np.ndarray
    scores: np.ndarray

    def centres(self, box: int) -> np.ndarray:
        """The particle centres (n, 3; z, y, x voxels) within boxes of edge ``box``."""
        return box // 2 + self.shifts


@dataclass(frozen=True)
class ReferenceFreeAverage:
    """`reference_free_average`'s result: the ``average`` (B, B, B; float32), oriented as the
    member it started from; the last round's ``alignment``, which places the average onto
    every box (its scores against that round's reference); and the mean score of each round's
    alignment (``round_scores``)."""

    average: np.ndarray
    alignment: Alignment
    round_scores: list[float]


def rotation_grid(step_deg: float) -> np.ndarray:
    """Rotations (n, 3, 3; acting on x, y, z) covering SO(3) about every ``step_deg``: a Hopf
    grid, ⌈4π / step²⌉ directions (rot, tilt) on a Fibonacci sphere, each with ⌈360° / step⌉
    in-plane angles psi (RELION's Euler angles, `relion_matrices`). Every rotation lies within
    about 0.8 step of one of them (measured: 11.9° at 15°, 4,416 rotations; 7.8° at 10°,
    14,868)."""
    step = np.radians(step_deg)
    n_directions, n_psi = int(np.ceil(4 * np.pi / step**2)), int(np.ceil(360 / step_deg))
    i = np.arange(n_directions) + 0.5
    tilt = np.degrees(np.arccos(1 - 2 * i / n_directions))
    rot = np.degrees(np.pi * (1 + 5**0.5) * i) % 360  # golden-angle turns
    psi = np.arange(n_psi) * 360 / n_psi
    return relion_matrices(np.column_stack([np.repeat(rot, n_psi), np.repeat(tilt, n_psi),
                                            np.tile(psi, n_directions)]))


def _lattice(spacing_deg: float) -> np.ndarray:
    """The 125 rotations (3, 3; on x, y, z) whose rotation vectors lie on the cubic lattice
    {−2, …, 2}³ × ``spacing_deg``: a rotation whose vector lies within 2.5 spacings of 0 per
    component lies within (√3 / 2) spacing of one of them."""
    steps = np.arange(-2.0, 3.0)
    lattice = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    return Rotation.from_rotvec(np.radians(spacing_deg) * lattice).as_matrix()


def _sphere(box: int, radius: float, middle: float | np.ndarray) -> np.ndarray:
    """The voxels (n, 3; z, y, x) of a (box,)³ grid within ``radius`` of ``middle``."""
    grid = np.indices((box,) * 3).reshape(3, -1).T
    return grid[np.sum((grid - middle) ** 2, axis=1) <= radius**2]


def _placed(volume: np.ndarray, rotations_xyz: np.ndarray, points: np.ndarray,
            centre: np.ndarray, middle: np.ndarray) -> np.ndarray:
    """``volume[R⁻¹ (q − centre) + middle]`` (n_rot, n_points) at the points q (n, 3; z, y, x)
    for each rotation R: ``volume`` placed with R at ``centre``, as a particle (trilinear)."""
    inverse = np.swapaxes(xyz_to_zyx(np.asarray(rotations_xyz, float)), -1, -2)
    coords = inverse @ (points - centre).T + np.asarray(middle, float)[:, None]
    samples = ndimage.map_coordinates(volume, np.moveaxis(coords, 1, 0).reshape(3, -1), order=1,
                                      mode="constant", cval=0.0)
    return samples.reshape(len(coords), -1).astype(np.float32)


def _normalised(rows: np.ndarray) -> np.ndarray:
    """Each row less its mean over its norm (a constant row stays zero): dot products of such
    rows are normalised cross-correlations."""
    rows = rows - rows.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norm > 0, norm, 1)


def _centre_of_mass(volume: np.ndarray) -> np.ndarray:
    """The centre of mass (z, y, x voxels) of the positive density; the box centre if none."""
    positive = np.clip(volume, 0, None)
    if not positive.any():
        return np.full(3, volume.shape[0] // 2, float)
    return np.array(ndimage.center_of_mass(positive))


def _shift(upright: np.ndarray, reference_ft: np.ndarray, max_shift: float) -> np.ndarray:
    """The shift s (z, y, x voxels; within ± ``max_shift`` per axis, sub-voxel by a parabola
    through the peak) with ``upright[o] ≈ reference[o − s]``: the peak of their FFT
    cross-correlation (``reference_ft`` = conj(rfftn(reference)))."""
    edge, middle = upright.shape[0], upright.shape[0] // 2
    cross = np.fft.irfftn(np.fft.rfftn(upright) * reference_ft, s=upright.shape, axes=(0, 1, 2))
    cross = np.fft.fftshift(cross)  # zero shift at ``middle``
    reach = int(min(np.ceil(max_shift), middle - 1))
    window = cross[(slice(middle - reach, middle + reach + 1),) * 3]
    if np.ptp(window) <= 1e-6 * np.abs(window).max():  # a featureless box: no shift to find
        return np.zeros(3)
    peak = np.array(np.unravel_index(np.argmax(window), window.shape)) + middle - reach
    shift = (peak - middle).astype(float)
    for axis in range(3):
        below, above = peak.copy(), peak.copy()
        below[axis], above[axis] = (peak[axis] - 1) % edge, (peak[axis] + 1) % edge
        y0, y1, y2 = cross[tuple(below)], cross[tuple(peak)], cross[tuple(above)]
        if y0 - 2 * y1 + y2 < 0:
            shift[axis] += np.clip(0.5 * (y0 - y2) / (y0 - 2 * y1 + y2), -0.5, 0.5)
    return shift


def _batches(boxes: Boxes, batch: int) -> Iterator[np.ndarray]:
    """The boxes as float32 arrays of at most ``batch`` boxes, in order."""
    for start in range(0, len(boxes), batch):
        yield np.asarray(boxes[start:start + batch], np.float32)


def _each(boxes: Boxes, batch: int) -> Iterator[np.ndarray]:
    """The boxes one by one, read ``batch`` at a time."""
    for chunk in _batches(boxes, batch):
        yield from chunk


@dataclass(frozen=True)
class _Search:
    """What aligning to one reference needs, made once for every batch of boxes: the global
    grid and the binned reference placed with each of its rotations (normalised, inside the
    binned sphere ``coarse_points``); per local level, its lattice and the reference turned by
    each lattice rotation about its centre of mass ``pivot`` (normalised, inside the sphere
    ``points``); the reference's conjugate Fourier transform."""

    grid: np.ndarray
    coarse: np.ndarray
    coarse_points: np.ndarray
    lattices: list[np.ndarray]
    turned: list[np.ndarray]
    points: np.ndarray
    pivot: np.ndarray
    reference_ft: np.ndarray
    upright: np.ndarray
    max_shift: float


def _prepare(reference: np.ndarray, step_deg: float, levels: int, max_shift: float,
             radius: float) -> _Search:
    """`_Search` for ``reference`` (float32), ``radius`` the mask's in full-size voxels."""
    edge = reference.shape[0]
    grid, binned = rotation_grid(step_deg), downsample_mean(reference)
    points, pivot = _sphere(edge, radius, edge // 2), _centre_of_mass(reference)
    middle, binned_pivot = to_level(np.stack([np.full(3, edge // 2), pivot]), 0, 1)
    coarse_points = _sphere(binned.shape[0], radius / 2, middle)
    coarse = np.concatenate([_normalised(_placed(
        binned, grid[start:start + _ROTATION_CHUNK], coarse_points, middle, binned_pivot))
        for start in range(0, len(grid), _ROTATION_CHUNK)])
    lattices = [_lattice(step_deg / (3 * 2 ** (level - 1))) for level in range(1, levels + 1)]
    turned = [_normalised(_placed(reference, lattice, points, pivot, pivot))
              for lattice in lattices]
    return _Search(grid, coarse, coarse_points, lattices, turned, points, pivot,
                   np.conj(np.fft.rfftn(reference)), _normalised(reference[tuple(points.T)]),
                   max_shift)


def _global_search(chunk: np.ndarray, search: _Search) -> tuple[np.ndarray, np.ndarray]:
    """Each box's best grid rotation, by one matrix product against the binned boxes, each
    shifted to put its centre of mass at the centre (as the rotated references are: so the
    search does not depend on the boxes' shifts); and its centre, from its centre of mass."""
    middle = chunk.shape[-1] // 2
    masses = np.array([_centre_of_mass(box) for box in chunk])
    binned = np.stack([ndimage.shift(downsample_mean(box), (middle - mass) / 2, order=1)
                       for box, mass in zip(chunk, masses, strict=True)])
    rows = binned[(slice(None), *search.coarse_points.T)]
    rotations = search.grid[np.argmax(search.coarse @ _normalised(rows).T, axis=0)]
    centres = masses - xyz_to_zyx(rotations) @ (search.pivot - middle)
    return rotations, np.clip(centres, middle - search.max_shift, middle + search.max_shift)


def _recentred(box: np.ndarray, rotation: np.ndarray, centre: np.ndarray,
               search: _Search) -> tuple[np.ndarray, np.ndarray]:
    """The box's centre moved by the FFT shift of its upright view against the reference
    (kept within ``max_shift`` of B // 2), and its upright view there inside the sphere."""
    upright = to_reference_frame(box, rotation, centre)
    centre = centre + xyz_to_zyx(rotation) @ _shift(upright, search.reference_ft, search.max_shift)
    centre = np.clip(centre, box.shape[0] // 2 - search.max_shift,
                     box.shape[0] // 2 + search.max_shift)
    return centre, to_reference_frame(box, rotation, centre)[tuple(search.points.T)]


def _fit_batch(chunk: np.ndarray, search: _Search) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotations, centres and scores of a batch of boxes (n, B, B, B): `_global_search`, then
    per level each box's shift and its best lattice rotation (one matrix product of the boxes
    brought upright against the turned references), then the shift again and the score."""
    middle = chunk.shape[-1] // 2
    rotations, centres = _global_search(chunk, search)
    uprights = np.empty((len(chunk), len(search.points)), np.float32)
    for lattice, turned in zip(search.lattices, search.turned, strict=True):
        for i, box in enumerate(chunk):
            centres[i], uprights[i] = _recentred(box, rotations[i], centres[i], search)
        best = np.argmax(turned @ _normalised(uprights).T, axis=0)
        # turning about the pivot p moves the particle's centre m by R (δ − 1)(m − p)
        moved = (xyz_to_zyx(lattice[best]) - np.eye(3)) @ (middle - search.pivot)
        centres += np.einsum("nij,nj->ni", xyz_to_zyx(rotations), moved)
        rotations = rotations @ lattice[best]
    for i, box in enumerate(chunk):
        centres[i], uprights[i] = _recentred(box, rotations[i], centres[i], search)
    return rotations, centres, _normalised(uprights) @ search.upright


def align_to_reference(boxes: Boxes, reference: np.ndarray, *, step_deg: float = 15.0,
                       levels: int = 3, max_shift: float = 4.0, mask_radius: float | None = None,
                       batch: int = 64) -> Alignment:
    """Each box's rotation and shift that place ``reference`` (B, B, B; zyx, its particle
    upright at B // 2) onto it (the module's convention), boxes read ``batch`` at a time.

    Global search over `rotation_grid` (``step_deg``) on 2×2×2-binned boxes, each moved to put
    its centre of mass at B // 2 (as the rotated references are): per batch, one matrix product
    of normalised cross-correlations inside a sphere of ``mask_radius`` voxels (default
    B / 2 − 1) at B // 2. Centres are taken to be within a few voxels of B // 2. Then
    ``levels`` local searches at full size, each over a 5³ lattice of rotation vectors around
    each box's rotation, of spacing step / 3, step / 6, step / 12, … (so each covers what the
    one before may have missed; the last spacing is the final step): per level, each box is
    brought upright (`to_reference_frame`) at its shift (FFT cross-correlation, within
    ``max_shift`` voxels of B // 2 per axis) and correlated, in one matrix product, with the
    reference turned by every lattice rotation about its centre of mass (so a small turn
    barely moves the particle). Memory: the rotated references (64 MB at 40³ and 15°, 4,416
    grid rotations; 43 MB for 3 levels) and one batch."""
    reference = np.asarray(reference, np.float32)
    edge = reference.shape[0]
    search = _prepare(reference, step_deg, levels, max_shift,
                      edge / 2 - 1 if mask_radius is None else mask_radius)
    parts = [_fit_batch(chunk, search) for chunk in _batches(boxes, batch)]
    if not parts:
        raise ValueError("no boxes to align")
    rotations, centres, scores = (np.concatenate(v) for v in zip(*parts, strict=True))
    return Alignment(rotations, centres - edge // 2, scores)


def _typical_member(boxes: Boxes, batch: int) -> np.ndarray:
    """The box most correlated with the plain mean of all (two passes over the boxes)."""
    mean = sum(chunk.sum(0, dtype=np.float64) for chunk in _batches(boxes, batch)) / len(boxes)
    mean = _normalised(mean.ravel())
    best, best_score = None, -np.inf
    for chunk in _batches(boxes, batch):
        scores = _normalised(chunk.reshape(len(chunk), -1)) @ mean
        if scores.max() > best_score:
            best, best_score = chunk[np.argmax(scores)].copy(), scores.max()
    return best


def _centred_on_picks(alignment: Alignment) -> Alignment:
    """The same alignment of a frame moved by the mean over boxes of R⁻¹ t (each box's shift
    seen in the reference frame): there the boxes' shifts average to zero, so an average made
    with them has the picked centres, on average, at its centre (and does not drift)."""
    rotations = xyz_to_zyx(alignment.rotations)
    offset = np.einsum("nji,nj->i", rotations, alignment.shifts) / len(rotations)
    return Alignment(alignment.rotations, alignment.shifts - rotations @ offset,
                     alignment.scores)


def reference_free_average(boxes: Boxes, *, rounds: int = 3, lowpass_sigma: float = 1.0,
                           step_deg: float = 15.0, levels: int = 3, max_shift: float = 4.0,
                           mask_radius: float | None = None,
                           batch: int = 64) -> ReferenceFreeAverage:
    """The average of boxes (B, B, B; zyx) in unknown orientations, without a reference.

    Starts from the box most correlated with the plain mean; each of ``rounds`` rounds
    low-passes the current reference (Gaussian, ``lowpass_sigma`` voxels; 0: none), aligns
    every box to it (`align_to_reference` with ``step_deg``, ``levels``, ``max_shift``,
    ``mask_radius``) and averages them in its frame (`aligned_average`), moved so that the
    boxes' shifts average to zero. The boxes are read ``batch`` at a time, 2 + 2 × ``rounds``
    times: an array, a Zarr array or `BoxRows` is never held whole. The average's orientation
    is the starting box's: compare it with another map only after aligning it."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not len(boxes):
        raise ValueError("no boxes to average")
    average, round_scores = _typical_member(boxes, batch), []
    for _ in range(rounds):
        reference = ndimage.gaussian_filter(average, lowpass_sigma) if lowpass_sigma else average
        alignment = _centred_on_picks(align_to_reference(
            boxes, reference, step_deg=step_deg, levels=levels, max_shift=max_shift,
            mask_radius=mask_radius, batch=batch))
        average, _ = aligned_average(_each(boxes, batch), alignment.rotations,
                                     alignment.centres(reference.shape[0]))
        round_scores.append(float(alignment.scores.mean()))
    return ReferenceFreeAverage(average, alignment, round_scores)


def average_recovered_reference_free(job: JobFolder, members: pd.DataFrame,
                                     **options: Any) -> ReferenceFreeAverage:
    """The reference-free average (`reference_free_average`, with its keyword ``options``) of a
    job's recovered densities of ``members`` (column ``box_index``): what `average_recovered`
    gives without the true orientations. Boxes are read a batch at a time, in box order."""
    rows = np.sort(members["box_index"].to_numpy())
    return reference_free_average(BoxRows(job.open_density(), rows), **options)
