"""Simulated tomograms: the realistic tilt-series simulator and its Fourier-space shortcut."""
