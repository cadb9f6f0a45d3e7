"""Where a result came from: the commit of the checkout that made it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(where: str | Path | None = None) -> str:
    """The short commit hash of the git checkout holding ``where`` (default: this package's),
    or "unknown" outside one."""
    folder = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=folder).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
