"""Benchmark: fine-tuning the shipped model on a user's own labels, against training from scratch.

Usage: python jobs/bench_finetune.py --workdir DIR [--out results] [--per-class 10 25 50 100]
       [--snr 0.03] [--classes 6QZP 4CR2 ...] [--tomograms 6] [--name finetune]

A "foreign" dataset made the way a user would: tomograms simulated under other settings than
datasets A and B (7.84 Å voxels, tilts −50°/+70° in 3° steps as in the paper's dataset C,
3 µm underfocus, SNR 0.03), with six complexes (80S ribosome 6QZP — never seen by the shipped
model —, 26S and 20S proteasome, RuBisCO, TRiC, apoferritin), written as MRC tomograms and one
RELION 5 particle set, and brought in through `dsmscale.make_dataset` (boxes resampled to the
model's 10 Å, templates from the structures' models and maps, whole tomograms per split). On the
test tomograms (never trained on): the shipped model zero-shot on the classes it knows; DSM-Net
fine-tuned from ``default`` with N labelled particles per class; trained from scratch with the
same N. Every step is kept in ``--workdir`` and skipped when rerun (training resumes).
Writes ``OUT/NAME.{md,json,png}`` (``--name``, default ``finetune``). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dsmscale.checkpoints import load_checkpoint
from dsmscale.datasets import DatasetConfig, make_dataset
from dsmscale.evaluation import evaluate_checkpoint
from dsmscale.hardware import machine_name
from dsmscale.io.dataset import ARRAYS, TABLE, read_dataset_table
from dsmscale.io.mrc import write_volume
from dsmscale.io.particles import concat_tables, write_relion5
from dsmscale.profiling import emit
from dsmscale.report.provenance import git_commit
from dsmscale.simulation.dataset import truth_table
from dsmscale.simulation.structures import find_structure
from dsmscale.simulation.tomogram import TomogramConfig, simulate_tomogram
from dsmscale.training import TrainConfig, train
from dsmscale.weights import resolve_model

CLASSES = ("6QZP", "4CR2", "3J9I", "1BXN", "4V94", "4V1W")
FOREIGN = TomogramConfig(shape_zyx=(128, 320, 320), voxel_size_a=7.84, classes=CLASSES,
                         copies_per_class=45, tilt_min_deg=-50.0, tilt_max_deg=70.0,
                         tilt_step_deg=3.0, defocus_um=3.0, defocus_jitter_um=0.5)
SNR = 0.03


def simulate_foreign(folder: Path, n_tomograms: int, foreign: TomogramConfig, snr: float) -> Path:
    """MRC tomograms and a RELION 5 set of their particles (the optimisation set's path)."""
    optimisation_set = folder / "relion5" / "optimisation_set.star"
    if optimisation_set.is_file():
        return optimisation_set
    folder.mkdir(parents=True, exist_ok=True)
    tables = []
    for t in range(n_tomograms):
        name = f"TS_{t:02d}"
        sim = simulate_tomogram(foreign, seed=7000 + t)
        write_volume(folder / f"{name}.mrc", sim.noisy(snr)[0], foreign.voxel_size_a)
        tables.append(truth_table(sim, name, t * 100_000))
        print(f"simulated {name}: {len(tables[-1])} particles", flush=True)
    write_relion5(concat_tables(tables), folder / "relion5",
                  {f"TS_{t:02d}": (foreign.shape_zyx, foreign.voxel_size_a)
                   for t in range(n_tomograms)})
    return optimisation_set


def dataset(work: Path, n_tomograms: int, foreign: TomogramConfig, snr: float) -> Path:
    out = work / "dataset"
    if (out / TABLE).is_file():
        return out
    optimisation_set = simulate_foreign(work / "foreign", n_tomograms, foreign, snr)
    make_dataset(DatasetConfig(
        tomograms=[str(p) for p in sorted((work / "foreign").glob("TS_*.mrc"))],
        particles=[str(optimisation_set)], output=str(out),
        templates={c: str(find_structure(c)) for c in foreign.classes}, split_fractions=(0.6, 0.15, 0.25),
        edge="skip"))
    return out


def labelled_subset(full: Path, per_class: int, seed: int = 0) -> Path:
    """The dataset with only ``per_class`` training boxes per class (a seeded draw; the other
    training rows become split 'unused'): a folder of links to the arrays and its own table."""
    view = full.parent / f"train_{per_class}"
    if (view / TABLE).is_file():
        return view
    view.mkdir(exist_ok=True)
    for name in ARRAYS:
        (view / f"{name}.zarr").symlink_to((full / f"{name}.zarr").resolve())
    table = read_dataset_table(full)
    train = table[table["split"] == "train"]
    keep = train.groupby("class_name", group_keys=False).apply(
        lambda rows: rows.sample(min(per_class, len(rows)), random_state=seed)).index
    table.loc[train.index.difference(keep), "split"] = "unused"
    table.to_parquet(view / TABLE, index=False)
    return view


def train_and_test(view: Path, out: Path, init: str | None, max_epochs: int | None) -> dict:
    """Train (or resume) one run and score its best checkpoint on the test tomograms."""
    n = int((read_dataset_table(view)["split"] == "train").sum())
    config = TrainConfig(dataset=str(view), output=str(out), init=init,
                         lr=1e-4 if init else 1e-3, freeze_encoder_epochs=2 if init else 0,
                         batch_size=min(32, n), max_epochs=max_epochs or (30 if init else 60),
                         patience=8, monitor="val_score", augment=True, seed=0)
    result = train(config, progress=False)
    metrics = evaluate_checkpoint(result["best_checkpoint"], view, "test")
    return {"obj_acc": metrics["obj_acc"], "miou": metrics.get("miou"), "train_boxes": n,
            "epochs": result["epochs"],  # its training time, also when trained by an earlier run
            "train_s": sum(entry["epoch_s"] for entry in result["history"])}


def figure(figures: dict, path: Path) -> None:
    """Test accuracy and mIoU against labels per class: fine-tuned and from scratch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = figures["per_class"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, title in zip(axes, ("acc", "miou"), ("object accuracy", "mIoU"), strict=True):
        for kind, style in (("finetune", "o-"), ("scratch", "s--")):
            ax.plot(n, [figures[f"{kind}_{key}_{k}"] for k in n], style,
                    label="fine-tuned from default" if kind == "finetune" else "from scratch")
        if key == "acc":
            ax.axhline(figures["zero_shot_acc"], color="grey", lw=1, ls=":",
                       label="default zero-shot (known classes)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(n, [str(k) for k in n])
        ax.set_xlabel("labelled particles per class")
        ax.set_title(f"{title}, held-out tomograms")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(out: Path, name: str, figures: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(figures, indent=2))
    figure(figures, out / f"{name}.png")
    rows = [f"| {n} ({figures[f'train_boxes_{n}']}) | {figures[f'finetune_acc_{n}']:.3f} | "
            f"{figures[f'finetune_miou_{n}']:.3f} | {figures[f'finetune_train_s_{n}'] / 60:.0f} | "
            f"{figures[f'scratch_acc_{n}']:.3f} | {figures[f'scratch_miou_{n}']:.3f} | "
            f"{figures[f'scratch_train_s_{n}'] / 60:.0f} |" for n in figures["per_class"]]
    text = [
        "# Fine-tuning on a user's own labels", "",
        f"`{figures['command']}` — commit {figures['commit']}, {figures['machine']}. "
        f"Foreign data: {figures['data']}. Test: {figures['test_boxes']} boxes of tomogram(s) "
        f"{', '.join(figures['test_tomograms'])}, never trained on. Runs are kept in the "
        "workdir and reused when the script is rerun (training times below are the runs' "
        "own).", "",
        f"Shipped `default` zero-shot on the test tomograms (the {figures['zero_shot_classes']} "
        f"classes it knows): object accuracy **{figures['zero_shot_acc']:.3f}**.", "",
        "| labelled per class (train boxes) | fine-tuned acc | mIoU | min | from scratch acc | "
        "mIoU | min |", "|---|---|---|---|---|---|---|", *rows, "",
        f"![accuracy and mIoU against labels per class]({name}.png)", ""]
    (out / f"{name}.md").write_text("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="folder for finetune.{md,json}")
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--tomograms", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=list(FOREIGN.shape_zyx))
    parser.add_argument("--copies", type=int, default=FOREIGN.copies_per_class)
    parser.add_argument("--snr", type=float, default=SNR, help="SNR of the foreign tomograms")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES),
                        help="PDB ids of the foreign complexes")
    parser.add_argument("--name", default="finetune", help="stem of the result files in --out")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap (a smoke run)")
    args = parser.parse_args()
    start, commit = time.perf_counter(), git_commit()  # the code this run trains with
    foreign = FOREIGN.model_copy(update={"shape_zyx": tuple(args.shape),
                                         "copies_per_class": args.copies,
                                         "classes": tuple(args.classes)})
    full = dataset(args.workdir, args.tomograms, foreign, args.snr)
    test = read_dataset_table(full)
    test = test[test["split"] == "test"]
    zero = evaluate_checkpoint(resolve_model("default"), full, "test")
    known = load_checkpoint(resolve_model("default"))["classes"]
    figures = {"zero_shot_acc": zero["obj_acc"],
               "zero_shot_classes": sum(c in known for c in foreign.classes), "test_boxes": len(test),
               "test_tomograms": sorted(test["tomogram"].unique()), "per_class": args.per_class}
    for n in args.per_class:
        view = labelled_subset(full, n)
        for kind, init in (("finetune", "default"), ("scratch", None)):
            run = train_and_test(view, args.workdir / "runs" / f"{kind}_{n}", init,
                                 args.max_epochs)
            figures |= {f"{kind}_acc_{n}": run["obj_acc"], f"{kind}_miou_{n}": run["miou"],
                        f"{kind}_epochs_{n}": run["epochs"], f"{kind}_train_s_{n}": run["train_s"],
                        f"train_boxes_{n}": run["train_boxes"]}
            print(f"{kind} {n}/class: acc {run['obj_acc']:.3f} miou {run['miou']:.3f} "
                  f"({run['epochs']} epochs, {run['train_s']:.0f} s)", flush=True)
    figures |= {"wall_s": time.perf_counter() - start, "commit": commit,
                "command": "python jobs/bench_finetune.py " + " ".join(sys.argv[1:]),
                "machine": machine_name(),
                "data": f"{args.tomograms} tomograms {foreign.shape_zyx} at "
                        f"{foreign.voxel_size_a} Å, tilts {foreign.tilt_min_deg:g}/"
                        f"{foreign.tilt_max_deg:g}° step {foreign.tilt_step_deg:g}°, "
                        f"{foreign.defocus_um:g} µm, SNR {args.snr:g}, classes "
                        f"{', '.join(foreign.classes)}, "
                        f"{args.copies} copies per class per tomogram"}
    if args.out:
        write_results(args.out, args.name, figures)
    emit({k: v for k, v in figures.items() if not isinstance(v, list)} | {
        "classes": list(foreign.classes)})


if __name__ == "__main__":
    main()
