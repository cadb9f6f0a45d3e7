"""Process a dataset: the entry point for `ray job submit` and for local runs (same code).

    python jobs/process_dataset.py --config job.yaml
    ray job submit --working-dir . -- python jobs/process_dataset.py --config job.yaml

Inside a Ray Job the driver connects to the job's cluster (RAY_ADDRESS is set by Ray); run
locally it starts an embedded Ray. Same as `dsmscale run --config job.yaml`.
"""

from __future__ import annotations

import sys

from dsmscale.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
