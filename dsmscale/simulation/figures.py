"""PNG figures of simulated data: tomogram slices with their spectra, and a per-class gallery."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np

from dsmscale.io.dataset import ARRAYS, open_dataset_array, read_dataset_table
from dsmscale.report.figures import plt, save_figure


def _show(ax, image, title=None):
    lo, hi = np.percentile(image, [1, 99])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def tomogram_figure(volumes: dict[str, np.ndarray], path: Path, crop: int = 256) -> Path:
    """Central xy and xz slices of each volume, and the log power spectrum of the xz slice
    (the missing wedge is the empty double cone around the kz axis)."""
    fig, axes = plt.subplots(3, len(volumes), figsize=(3.2 * len(volumes), 9), squeeze=False)
    for col, (name, vol) in enumerate(volumes.items()):
        nz, ny, nx = vol.shape
        y0, x0 = max(ny // 2 - crop // 2, 0), max(nx // 2 - crop // 2, 0)
        _show(axes[0, col], vol[nz // 2, y0:y0 + crop, x0:x0 + crop], f"{name}: xy (z={nz // 2})")
        xz = np.asarray(vol[:, ny // 2, x0:x0 + crop])
        _show(axes[1, col], xz, "xz (tilt axis y)")
        spectrum = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(xz - xz.mean()))) ** 2)
        _show(axes[2, col], spectrum, "xz power spectrum (kz vertical)")
    return save_figure(fig, path, dpi=80)


def class_gallery(dataset: Path, path: Path) -> Path:
    """One subtomogram per class: noisy xy and xz slices, target mask and target density."""
    first = read_dataset_table(dataset).groupby("class_name", sort=False).head(1)
    arrays = {n: open_dataset_array(dataset, n) for n in ARRAYS}
    fig, axes = plt.subplots(4, len(first), figsize=(1.1 * len(first), 5), squeeze=False)
    for col, (_, row) in enumerate(first.iterrows()):
        i = int(row["index"])
        x, mask, dens = (np.asarray(arrays[n][i]) for n in ("subtomograms", "mask", "density"))
        c = x.shape[0] // 2
        _show(axes[0, col], x[c], row["class_name"])
        _show(axes[1, col], x[:, c])
        axes[2, col].imshow(mask[c], cmap="gray", vmin=0, vmax=1)
        _show(axes[3, col], dens[c])
        for r in (2,):
            axes[r, col].set_xticks([])
            axes[r, col].set_yticks([])
    for r, label in enumerate(["input xy", "input xz", "mask xy", "density xy"]):
        axes[r, 0].set_ylabel(label, fontsize=8)
    return save_figure(fig, path, dpi=90)


def dataset_figures(out: Path, names: list[str]) -> list[Path]:
    """Figures for a simulation output folder (see `dsmscale.simulation.dataset`)."""
    figures = []
    tomos = out / "tomograms"
    files = {n: tomos / f"tomo_000_{n}.mrc" for n in [*names, "noise_free", "density"]}
    if all(f.is_file() for f in files.values()):
        volumes = {n: mrcfile.mmap(f, mode="r").data for n, f in files.items()}
        figures.append(tomogram_figure(volumes, out / "tomogram_slices.png"))
    for name in names:
        figures.append(class_gallery(out / "datasets" / name, out / f"classes_{name}.png"))
    return figures
