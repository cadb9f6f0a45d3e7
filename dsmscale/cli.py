"""The ``dsmscale`` command: a thin shell over the Python API.

Bad input is reported in one line naming the file and the problem (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from dsmscale.config import read_yaml_mapping
from dsmscale.errors import InputError, InputWarning, one_line, user_facing_error

RESUME_HINT = " (finished work units are kept: fix the cause and rerun the same command to resume)"
EPILOG = """Conventions: arrays are (z, y, x); particle coordinates are pixels of a stated pyramid
level; voxel sizes and OME-Zarr scales are in Å; picker sigmas are in nm. See README.md."""


def _cmd_convert(args: argparse.Namespace) -> int:
    from dsmscale.convert import ConvertConfig, convert_many, convert_mrc_to_ome_zarr

    config = _load_config(ConvertConfig, args.config, {
        "levels": args.levels, "chunk": args.chunk, "codec": args.codec, "clevel": args.clevel,
        "zarr_format": args.zarr_format, "overwrite": args.overwrite or None})
    if len(args.inputs) == 1 and args.output.suffix == ".zarr":
        out = convert_mrc_to_ome_zarr(args.inputs[0], args.output, config)
        print(f"wrote {out}")
        return 0
    done, failed = convert_many(args.inputs, args.output, config)
    for path in done:
        print(f"wrote {path}")
    for problem in failed.values():
        print(f"dsmscale convert: error: {problem}", file=sys.stderr)
    return 2 if failed else 0


def _cmd_pick(args: argparse.Namespace) -> int:
    from dsmscale.io.particles import output_format, write_particles
    from dsmscale.pick import PickConfig, pick_particles

    output_format(args.output)  # a format it cannot write is an error before the work

    config = _load_config(PickConfig, args.config, {
        "sigma_nm": args.sigma_nm, "min_distance_nm": args.min_distance_nm,
        "threshold": args.threshold, "top_k": args.top_k, "polarity": args.polarity,
        "level": args.level})
    table = pick_particles(args.tomogram, config)
    if len(table) == 0:
        raise InputError(args.tomogram, f"no particles scored {config.threshold:g} standard "
                                        "deviations or more (lower --threshold, or check "
                                        "--polarity and --sigma-nm)")
    args.output.parent.mkdir(parents=True, exist_ok=True)  # only once there is something to write
    write_particles(table, args.output)
    print(f"picked {len(table)} particles -> {args.output}")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from dsmscale.extract import every_box_skipped, extract_unit, plan_extraction
    from dsmscale.io.omezarr import open_tomogram
    from dsmscale.io.particles import check_one_tomogram, read_particles
    from dsmscale.io.subtomograms import write_subtomograms

    tomo = open_tomogram(args.tomogram, args.level)
    full = open_tomogram(args.tomogram, 0)
    table = check_one_tomogram(read_particles(args.particles, args.voxel_size, full.shape,
                                              full.voxel_size_a), args.particles)
    plan = plan_extraction(tomo, table, args.box, args.edge)
    if plan.n_particles == 0:
        raise every_box_skipped(len(plan.skipped_ids), args.particles)
    batches = (b for u in plan.units for b in extract_unit(tomo, u, args.box, 64, args.normalise))
    out = write_subtomograms(_progress(batches, plan.n_particles), plan.n_particles, args.box,
                             args.output, {"tomogram": str(args.tomogram),
                                           "voxel_size_a": tomo.voxel_size_a},
                             overwrite=args.overwrite)
    print(f"extracted {plan.n_particles} subtomograms ({len(plan.skipped_ids)} skipped at the "
          f"edge) -> {out}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from dsmscale.simulate.dataset import SimulateConfig, build_datasets

    config = _load_config(SimulateConfig, args.config, {"seed": args.seed,
                                                         "n_tomograms": args.n_tomograms})
    summary = build_datasets(config, args.output, overwrite=args.overwrite)
    counts = ", ".join(f"{k}: {v} (SNR {summary['snr_measured'][k]:.4f})"
                       for k, v in summary["n_subtomograms"].items())
    print(f"simulated {config.n_tomograms} tomogram(s), volume fraction "
          f"{summary['volume_fraction']:.2f}; subtomograms {counts} -> {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dsmscale.train import TrainConfig, train

    overrides = {"output": str(args.output) if args.output else None, "dataset": args.dataset,
                 "model": args.model, "max_epochs": args.max_epochs, "threads": args.threads,
                 "micro_batch": args.micro_batch, "augment": args.augment or None,
                 "batch_norm": False if args.no_batch_norm else None,
                 "monitor": args.monitor,
                 "teacher": getattr(args, "teacher", None),
                 "distill_loss": getattr(args, "loss", None),
                 "hard_weight": getattr(args, "hard_weight", None)}
    defaults = {"model": args.default_model} if getattr(args, "default_model", None) else {}
    config = _load_config(TrainConfig, args.config, overrides, defaults)
    result = train(config)
    last = result["history"][-1] if result["history"] else {}
    shown = {k: round(v, 4) for k, v in last.items() if k.startswith("val_")}
    print(f"trained {config.model} for {result['epochs']} epochs: {shown}; "
          f"best checkpoint {result['best_checkpoint']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dsmscale.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.dataset, args.split, args.output,
                                  args.threads)
    keys = ("obj_acc", "pix_acc", "miou", "fsc_resolution_nm")
    print(", ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)
          + f" on {metrics['n']} {args.split} subtomograms -> {args.output}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dsmscale.infer.config import RunConfig
    from dsmscale.infer.pipeline import run_job

    overrides = {"tomograms": args.tomograms or None, "particles": args.particles or None,
                 "output": str(args.output) if args.output else None, "model": args.model,
                 "num_actors": args.num_actors}
    config = _load_config(RunConfig, args.config, overrides)
    summary = run_job(config)
    print(f"{summary['particles']} particles in {summary['tomograms']} tomogram(s): "
          f"{summary['particles_processed']} processed now, {summary['units_skipped']} units "
          f"already done; {summary['end_to_end_per_s']:.1f} particles/s end to end; "
          f"summary in {Path(config.output) / 'summary.json'}")
    return 0


def _cmd_discover(args: argparse.Namespace) -> int:
    from dsmscale.discover import DiscoverConfig, discover

    config = _load_config(DiscoverConfig, args.config, {"k": args.k})
    if not (args.job / "summary.json").is_file():  # `run` discovers before it writes this
        raise InputError(args.job, "not a finished dsmscale run (no summary.json): run or "
                                   "resume the job first")
    truth = None
    if args.truth:
        from dsmscale.io.particles import read_particles

        table = read_particles(args.truth, args.voxel_size).df
        if "class_name" not in table.columns:
            raise InputError(args.truth, "the truth table has no class names (a class_name "
                                         "column, or rlnClassName in STAR)")
        several = table["tomogram"].nunique() > 1  # then its names must be the job's
        truth = table[["particle_id", "class_name"] + (["tomogram"] if several else [])]
    summary = discover(args.job, config, truth)
    extra = f", ARI {summary['ari']:.3f}, NMI {summary['nmi']:.3f}" if "ari" in summary else ""
    print(f"{summary['particles']} particles in {summary['k']} clusters{extra}; "
          f"low-confidence clusters {summary['low_confidence_clusters']} -> "
          f"{args.job}/discovery")
    return 0


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _progress(batches, total: int):
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="box", desc="extract") as bar:
        for batch in batches:
            bar.update(len(batch))
            yield batch


def _load_config(cls, path: Path | None, overrides: dict, defaults: dict | None = None):
    """``defaults`` (this command's own), then the YAML's keys, then the flags given."""
    base = (defaults or {}) | (read_yaml_mapping(path) if path else {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    return cls.from_mapping(base, source=path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsmscale", epilog=EPILOG,
        description="DSM-Net for cryo-ET at scale: convert tomograms, pick, extract, infer.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="MRC/MAP/REC (.gz/.bz2) -> OME-Zarr pyramid", epilog=EPILOG,
                       description="Convert tomograms to chunked, compressed OME-Zarr (axes z,y,x "
                                   "in Å). One input and an output ending in .zarr converts in "
                                   "process; several inputs convert in parallel as Ray tasks "
                                   "into the output folder.")
    p.add_argument("inputs", nargs="+", type=Path, help="MRC files")
    p.add_argument("-o", "--output", type=Path, required=True, help="store.zarr or a folder")
    p.add_argument("--config", type=Path, help="YAML with ConvertConfig keys")
    p.add_argument("--levels", type=int, help="pyramid levels (default 3)")
    p.add_argument("--chunk", type=int, help="chunk edge in voxels (default 64)")
    p.add_argument("--codec", choices=["lz4", "zstd", "blosclz", "zlib", "none"],
                   help="Blosc codec (default lz4)")
    p.add_argument("--clevel", type=int, help="compression level 0-9 (default 5)")
    p.add_argument("--zarr-format", type=int, choices=[2, 3],
                   help="3 = NGFF 0.5 (default), 2 = NGFF 0.4")
    p.add_argument("--overwrite", action="store_true", help="replace existing stores")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("pick", help="Difference-of-Gaussians picking", epilog=EPILOG,
                       description="Pick blob-like particles with a DoG filter (sigmas in nm) and "
                                   "non-maximum suppression; writes STAR, CSV or a copick root.")
    p.add_argument("tomogram", help="OME-Zarr store")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="picks .star or .csv, or a copick project folder (a name without a suffix)")
    p.add_argument("--config", type=Path, help="YAML with PickConfig keys")
    p.add_argument("--sigma-nm", type=float, help="inner Gaussian sigma in nm (default 3)")
    p.add_argument("--min-distance-nm", type=float, help="minimum pick spacing in nm (default 8)")
    p.add_argument("--threshold", type=float, help="minimum score in DoG std units (default 3)")
    p.add_argument("--top-k", type=int, help="keep at most K picks")
    p.add_argument("--polarity", choices=["dark", "bright"], help="particle contrast (default dark)")
    p.add_argument("--level", type=int, help="pyramid level (default 0)")
    p.set_defaults(func=_cmd_pick)

    p = sub.add_parser("extract", help="cut subtomograms into an N×B³ Zarr + Parquet",
                       epilog=EPILOG,
                       description="Extract boxes around particles, grouped by chunk row so each "
                                   "chunk is read once; streams with bounded memory.")
    p.add_argument("tomogram", help="OME-Zarr store")
    p.add_argument("particles", type=Path, help="particles .star, .csv or copick .json/root")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--box", type=int, default=40, help="box edge in voxels (default 40)")
    p.add_argument("--edge", choices=["pad", "skip"], default="pad",
                   help="boxes crossing the volume edge: pad (flagged) or skip (default pad)")
    p.add_argument("--normalise", action="store_true", help="zero mean, unit std per box")
    p.add_argument("--level", type=int, default=0, help="pyramid level (default 0)")
    p.add_argument("--voxel-size", type=float,
                   help="voxel size (Å) of the particle coordinates, for a table that records "
                   "none (one that does must agree); copick picks default to the tomogram's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("simulate", help="simulate tomograms and the benchmark datasets A and B",
                       epilog=EPILOG,
                       description="Crowded tomograms from real PDB structures (tilt series about "
                                   "y, CTF, MTF, noise at a set SNR, WBP) and datasets of 40³ "
                                   "subtomograms with labels, target masks and target densities. "
                                   "Defaults build datasets A (SNR 0.06) and B (SNR 0.01).")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--config", type=Path, help="YAML with SimulateConfig keys")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--n-tomograms", type=int, help="tomograms to simulate (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("train", help="train DSM-Net, an ablation or a baseline", epilog=EPILOG,
                       description="Train on a dataset folder (from dsmscale simulate). Paper "
                                   "defaults: Adam 1e-3, batch 64 (run in micro-batches of 8 on a CPU), "
                                   "<=100 epochs, early stop 15, "
                                   "loss cls:seg:rec = 1:10:1; bf16 + channels_last_3d where "
                                   "supported. Re-running resumes from OUTPUT/last.pt.")
    _training_arguments(p, "dsmnet (default), cls, seg, cls_rec, cls_seg, ssn3d_ed, dsrf3d_v2; "
                           "the students dsmnet_small, guo_l, guo_m, guo_s")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("distill", help="train a compact student on a teacher's outputs",
                       epilog=EPILOG,
                       description="Knowledge distillation (Guo et al. 2018): the student learns "
                                   "the teacher's logits (MSE, or temperature-scaled KL), soft "
                                   "segmentation and recovered density on the dataset's boxes. "
                                   "Students: dsmnet_small (all three heads, usable by dsmscale "
                                   "run), guo_l, guo_m, guo_s (classification only).")
    _training_arguments(p, "dsmnet_small (default), guo_l, guo_m, guo_s")
    p.add_argument("--teacher", required=True, help="teacher: 'default' (shipped) or a .pt path")
    p.add_argument("--loss", choices=("mse", "kl"), help="classification distillation loss")
    p.add_argument("--hard-weight", type=float, help="share of the loss from the true labels, "
                   "masks and densities (default 0.5); the rest comes from the teacher")
    p.set_defaults(func=_cmd_train, default_model="dsmnet_small")

    p = sub.add_parser("evaluate", help="metrics and figures of a checkpoint on a split",
                       epilog=EPILOG,
                       description="Object accuracy, pixel accuracy, mIoU, per-class F1, "
                                   "confusion matrix, FSC of recovered densities, slices.")
    p.add_argument("checkpoint", type=Path, help="best.pt or last.pt of a run")
    p.add_argument("dataset", help="dataset folder")
    p.add_argument("--split", default="test", help="train, val, test or heldout (default test)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for metrics/figures")
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: all cores)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("run", help="the whole job on Ray: extract, classify, segment, recover",
                       epilog=EPILOG,
                       description="Tomograms (MRC or OME-Zarr, paths, URLs or globs) and particle "
                                   "tables (or the DoG picker) through DSM-Net on a Ray actor "
                                   "pool. Embedded local Ray unless RAY_ADDRESS or ray_address "
                                   "is set. Rerunning into the same folder resumes (finished "
                                   "work units are skipped); a folder made with other inputs, "
                                   "settings or model is refused.")
    p.add_argument("--config", type=Path, help="YAML with RunConfig keys")
    p.add_argument("--tomograms", nargs="*", help="tomograms (MRC/OME-Zarr, globs)")
    p.add_argument("--particles", nargs="*", help="particle tables matched to tomograms by "
                   "file stem (TS_01.star for TS_01.mrc), or one table for one tomogram")
    p.add_argument("-o", "--output", type=Path, help="job output folder")
    p.add_argument("--model", help="'default', 'student' or a checkpoint path")
    p.add_argument("--num-actors", type=int, help="inference actors (default 1)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("discover", help="cluster a job's features to find unseen complexes",
                       epilog=EPILOG,
                       description="Streaming k-means (MiniBatchKMeans partial_fit, optional "
                                   "IncrementalPCA) over the 1024-d features of a finished job; "
                                   "per-cluster composition, average recovered densities, t-SNE.")
    p.add_argument("job", type=Path, help="a finished dsmscale run's output folder (writes "
                   "JOB/discovery)")
    p.add_argument("--config", type=Path, help="YAML with DiscoverConfig keys")
    p.add_argument("--k", type=int, help="clusters (default 22)")
    p.add_argument("--truth", type=Path, help="table with the true class_name per particle_id "
                   "(and per tomogram, named as in the job, when the job has several)")
    p.add_argument("--voxel-size", type=float, help="voxel size (Å) for a truth table")
    p.set_defaults(func=_cmd_discover)
    return parser


def _training_arguments(p: argparse.ArgumentParser, models: str) -> None:
    p.add_argument("--config", type=Path, help="YAML with TrainConfig keys")
    p.add_argument("--dataset", help="dataset folder (e.g. data/sim/datasets/A)")
    p.add_argument("-o", "--output", type=Path, help="run folder")
    p.add_argument("--model", help=models)
    p.add_argument("--max-epochs", type=int, help="epoch cap (default 100)")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--augment", action="store_true", help="random 180° rotations about z, y "
                   "and x (they keep the missing wedge in place); off in the paper's procedure")
    p.add_argument("--no-batch-norm", action="store_true", help="no batch normalisation after "
                   "the 3³ convs: the papers' plain reading (ours normalises; without it "
                   "classification may not converge)")
    p.add_argument("--monitor", choices=["val_loss", "val_score"],
                   help="what early stopping and best.pt follow: the validation loss (default, "
                   "the paper's) or the mean of validation object accuracy and mIoU (with "
                   "several heads at low SNR the loss can rise while both still improve)")
    p.add_argument("--micro-batch", type=int, help="boxes per forward/backward pass (default: "
                   "8 on a CPU, fastest there, with BatchNorm over each micro-batch; the whole "
                   "batch of 64 on a GPU, plain BatchNorm)")


def _show_input_warnings(command: str) -> None:
    """Print an `InputWarning` as 'dsmscale COMMAND: warning: MESSAGE' (one line, no source line
    of ours); other warnings as Python shows them."""
    show = warnings.showwarning

    def one_line_show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            print(f"dsmscale {command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line_show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores how warnings are shown when the command ends
            _show_input_warnings(args.command)
            return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        error = user_facing_error(exc)
        if error is None:
            raise
        hint = RESUME_HINT if args.command == "run" and isinstance(error, OSError) else ""
        print(f"dsmscale {args.command}: error: {one_line(error)}{hint}", file=sys.stderr)
        return 2 if isinstance(error, InputError) else 1


if __name__ == "__main__":
    sys.exit(main())
