"""Named fault-injection points for the reliability suite (off unless armed).

A point is armed through the environment, so it reaches every Ray worker a driver starts:
``DSMSCALE_FAILPOINTS="extract=once:/tmp/t1,write=while:/tmp/t2"``.

- ``once:TOKEN`` — the first process to reach the point *and* remove the file ``TOKEN`` raises;
  every later call passes (a transient fault: exactly one failure across the whole cluster).
- ``while:TOKEN`` — every call raises as long as ``TOKEN`` exists (a full disk, until freed).

Unarmed, a point costs one environment lookup. The faults raised are the ones the real world
raises: an ``OSError(EIO)`` read error for ``extract``, ``OSError(ENOSPC)`` for ``write``.
"""

from __future__ import annotations

import errno
import os

ENV = "DSMSCALE_FAILPOINTS"
FAULTS = {
    "extract": (errno.EIO, "injected transient read error"),
    "write": (errno.ENOSPC, "No space left on device"),
}


def failpoint(name: str, path: str | os.PathLike | None = None) -> None:
    """Raise the fault of point ``name`` if it is armed and due; ``path`` names the file the
    fault concerns (shown in the error)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    arms = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if name not in arms:
        return
    mode, _, token = arms[name].partition(":")
    if mode not in ("once", "while") or not token:
        raise ValueError(f"{ENV}: {name}={arms[name]!r} is not 'once:PATH' or 'while:PATH'")
    if mode == "once":
        try:
            os.unlink(token)  # one process wins the token; the others pass
        except FileNotFoundError:
            return
    elif not os.path.exists(token):
        return
    code, message = FAULTS[name]
    raise OSError(code, message, None if path is None else str(path))
