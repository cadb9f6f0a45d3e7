"""The Ray Data job end to end on real files, with exactly-once resume."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from ome_zarr_models.v05 import Image

from dsmscale.checkpoints import load_checkpoint, model_from_checkpoint
from dsmscale.errors import InputError, InputWarning
from dsmscale.extraction import extract_subtomograms
from dsmscale.geometry import box_starts
from dsmscale.inference.backend import InferenceModel
from dsmscale.io.job import JobFolder
from dsmscale.io.particles import ParticleTable, make_particles, read_star, write_csv
from dsmscale.pipeline import RunConfig, run_job
from dsmscale.pipeline.outputs import _paste_unit
from dsmscale.pipeline.plan import IDENTITY
from dsmscale.pipeline.run import check_resumable, job_identity, open_for_model


@pytest.fixture()
def job(tmp_path, blob_store, tiny_checkpoint, ray_session):
    table = make_particles(blob_store["centres"], "blobs", blob_store["voxel_size_a"],
                           ids=np.arange(1000, 1000 + len(blob_store["centres"])))
    csv = write_csv(table, tmp_path / "blobs.csv")
    config = RunConfig(tomograms=[str(blob_store["mrc"])], particles=[str(csv)],
                       output=str(tmp_path / "job"), model=str(tiny_checkpoint), num_actors=1,
                       threads_per_actor=1, max_particles_per_unit=16, batch_size=8)
    return config, table


def test_job_outputs_every_particle_once(job):
    config, table = job
    summary = run_job(config)
    assert summary["particles_processed"] == len(table) and summary["units_total"] >= 3
    _check_outputs_are_the_models(config)
    # the blob tomogram is at 8 Å, the tiny model was trained on the simulator's 10 Å grid:
    # its boxes are resampled to 10 Å, and that is said (not warned)
    assert summary["warnings"] == [] and len(summary["resampled"]) == 1
    assert "blobs.zarr: boxes resampled from 8 Å (level 0) to the model's 10 Å" in \
        summary["resampled"][0]
    results = JobFolder(Path(config.output)).read_particles()
    assert sorted(results["particle_id"]) == sorted(table.df["particle_id"])
    assert set(results["class_name"]) <= set(torch.load(config.model, weights_only=True)["classes"])
    seg = zarr.open_array(f"{config.output}/segmentation.zarr")
    assert seg.shape[1:] == (40, 40, 40) and seg.shape[0] >= len(table)
    assert seg.chunks[0] == 64 and results["box_index"].is_unique
    full = pd.read_parquet(f"{config.output}/particles.parquet")
    assert len(full.loc[0, "features"]) == 1024
    for kind in ("labels", "density"):
        Image.from_zarr(zarr.open_group(f"{config.output}/maps/blobs_{kind}.zarr", mode="r"))
    star = read_star(f"{config.output}/blobs_particles.star")
    assert len(star) == len(table)
    report = Path(config.output, "report.md").read_text()
    assert f"| blobs | {len(table)} |" in report  # particles per tomogram
    assert "## Discovery" in report and "discovery/tsne.png" in report
    assert summary["discovery"]["k"] >= 2


def _check_outputs_are_the_models(config: RunConfig) -> None:
    """Every particle's class, probabilities, mask and density are what the model gives on its
    box (cut anew from the tomogram), and the maps hold the masks and densities where they are."""
    out = Path(config.output)
    results = JobFolder(out).read_particles(
        columns=["particle_id", "box_index", "z", "y", "x", "class_index", "score",
                 "probabilities"]).sort_values("box_index")
    store = Path(next((out / "tomograms").glob("*.zarr")))
    ckpt = load_checkpoint(config.model)
    table = make_particles(results[["z", "y", "x"]].to_numpy(), "blobs", 8.0,
                           ids=results["particle_id"].to_numpy())
    boxes = {int(i): b for batch in extract_subtomograms(store, table, box=40, normalise=True,
                                                          resample_to_a=10.0)
             for i, b in zip(batch.particle_id, batch.boxes, strict=True)}
    model = InferenceModel(model_from_checkpoint(ckpt), 8, compile="off")
    want = model(np.stack([boxes[int(i)] for i in results["particle_id"]]))
    probs = np.stack(results["probabilities"].to_numpy())
    np.testing.assert_allclose(probs, torch.softmax(want["logits"], 1).numpy(), atol=0.02)
    np.testing.assert_array_equal(results["class_index"], probs.argmax(1))
    np.testing.assert_allclose(results["score"], probs.max(1), rtol=1e-6)
    rows = results["box_index"].to_numpy()
    seg = zarr.open_array(str(out / "segmentation.zarr"))[:][rows]
    rec = zarr.open_array(str(out / "density.zarr"))[:][rows]
    assert np.mean(seg == want["seg"].argmax(1).numpy()) > 0.99  # bf16 ties may flip a voxel
    scale = float(ckpt["normalisation"]["density_scale"])
    np.testing.assert_allclose(rec, want["rec"][:, 0].numpy() * scale, atol=0.02 * scale)
    _check_maps(out, results, seg, rec)


def _check_maps(out: Path, results: pd.DataFrame, seg: np.ndarray, rec: np.ndarray) -> None:
    """The maps are on the model's 10 Å grid (the boxes were resampled from the 8 Å tomogram):
    as many voxels as fit in its extent, the tomogram's translation. The label map is non-zero
    exactly on the union of the predicted masks, each pasted at the map voxel nearest its
    centre; where only one mask covers a voxel it holds that particle's class + 1, and the
    density map is the maximum of the recovered densities (0 outside every box)."""
    group = zarr.open_group(str(out / "maps" / "blobs_labels.zarr"), mode="r")
    labels = group["0"][:]
    density = zarr.open_group(str(out / "maps" / "blobs_density.zarr"), mode="r")["0"][:]
    tomogram = zarr.open_group(str(next((out / "tomograms").glob("*.zarr"))), mode="r")
    assert labels.shape == tuple((n - 1) * 8 // 10 + 1 for n in tomogram["0"].shape)
    (transforms,) = [d["coordinateTransformations"]
                     for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    assert transforms[0]["scale"] == [10.0] * 3
    assert transforms[1]["translation"] == [0.0] * 3
    pad = 40
    cover = np.zeros(np.add(labels.shape, 2 * pad), np.int32)
    owner = np.zeros_like(cover)
    peak = np.zeros(cover.shape, np.float32)
    for i, start in enumerate(box_starts(results[["z", "y", "x"]].to_numpy() * 0.8, 40) + pad):
        box = tuple(slice(s, s + 40) for s in start)
        cover[box] += seg[i] > 0
        owner[box][seg[i] > 0] = results["class_index"].iloc[i] + 1
        np.maximum(peak[box], rec[i], out=peak[box])
    inner = tuple(slice(pad, pad + n) for n in labels.shape)
    cover, owner, peak = cover[inner], owner[inner], peak[inner]
    assert cover.any()
    np.testing.assert_array_equal(labels > 0, cover > 0)
    np.testing.assert_array_equal(labels[cover == 1], owner[cover == 1])
    np.testing.assert_allclose(density, peak, rtol=1e-6)


def test_pasted_label_map_holds_each_particle_class_plus_one_inside_its_mask():
    """Unit test of the paste (the job's tiny model puts every masked particle in class 0, so
    the job test cannot tell a class from a constant): three particles of different classes
    and mask sizes, stored at rows 4-6 of the unit's arrays, pasted into a 53×60×60 map from
    slab z = 3; the third mask is cut by the volume's far z and x faces."""
    shape = np.array([53, 60, 60])
    maps = {"labels": np.zeros(shape, np.uint16), "density": np.zeros(shape, np.float32)}
    rows = pd.DataFrame({"z": [23, 28, 48], "y": [20, 45, 30], "x": [20, 30, 57],
                         "box_index": [4, 5, 6], "class_index": [3, 0, 7]})
    zz, yy, xx = np.ogrid[:40, :40, :40]
    balls = {r: (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= r**2 for r in (4, 5, 6)}
    radii = [5, 4, 6]
    seg = np.ones((7, 40, 40, 40), np.uint8)  # rows 0-3 belong to other units: all mask
    seg[4:] = np.stack([balls[r] for r in radii])
    rec = np.random.default_rng(0).random((7, 40, 40, 40), np.float32)
    _paste_unit(rows, seg, rec, maps, 40, shape)
    labels = maps["labels"]
    for i, (z, y, x, cls) in enumerate(rows[["z", "y", "x", "class_index"]].to_numpy()):
        assert labels[z, y, x] == cls + 1
        r = radii[i]
        assert labels[z - r, y, x] == cls + 1 and labels[z - r - 1, y, x] == 0  # mask's edge
        assert maps["density"][z, y, x] == rec[4 + i, 20, 20, 20]  # no other box covers it
    # the third box starts at (28, 10, 37): its z < 25 and x < 23 lie inside the volume
    assert (labels > 0).sum() == balls[5].sum() + balls[4].sum() + balls[6][:25, :, :23].sum()


def test_rerun_skips_finished_units_and_redoes_lost_ones(job):
    config, table = job
    first = run_job(config)
    again = run_job(config)
    assert again["units_skipped"] == first["units_total"] and again["particles_processed"] == 0
    parts = sorted(Path(config.output, "particles.parquet").glob("*.parquet"))
    lost = pd.read_parquet(parts[1])
    parts[1].unlink()  # as if the job died before this unit finished
    third = run_job(config)
    assert third["particles_processed"] == len(lost)
    results = JobFolder(Path(config.output)).read_particles()
    assert sorted(results["particle_id"]) == sorted(table.df["particle_id"])
    assert third["particles_per_s"] > 0 and again["particles_per_s"] is None
    assert "finished by an earlier run" not in Path(config.output, "report.md").read_text()


def test_rerun_with_other_inputs_is_refused_and_keeps_the_finished_job(job, tmp_path):
    config, table = job
    run_job(config)
    summary = Path(config.output, "summary.json").read_text()
    (tmp_path / "fewer").mkdir()
    fewer = write_csv(ParticleTable(table.df.iloc[:5], table.voxel_size_a),
                      tmp_path / "fewer" / "blobs.csv")
    for change in ({"level": 1}, {"particles": [str(fewer)]}, {"edge": "skip"}):
        with pytest.raises(InputError, match=f"job made with other {next(iter(change))}"):
            run_job(config.model_copy(update=change))
    with pytest.raises(InputError, match="takes 40³ boxes, not the job's box of 32"):
        run_job(config.model_copy(update={"box": 32}))  # the network takes one box size
    assert Path(config.output, "summary.json").read_text() == summary  # still marked finished


def test_coordinates_in_angstrom_do_not_depend_on_the_level_seen(job):
    """At pyramid level 1 the boxes are cut from the half-size volume, but every particle's Å
    coordinates are still its level-0 position times the level-0 voxel size."""
    config, table = job
    run_job(config.model_copy(update={"level": 1, "discover": None, "write_maps": False}))
    results = JobFolder(config.output).read_particles().set_index("particle_id")
    results = results.loc[table.df["particle_id"]]
    np.testing.assert_allclose(results[["z_a", "y_a", "x_a"]].to_numpy(), table.coordinates_a(),
                               atol=1e-6)
    np.testing.assert_allclose(results[["z", "y", "x"]].to_numpy(),
                               table.at_level(1).df[["z", "y", "x"]].to_numpy())


def test_a_folder_of_the_layout_before_box_index_is_refused(tmp_path):
    config = RunConfig(tomograms=["TS_01.zarr"], particles=["TS_01.star"], output=str(tmp_path))
    identity = job_identity(config, "run")
    (tmp_path / "plan").mkdir()
    old = {k: v for k, v in identity.items() if k != "layout"}  # written before the layout key
    (tmp_path / "plan" / IDENTITY).write_text(json.dumps(old))
    with pytest.raises(InputError, match="holds a job made with other layout"):
        check_resumable(JobFolder(tmp_path), identity)
    (tmp_path / "plan" / IDENTITY).write_text(json.dumps(identity))
    check_resumable(JobFolder(tmp_path), identity)  # the same job resumes


def test_max_restarts_of_old_configs_sets_both_of_its_successors():
    with pytest.warns(InputWarning, match="'max_restarts' is now two"):
        config = RunConfig.from_mapping({"tomograms": ["a.zarr"], "output": "job",
                                         "max_restarts": 5})
    assert config.max_actor_restarts == config.io_retries == 5


def test_the_level_nearest_below_the_model_grid_is_chosen_and_resample_off_is_strict(blob_store):
    """The blob store is 8, 16 and 32 Å per voxel at its levels 0-2: a 10 Å model reads level 0
    (the coarsest not coarser than 10 Å), a 16 Å model level 1 (no resampling), a 5 Å model
    level 0; an explicit level is honoured. With resample off, a tomogram more than 10 % off
    the model's voxel size is a one-line error naming the store and both sizes."""
    config = RunConfig(tomograms=["x.zarr"], output="job")
    store = str(blob_store["store"])
    for model_voxel, level in ((10.0, 0), (16.0, 1), (20.0, 1), (5.0, 0), (40.0, 2)):
        assert open_for_model(store, config, model_voxel).level == level
    assert open_for_model(store, config.model_copy(update={"level": 2}), 10.0).level == 2
    strict = config.model_copy(update={"resample": False})
    assert open_for_model(store, strict, 16.0).level == 1
    assert open_for_model(store, strict, 8.5).level == 0  # within 10 %: cut as it is
    with pytest.raises(InputError) as caught:
        open_for_model(store, strict, 10.0)
    assert str(caught.value) == (f"{store}: 8 Å per voxel at level 0, the model takes 10 Å "
                                 "and resample is off")
    assert "\n" not in str(caught.value)
    assert job_identity(strict, "run")["resample"] is False
    assert job_identity(config, "run")["level"] is None
