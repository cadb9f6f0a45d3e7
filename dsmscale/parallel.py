"""Connecting to Ray: an existing cluster when one is named or running, else an embedded one."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once per process.

    With ``address=None`` and no ``RAY_ADDRESS`` in the environment this starts an embedded local
    cluster without the dashboard (it costs ~0.9 GB of RAM); inside ``ray job submit`` Ray
    connects to the job's cluster. A local dashboard, when enabled, binds to 127.0.0.1.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1",
                 log_to_driver=True)
