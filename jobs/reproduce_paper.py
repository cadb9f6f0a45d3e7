"""Reproduce DSM-Net's Tables 1-3 on our datasets A and B: every row trained, evaluated, tabled.

Usage:
    python jobs/reproduce_paper.py --data data/sim/datasets --workdir data/runs [--rows N]
                                   [--heldout data/sim_seed1/datasets] [--only dsmnet]
                                   [--tried | --seeds] [--ray] [--tables-only]

The rows, their schedule and their cache are `dsmscale.experiments.reproduction`'s; the tables
(results/reproduction.{md,json,png}) `dsmscale.report.reproduction`'s. With --heldout every
finished row is also scored on every box of HELDOUT/A and HELDOUT/B (`dsmscale simulate --seed 1`:
the same settings, a tomogram no row trained on) and the paper's claims are tested on those boxes
too. Rows resume where they
stopped; a row's run folder is held by one process while it trains, so processes started with
the same command (say, one 1-thread process per core) share out the rows. With --ray each row is
a Ray task (num_gpus=1 where the cluster has GPUs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dsmscale.experiments.reproduction import (
    ROWS,
    TRIED,
    planned_rows,
    recorded_rows,
    row_config,
    run_row,
    variant,
    write_tables,
)
from dsmscale.training.runs import exclusive_run


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding A/ and B/")
    parser.add_argument("--workdir", type=Path, required=True, help="runs are cached here")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--rows", type=int, default=len(ROWS), help="run only the first N rows")
    parser.add_argument("--only", help="run only rows of this model (with --tried too)")
    parser.add_argument("--tried", action="store_true",
                        help="run only the rows that change the procedure (TRIED)")
    parser.add_argument("--seeds", action="store_true",
                        help="run only DSM-Net, Cls and Seg with training seeds 1 and 2 (A first)")
    parser.add_argument("--heldout", type=Path, default=None,
                        help="folder holding A/ and B/ simulated with another seed: every row "
                             "is also scored on all their boxes")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ray", action="store_true", help="one Ray task per row")
    parser.add_argument("--tables-only", action="store_true",
                        help="rewrite results/ from the finished rows; train nothing")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    command = "python jobs/reproduce_paper.py " + " ".join(  # the command that trains the rows
        a for a in sys.argv[1:] if a not in ("--tables-only", "--tried", "--seeds"))
    every = planned_rows(args.threads)
    tried_end = len(ROWS) + len(TRIED)
    chosen = (every[len(ROWS):tried_end] if args.tried else every[tried_end:] if args.seeds
              else every[:args.rows])
    selected = [row for row in chosen if not args.only or row[1] == args.only]
    recorded = recorded_rows(args.results)  # finished: not trained again, even without a folder
    configs = [(config, variant(row[4])) for row in selected
               if (config := row_config(args.data, args.workdir, *row)).run_hash() not in recorded]

    def tables() -> list[dict]:
        return write_tables(args.data, args.workdir, args.results, command, args.threads,
                            recorded, args.heldout)

    if args.ray and not args.tables_only:
        import ray

        from dsmscale.parallel import ensure_ray

        ensure_ray()
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        ray.get([ray.remote(num_gpus=gpus, num_cpus=1)(run_row).remote(*c) for c in configs])
    elif not args.tables_only:
        for config, label in configs:
            start = time.perf_counter()
            with exclusive_run(config.output) as mine:
                if not mine:
                    print(f"{config.output}: being trained by another process; next row",
                          flush=True)
                    continue
                row = run_row(config, label)
            print(f"{row['dataset']} {row['model']} {row['loss_ratio']} {label or ''}: "
                  f"obj_acc {row['obj_acc']} miou {row['miou']} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            tables()
    rows = tables()
    print(json.dumps(rows[-1] if rows else {}))


if __name__ == "__main__":
    main()
