"""Randomised simulation: each tomogram draws its own microscope and sample conditions from the
configured ranges, records them, and its boxes reach the model's grid as a user's would."""

import json
import shutil

import mrcfile
import numpy as np
import pandas as pd
import pytest
import zarr

from dsmscale.cli import main
from dsmscale.errors import InputError
from dsmscale.io.dataset import read_dataset_table
from dsmscale.io.particles import read_particles
from dsmscale.randomised import RandomisedConfig, simulate_randomised
from dsmscale.simulation.conditions import ConditionRanges, draw_conditions, tomogram_config
from dsmscale.simulation.placement import place_crowded
from dsmscale.simulation.tomogram import TomogramConfig

CLASSES = ("1BXN", "4V94", "3J9I")


def test_draws_stay_in_their_ranges_and_snr_is_log_uniform():
    ranges = ConditionRanges()
    rng = np.random.default_rng(0)
    draws = pd.DataFrame([draw_conditions(ranges, rng).model_dump() for _ in range(2000)])
    for name in ("snr", "defocus_um", "thickness_nm", "voxel_size_a", "volume_fraction"):
        low, high = getattr(ranges, name)
        assert draws[name].between(low, high).all(), name
    assert set(draws["cs_mm"]) == set(ranges.cs_mm)
    assert set(draws["tilt_step_deg"]) == set(ranges.tilt_step_deg)
    # log-uniform: the median is the geometric mean of the bounds (0.0224), not their mean
    assert np.median(draws["snr"]) == pytest.approx(np.sqrt(0.005 * 0.1), rel=0.1)
    assert (-draws["tilt_min_deg"]).between(45, 70).all() and draws["tilt_max_deg"].between(45, 70).all()
    asymmetric = ~np.isclose(-draws["tilt_min_deg"], draws["tilt_max_deg"])
    assert asymmetric.mean() == pytest.approx(ranges.asymmetric_fraction, abs=0.04)


def test_a_seed_draws_the_same_conditions_and_degenerate_ranges_fix_them():
    ranges = ConditionRanges(snr=(0.03, 0.03), tilt_limit_deg=(60, 60), cs_mm=(2.7,))
    a = draw_conditions(ranges, np.random.default_rng(5))
    assert a == draw_conditions(ranges, np.random.default_rng(5))
    assert a.snr == pytest.approx(0.03) and a.cs_mm == 2.7
    assert (a.tilt_min_deg, a.tilt_max_deg) == (-60, 60)


@pytest.mark.parametrize("bad", [{"snr": (0.1, 0.01)}, {"voxel_size_a": (0, 10)},
                                 {"tilt_limit_deg": (45, 95)}, {"asymmetric_fraction": 2}])
def test_unordered_or_impossible_ranges_are_refused_in_one_line(bad, tmp_path):
    path = tmp_path / "ranges.yaml"
    path.write_text(json.dumps({"ranges": bad}))
    with pytest.raises(InputError) as err:
        RandomisedConfig.from_yaml(path)
    assert str(path) in str(err.value) and "ranges" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_tomogram_has_the_drawn_extent_voxel_size_and_crowding():
    ranges = ConditionRanges(voxel_size_a=(12.5, 12.5), thickness_nm=(80, 80),
                             volume_fraction=(0.2, 0.2))
    conditions = draw_conditions(ranges, np.random.default_rng(1))
    config, templates = tomogram_config(conditions, TomogramConfig(classes=CLASSES), 150)
    assert config.shape_zyx == (64, 120, 120)  # 80 nm and 150 nm at 1.25 nm, even
    assert config.voxel_size_a == 12.5 and config.tilt_max_deg == conditions.tilt_max_deg
    assert config.defocus_jitter_um == 0 and config.defocus_um == conditions.defocus_um
    placement = place_crowded(config.shape_zyx, [t.radius_px for t in templates],
                              [config.copies_per_class] * len(templates),
                              np.random.default_rng(0))
    assert placement.volume_fraction(config.shape_zyx) == pytest.approx(0.2, abs=0.02)


@pytest.fixture(scope="module")
def randomised(tmp_path_factory):
    out = tmp_path_factory.mktemp("randomised")
    config = RandomisedConfig(
        classes=CLASSES, lateral_nm=120, n_tomograms=3, split_fractions=(0.34, 0.33, 0.33),
        ranges=ConditionRanges(thickness_nm=(70, 90), voxel_size_a=(8, 14),
                               volume_fraction=(0.1, 0.2)))
    return config, out, simulate_randomised(config, out, progress=False)


