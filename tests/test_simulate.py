import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage
from scipy.spatial import cKDTree

from dsmscale.simulation.dataset import SimulateConfig, build_datasets
from dsmscale.simulation.density import load_template
from dsmscale.simulation.fast import fast_subtomogram, wedge_mask
from dsmscale.simulation.optics import ctf, ctf_zeros, electron_wavelength_a
from dsmscale.simulation.structures import find_structure
from dsmscale.simulation.tomogram import TomogramConfig, simulate_tomogram

CLASSES = ("1BXN", "3J9I", "4V1W", "1S3X", "2GHO", "4V94")
SMALL = TomogramConfig(shape_zyx=(80, 128, 128), classes=CLASSES, copies_per_class=8,
                       tilt_step_deg=3.0)


@pytest.fixture(scope="module")
def sim():
    return simulate_tomogram(SMALL, seed=3, n_noise=2)


def test_templates_are_centred_and_weighed():
    tmpl = load_template(find_structure("1BXN"), "1BXN")
    assert 4.0e5 < tmpl.mass_da < 6.0e5  # RuBisCO L8S8 without hydrogens, ~480 kDa
    com = ndimage.center_of_mass(tmpl.density)
    np.testing.assert_allclose(com, [tmpl.density.shape[0] // 2] * 3, atol=0.5)
    tmap = load_template(find_structure("4V94"), "4V94")  # a 10 Å map
    np.testing.assert_allclose(ndimage.center_of_mass(tmap.density),
                               [tmap.density.shape[0] // 2] * 3, atol=0.5)


@pytest.mark.parametrize("snr,realisation", [(0.06, 0), (0.01, 1)])
def test_snr_is_met(sim, snr, realisation):
    noisy, measured = sim.noisy(snr, realisation)
    inside = sim.interior()
    independent = sim.noise_free[inside].var() / (noisy - sim.noise_free)[inside].var()
    assert abs(measured / snr - 1) < 0.10 and abs(independent / snr - 1) < 0.10


def _wedge_power_ratio(volume: np.ndarray, margin_deg: float = 5.0) -> float:
    """Mean Fourier power inside the missing wedge over that in the sampled region.

    "Inside" means more than ``margin_deg`` beyond the largest tilt (60°): a finite box spreads
    every sampled central slice by ~1/N in angle, so the boundary itself is excluded. Frequencies
    0.05-0.45 cycles/voxel.
    """
    power = np.abs(np.fft.fftn(volume - volume.mean())) ** 2
    sampled = wedge_mask(volume.shape, 60.0)
    wedge = ~wedge_mask(volume.shape, 60.0 + margin_deg)
    k = np.sqrt(sum(f * f for f in np.meshgrid(*[np.fft.fftfreq(n) for n in volume.shape],
                                                indexing="ij")))
    ring = (k > 0.05) & (k < 0.45)
    return power[wedge & ring].mean() / power[sampled & ring].mean()


def test_missing_wedge_is_empty(sim):
    noisy, _ = sim.noisy(0.06)
    assert _wedge_power_ratio(noisy) < 0.02
    assert _wedge_power_ratio(sim.noise_unit[0]) < 0.02
    assert _wedge_power_ratio(sim.density) > 0.5  # the clean volume has no wedge


def test_no_overlapping_molecules(sim):
    p = sim.placement
    assert len(p) >= 40
    pairs = cKDTree(p.centres).query_pairs(2 * p.radii.max(), output_type="ndarray")
    dist = np.linalg.norm(p.centres[pairs[:, 0]] - p.centres[pairs[:, 1]], axis=1)
    assert np.all(dist >= p.radii[pairs[:, 0]] + p.radii[pairs[:, 1]] - 1e-9)


def test_centres_line_up_with_density(sim):
    """Each molecule's template, rendered at its true centre, correlates best with the tomogram
    (clean density, and the dark noise-free reconstruction) at zero shift."""
    from dsmscale.simulation.render import render_template

    p, half = sim.placement, 12
    score_density = np.zeros((5, 5, 5))
    score_recon = np.zeros((5, 5, 5))
    for cls, centre, rotation in zip(p.class_index, p.centres, p.rotations, strict=True):
        start = np.round(centre).astype(int) - half
        if np.any(start - 2 < 0) or np.any(start + 2 * half + 3 > sim.density.shape):
            continue
        model = np.zeros((2 * half + 1,) * 3, np.float32)
        render_template(model, start, sim.templates[cls].density, rotation, centre)
        for i, j, k in np.ndindex(5, 5, 5):
            s = start + np.array([i - 2, j - 2, k - 2])
            sl = tuple(slice(a, a + 2 * half + 1) for a in s)
            score_density[i, j, k] += (model * sim.density[sl]).sum()
            score_recon[i, j, k] -= (model * sim.noise_free[sl]).sum()
    assert np.unravel_index(score_density.argmax(), (5, 5, 5)) == (2, 2, 2)
    assert np.unravel_index(score_recon.argmax(), (5, 5, 5)) == (2, 2, 2)


def test_ctf_zeros_at_theory():
    assert electron_wavelength_a(300) == pytest.approx(0.01969, abs=1e-5)
    zeros = ctf_zeros(4, defocus_um=5.0, amplitude_contrast=0.07)
    values = ctf(zeros**2, defocus_um=5.0, amplitude_contrast=0.07)
    np.testing.assert_allclose(values, 0, atol=1e-9)
    # without amplitude contrast the first zero is at k = 1/sqrt(λ Δf) (Cs negligible there)
    first = ctf_zeros(1, defocus_um=5.0, amplitude_contrast=0.0)[0]
    assert first == pytest.approx(1 / np.sqrt(0.01969 * 5e4), rel=0.01)
    mid = (zeros[:-1] + zeros[1:]) / 2
    signs = np.sign(ctf(mid**2, defocus_um=5.0, amplitude_contrast=0.07))
    assert np.all(signs[:-1] == -signs[1:])
    assert ctf(np.array([0.0]), amplitude_contrast=0.07)[0] < 0  # protein dark


def test_same_seed_same_output():
    tiny = SMALL.model_copy(update={"shape_zyx": (40, 64, 64), "copies_per_class": 2})
    a, b = (simulate_tomogram(tiny, seed=9) for _ in range(2))
    np.testing.assert_array_equal(a.noisy(0.05)[0], b.noisy(0.05)[0])
    np.testing.assert_array_equal(a.placement.centres, b.placement.centres)
    c = simulate_tomogram(tiny, seed=10)
    assert not np.array_equal(a.placement.centres, c.placement.centres)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "out"
    cfg = SimulateConfig(tomogram=SMALL.model_copy(update={"copies_per_class": 12}),
                         holdout_classes=("4V94",), seed=2, ome_zarr=True)
    summary = build_datasets(cfg, out, progress=False)
    return out, summary


def test_dataset_layout_and_splits(dataset):
    out, summary = dataset
    for name in ("A", "B"):
        table = pd.read_parquet(out / "datasets" / name / "particles.parquet")
        x = zarr.open_array(str(out / "datasets" / name / "subtomograms.zarr"))
        assert x.shape == (len(table), 40, 40, 40) == (summary["n_subtomograms"][name], 40, 40, 40)
        assert set(table.loc[table["class_name"] == "4V94", "split"]) == {"heldout"}
        kept = table[table["class_name"] != "4V94"]
        assert 0.65 <= (kept["split"] == "train").mean() <= 0.85
        for _cls, group in kept.groupby("class_name"):  # stratified: every class trains
            assert (group["split"] == "train").sum() >= 1
        assert summary["snr_measured"][name] == pytest.approx(cfg_snr(name), rel=0.1)
    assert (out / "tomogram_slices.png").is_file() and (out / "classes_A.png").is_file()
    assert (out / "truth" / "tomo_000.star").is_file()
    assert summary["environment"]["numpy"] == np.__version__  # what the draws depended on
    assert set(summary["environment"]) == {"python", "dsmscale", "numpy", "scipy", "gemmi"}
    from dsmscale.io.omezarr import open_tomogram

    assert open_tomogram(out / "tomograms" / "tomo_000_A.zarr").shape == SMALL.shape_zyx


def cfg_snr(name):
    return {"A": 0.06, "B": 0.01}[name]


def test_target_mask_excludes_neighbours(dataset):
    out, _ = dataset
    table = pd.read_parquet(out / "datasets" / "A" / "particles.parquet")
    density = zarr.open_array(str(out / "datasets" / "A" / "density.zarr"))
    mask = zarr.open_array(str(out / "datasets" / "A" / "mask.zarr"))
    import mrcfile

    full = mrcfile.read(out / "tomograms" / "tomo_000_density.mrc")
    crowded = 0
    for _, row in table.iterrows():
        i = int(row["index"])
        start = np.floor(row[["z", "y", "x"]].to_numpy(float) + 0.5).astype(int) - 20
        crop = full[start[0]:start[0] + 40, start[1]:start[1] + 40, start[2]:start[2] + 40]
        target, m = np.asarray(density[i]), np.asarray(mask[i]).astype(bool)
        assert not np.any(m & (target <= 0))
        neighbours = (crop - target) > 50.0  # another molecule's density in this box
        if neighbours.sum() > 20:
            crowded += 1
            assert not np.any(m & neighbours & (target < 1.0))
        np.testing.assert_allclose(target[m].sum(), crop[m].sum() - (crop - target)[m].sum(),
                                   rtol=1e-4)
    assert crowded > 0, "no box had a neighbour: the test would prove nothing"


def test_fast_path_snr_and_wedge():
    tmpl = load_template(find_structure("1BXN"), "1BXN").density
    clean = np.zeros((40, 40, 40), np.float32)
    e = tmpl.shape[0]
    clean[20 - e // 2:20 - e // 2 + e, 20 - e // 2:20 - e // 2 + e, 20 - e // 2:20 - e // 2 + e] = tmpl
    noisy = fast_subtomogram(clean, snr=0.1, rng=np.random.default_rng(0))
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    assert _wedge_power_ratio(noisy) < 0.02
