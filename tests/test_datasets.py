"""`dsmscale dataset`: a dataset from the user's tomograms, RELION 5 tables and templates. The
targets it renders are the simulator's own for the same particles (so the table's angles, the
template and the placement agree); splits keep whole tomograms apart; a class without a
template gets classification targets only, and training masks its other losses."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from dsmscale.datasets import DatasetConfig, make_dataset, tomogram_splits
from dsmscale.errors import InputError
from dsmscale.io.dataset import load_split, read_dataset_table
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import concat_tables, write_relion5
from dsmscale.simulation.dataset import _target_boxes, truth_table
from dsmscale.simulation.structures import find_structure
from dsmscale.simulation.tomogram import TomogramConfig, simulate_tomogram

CLASSES = ("1BXN", "4V94", "1QVR")  # 1QVR: a class the tiny checkpoint never saw
SHAPE = (60, 140, 140)


@pytest.fixture(scope="module")
def user_project(tmp_path_factory):
    """Three simulated tomograms as a user would have them: MRC files and one RELION 5 set."""
    root = tmp_path_factory.mktemp("project")
    sims, tables = {}, []
    for seed in range(3):
        name = f"TS_{seed:02d}"
        sim = simulate_tomogram(TomogramConfig(shape_zyx=SHAPE, classes=CLASSES,
                                               copies_per_class=8), seed=100 + seed)
        noisy, _ = sim.noisy(0.1)
        write_volume(root / f"{name}.mrc", noisy, 10.0)
        sims[name] = sim
        tables.append(truth_table(sim, name, seed * 1000))
    table = concat_tables(tables)
    write_relion5(table, root / "relion5", {n: (SHAPE, 10.0) for n in sims})
    return root, sims, table


def _config(root: Path, out: Path, **keys) -> DatasetConfig:
    return DatasetConfig(tomograms=[str(p) for p in sorted(root.glob("TS_*.mrc"))],
                         particles=[str(root / "relion5" / "optimisation_set.star")],
                         output=str(out), templates={c: str(find_structure(c))
                                                     for c in CLASSES[:2]},
                         **{"edge": "pad"} | keys)


def test_targets_are_the_simulators_own(tmp_path, user_project):
    root, sims, truth = user_project
    summary = make_dataset(_config(root, tmp_path / "ds"), progress=False)
    table = read_dataset_table(tmp_path / "ds")
    assert summary["n_subtomograms"] == len(table) > 20
    assert set(table["class_name"]) == set(CLASSES)
    assert (table["has_targets"] == table["class_name"].isin(CLASSES[:2])).all()
    density = zarr.open_array(str(tmp_path / "ds" / "density.zarr"))
    mask = zarr.open_array(str(tmp_path / "ds" / "mask.zarr"))
    checked = 0
    for row in table[table["has_targets"]].itertuples():
        sim = sims[row.tomogram]
        index = int(row.particle_id) - int(row.tomogram[-2:]) * 1000
        expected_density, expected_mask = _target_boxes(sim, index, 40)
        np.testing.assert_allclose(density[row.index], expected_density, atol=1e-3 *
                                   expected_density.max())
        assert (mask[row.index] != expected_mask).mean() < 1e-3
        checked += 1
    assert checked >= 10
    assert not mask[int(table.loc[~table["has_targets"], "index"].iloc[0])].any()


def test_splits_keep_whole_tomograms_apart(tmp_path, user_project):
    root, _, _ = user_project
    make_dataset(_config(root, tmp_path / "ds"), progress=False)
    table = read_dataset_table(tmp_path / "ds")
    assert (table.groupby("tomogram")["split"].nunique() == 1).all()
    assert set(table["split"]) == {"train", "val", "test"}
    rows = pd.DataFrame({"tomogram": ["a"] * 5 + ["b"] * 5})
    with pytest.raises(InputError, match="2 tomogram\\(s\\) cannot be split"):
        tomogram_splits(rows, (0.8, 0.1, 0.1), 0)


def test_a_tomogram_at_another_pixel_size_gives_boxes_on_the_model_grid(tmp_path, user_project):
    """The same tomogram Fourier-cropped to 12.5 Å: boxes at 10 Å, centred on the particle."""
    from dsmscale.resampling import fourier_resize

    root, sims, truth = user_project
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    small = tuple(int(n * 0.8) for n in SHAPE)
    for name, sim in sims.items():
        write_volume(coarse / f"{name}.mrc", fourier_resize(sim.noisy(0.1)[0], small), 12.5)
    inside = (truth.coordinates_a() / 12.5 <= np.subtract(small, 1)).all(axis=1)  # both grids
    write_relion5(replace(truth, df=truth.df[inside]), coarse / "relion5",
                  {n: (SHAPE, 10.0) for n in sims})
    make_dataset(_config(coarse, tmp_path / "ds"), progress=False)
    table = read_dataset_table(tmp_path / "ds")
    boxes = zarr.open_array(str(tmp_path / "ds" / "subtomograms.zarr"))
    assert boxes.shape[1:] == (40, 40, 40) and boxes.attrs["voxel_size_a"] == 10.0
    np.testing.assert_allclose(table[["z_a", "y_a", "x_a"]].to_numpy(),
                               table[["z", "y", "x"]].to_numpy() * 12.5, atol=1e-6)


def test_training_masks_the_target_losses_of_boxes_without_targets(tmp_path, user_project):
    import torch

    from dsmscale.training.losses import loss_terms

    root, _, _ = user_project
    make_dataset(_config(root, tmp_path / "ds", split_by="particle"), progress=False)
    split = load_split(tmp_path / "ds", "train", list(CLASSES))
    assert split.has_targets.any() and not split.has_targets.all()
    n, box = 4, 8
    out = {"logits": torch.zeros(n, 3), "seg": torch.randn(n, 2, box, box, box),
           "rec": torch.randn(n, 1, box, box, box)}
    target = {"label": torch.zeros(n, dtype=torch.long),
              "mask": torch.zeros(n, box, box, box, dtype=torch.long),
              "density": torch.zeros(n, 1, box, box, box),
              "has_targets": torch.tensor([True, True, False, False])}
    masked = loss_terms(out, target, (1.0, 1.0, 1.0))
    first_two = loss_terms({k: v[:2] for k, v in out.items()},
                           {k: v[:2] for k, v in target.items()}, (1.0, 1.0, 1.0))
    assert torch.isclose(masked["seg"], first_two["seg"])
    assert torch.isclose(masked["rec"], first_two["rec"])
    none = loss_terms(out, target | {"has_targets": torch.zeros(n, dtype=torch.bool)},
                      (1.0, 1.0, 1.0))
    assert float(none["seg"]) == 0.0 and float(none["rec"]) == 0.0


def test_the_dataset_command(tmp_path, user_project, capsys):
    from dsmscale.cli import main

    root, _, _ = user_project
    tomograms = [str(p) for p in sorted(root.glob("TS_*.mrc"))]
    args = ["dataset", "--tomograms", *tomograms, "--particles",
            str(root / "relion5" / "optimisation_set.star"), "-o", str(tmp_path / "ds"),
            "--templates", f"1BXN={find_structure('1BXN')}", "--edge", "pad"]
    assert main(args) == 0
    assert "subtomograms of 3 classes" in capsys.readouterr().out
    assert main(args[:-4] + ["--templates", "1BXN", "-o", str(tmp_path / "other")]) == 2
    assert "--templates takes CLASS=VALUE, got '1BXN'" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_fine_tuning_starts_from_a_checkpoint(tmp_path, user_project, tiny_checkpoint):
    import torch

    from dsmscale.checkpoints import load_checkpoint
    from dsmscale.models import build_model
    from dsmscale.report.model_card import _fine_tuning
    from dsmscale.training import TrainConfig, train
    from dsmscale.training.init import load_initial_weights

    root, _, _ = user_project
    make_dataset(_config(root, tmp_path / "ds", split_by="particle"), progress=False)
    start = load_checkpoint(tiny_checkpoint)
    classes = sorted(CLASSES)
    model = build_model("dsmnet", len(classes))
    init = load_initial_weights(model, str(tiny_checkpoint), "dsmnet", classes,
                                str(tmp_path / "ds"))
    assert init["classes_kept"] == ["1BXN", "4V94"]  # 1QVR is new: its row stays fresh
    old = list(start["classes"])
    for name in init["classes_kept"]:
        assert torch.equal(model.classifier.weight[classes.index(name)],
                           start["state_dict"]["classifier.weight"][old.index(name)])
    assert torch.equal(model.state_dict()["encoder.stem.0.0.weight"],
                       start["state_dict"]["encoder.stem.0.0.weight"])
    config = TrainConfig(dataset=str(tmp_path / "ds"), output=str(tmp_path / "run"),
                         init=str(tiny_checkpoint), freeze_encoder_epochs=1, max_epochs=1,
                         lr=1e-4, batch_size=8, limit_train=16, threads=2)
    train(config, progress=False)
    tuned = load_checkpoint(tmp_path / "run" / "last.pt", resume=True)
    frozen = [k for k, _ in model.encoder.named_parameters()]
    assert all(torch.equal(tuned["state_dict"][f"encoder.{k}"], start["state_dict"][f"encoder.{k}"])
               for k in frozen)  # the encoder was held for the first epoch
    assert not torch.equal(tuned["state_dict"]["classifier.weight"],
                           model.state_dict()["classifier.weight"])  # the head learnt
    assert tuned["fine_tuned_from"]["run_hash"] == start["run_hash"]
    assert "Fine-tuned from:" in _fine_tuning(tuned) and "1BXN, 4V94" in _fine_tuning(tuned)
    with pytest.raises(InputError, match="is a dsmnet, not a dsmnet_small"):
        load_initial_weights(build_model("dsmnet_small", 3), str(tiny_checkpoint),
                             "dsmnet_small", classes, str(tmp_path / "ds"))


def test_tomogram_splits_are_balanced_and_seeded():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"tomogram": np.repeat([f"t{i}" for i in range(10)],
                                               rng.integers(20, 60, 10))})
    first = tomogram_splits(rows, (0.8, 0.1, 0.1), seed=1)
    assert list(first) == list(tomogram_splits(rows, (0.8, 0.1, 0.1), seed=1))
    assert list(first) != list(tomogram_splits(rows, (0.8, 0.1, 0.1), seed=2))
    share = pd.Series(first).value_counts(normalize=True)
    assert set(share.index) == {"train", "val", "test"}
    assert 0.65 < share["train"] < 0.9  # whole tomograms: near, not at, 80 %
