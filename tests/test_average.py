"""Bringing rotated, off-centre particles back into the reference frame, and averaging them."""

import numpy as np
import pandas as pd
import pytest

from dsmscale.averaging import (
    align_to_reference,
    aligned_average,
    average_recovered_reference_free,
    reference_free_average,
    rotation_grid,
    to_reference_frame,
)
from dsmscale.geometry import centres_in_box
from dsmscale.io.job import JobFolder
from dsmscale.io.subtomograms import create_box_array
from dsmscale.rotations import random_rotations, rotation_matrix_zyz
from dsmscale.simulation.render import render_template

BOX = 40


def _asymmetric_template(edge: int = 25) -> np.ndarray:
    """Three Gaussian blobs of different sizes: no rotational symmetry."""
    grid = np.indices((edge,) * 3) - edge // 2
    density = np.zeros((edge,) * 3)
    for centre, sigma in (((0, 0, 0), 1.5), ((7, 0, 0), 2.5), ((0, 0, 8), 2.0)):
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        density += np.exp(-d2 / (2 * sigma**2))
    return density


def _render(template, rotation, centre_zyx):
    box = np.zeros((BOX,) * 3)
    render_template(box, np.zeros(3, int), template, rotation, np.asarray(centre_zyx))
    return box


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _angle_deg(a, b):
    """Angular distance (deg) between rotations (..., 3, 3)."""
    cosine = (np.einsum("...ij,...ij->...", a, b) - 1) / 2
    return np.degrees(np.arccos(np.clip(cosine, -1, 1)))


def _copies(n: int, seed: int):
    """The upright reference and ``n`` copies of it in random orientations, shifted up to 1.5
    voxels per axis, with noise (5 % of their standard deviation)."""
    template = _asymmetric_template()
    rng = np.random.default_rng(seed)
    rotations = random_rotations(n, rng)
    shifts = rng.uniform(-1.5, 1.5, size=(n, 3))
    boxes = np.stack([_render(template, r, BOX // 2 + s)
                      for r, s in zip(rotations, shifts, strict=True)])
    boxes += rng.normal(0, 0.05 * boxes.std(), boxes.shape)
    return _render(template, np.eye(3), (BOX // 2,) * 3), boxes.astype(np.float32), rotations, \
        shifts


def test_rotated_particle_returns_upright():
    template = _asymmetric_template()
    reference = _render(template, np.eye(3), (BOX // 2,) * 3)
    rotation = rotation_matrix_zyz(40.0, 70.0, -110.0)
    centre = np.array([19.3, 21.6, 20.2])
    rotated = _render(template, rotation, centre)
    upright = to_reference_frame(rotated, rotation, centre)
    assert _corr(upright, reference) > 0.95
    assert _corr(rotated, reference) < 0.5  # the rotation mattered
    wrong = to_reference_frame(rotated, rotation.T, centre)  # the inverse rotation is not it
    assert _corr(wrong, reference) < _corr(upright, reference) - 0.2


def test_aligned_average_of_many_orientations_matches_reference():
    template = _asymmetric_template()
    reference = _render(template, np.eye(3), (BOX // 2,) * 3)
    rng = np.random.default_rng(0)
    angles = rng.uniform([-180, 0, -180], [180, 180, 180], size=(6, 3))
    rotations = [rotation_matrix_zyz(*a) for a in angles]
    centres = BOX // 2 + rng.uniform(-0.5, 0.5, size=(6, 3))
    boxes = [_render(template, r, c) for r, c in zip(rotations, centres, strict=True)]
    average, n = aligned_average(boxes, rotations, centres)
    assert n == 6 and average.shape == (BOX,) * 3
    assert _corr(average, reference) > 0.95
    assert _corr(np.mean(boxes, axis=0), reference) < _corr(average, reference) - 0.1


def test_centres_in_box_and_errors():
    np.testing.assert_allclose(centres_in_box(np.array([[100.4, 50.6, 20.0]]), BOX),
                               [[20.4, 19.6, 20.0]])
    with pytest.raises(ValueError, match="cubic"):
        to_reference_frame(np.zeros((4, 4, 5)), np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match="no boxes"):
        aligned_average([], [], [])


def test_rotation_grid_covers_rotations_within_its_step():
    grid = rotation_grid(20.0)
    np.testing.assert_allclose(grid @ np.swapaxes(grid, 1, 2), np.broadcast_to(np.eye(3), grid.shape),
                               atol=1e-9)
    probes = random_rotations(500, np.random.default_rng(3))
    nearest = _angle_deg(grid[:, None], probes[None]).min(axis=0)
    assert nearest.max() <= 0.85 * 20.0  # documented: within about 0.8 step
    assert nearest.max() > 0.5 * 20.0  # not a finer grid than it says


def test_alignment_to_the_map_recovers_each_rotation_and_shift():
    reference, boxes, rotations, shifts = _copies(8, seed=1)
    # the global grid's step is 15°; two local levels end on a lattice of 15° / 6 = 2.5°
    found = align_to_reference(boxes, reference, step_deg=15.0, levels=2)
    assert _angle_deg(found.rotations, rotations).max() <= 2.5
    assert np.abs(found.shifts - shifts).max() <= 1.0
    assert found.scores.min() > 0.95
    average, _ = aligned_average(boxes, found.rotations, found.centres(BOX))
    assert _corr(average, reference) > 0.95


def test_reference_free_average_finds_the_map_without_its_orientations():
    reference, boxes, rotations, _ = _copies(24, seed=2)
    result = reference_free_average(boxes, rounds=2)
    assert len(result.round_scores) == 2 and result.round_scores[-1] > 0.9
    assert _corr(boxes.mean(axis=0), reference) < 0.6  # unaligned: a rotational blur
    # the average's frame is arbitrary: bring it onto the map once, with one rotation F
    fit = align_to_reference(result.average[None], reference)
    upright = to_reference_frame(result.average, fit.rotations[0], fit.centres(BOX)[0])
    assert _corr(upright, reference) > 0.9
    # each box holds the average turned by R_i, so the map turned by R_i F: its true rotation
    assert np.median(_angle_deg(result.alignment.rotations @ fit.rotations[0], rotations)) < 5


def test_reference_free_average_of_a_jobs_members_reads_their_boxes(tmp_path):
    _, boxes, _, _ = _copies(6, seed=4)
    job = JobFolder(tmp_path)
    density = create_box_array(job.density, 16, BOX, chunk_boxes=4)
    density[:] = 0.0
    rows = np.array([14, 1, 5, 6, 9, 11])  # members in no particular order, across chunks
    density[np.sort(rows)] = boxes
    members = pd.DataFrame({"box_index": rows, "particle_id": np.arange(6)})
    options = {"rounds": 1, "step_deg": 30.0, "levels": 1, "batch": 4}
    got = average_recovered_reference_free(job, members, **options)
    want = reference_free_average(boxes, **options)
    np.testing.assert_allclose(got.average, want.average, atol=1e-6)
    np.testing.assert_allclose(got.alignment.rotations, want.alignment.rotations, atol=1e-9)
    with pytest.raises(ValueError, match="no boxes"):
        reference_free_average(np.empty((0, BOX, BOX, BOX)))
