"""The one way figures are made and saved: matplotlib without a screen (Agg), laid out tight,
written as PNG, closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig, path: str | Path, dpi: int = 90) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
