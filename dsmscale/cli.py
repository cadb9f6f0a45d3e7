"""The ``dsmscale`` command: a thin shell over the Python API (`dsmscale`'s facade).

Each subcommand is one small function; its flags are the fields of its job's config, whose
descriptions and defaults are the help texts. Bad input is reported in one line naming the file
and the problem (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from pydantic_core import PydanticUndefined

import dsmscale
from dsmscale.config import read_yaml_mapping
from dsmscale.errors import InputError, InputWarning, one_line, user_facing_error

RESUME_HINT = " (finished work units are kept: fix the cause and rerun the same command to resume)"
EPILOG = """Conventions: arrays are (z, y, x); particle coordinates are pixels of a stated pyramid
level; voxel sizes and OME-Zarr scales are in Å; picker sigmas are in nm. See README.md."""


# ----------------------------------------------------------------------------- subcommands
def convert(args: argparse.Namespace) -> int:
    config = _config(dsmscale.ConvertConfig, args)
    if len(args.inputs) == 1 and args.output.suffix == ".zarr":
        print(f"wrote {dsmscale.convert(args.inputs[0], args.output, config)}")
        return 0
    done, failed = dsmscale.convert_many(args.inputs, args.output, config)
    for path in done:
        print(f"wrote {path}")
    for problem in failed.values():
        print(f"dsmscale convert: error: {problem}", file=sys.stderr)
    return 2 if failed else 0


def pick(args: argparse.Namespace) -> int:
    from dsmscale.io.particles import output_format

    output_format(args.output)  # a format it cannot write is an error before the work
    config = _config(dsmscale.PickConfig, args)
    table = dsmscale.pick(args.tomogram, config)
    if len(table) == 0:
        raise InputError(args.tomogram, f"no particles scored {config.threshold:g} standard "
                                        "deviations or more (lower --threshold, or check "
                                        "--polarity and --sigma-nm)")
    args.output.parent.mkdir(parents=True, exist_ok=True)  # only once there is something to write
    dsmscale.write_particles(table, args.output)
    print(f"picked {len(table)} particles -> {args.output}")
    return 0


def particles(args: argparse.Namespace) -> int:
    written = dsmscale.convert_particles(
        args.inputs, args.output, args.tomograms, voxel_size_a=args.voxel_size,
        class_column=args.class_column, tomogram_set=args.tomogram_set)
    for path in written:
        print(f"wrote {path}")
    return 0


def extract(args: argparse.Namespace) -> int:
    out, n, skipped = dsmscale.extract(args.tomogram, args.particles, args.output,
                                       _config(dsmscale.ExtractConfig, args))
    print(f"extracted {n} subtomograms ({skipped} skipped at the edge) -> {out}")
    return 0


def simulate(args: argparse.Namespace) -> int:
    config = _config(dsmscale.SimulateConfig, args)
    summary = dsmscale.simulate(config, args.output, overwrite=args.overwrite)
    counts = ", ".join(f"{k}: {v} (SNR {summary['snr_measured'][k]:.4f})"
                       for k, v in summary["n_subtomograms"].items())
    print(f"simulated {config.n_tomograms} tomogram(s), volume fraction "
          f"{summary['volume_fraction']:.2f}; subtomograms {counts} -> {args.output}")
    return 0


def simulate_randomised(args: argparse.Namespace) -> int:
    config = _config(dsmscale.RandomisedConfig, args)
    summary = dsmscale.simulate_randomised(config, args.output)
    splits = ", ".join(f"{s}: {len(t)}" for s, t in summary["tomograms_per_split"].items())
    print(f"simulated {config.n_tomograms} tomograms under drawn conditions "
          f"({args.output}/conditions.parquet); {summary['n_subtomograms']} subtomograms, "
          f"tomograms per split {splits} -> {args.output}/dataset")
    return 0


def dataset(args: argparse.Namespace) -> int:
    for key, kind in (("templates", str), ("contours", float)):
        if getattr(args, key):
            setattr(args, key, _pairs(getattr(args, key), key, kind))
    config = _config(dsmscale.DatasetConfig, args)
    summary = dsmscale.make_dataset(config)
    splits = ", ".join(f"{s}: {', '.join(t)}" for s, t in summary["tomograms_per_split"].items())
    print(f"{summary['n_subtomograms']} subtomograms of {len(summary['classes'])} classes "
          f"({summary['with_targets']} with mask and density targets); tomograms {splits} "
          f"-> {config.output}")
    return 0


def _pairs(items: list[str], flag: str, kind) -> dict:
    """``CLASS=VALUE`` flag values as a mapping."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(None, f"--{flag} takes CLASS=VALUE, got {item!r}")
        try:
            pairs[name] = kind(value)
        except ValueError as exc:
            raise InputError(None, f"--{flag} {item!r}: {value!r} is not a {kind.__name__}"
                             ) from exc
    return pairs


