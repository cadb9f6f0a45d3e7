"""Bad input through the CLI: one line naming the file and the problem, exit 2, nothing written."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import torch
import yaml
import zarr

from dsmscale.errors import InputError
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import make_particles, write_csv


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsmscale.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def assert_clean_failure(result, name: str, problem: str, out_dir: Path):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("dsmscale")]
    assert len(lines) == 1, result.stderr
    assert name in lines[0] and problem in lines[0], lines[0]
    leftovers = [p.name for p in out_dir.iterdir() if ".zarr" in p.name or "sub" in p.name]
    assert leftovers == [], f"partial output left behind: {leftovers}"


def _mrc(path, data, voxel_size=10.0):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data.astype(np.float32))
        mrc.voxel_size = voxel_size
    return path


def _truncated(tmp):
    path = write_volume(tmp / "cut.mrc", np.ones((20, 20, 20)), 10.0)
    path.write_bytes(path.read_bytes()[:-5000])
    return path


def _stack(tmp):
    path = _mrc(tmp / "stack.mrc", np.ones((5, 16, 16)))
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.set_image_stack()
    return path


def _nan(tmp):
    data = np.zeros((20, 20, 20))
    data[7, 3, 4] = np.nan
    data[9, 1, 1] = np.inf
    return _mrc(tmp / "nan.mrc", data)


CONVERT_CASES = {
    "truncated": (_truncated, "truncated"),
    "random bytes": (lambda t: (t / "noise.mrc").write_bytes(
        np.random.default_rng(0).bytes(4096)) and t / "noise.mrc", "not a"),
    "2D image": (lambda t: _mrc(t / "flat.mrc", np.ones((16, 16))), "expected a 3D volume"),
    "image stack": (_stack, "image stack"),
    "NaN/Inf": (_nan, "2 NaN/Inf voxels"),
    "zero voxel size": (lambda t: _mrc(t / "zero.mrc", np.ones((8, 8, 8)), voxel_size=0.0),
                        "voxel size must be positive"),
    "missing": (lambda t: t / "absent.mrc", "does not exist"),
}


@pytest.mark.parametrize("case", list(CONVERT_CASES))
def test_convert_rejects(tmp_path, case):
    make, problem = CONVERT_CASES[case]
    src = make(tmp_path)
    result = run_cli("convert", src, "-o", tmp_path / "out.zarr")
    assert_clean_failure(result, Path(src).name, problem, tmp_path)


def test_convert_unwritable_output(tmp_path):
    src = write_volume(tmp_path / "ok.mrc", np.ones((8, 8, 8)), 10.0)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = run_cli("convert", src, "-o", blocker / "out.zarr")
    assert_clean_failure(result, "afile", "cannot create output folder", tmp_path)


@pytest.fixture()
def store(tmp_path, blob_store):
    return blob_store["store"]


def _csv(tmp, coords, voxel_size=8.0):
    table = make_particles(np.asarray(coords, float), "blobs", voxel_size)
    return write_csv(table, tmp / "p.csv")


EXTRACT_CASES = {
    "outside": (lambda t: _csv(t, [[10, 10, 10], [10, 10, 999]]), "outside the volume"),
    "empty": (lambda t: (t / "p.csv").write_text("z,y,x,voxel_size_a\n") and t / "p.csv",
              "empty"),
    "outside once in Å": (lambda t: _csv(t, [[10, 10, 10], [90, 10, 10]], voxel_size=12.0),
                          "1 particle centres lie outside the volume"),  # z 90 × 12 / 8 Å = 135
    "duplicate ids": (lambda t: pd.DataFrame({"particle_id": [3, 4, 3], "z": [10, 20, 30],
                                              "y": [40] * 3, "x": [40] * 3, "voxel_size_a": 8.0}
                                             ).to_csv(t / "p.csv", index=False) or t / "p.csv",
                      "1 duplicate particle ids (first: 3)"),
    "star without coordinates": (
        lambda t: starfile.write(pd.DataFrame({"rlnTomoName": ["a"], "rlnImagePixelSize": [8.0]}),
                                 t / "p.star") or t / "p.star",
        "holds no particle rows"),
    "text coordinate": (lambda t: (t / "p.csv").write_text("z,y,x,voxel_size_a\n10,ten,10,8\n")
                        and t / "p.csv", "column y holds 'ten' (row 1), not a number"),
    "empty level": (lambda t: (t / "p.csv").write_text("z,y,x,voxel_size_a,level\n10,10,10,8,\n")
                    and t / "p.csv", "column level holds nan, not a pyramid level"),
    "star text coordinate": (
        lambda t: starfile.write(pd.DataFrame({"rlnCoordinateX": ["abc"], "rlnCoordinateY": [1.0],
                                               "rlnCoordinateZ": [1.0],
                                               "rlnImagePixelSize": [8.0]}), t / "p.star")
        or t / "p.star", "column rlnCoordinateX holds 'abc' (row 1), not a number"),
    "copick pick without location": (
        lambda t: (t / "p.json").write_text('{"points": [{"location": {"x": 80, "y": 80, '
                                            '"z": 80}}, {"score": 1.0}]}') and t / "p.json",
        "pick 2 has no location with x, y and z"),
    "two tomograms": (lambda t: write_csv(make_particles(np.array([[40.0, 60, 70], [50, 60, 70]]),
                                                       ["a", "b"], 8.0), t / "p.csv"),
                      "holds particles of 2 tomograms (a, b): give one table per tomogram"),
    "levels that disagree": (
        lambda t: (t / "p.csv").write_text("z,y,x,voxel_size_a,level\n10,10,10,8,0\n9,9,9,8,1\n")
        and t / "p.csv", "column level holds 2 values (0, 1); a table holds one"),
    "text angle": (
        lambda t: (t / "p.csv").write_text("z,y,x,voxel_size_a,rot,tilt,psi\n10,10,10,8,a,0,0\n")
        and t / "p.csv", "column rot holds 'a' (row 1), not a number"),
    "copick text location": (
        lambda t: (t / "p.json").write_text('{"points": [{"location": {"x": "far", "y": 80, '
                                            '"z": 80}}]}') and t / "p.json",
        "pick 1 location holds [80, 80, 'far'], not numbers"),
    "star without rows": (
        lambda t: (t / "p.star").write_text("data_particles\n\nloop_\n_rlnCoordinateX #1\n")
        and t / "p.star", "no particle rows"),
}


@pytest.mark.parametrize("case", list(EXTRACT_CASES))
def test_extract_rejects(tmp_path, store, case):
    make, problem = EXTRACT_CASES[case]
    table = make(tmp_path)
    result = run_cli("extract", store, table, "-o", tmp_path / "sub")
    name = "blobs.zarr" if case in ("outside", "outside once in Å") else Path(table).name
    assert_clean_failure(result, name, problem, tmp_path)


def test_extract_rejects_a_zero_voxel_size_for_copick_picks(tmp_path, store):
    (tmp_path / "p.json").write_text('{"points": [{"location": {"x": 80, "y": 80, "z": 80}}]}')
    result = run_cli("extract", store, tmp_path / "p.json", "-o", tmp_path / "sub",
                     "--voxel-size", "0")
    assert_clean_failure(result, "p.json", "voxel size must be positive, got 0 Å", tmp_path)


def _damaged_store(tmp, store, damage: str) -> Path:
    """A copy of the blob store whose voxel (40, 60, 70) is NaN, or whose chunk holding it
    (chunks 32³) is overwritten with random bytes."""
    copy = tmp / "in" / Path(store).name
    shutil.copytree(store, copy)
    if damage == "nan":
        level0 = zarr.open_array(str(copy / "0"), mode="r+")
        level0[40, 60, 70] = np.nan
    else:
        (copy / "0" / "c" / "1" / "1" / "2").write_bytes(np.random.default_rng(0).bytes(999))
    return copy


@pytest.mark.parametrize(("damage", "problem"), [
    ("nan", "1 NaN/Inf voxel in z 32–64"), ("chunk", "cannot decode the chunks of z 32–64")])
def test_extract_and_pick_reject_a_damaged_store(tmp_path, store, damage, problem):
    damaged = _damaged_store(tmp_path, store, damage)
    result = run_cli("extract", damaged, _csv(tmp_path, [[40, 60, 70]]), "-o", tmp_path / "sub")
    assert_clean_failure(result, "blobs.zarr", problem, tmp_path)
    result = run_cli("pick", damaged, "-o", tmp_path / "picks.star")
    assert_clean_failure(result, "blobs.zarr", problem.split(" in z")[0].split(" of z")[0],
                         tmp_path)
    assert not (tmp_path / "picks.star").exists()


@pytest.mark.parametrize(("args", "problem"), [
    (["--box", "999"], "a box of 999 voxels does not fit: it must be 2 to 96 voxels"),
    (["--edge", "skip"], "all 2 particles' boxes cross the volume edge and edge is 'skip'"),
])
def test_extract_rejects_options_that_leave_nothing_to_cut(tmp_path, store, args, problem):
    table = _csv(tmp_path, [[2, 60, 70], [40, 60, 3]])
    result = run_cli("extract", store, table, "-o", tmp_path / "sub", *args)
    assert_clean_failure(result, "blobs.zarr" if "--box" in args else "p.csv", problem, tmp_path)


def test_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("chunk: lots\nunknown_key: 1\n")
    src = write_volume(tmp_path / "ok.mrc", np.ones((8, 8, 8)), 10.0)
    result = run_cli("convert", src, "-o", tmp_path / "o.zarr", "--config", cfg)
    assert_clean_failure(result, "c.yaml", "config key", tmp_path)


def _other_architecture(tmp, checkpoint):
    ckpt = torch.load(checkpoint, weights_only=True)
    torch.save(ckpt | {"model": "dsmnet_small"}, tmp / "other.pt")
    return tmp / "other.pt", "weights do not fit model 'dsmnet_small'"


def _truncated_checkpoint(tmp, checkpoint):
    data = Path(checkpoint).read_bytes()
    (tmp / "cut.pt").write_bytes(data[: len(data) // 2])
    return tmp / "cut.pt", "not a checkpoint: torch.save writes a zip archive"


def _not_a_checkpoint(tmp, checkpoint):
    torch.save({"weights": torch.zeros(3)}, tmp / "plain.pt")
    return tmp / "plain.pt", "not a dsmscale checkpoint"


def _incomplete_checkpoint(tmp, checkpoint):
    torch.save({"format": "dsmscale-checkpoint-1", "model": "dsmnet"}, tmp / "bare.pt")
    return tmp / "bare.pt", "incomplete checkpoint: no heads, n_classes, classes, state_dict"


RUN_CHECKPOINT_CASES = {"other architecture": _other_architecture,
                        "truncated": _truncated_checkpoint, "foreign file": _not_a_checkpoint,
                        "incomplete": _incomplete_checkpoint}


def _run_yaml(tmp, store, **keys) -> Path:
    table = _csv(tmp, [[40, 60, 70]])
    config = {"tomograms": [str(store)], "particles": [str(table)], "output": str(tmp / "job"),
              **keys}
    (tmp / "job.yaml").write_text(yaml.safe_dump(config))
    return tmp / "job.yaml"


def assert_job_not_started(tmp):
    """Rejected before any work: no job folder, so nothing can look complete."""
    assert not (tmp / "job").exists()


@pytest.mark.parametrize("case", list(RUN_CHECKPOINT_CASES))
def test_run_rejects_checkpoint(tmp_path, store, tiny_checkpoint, case):
    checkpoint, problem = RUN_CHECKPOINT_CASES[case](tmp_path, tiny_checkpoint)
    result = run_cli("run", "--config", _run_yaml(tmp_path, store, model=str(checkpoint)))
    assert_clean_failure(result, checkpoint.name, problem, tmp_path)
    assert_job_not_started(tmp_path)


@pytest.mark.parametrize(("keys", "problem"), [
    ({"batch_sizes": 8}, "config key 'batch_sizes': Extra inputs are not permitted"),
    ({"batch_size": "many"}, "config key 'batch_size': Input should be a valid integer"),
    ({"edge": "wrap"}, "config key 'edge'"),
])
def test_run_rejects_config(tmp_path, store, keys, problem):
    result = run_cli("run", "--config", _run_yaml(tmp_path, store, **keys))
    assert_clean_failure(result, "job.yaml", problem, tmp_path)
    assert_job_not_started(tmp_path)


def _same_name_elsewhere(tmp, store):
    shutil.copytree(store, tmp / "elsewhere" / Path(store).name)
    return {"tomograms": [str(store), str(tmp / "elsewhere" / Path(store).name)]}


def _table_of_another_tomogram(tmp, store):
    table = make_particles(np.array([[40.0, 60, 70], [50, 60, 70]]), ["blobs", "TS_99"], 8.0)
    return {"particles": [str(write_csv(table, tmp / "p.csv"))]}


RUN_NAMING_CASES = {  # found from names alone: the job folder is never made
    "two tomograms of one name": (_same_name_elsewhere, "blobs.zarr",
                                  "tomogram name 'blobs' is also the name of"),
    "a table naming a tomogram not given": (
        _table_of_another_tomogram, "p.csv",
        "names tomogram 'TS_99', which is not among the tomograms given (blobs)"),
    "missing table": (lambda t, s: {"particles": [str(t / "picks.star")]}, "picks.star",
                      "no such particle table"),
    "no actors": (lambda t, s: {"num_actors": 0}, "job.yaml", "config key 'num_actors'"),
    "autoscale min above max": (lambda t, s: {"num_actors": [3, 1]}, "job.yaml",
                                "min is above max"),
}


@pytest.mark.parametrize("case", list(RUN_NAMING_CASES))
def test_run_rejects_inputs_before_starting(tmp_path, store, tiny_checkpoint, case):
    make, name, problem = RUN_NAMING_CASES[case]
    config = _run_yaml(tmp_path, store, model=str(tiny_checkpoint))
    keys = yaml.safe_load(config.read_text()) | make(tmp_path, store)
    config.write_text(yaml.safe_dump(keys))
    result = run_cli("run", "--config", config)
    assert_clean_failure(result, name, problem, tmp_path)
    assert_job_not_started(tmp_path)


@pytest.mark.ray
def test_run_with_every_box_skipped_at_the_edge(tmp_path, store, tiny_checkpoint):
    (tmp_path / "edge").mkdir()
    config = _run_yaml(tmp_path, store, model=str(tiny_checkpoint), edge="skip",
                       particles=[str(_csv(tmp_path / "edge", [[2, 60, 70], [40, 60, 3]]))])
    result = run_cli("run", "--config", config)
    assert_clean_failure(result, "2 particles' boxes", "cross the volume edge and edge is 'skip'",
                         tmp_path)
    assert not (tmp_path / "job" / "summary.json").exists()


def test_run_unwritable_output(tmp_path, store, tiny_checkpoint):
    (tmp_path / "afile").write_text("x")
    config = _run_yaml(tmp_path, store, model=str(tiny_checkpoint),
                       output=str(tmp_path / "afile" / "job"))
    result = run_cli("run", "--config", config)
    assert_clean_failure(result, "afile", "cannot create output folder", tmp_path)


@pytest.mark.parametrize(("kind", "line"), [
    ("input", "table.star: 2 duplicate particle ids (first: 7)"),
    ("io", "No space left on device (writing unit u1 to /job)"),
])
def test_errors_from_ray_tasks_come_back_as_one_line(ray_session, kind, line):
    from dsmscale.errors import naming_io_errors, one_line, user_facing_error

    def fails_in_a_task(kind: str):  # nested: Ray ships it by value, not by module name
        if kind == "input":
            raise InputError("table.star", "2 duplicate particle ids (first: 7)")
        with naming_io_errors("writing unit u1 to /job"):
            raise OSError(28, "No space left on device", "/job/particles.parquet")

    task = ray_session.remote(max_retries=0)(fails_in_a_task)
    with pytest.raises(Exception) as caught:
        ray_session.get(task.remote(kind))
    error = user_facing_error(caught.value)
    assert error is not None, repr(caught.value)[:800]
    assert one_line(error) == line
    assert user_facing_error(RuntimeError("a bug")) is None  # bugs keep their traceback


def _damaged_dataset(tmp, dataset, damage: str) -> Path:
    """A copy of the tiny dataset with one defect."""
    copy = tmp / "in" / "A"
    shutil.copytree(dataset, copy)
    table = pd.read_parquet(copy / "particles.parquet")
    if damage == "garbage table":
        (copy / "particles.parquet").write_bytes(b"not parquet" * 10)
    elif damage == "no split column":
        table.drop(columns="split").to_parquet(copy / "particles.parquet")
    elif damage == "index past the end":
        table.assign(index=table["index"] + 1000).to_parquet(copy / "particles.parquet")
    elif damage == "fractional index":
        table.assign(index=table["index"] + 0.5).to_parquet(copy / "particles.parquet")
    elif damage == "mask of 2":
        masks = zarr.open_array(str(copy / "mask.zarr"), mode="r+")
        masks[table.loc[table["split"] == "test", "index"].iloc[0], 3, 4, 5] = 2
        masks[table.loc[table["split"] == "train", "index"].iloc[0], 3, 4, 5] = 2
    elif damage == "NaN boxes":
        boxes = zarr.open_array(str(copy / "subtomograms.zarr"), mode="r+")
        boxes[table.loc[table["split"] == "test", "index"].iloc[0], 3, 4, 5] = np.nan
        boxes[table.loc[table["split"] == "train", "index"].iloc[0], 3, 4, 5] = np.inf
    else:  # another voxel size than the model was trained on
        zarr.open_array(str(copy / "subtomograms.zarr"), mode="r+").attrs["voxel_size_a"] = 20.0
    return copy


DATASET_CASES = {
    "garbage table": ("particles.parquet", "not a readable Parquet table"),
    "no split column": ("particles.parquet", "no column split"),
    "index past the end": ("subtomograms.zarr", "but particles.parquet indexes box"),
    "fractional index": ("particles.parquet", "column index holds float64 values, not whole"),
    "mask of 2": ("mask.zarr", "holds values other than 0 (background) and 1 (target)"),
    "NaN boxes": ("subtomograms.zarr", "1 box of split test holds NaN/Inf voxels"),
    "other voxel size": ("A", "boxes of 40³ voxels at 20 Å, but"),
}


@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_evaluate_and_train_reject_a_damaged_dataset(tmp_path, tiny_dataset, tiny_checkpoint,
                                                     case):
    """In-process (the CLI's one line for an `InputError` is the test below): the error names
    the file, and neither an evaluation nor a run folder is left."""
    from dsmscale.evaluation import evaluate_checkpoint
    from dsmscale.training import TrainConfig, train

    dataset = _damaged_dataset(tmp_path, tiny_dataset, case)
    name, problem = DATASET_CASES[case]
    with pytest.raises(InputError, match=f"{name}: .*{re.escape(problem)}"):
        evaluate_checkpoint(tiny_checkpoint, dataset, "test", tmp_path / "eval")
    assert not (tmp_path / "eval").exists()
    if case == "other voxel size":  # a new model may train on any voxel size
        return
    with pytest.raises(InputError, match=f"{name}: .*{re.escape(problem).replace('test', 'train')}"):
        train(TrainConfig(dataset=str(dataset), output=str(tmp_path / "run"), max_epochs=1),
              progress=False)
    assert not (tmp_path / "run").exists()


def test_evaluate_cli_says_a_damaged_dataset_in_one_line(tmp_path, tiny_dataset, tiny_checkpoint):
    dataset = _damaged_dataset(tmp_path, tiny_dataset, "garbage table")
    result = run_cli("evaluate", tiny_checkpoint, dataset, "-o", tmp_path / "eval")
    assert_clean_failure(result, "particles.parquet", "not a readable Parquet table", tmp_path)


@pytest.mark.parametrize(("args", "name", "problem"), [
    (["-o", "picks.txt"], "picks.txt", "unknown particle table format '.txt' (use .star, .csv"),
    (["-o", "picks.star", "--threshold", "100"], "blobs.zarr",
     "no particles scored 100 standard deviations or more (lower --threshold"),
])
def test_pick_refuses_what_it_cannot_write(tmp_path, store, args, name, problem):
    args = [tmp_path / "new" / a if a.startswith("picks") else a for a in args]
    result = run_cli("pick", store, *args)
    assert_clean_failure(result, name, problem, tmp_path)
    assert not (tmp_path / "new").exists()  # not even the output's folder


def test_pick_makes_the_output_folder(tmp_path, store):
    result = run_cli("pick", store, "-o", tmp_path / "new" / "picks.star", "--polarity", "bright")
    assert result.returncode == 0, result.stderr
    assert len(starfile.read(tmp_path / "new" / "picks.star")) > 0


def test_negative_threads_are_an_argument_error(tmp_path, tiny_checkpoint, tiny_dataset):
    result = run_cli("evaluate", tiny_checkpoint, tiny_dataset, "-o", tmp_path / "e",
                     "--threads", "-2")
    assert result.returncode == 2 and "argument --threads: must be at least 1, got -2" in (
        result.stderr.splitlines()[-1])


@pytest.mark.ray
def test_convert_reports_each_failed_input_and_warns_on_one_line(tmp_path):
    good = write_volume(tmp_path / "good.mrc", np.ones((8, 8, 8)), 10.0)
    zero = _mrc(tmp_path / "zero.mrc", np.ones((8, 8, 8)), voxel_size=0.0)
    result = run_cli("convert", good, zero, "-o", tmp_path / "out")
    assert result.returncode == 2
    assert ("dsmscale convert: error: " in result.stderr and "zero.mrc: voxel size must be "
            "positive, header gives (0, 0, 0) Å" in result.stderr)
    assert (tmp_path / "out" / "good.zarr").is_dir()
    broken = write_volume(tmp_path / "broken.mrc", np.ones((8, 8, 8)), 10.0)
    with open(broken, "r+b") as f:  # the map ID 'MAP ' at byte 208
        f.seek(208)
        f.write(b"XXXX")
    result = run_cli("convert", broken, "-o", tmp_path / "broken.zarr")
    assert result.returncode == 0, result.stderr
    warned = [ln for ln in result.stderr.splitlines() if "permissive" in ln]
    assert len(warned) == 1 and warned[0].startswith(
        f"dsmscale convert: warning: {broken}: opened in permissive mode: Map ID string not found")


@pytest.mark.ray
def test_run_stops_at_a_store_with_nan_voxels(tmp_path, store, tiny_checkpoint):
    damaged = _damaged_store(tmp_path, store, "nan")  # found by the extraction task on Ray
    result = run_cli("run", "--config", _run_yaml(tmp_path, damaged, model=str(tiny_checkpoint)))
    assert result.returncode == 2, result.stderr[-3000:]
    message = [ln for ln in result.stderr.splitlines() if ln.startswith("dsmscale run: error")]
    assert message == [f"dsmscale run: error: {damaged}: 1 NaN/Inf voxel in z 32–64"], (
        result.stderr[-3000:])  # Ray Data logs the failed task's traceback above it
    assert not (tmp_path / "job" / "summary.json").exists()
