"""`dsmscale run` takes the tables users have: one table for many tomograms, several tables for
one tomogram, a copick project as the whole input; names are matched before anything runs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dsmscale.errors import InputError
from dsmscale.io.copick_project import write_copick_project
from dsmscale.io.omezarr import create_pyramid
from dsmscale.io.particles import make_particles, read_particles, write_particles
from dsmscale.pipeline import RunConfig
from dsmscale.pipeline.inputs import name_inputs


def _store(path: Path, voxel_size_a: float = 10.0) -> str:
    arrays = create_pyramid(path, (20, 30, 40), n_levels=1, chunk=16, voxel_size_a=voxel_size_a,
                            origin_a=(0.0, 0.0, 0.0), zarr_format=3, codec="none", clevel=0,
                            name=path.stem)
    arrays[0][:] = 0.0
    return str(path)


def _config(tmp_path, tomograms, particles, **keys) -> RunConfig:
    return RunConfig(tomograms=tomograms, particles=particles, output=str(tmp_path / "job"),
                     **keys)


@pytest.fixture()
def stores(tmp_path):
    return [_store(tmp_path / f"{name}.zarr") for name in ("TS_01", "TS_02", "TS_03")]


def _table(names, voxel_size_a=2.5, **columns):
    rng = np.random.default_rng(len(names))
    return make_particles(rng.uniform(0, 60, (len(names), 3)), names, voxel_size_a, **columns)


def test_one_relion_table_for_many_tomograms_is_split_by_name(tmp_path, stores):
    # Warp's names: TS_01.tomostar; RELION 3.1 style, unbinned 2.5 Å pixels
    table = _table(["TS_01.tomostar"] * 3 + ["TS_02.tomostar"] * 2)
    star = write_particles(table, tmp_path / "all.star")
    inputs = name_inputs(_config(tmp_path, stores, [str(star)]))
    assert {n: len(t) for n, t in inputs.particles.items()} == {"TS_01": 3, "TS_02": 2}
    np.testing.assert_allclose(inputs.particles["TS_02"].coordinates_a(),
                               table.coordinates_a()[3:], atol=1e-4)


def test_per_class_tables_of_the_same_tomograms_are_merged(tmp_path, stores):
    ribosomes = write_particles(_table(["TS_01"] * 2, class_name=["ribosome"] * 2),
                                tmp_path / "ribosome.star")
    fas = write_particles(_table(["TS_01", "TS_03", "TS_03"], class_name=["FAS"] * 3),
                          tmp_path / "fas.star")
    inputs = name_inputs(_config(tmp_path, stores, [str(ribosomes), str(fas)]))
    merged = inputs.particles["TS_01"].df
    assert sorted(merged["class_name"]) == ["FAS", "ribosome", "ribosome"]
    assert not merged["particle_id"].duplicated().any()  # the tables' ids 0, 1 collided
    assert len(inputs.particles["TS_03"]) == 2 and "TS_02" not in inputs.particles


def test_a_tomogram_named_in_a_table_but_not_given_is_one_line(tmp_path, stores):
    star = write_particles(_table(["TS_01", "TS_09"]), tmp_path / "all.star")
    with pytest.raises(InputError, match=r"all.star: names tomogram 'TS_09', which is not among "
                                         r"the tomograms given \(TS_01, TS_02, TS_03\)"):
        name_inputs(_config(tmp_path, stores, [str(star)]))


def test_one_table_of_one_tomogram_goes_with_the_one_tomogram(tmp_path, stores):
    csv = write_particles(_table(["picked_somewhere"] * 4), tmp_path / "picks.csv")
    inputs = name_inputs(_config(tmp_path, stores[:1], [str(csv)]))
    assert list(inputs.particles) == ["TS_01"] and len(inputs.particles["TS_01"]) == 4


def test_a_copick_project_is_the_whole_input(tmp_path, stores):
    table = _table(["TS_01", "TS_02", "TS_02"], class_name=["ribosome"] * 3)
    config = write_copick_project(table, tmp_path / "project",
                                  {"TS_01": stores[0], "TS_02": stores[1]})
    inputs = name_inputs(_config(tmp_path, [str(config)], [str(config)]))
    assert sorted(inputs.tomograms) == ["TS_01", "TS_02"]
    assert all("ExperimentRuns" in path for path in inputs.tomograms.values())
    np.testing.assert_allclose(inputs.particles["TS_02"].coordinates_a(),
                               table.coordinates_a()[1:], atol=1e-6)


def test_a_tomogram_no_table_names_is_picked_or_skipped(tmp_path, stores):
    from dsmscale.io.omezarr import open_tomogram
    from dsmscale.pipeline.inputs import resolve_particles

    star = write_particles(_table(["TS_01", "TS_02"]), tmp_path / "all.star")
    config = _config(tmp_path, stores, [str(star)], without_particles="skip",
                     pick={"sigma_nm": 1.0, "min_distance_nm": 2.0})
    inputs = name_inputs(config)
    tomograms = {name: open_tomogram(path) for name, path in inputs.tomograms.items()}
    assert sorted(resolve_particles(inputs, config, tomograms)) == ["TS_01", "TS_02"]
    picked = resolve_particles(inputs, config.model_copy(update={"without_particles": "pick"}),
                               tomograms)
    assert sorted(picked) == ["TS_01", "TS_02", "TS_03"]  # TS_03 went to the DoG picker


def test_one_star_for_two_tomograms_runs_end_to_end(tmp_path, blob_store, tiny_checkpoint,
                                                    ray_session):
    """A RELION 3.1 table in unbinned 2 Å pixels with refined shifts, for two 8 Å tomograms
    (and a third that no table names, picked): every particle lands where it is in Å."""
    import shutil

    import starfile

    from dsmscale.io.job import JobFolder
    from dsmscale.pipeline import run_job

    for name in ("TS_A", "TS_B", "TS_C"):
        shutil.copytree(blob_store["store"], tmp_path / f"{name}.zarr")
    truth_a = blob_store["centres"][:, ::-1] * blob_store["voxel_size_a"]  # x, y, z in Å
    rng = np.random.default_rng(0)
    shifts_a = rng.uniform(-15, 15, truth_a.shape)  # refined: centre = coordinate − shift
    n = len(truth_a)
    star = tmp_path / "run_data.star"
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"],
                                            "rlnImagePixelSize": [2.0]}),
                    "particles": pd.DataFrame({
                        "rlnTomoName": ["TS_A.tomostar"] * (n // 2) + ["TS_B.tomostar"] * (n - n // 2),
                        **{f"rlnCoordinate{a}": (truth_a[:, i] + shifts_a[:, i]) / 2.0
                           for i, a in enumerate("XYZ")},
                        **{f"rlnOrigin{a}Angst": shifts_a[:, i] for i, a in enumerate("XYZ")},
                        "rlnOpticsGroup": 1, "rlnClassNumber": 1})}, star)
    config = RunConfig(tomograms=[str(tmp_path / f"{t}.zarr") for t in ("TS_A", "TS_B", "TS_C")],
                       particles=[str(star)], output=str(tmp_path / "job"),
                       model=str(tiny_checkpoint), num_actors=1, threads_per_actor=1,
                       max_particles_per_unit=16, batch_size=8, discover=None, write_maps=False,
                       pick={"polarity": "bright", "sigma_nm": 2.0, "min_distance_nm": 8.0})
    summary = run_job(config)
    results = JobFolder(config.output).read_particles()
    counts = results.groupby("tomogram").size()
    assert counts["TS_A"] == n // 2 and counts["TS_B"] == n - n // 2 and counts["TS_C"] > 0
    assert summary["tomograms"] == 3
    got = results[results["tomogram"] != "TS_C"].sort_values(["tomogram", "particle_id"])
    np.testing.assert_allclose(got[["x_a", "y_a", "z_a"]].to_numpy(), truth_a, atol=0.01)
    # the job's tables, as RELION 5 and copick read them back: the same positions
    relion5 = read_particles(Path(config.output) / "relion5" / "optimisation_set.star")
    copick = read_particles(Path(config.output) / "copick" / "copick_config.json")
    for back in (relion5, copick):
        assert len(back) == len(results)
        np.testing.assert_allclose(np.sort(back.coordinates_a(), axis=0),
                                   np.sort(results[["z_a", "y_a", "x_a"]].to_numpy(), axis=0),
                                   atol=0.01)


def test_an_anisotropic_mrc_runs_with_a_table_in_angstrom(tmp_path, tiny_checkpoint, ray_session):
    """An MRC with permuted axes and anisotropic voxels, a TARDIS-style CSV in Å: the job cuts
    every box on the model's grid and reports each particle where it is, in Å."""
    import mrcfile
    from blobs import blob_tomogram

    from dsmscale.io.job import JobFolder
    from dsmscale.pipeline import run_job

    voxel_zyx = np.array([12.0, 9.0, 7.5])
    shape = (40, 60, 70)
    centres_px = np.array([[20.0, 30, 35], [12, 20, 50], [28, 44, 20]])
    volume = blob_tomogram(shape, centres_px, sigma_px=2.0, noise_std=0.05)
    with mrcfile.new(tmp_path / "aniso.mrc") as mrc:  # stored x-fastest as (y, z, x): MAPR = z
        mrc.set_data(np.ascontiguousarray(volume.transpose(1, 0, 2)))
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = 1, 3, 2
        mrc.voxel_size = tuple(voxel_zyx[::-1])
    truth_a = centres_px * voxel_zyx
    pd.DataFrame({"X [A]": truth_a[:, 2], "Y [A]": truth_a[:, 1],
                  "Z [A]": truth_a[:, 0]}).to_csv(tmp_path / "aniso.csv", index=False)
    config = RunConfig(tomograms=[str(tmp_path / "aniso.mrc")],
                       particles=[str(tmp_path / "aniso.csv")], output=str(tmp_path / "job"),
                       model=str(tiny_checkpoint), num_actors=1, threads_per_actor=1,
                       batch_size=4, discover=None)
    run_job(config)
    results = JobFolder(config.output).read_particles().sort_values("particle_id")
    np.testing.assert_allclose(results[["z_a", "y_a", "x_a"]].to_numpy(), truth_a, atol=0.01)
    star = read_particles(Path(config.output) / "aniso_particles.star")
    order = np.argsort(star.df["particle_id"].to_numpy())
    np.testing.assert_allclose(star.coordinates_a()[order], truth_a, atol=0.01)
    assert not (Path(config.output) / "relion5").exists()  # RELION's tomograms are isotropic


def test_a_copick_project_with_several_tomograms_per_run_is_chosen_from(tmp_path, stores):
    from dsmscale.io.copick_project import copy_tomogram_for_copick

    table = _table(["TS_01", "TS_02"], class_name=["ribosome"] * 2)
    config = write_copick_project(table, tmp_path / "project",
                                  {"TS_01": stores[0], "TS_02": stores[1]}, tomogram_type="wbp")
    copy_tomogram_for_copick(stores[0], tmp_path / "project", "TS_01", "denoised")
    with pytest.raises(InputError, match=r"runs hold several tomograms \(spacing/type: "
                                         r"10.000/denoised, 10.000/wbp\)"):
        name_inputs(_config(tmp_path, [str(config)], [str(config)]))
    inputs = name_inputs(_config(tmp_path, [str(config)], [str(config)],
                                 copick_tomogram_type="wbp", copick_voxel_spacing_a=10.0))
    assert sorted(inputs.tomograms) == ["TS_01", "TS_02"]
    assert all(path.endswith("wbp.zarr") for path in inputs.tomograms.values())
