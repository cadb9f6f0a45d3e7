"""Input/output: MRC volumes, OME-Zarr tomograms and particle tables."""
