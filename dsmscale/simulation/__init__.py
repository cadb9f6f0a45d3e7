"""``dsmscale simulate``: crowded tomograms from real structures through a realistic tilt-series
simulator, and the benchmark datasets of boxes with labels, target masks and target densities
(`dataset`); `fast` is a Fourier-space shortcut for tests."""

from dsmscale.simulation.dataset import SimulateConfig, build_datasets
from dsmscale.simulation.tomogram import TomogramConfig

__all__ = ["SimulateConfig", "TomogramConfig", "build_datasets"]