def train(args: argparse.Namespace) -> int:
    defaults = {"model": args.default_model} if args.default_model else {}
    config = _config(dsmscale.TrainConfig, args, defaults)
    if getattr(args, "needs_teacher", False) and config.teacher is None:
        raise InputError(args.config, "distill needs a teacher: give --teacher or 'teacher:' in "
                                      "the config")
    result = dsmscale.train(config)
    last = result["history"][-1] if result["history"] else {}
    shown = {k: round(v, 4) for k, v in last.items() if k.startswith("val_")}
    print(f"trained {config.model} for {result['epochs']} epochs: {shown}; "
          f"best checkpoint {result['best_checkpoint']}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    metrics = dsmscale.evaluate(args.checkpoint, args.dataset, args.split, args.output,
                                args.threads)
    keys = ("obj_acc", "pix_acc", "miou", "fsc_resolution_nm")
    print(", ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)
          + f" on {metrics['n']} {args.split} subtomograms -> {args.output}")
    return 0


def run(args: argparse.Namespace) -> int:
    config = _config(dsmscale.RunConfig, args)
    summary = dsmscale.run(config)
    print(f"{summary['particles']} particles in {summary['tomograms']} tomogram(s): "
          f"{summary['particles_processed']} processed now, {summary['units_skipped']} units "
          f"already done; {summary['end_to_end_per_s']:.1f} particles/s end to end; "
          f"summary in {dsmscale.JobFolder(config.output).summary}")
    return 0


def discover(args: argparse.Namespace) -> int:
    config = _config(dsmscale.DiscoverConfig, args)
    if not dsmscale.JobFolder(args.job).is_finished():  # `run` discovers before it finishes
        raise InputError(args.job, "not a finished dsmscale run (no summary.json): run or "
                                   "resume the job first")
    truth = _truth(args.truth, args.voxel_size) if args.truth else None
    summary = dsmscale.discover(args.job, config, truth)
    extra = f", ARI {summary['ari']:.3f}, NMI {summary['nmi']:.3f}" if "ari" in summary else ""
    print(f"{summary['particles']} particles in {summary['k']} clusters{extra}; "
          f"low-confidence clusters {summary['low_confidence_clusters']} -> "
          f"{args.job}/discovery")
    return 0


def _truth(path: Path, voxel_size_a: float | None):
    """The true class per particle (and per tomogram, when the table holds several)."""
    table = dsmscale.read_particles(path, voxel_size_a).df
    if "class_name" not in table.columns:
        raise InputError(path, "the truth table has no class names (a class_name column, or "
                               "rlnClassName in STAR)")
    several = table["tomogram"].nunique() > 1  # then its names must be the job's
    return table[["particle_id", "class_name"] + (["tomogram"] if several else [])]


