"""Simulated tomograms: Gaussian blobs for tests and the realistic tilt-series simulator."""
