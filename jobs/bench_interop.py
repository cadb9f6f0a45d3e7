"""Benchmark: every particle table in ../shared/realdata read, and the writers at scale.

Usage: python jobs/bench_interop.py [--realdata ../shared/realdata] [--rows 100000] [--out results]

For each file that holds particles (a voxel size is given only where the file records none,
as a user would: Dynamo, STOPGAP, CSV and the ChlamyAnnotations picks at their stated 1.96 Å):
rows read, tomograms, pixel sizes, and the time per 10⁵ rows; files without particles are listed
with dsmscale's one-line answer. Then a table of ``--rows`` particles over 100 tomograms is
written and read back as RELION 5 (optimisation set), RELION 3.1 STAR, copick and CSV, with the
time per 10⁵ rows and the largest position error of the round trip (Å). With ``--out``, writes
``OUT/interop.{md,json}`` (command, commit, machine). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsmscale.errors import InputError
from dsmscale.hardware import machine_name
from dsmscale.io.particles import make_particles, read_particles, write_particles
from dsmscale.profiling import emit
from dsmscale.report.provenance import git_commit

#: Voxel sizes (Å) users must give for files that record none.
GIVEN_VOXEL_SIZE = {"chlamy": 1.96, ".tbl": 10.0, "stopgap": 10.0, "points_with": 10.0}
SKIP = (".mrc", ".mrcs", ".rec", ".md", ".zarray", ".zattrs", ".zgroup")


def _given(path: Path) -> float | None:
    return next((v for key, v in GIVEN_VOXEL_SIZE.items() if key in str(path)), None)


def candidates(root: Path) -> list[Path]:
    """Files of ``root`` that could be tables (not volumes, licences or Zarr chunks)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("LICENSE")
                  and p.suffix not in SKIP and p.suffix and "/0/" not in str(p))


def read_all(root: Path) -> tuple[list[dict], list[str]]:
    rows, answers = [], []
    for path in candidates(root):
        start = time.perf_counter()
        try:
            table = read_particles(path, voxel_size_a=_given(path))
        except InputError as exc:
            answers.append(str(exc).replace(str(root) + "/", ""))
            continue
        seconds = time.perf_counter() - start
        rows.append({"file": str(path.relative_to(root)), "rows": len(table),
                     "tomograms": int(table.df["tomogram"].nunique()),
                     "pixel_size_a": round(table.voxel_size_a, 4),
                     "classes": int(table.df["class_name"].nunique())
                     if "class_name" in table.df else 0,
                     "s_per_1e5_rows": seconds / len(table) * 1e5})
    return rows, answers


def round_trips(n: int, folder: Path) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    names = [f"TS_{i:03d}" for i in rng.integers(0, 100, n)]
    table = make_particles(rng.uniform(0, 500, (n, 3)), names, 2.5,
                           rot=rng.uniform(-180, 180, n), tilt=rng.uniform(0, 180, n),
                           psi=rng.uniform(-180, 180, n),
                           class_name=rng.choice(["ribosome", "proteasome", "FAS"], n),
                           score=rng.random(n))
    shapes = {name: ((600, 600, 600), 2.5) for name in set(names)}
    targets = {"relion5": (folder / "set_relion5", folder / "set_relion5" /
                           "optimisation_set.star"),
               "relion31_star": (folder / "p.star", folder / "p.star"),
               "copick": (folder / "overlay", folder / "overlay"),
               "csv": (folder / "p.csv", folder / "p.csv")}
    figures = {}
    for key, (out, back_from) in targets.items():
        start = time.perf_counter()
        write_particles(table, out, tomograms=shapes)
        written = time.perf_counter() - start
        back = read_particles(back_from)
        read = time.perf_counter() - start - written
        order = np.argsort(back.df["particle_id"].to_numpy())
        error = np.abs(back.coordinates_a()[order] - table.coordinates_a()).max()
        figures[key] = {"write_s_per_1e5": written / n * 1e5, "read_s_per_1e5": read / n * 1e5,
                        "max_error_a": float(error),
                        "labels_kept": bool((back.df["class_name"].to_numpy()[order]
                                             == table.df["class_name"].to_numpy()).all())}
    return figures


def write_results(out: Path, rows: list[dict], answers: list[str], trips: dict,
                  figures: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "interop.json").write_text(json.dumps(
        {**figures, "files": rows, "refused": answers}, indent=2))
    lines = ["# Real particle tables read, and round trips", "",
             f"`{figures['command']}` — commit {figures['commit']}, {figures['machine']}. Every "
             "file of `../shared/realdata` (see its PROVENANCE.md); a voxel size is given only "
             "where a file records none (Dynamo, STOPGAP, CSV: 10 Å; ChlamyAnnotations: their "
             "stated 1.96 Å).", "",
             "| file | rows | tomograms | pixel size (Å) | classes | s per 10⁵ rows |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['rows']} | {r['tomograms']} | {r['pixel_size_a']:g} | "
              f"{r['classes']} | {r['s_per_1e5_rows']:.2f} |" for r in rows]
    lines += ["", "Files without particles, and dsmscale's one-line answer:", ""]
    lines += [f"- {line}" for line in answers]
    lines += ["", f"Round trips of {figures['round_trip_rows']:,} particles over 100 tomograms "
              "(write, then read back):", "",
              "| format | write s / 10⁵ | read s / 10⁵ | max position error (Å) | labels kept |",
              "|---|---|---|---|---|"]
    lines += [f"| {k} | {f['write_s_per_1e5']:.2f} | {f['read_s_per_1e5']:.2f} | "
              f"{f['max_error_a']:.1e} | {f['labels_kept']} |" for k, f in trips.items()]
    (out / "interop.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "realdata")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="folder for interop.{md,json}")
    args = parser.parse_args()
    rows, answers = read_all(args.realdata)
    for r in rows:
        print(f"{r['rows']:>7} rows {r['tomograms']:>3} tomograms {r['pixel_size_a']:>7g} Å "
              f"{r['classes']:>2} classes {r['s_per_1e5_rows']:7.2f} s/1e5  {r['file']}")
    for line in answers:
        print(f"   no particles: {line}")
    with tempfile.TemporaryDirectory() as tmp:
        trips = round_trips(args.rows, Path(tmp))
    for key, f in trips.items():
        print(f"{key:>14}: write {f['write_s_per_1e5']:.2f} s, read {f['read_s_per_1e5']:.2f} s "
              f"per 1e5 rows; max error {f['max_error_a']:.2e} Å; labels kept {f['labels_kept']}")
    figures = {"command": "python jobs/bench_interop.py " + " ".join(sys.argv[1:]),
               "commit": git_commit(), "machine": machine_name(),
               "round_trip_rows": args.rows}
    if args.out:
        write_results(args.out, rows, answers, trips, figures)
    emit({"files_read": len(rows), "rows_read": sum(r["rows"] for r in rows),
          "tomograms": sum(r["tomograms"] for r in rows),
          "pixel_sizes_a": sorted({r["pixel_size_a"] for r in rows}),
          "read_s_per_1e5_rows_pooled": sum(r["s_per_1e5_rows"] * r["rows"] for r in rows)
          / sum(r["rows"] for r in rows),
          "files_refused": len(answers), "round_trip_rows": args.rows, "round_trips": trips})


if __name__ == "__main__":
    main()