# --------------------------------------------------------------------------------- helpers
def _config(cls, args: argparse.Namespace, defaults: dict | None = None):
    """A job's config: ``defaults`` (this command's own), then the YAML's keys, then the flags
    given (the arguments named like the config's fields)."""
    base = (defaults or {}) | (read_yaml_mapping(args.config) if args.config else {})
    given = {name: getattr(args, name) for name in cls.model_fields
             if getattr(args, name, None) not in (None, [])}
    return cls.from_mapping(base | {k: str(v) if isinstance(v, Path) else v
                                    for k, v in given.items()}, source=args.config)


def _flag(p: argparse.ArgumentParser, cls, field: str, *names: str, **kwargs) -> None:
    """A flag for config field ``field``, its help the field's description and default."""
    info = cls.model_fields[field]
    default = info.default
    shown = "" if default in (None, PydanticUndefined) or isinstance(default, bool) else (
        f" (default {default})")
    kwargs["help"] = f"{kwargs.get('help') or info.description or field}{shown}"
    p.add_argument(*(names or (f"--{field.replace('_', '-')}",)), dest=field, default=None,
                   **kwargs)


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# ---------------------------------------------------------------------------------- parser
def _convert_arguments(p: argparse.ArgumentParser, c) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="MRC files")
    p.add_argument("-o", "--output", type=Path, required=True, help="store.zarr or a folder")
    _flag(p, c, "levels", type=int)
    _flag(p, c, "chunk", type=int)
    _flag(p, c, "codec", choices=["lz4", "zstd", "blosclz", "zlib", "none"])
    _flag(p, c, "clevel", type=int)
    _flag(p, c, "zarr_format", type=int, choices=[2, 3])
    _flag(p, c, "overwrite", action="store_true")


def _pick_arguments(p: argparse.ArgumentParser, c) -> None:
    p.add_argument("tomogram", help="OME-Zarr store")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="picks .star or .csv, or a copick project folder (a name without a suffix)")
    for field, kind in (("sigma_nm", float), ("min_distance_nm", float), ("threshold", float),
                        ("top_k", int), ("level", int)):
        _flag(p, c, field, type=kind)
    _flag(p, c, "polarity", choices=["dark", "bright"])


def _table_reading_arguments(p: argparse.ArgumentParser) -> None:
    """What reading a particle table may need to be told (the same in every command)."""
    p.add_argument("--voxel-size", type=float, dest="voxel_size",
                   help="pixel size (Å) of coordinates in tables that record none (Dynamo, "
                   "STOPGAP, CSV, annotation sets); one a table records must agree")
    p.add_argument("--class-column", help="the column holding class labels (default: "
                   "rlnClassName, rlnParticleName, then rlnClassNumber)")
    p.add_argument("--tomogram-set", help="RELION 5 tomograms.star, for particles in centred Å "
                   "(an optimisation_set.star names its own)")


def _particles_arguments(p: argparse.ArgumentParser, c) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="tables: RELION 3.0-5 / Warp .star or "
                   "optimisation_set.star, copick .json (picks or project config) or overlay "
                   "folder, Dynamo .tbl, CSV with a header; merged")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="OUT.star (RELION 3.1 style), a folder ending in relion5 (RELION 5: "
                   "particles, tomograms and optimisation set), OUT.csv, or a copick project "
                   "folder (config, picks and --tomograms in copick's layout)")
    p.add_argument("--tomograms", nargs="*", default=[],
                   help="the tomograms (MRC or OME-Zarr, named as in the tables): their sizes "
                   "place RELION 5 centred coordinates; OME-Zarr ones are copied into a copick "
                   "project")
    _table_reading_arguments(p)


def _extract_arguments(p: argparse.ArgumentParser, c) -> None:
    p.add_argument("tomogram", help="OME-Zarr store")
    p.add_argument("particles", type=Path, help="particles .star, .csv or copick .json/root")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _flag(p, c, "box", type=int)
    _flag(p, c, "edge", choices=["pad", "skip"])
    _flag(p, c, "normalise", action="store_true")
    _flag(p, c, "level", type=int)
    _flag(p, c, "resample_to_a", "--resample-to", type=float)
    _flag(p, c, "voxel_size_a", "--voxel-size", type=float)
    _flag(p, c, "batch_size", type=int)
    _flag(p, c, "overwrite", action="store_true")


