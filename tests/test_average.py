"""Bringing rotated, off-centre particles back into the reference frame, and averaging them."""

import numpy as np
import pytest

from dsmscale.averaging import aligned_average, to_reference_frame
from dsmscale.geometry import centres_in_box
from dsmscale.rotations import rotation_matrix_zyz
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