def test_every_tomogram_records_its_draw_and_its_boxes_are_on_the_model_grid(randomised):
    config, out, summary = randomised
    conditions = pd.read_parquet(out / "conditions.parquet")
    assert list(conditions["tomogram"]) == ["TS_000", "TS_001", "TS_002"]
    assert conditions["voxel_size_a"].nunique() == 3  # each drew its own
    for row in conditions.itertuples():
        with mrcfile.open(out / "tomograms" / f"{row.tomogram}.mrc", permissive=False) as mrc:
            shape, voxel_size = mrc.data.shape, float(mrc.voxel_size.x)
        assert shape == tuple(row.shape_zyx)
        assert voxel_size == pytest.approx(row.voxel_size_a, rel=1e-6)
        assert row.snr_measured == pytest.approx(row.snr, rel=1e-3)
        table = read_particles(out / "tomograms" / f"{row.tomogram}.star")
        assert len(table) == row.molecules and table.voxel_size_a == pytest.approx(voxel_size)
    dataset = out / "dataset"
    boxes = zarr.open_array(str(dataset / "subtomograms.zarr"), mode="r")
    assert boxes.shape[1:] == (40, 40, 40) and boxes.shape[0] == summary["n_subtomograms"]
    table = read_dataset_table(dataset)
    assert table["has_targets"].all()  # every class has a template, every particle angles
    assert table.groupby("tomogram")["split"].nunique().max() == 1  # whole tomograms


def test_a_rerun_skips_the_tomograms_already_simulated_and_may_add_more(randomised):
    config, out, _ = randomised
    mrc = out / "tomograms" / "TS_001.mrc"
    before = mrc.stat().st_mtime_ns
    (out / "tomograms" / "TS_002.json").unlink()  # as if it had been cut off mid-tomogram
    simulate_randomised(config, out, progress=False)
    assert mrc.stat().st_mtime_ns == before
    assert (out / "tomograms" / "TS_002.json").is_file()


def test_a_folder_grows_by_the_tomograms_asked_for_keeping_those_it_has(randomised, tmp_path):
    config, out, _ = randomised
    fewer = tmp_path / "fewer"
    (fewer / "tomograms").mkdir(parents=True)
    for name in ("TS_000", "TS_001"):
        for suffix in (".mrc", ".star", ".json"):
            shutil.copy2(out / "tomograms" / f"{name}{suffix}", fewer / "tomograms")
    (fewer / "randomised.json").write_text(
        json.dumps(config.model_copy(update={"n_tomograms": 2}).model_dump(mode="json")))
    kept = (fewer / "tomograms" / "TS_001.mrc").stat().st_mtime_ns
    grown = simulate_randomised(config, fewer, progress=False)
    assert (fewer / "tomograms" / "TS_001.mrc").stat().st_mtime_ns == kept
    assert [c["tomogram"] for c in grown["conditions"]] == ["TS_000", "TS_001", "TS_002"]
    assert grown["n_subtomograms"] == len(read_dataset_table(out / "dataset"))
    with pytest.raises(InputError, match="another config"):
        simulate_randomised(config.model_copy(update={"seed": 1}), out, progress=False)


def test_the_command_writes_the_dataset(tmp_path, capsys):
    config = tmp_path / "randomised.yaml"
    config.write_text("lateral_nm: 120\nclasses: [1BXN, 4V94]\nsplit_fractions: [0.34, 0.33, "
                      "0.33]\nranges:\n  thickness_nm: [90, 100]\n  volume_fraction: [0.2, 0.2]\n")
    assert main(["simulate-randomised", "--config", str(config), "--tomograms", "3",
                 "-o", str(tmp_path / "out")]) == 0
    assert "-> " + str(tmp_path / "out" / "dataset") in capsys.readouterr().out
    assert (tmp_path / "out" / "dataset" / "particles.parquet").is_file()



def test_the_model_card_states_the_ranges_and_what_was_drawn(randomised):
    from dsmscale.report.model_card import _randomised_data

    _, out, _ = randomised
    conditions = pd.read_parquet(out / "conditions.parquet")
    line = _randomised_data(json.loads((out / "randomised.json").read_text()),
                            conditions.to_dict(orient="records"))
    assert "3 tomograms of 120 nm" in line and "SNR 0.005–0.1 (drawn " in line
    assert f"{conditions['voxel_size_a'].min():.3g}–{conditions['voxel_size_a'].max():.3g}" in line