def _dataset_arguments(p: argparse.ArgumentParser, c) -> None:
    _flag(p, c, "tomograms", nargs="*", help="tomograms (MRC/OME-Zarr, globs, or a copick "
          "project config)")
    _flag(p, c, "particles", nargs="*", help="labelled particle tables (any format `dsmscale "
          "particles` reads), split by the tomogram each row names")
    _flag(p, c, "output", "-o", "--output", type=Path, help="dataset folder")
    _flag(p, c, "templates", nargs="*", metavar="CLASS=PATH", help="a template per class: an "
          "MRC map (any voxel size) or a PDB/mmCIF model; classes without one get "
          "classification targets only")
    _flag(p, c, "contours", nargs="*", metavar="CLASS=VALUE", help="a template's mask contour "
          "(Da per voxel of the boxes' grid; default: the contour enclosing the molecular "
          "volume)")
    _flag(p, c, "split_by", choices=["tomogram", "particle"])
    _flag(p, c, "edge", choices=["pad", "skip"])
    _flag(p, c, "voxel_size_a", "--voxel-size", type=float)
    _flag(p, c, "class_column")
    _flag(p, c, "tomogram_set")
    _flag(p, c, "seed", type=int)
    _flag(p, c, "overwrite", action="store_true")


def _simulate_arguments(p: argparse.ArgumentParser, c) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _flag(p, c, "seed", type=int)
    _flag(p, c, "n_tomograms", type=int)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _simulate_randomised_arguments(p: argparse.ArgumentParser, c) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (rerunning "
                   "into it skips the tomograms already simulated)")
    _flag(p, c, "n_tomograms", "--tomograms", type=_positive_int)
    _flag(p, c, "seed", type=int)
    _flag(p, c, "lateral_nm", "--lateral", type=float)
    _flag(p, c, "classes", nargs="+")


def _train_arguments(p: argparse.ArgumentParser, c) -> None:
    _flag(p, c, "dataset", help="dataset folder (e.g. data/sim/datasets/A)")
    _flag(p, c, "output", "-o", "--output", type=Path, help="run folder")
    _flag(p, c, "model")
    _flag(p, c, "max_epochs", type=int)
    _flag(p, c, "threads", type=int)
    _flag(p, c, "augment", action="store_true")
    _flag(p, c, "batch_norm", "--no-batch-norm", action="store_false",
          help="no batch normalisation after the 3³ convs: the papers' plain reading (ours "
          "normalises; without it classification may not converge)")
    _flag(p, c, "monitor", choices=["val_loss", "val_score"])
    _flag(p, c, "micro_batch", type=int)
    _flag(p, c, "lr", type=float, help="Adam learning rate")
    _flag(p, c, "init")
    _flag(p, c, "freeze_encoder_epochs", type=int)
    _flag(p, c, "stream", action="store_true")
    _flag(p, c, "workers", type=int)
    _flag(p, c, "use_gpu", action="store_true")


def _distill_arguments(p: argparse.ArgumentParser, c) -> None:
    _train_arguments(p, c)
    _flag(p, c, "teacher", help="teacher: 'default' (shipped) or a .pt path; required here or "
                                "in --config")
    _flag(p, c, "distill_loss", "--loss", choices=("mse", "kl"))
    _flag(p, c, "hard_weight", type=float)
    p.set_defaults(default_model="dsmnet_small", needs_teacher=True)


def _evaluate_arguments(p: argparse.ArgumentParser, c) -> None:
    p.add_argument("checkpoint", type=Path, help="best.pt or last.pt of a run")
    p.add_argument("dataset", help="dataset folder")
    p.add_argument("--split", default="test", help="train, val, test or heldout (default test)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for metrics/figures")
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: all cores)")


