"""The typed configuration of the reduce stage (``dsmscale discover``, or ``discover`` in a
run's config)."""

from __future__ import annotations

from pydantic import Field

from dsmscale.config import JobConfig


class DiscoverConfig(JobConfig):
    """Clustering settings of the reduce stage."""

    k: int = Field(22, ge=2, description="clusters (22 as in the paper)")
    batch_rows: int = Field(8192, ge=256, description="feature rows per streamed batch")
    fit_sample: int = Field(20_000, ge=100, description="uniform sample (rows) on which the "
                            "centres are placed by k-means with restarts; bounds the memory")
    n_init: int = Field(10, ge=1, description="k-means++ restarts on the sample (lowest inertia)")
    epochs: int = Field(1, ge=0, description="partial_fit refinement passes over all features")
    minibatch: int = Field(1024, ge=32, description="rows per partial_fit step")
    pca_components: int | None = Field(None, ge=2, description="IncrementalPCA first, if set")
    k_candidates: tuple[int, ...] = Field((8, 12, 16, 22, 28, 36), description="for the k report")
    align_members: int = Field(100, ge=0, description="members per cluster (a uniform sample) "
                               "averaged with reference-free alignment for its average density "
                               "(the plain mean of all members is kept too); 0: no alignment")
    align_min_size: int = Field(10, ge=2, description="smaller clusters keep their plain mean: "
                                "a reference-free average of a handful is mostly its first "
                                "member, and each cluster aligned costs seconds however small")
    tsne_sample: int = Field(2000, ge=50)
    seed: int = 0
