"""dsmscale: DSM-Net for cellular cryo-electron tomography, at proteome scale.

The whole workflow in one place::

    import dsmscale

    store = dsmscale.convert("TS_01.mrc", "TS_01.zarr")            # MRC → OME-Zarr pyramid
    picks = dsmscale.read_particles("TS_01.star")                   # or dsmscale.pick(store)
    for batch in dsmscale.extract_subtomograms(store, picks, box=40):
        batch.boxes                                                 # (n, 40, 40, 40), z y x
    summary = dsmscale.run(dsmscale.RunConfig(tomograms=["TS_01.mrc"],
                                              particles=["TS_01.star"], output="job"))
    found = dsmscale.discover("job", dsmscale.DiscoverConfig(k=22))

Each name is imported from its module when first used (`import dsmscale` stays light): the
stages are the modules ``conversion``, ``picking``, ``extraction``, ``simulation``,
``training``, ``evaluation``, ``pipeline`` (``dsmscale run``) and ``discovery``, over the shared
layers ``io``, ``geometry``, ``rotations``, ``models``, ``checkpoints``, ``inference``,
``metrics`` and ``report``.
"""

from __future__ import annotations

from importlib import import_module, metadata

try:
    __version__ = metadata.version("dsmscale")
except metadata.PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"

#: The facade: name → (module, attribute).
_EXPORTS = {
    "convert": ("dsmscale.conversion", "convert_mrc_to_ome_zarr"),
    "convert_many": ("dsmscale.conversion", "convert_many"),
    "ConvertConfig": ("dsmscale.conversion", "ConvertConfig"),
    "open_tomogram": ("dsmscale.io.omezarr", "open_tomogram"),
    "read_particles": ("dsmscale.io.particles", "read_particles"),
    "write_particles": ("dsmscale.io.particles", "write_particles"),
    "convert_particles": ("dsmscale.io.tables", "convert_particles"),
    "ParticleTable": ("dsmscale.io.particles", "ParticleTable"),
    "pick": ("dsmscale.picking", "pick_particles"),
    "PickConfig": ("dsmscale.picking", "PickConfig"),
    "extract_subtomograms": ("dsmscale.extraction", "extract_subtomograms"),
    "extract": ("dsmscale.extraction", "extract_to_folder"),
    "ExtractConfig": ("dsmscale.extraction", "ExtractConfig"),
    "simulate": ("dsmscale.simulation", "build_datasets"),
    "SimulateConfig": ("dsmscale.simulation", "SimulateConfig"),
    "simulate_randomised": ("dsmscale.randomised", "simulate_randomised"),
    "RandomisedConfig": ("dsmscale.randomised", "RandomisedConfig"),
    "make_dataset": ("dsmscale.datasets", "make_dataset"),
    "DatasetConfig": ("dsmscale.datasets", "DatasetConfig"),
    "train": ("dsmscale.training", "train"),
    "TrainConfig": ("dsmscale.training", "TrainConfig"),
    "evaluate": ("dsmscale.evaluation", "evaluate_checkpoint"),
    "run": ("dsmscale.pipeline", "run_job"),
    "RunConfig": ("dsmscale.pipeline", "RunConfig"),
    "discover": ("dsmscale.discovery", "discover"),
    "DiscoverConfig": ("dsmscale.discovery", "DiscoverConfig"),
    "JobFolder": ("dsmscale.io.job", "JobFolder"),
    "InputError": ("dsmscale.errors", "InputError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsmscale' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