def _run_arguments(p: argparse.ArgumentParser, c) -> None:
    _flag(p, c, "tomograms", nargs="*", help="tomograms (MRC/OME-Zarr, globs)")
    _flag(p, c, "particles", nargs="*", help="particle tables (any format `dsmscale particles` "
          "reads), split by the tomogram each row names (rlnTomoName, TS_01.tomostar, a copick "
          "run) and matched to tomograms by file stem; one table of one tomogram goes with the "
          "one tomogram given; a copick project config is also its tomograms")
    _flag(p, c, "voxel_size_a", "--voxel-size", type=float)
    _flag(p, c, "class_column")
    _flag(p, c, "tomogram_set")
    _flag(p, c, "without_particles", choices=["pick", "skip"])
    _flag(p, c, "copick_tomogram_type")
    _flag(p, c, "copick_voxel_spacing_a", "--copick-voxel-spacing", type=float)
    _flag(p, c, "output", "-o", "--output", type=Path, help="job output folder")
    _flag(p, c, "model")
    _flag(p, c, "resample", "--no-resample", action="store_false",
          help="cut boxes at the tomogram level's own voxel size, never resampled to the "
          "model's (a voxel size more than 10 %% off the model's is then an error)")
    _flag(p, c, "num_actors", type=int,
          help="inference actors (in YAML also [min, max], to autoscale between)")


def _discover_arguments(p: argparse.ArgumentParser, c) -> None:
    p.add_argument("job", type=Path, help="a finished dsmscale run's output folder (writes "
                   "JOB/discovery)")
    _flag(p, c, "k", type=int)
    p.add_argument("--truth", type=Path, help="table with the true class_name per particle_id "
                   "(and per tomogram, named as in the job, when the job has several)")
    p.add_argument("--voxel-size", type=float, help="voxel size (Å) for a truth table")


