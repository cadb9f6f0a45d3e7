"""The typed configuration of a ``dsmscale run`` job (also ``jobs/process_dataset.py``)."""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from dsmscale.config import JobConfig
from dsmscale.discovery.config import DiscoverConfig
from dsmscale.errors import InputWarning
from dsmscale.io.pyramid import ConvertConfig
from dsmscale.picking import PickConfig

COMPILE_MIN_PARTICLES = 20_000


class InputsConfig(JobConfig):
    """Tomograms and particle tables, as a job names them (`dsmscale.pipeline.inputs`).

    ``tomograms`` are MRC files or OME-Zarr stores (local paths, fsspec URLs, globs, or a copick
    project config), named by file stem. ``particles`` are tables (any format
    `dsmscale.read_particles` reads, one or many, each holding one or many tomograms), split by
    the tomogram names they hold (``rlnTomoName``, a copick run, …; one table of one tomogram
    goes with the one tomogram given).
    """

    tomograms: list[str] = Field(min_length=1)
    particles: list[str] = Field(default_factory=list)
    voxel_size_a: float | None = Field(
        None, gt=0, description="pixel size (Å) for tables that record none (one that does "
        "must agree)")
    class_column: str | None = Field(
        None, description="table column holding class labels (default: rlnClassName, "
        "rlnParticleName, then rlnClassNumber)")
    tomogram_set: str | None = Field(
        None, description="RELION 5 tomograms.star for particles in centred Å (an "
        "optimisation_set.star names its own)")
    copick_tomogram_type: str | None = Field(
        None, description="a copick project given as tomograms: its runs' tomograms of this "
        "type (e.g. wbp, denoised); needed where runs hold several")
    copick_voxel_spacing_a: float | None = Field(
        None, gt=0, description="a copick project given as tomograms: its runs' tomograms at "
        "this voxel spacing (Å); needed where runs hold several")


class RunConfig(InputsConfig):
    """Tomograms in, every particle classified, segmented and recovered out.

    Inputs as `InputsConfig` (MRC tomograms are converted to OME-Zarr first); without tables,
    the DoG picker finds the particles.
    """

    output: str
    model: str = Field("default", description="'default', 'student' or a checkpoint path")
    box: int | None = Field(None, ge=8, description="box edge in voxels; default the model's "
                            "(another is an error: the network takes one box size)")
    level: int | None = Field(None, ge=0, description="pyramid level the boxes are cut from; "
                              "default: the coarsest level whose voxels are no coarser than "
                              "the model's")
    resample: bool = Field(True, description="resample boxes to the model's voxel size when "
                           "a tomogram's differs by more than 0.1 percent (Fourier resampling: "
                           "the spectrum cropped to the model grid's Nyquist, or zero-padded); "
                           "off: such a tomogram, if more than 10 percent off, is an error")
    edge: Literal["pad", "skip"] = "pad"
    without_particles: Literal["pick", "skip"] = Field(
        "pick", description="a tomogram no table names: find its particles with the DoG "
        "picker, or leave it out")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="subtomograms per forward pass; 'auto': the fastest of 4-256 timed "
        "by each actor at start-up (small on CPUs, large on GPUs)")
    num_actors: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(
        1, description="model actors: a fixed number, or (min, max) to autoscale between")
    gpus_per_actor: float | None = Field(None, ge=0, description="default: 1 if GPUs exist")
    cpus_per_actor: float = Field(1.0, gt=0)
    threads_per_actor: int | None = Field(None, ge=1, description="torch threads per actor")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the model in each actor; 'auto': when the job has "
        f"at least {COMPILE_MIN_PARTICLES} particles per actor to amortise the compile time")
    cpus_per_extract_task: float = Field(1.0, gt=0)
    max_actor_restarts: int = Field(3, ge=0, description="restarts of a model actor that died "
                                    "(its unit is then retried on the restarted actor)")
    io_retries: int = Field(3, ge=0, description="in-place retries of a work unit's extraction "
                            "or writing after an I/O error (OSError), before the job fails")
    max_particles_per_unit: int = Field(512, ge=1, description="work unit size cap")
    object_store_budget_gb: float = Field(
        1.0, gt=0, description="Ray Data's object-store budget for subtomograms in flight "
        "(a 512-particle unit of 40³ float32 boxes is 131 MB): bounds memory whatever the job size")
    write_maps: bool = Field(True, description="tomogram-scale label and density OME-Zarr")
    ray_address: str | None = Field(None, description="default: RAY_ADDRESS or embedded Ray")
    pick: PickConfig = Field(default_factory=PickConfig)
    convert: ConvertConfig = Field(default_factory=ConvertConfig)
    discover: DiscoverConfig | None = Field(default_factory=DiscoverConfig,
                                            description="feature clustering; null to skip")

    @field_validator("num_actors")
    @classmethod
    def _min_not_above_max(cls, value):
        if isinstance(value, tuple) and value[0] > value[1]:
            raise ValueError(f"(min, max) = {value}: min is above max")
        return value

    @model_validator(mode="before")
    @classmethod
    def _max_restarts_split_in_two(cls, data):
        """``max_restarts``, from before it was split, sets both of the keys that replace it."""
        if isinstance(data, dict) and "max_restarts" in data:
            data = dict(data)
            value = data.pop("max_restarts")
            warnings.warn("config key 'max_restarts' is now two: 'max_actor_restarts' and "
                          f"'io_retries' (both set to {value})", InputWarning, stacklevel=2)
            data.setdefault("max_actor_restarts", value)
            data.setdefault("io_retries", value)
        return data