#: name → (function, its job's config in the facade or None, arguments, help, description).
COMMANDS = {
    "convert": (convert, "ConvertConfig", _convert_arguments,
                "MRC/MAP/REC (.gz/.bz2) -> OME-Zarr pyramid",
                "Convert tomograms to chunked, compressed OME-Zarr (axes z,y,x in Å). One input "
                "and an output ending in .zarr converts in process; several inputs convert in "
                "parallel as Ray tasks into the output folder."),
    "pick": (pick, "PickConfig", _pick_arguments, "Difference-of-Gaussians picking",
             "Pick blob-like particles with a DoG filter (sigmas in nm) and non-maximum "
             "suppression; writes STAR, CSV or a copick root."),
    "particles": (particles, None, _particles_arguments,
                  "particle tables from one tool's format into another's",
                  "Read RELION 3.0-5 (and Warp) STAR, optimisation sets, copick picks and "
                  "projects, Dynamo .tbl, STOPGAP and CSV tables (shifts applied, pixel sizes per "
                  "optics group, angles normalised, class labels kept) and write them as RELION "
                  "5, RELION 3.1-style STAR, a copick project or CSV. Positions keep 0.01 Å; "
                  "what a file leaves open is refused, never guessed. See README, 'Particle "
                  "tables'."),
    "extract": (extract, "ExtractConfig", _extract_arguments,
                "cut subtomograms into an N×B³ Zarr + Parquet",
                "Extract boxes around particles, grouped by slab (chunk row) so each chunk is "
                "read once; streams with bounded memory."),
    "simulate": (simulate, "SimulateConfig", _simulate_arguments,
                 "simulate tomograms and the benchmark datasets A and B",
                 "Crowded tomograms from real PDB structures (tilt series about y, CTF, MTF, "
                 "noise at a set SNR, WBP) and datasets of 40³ subtomograms with labels, target "
                 "masks and target densities. Defaults build datasets A (SNR 0.06) and B "
                 "(SNR 0.01)."),
    "simulate-randomised": (
        simulate_randomised, "RandomisedConfig", _simulate_randomised_arguments,
        "tomograms under randomly drawn conditions, as a training dataset",
        "Each tomogram draws its SNR (log-uniform), defocus, Cs, tilt range (symmetric or "
        "asymmetric) and step, thickness, voxel size and crowding from the ranges in the "
        "config's 'ranges' (see dsmscale.simulation.conditions.ConditionRanges for the "
        "defaults), is written as MRC + STAR with what it drew, and the boxes are cut on the "
        "model's 10 Å grid as 'dsmscale dataset' cuts a user's (split by tomogram)."),
    "dataset": (dataset, "DatasetConfig", _dataset_arguments,
                "a training dataset from your tomograms, labelled tables and templates",
                "Boxes at the model's grid (40³ at 10 Å, resampled from any voxel size) around "
                "every labelled particle, with its class, and — where its class has a template "
                "and the particle an orientation — the target's mask and density (the template "
                "turned by the particle's orientation onto its centre). Splits keep whole "
                "tomograms apart (--split-by tomogram). Writes the folder `dsmscale train` "
                "reads, in the simulator's format."),
    "train": (train, "TrainConfig", _train_arguments, "train DSM-Net, an ablation or a baseline",
              "Train on a dataset folder (from dsmscale simulate). Paper defaults: Adam 1e-3, "
              "batch 64 (run in micro-batches of 8 on a CPU), <=100 epochs, early stop 15, loss "
              "cls:seg:rec = 1:10:1; bf16 + channels_last_3d where supported. Re-running "
              "resumes from OUTPUT/last.pt."),
    "distill": (train, "TrainConfig", _distill_arguments,
                "train a compact student on a teacher's outputs",
                "Knowledge distillation (Guo et al. 2018): the student learns the teacher's "
                "logits (MSE, or temperature-scaled KL), soft segmentation and recovered "
                "density on the dataset's boxes. Students: dsmnet_small (the default; all three "
                "heads, usable by dsmscale run), guo_l, guo_m, guo_s (classification only)."),
    "evaluate": (evaluate, None, _evaluate_arguments,
                 "metrics and figures of a checkpoint on a split",
                 "Object accuracy, pixel accuracy, mIoU, per-class F1, confusion matrix, FSC of "
                 "recovered densities, slices."),
    "run": (run, "RunConfig", _run_arguments,
            "the whole job on Ray: extract, classify, segment, recover",
            "Tomograms (MRC or OME-Zarr, paths, URLs or globs) and particle tables (or the DoG "
            "picker) through DSM-Net on a Ray actor pool. Embedded local Ray unless RAY_ADDRESS "
            "or ray_address is set. Rerunning into the same folder resumes (finished work units "
            "are skipped); a folder made with other inputs, settings or model is refused."),
    "discover": (discover, "DiscoverConfig", _discover_arguments,
                 "cluster a job's features to find unseen complexes",
                 "Streaming k-means (MiniBatchKMeans partial_fit, optional IncrementalPCA) over "
                 "the 1024-d features of a finished job; per-cluster composition, average "
                 "recovered densities, t-SNE."),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, but the arguments of ``command`` only (none without
    one: the top-level help needs none), so a command imports only its own job's config."""
    parser = argparse.ArgumentParser(
        prog="dsmscale", epilog=EPILOG,
        description="DSM-Net for cryo-ET at scale: convert tomograms, pick, extract, infer.")
    parser.add_argument("--version", action="version", version=dsmscale.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (func, config, add_arguments, help, description) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=description, epilog=EPILOG)
        p.set_defaults(func=func, default_model=None)
        if name != command:
            continue
        if config is not None:
            p.add_argument("--config", type=Path, help=f"YAML with {config} keys")
        add_arguments(p, getattr(dsmscale, config) if config else None)
    return parser


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
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
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
