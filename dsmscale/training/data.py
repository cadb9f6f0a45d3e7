"""A dataset split as training batches: held in memory (`TrainingData`), or streamed from the
dataset's Zarr arrays (`StreamedData`) when it is too large for that.

Both give the loop the same three things: ``len``, ``shuffled(rng, batch_size)`` (an epoch's
batches in a random order) and ``in_order(batch_size)`` (validation). A batch is ``x`` (n, 1, B,
B, B) boxes normalised per box and ``target``: ``label`` (n,) int64 (−1: a class the model does
not learn), ``mask`` (n, B, B, B) int64, ``density`` (n, 1, B, B, B) scaled, ``has_targets``
(n,) bool.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dsmscale.geometry import normalise_boxes
from dsmscale.io.dataset import (
    DENSITY_SCALE,
    class_labels,
    load_split,
    open_dataset_array,
    split_rows,
)

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]
#: In-memory size of one 40³ box with its mask and density (float32, uint8, float32).
BYTES_PER_VOXEL = 9
#: Above this many bytes in memory a split is streamed (``TrainConfig.stream`` unset): a fixed
#: size, so the choice depends on the dataset alone, never on the machine.
STREAM_ABOVE_BYTES = 8 * 2**30


@dataclass
class TrainingData:
    """One split in memory: x (n, 1, B, B, B) normalised boxes, label (n,) int64, mask
    (n, B, B, B) uint8 (0 background, 1 target), density (n, 1, B, B, B) scaled, has_targets
    (n,) bool (mask and density known), and the table's rows."""

    x: torch.Tensor
    label: torch.Tensor
    mask: torch.Tensor
    density: torch.Tensor
    has_targets: torch.Tensor
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.label)

    def batch(self, idx) -> Batch:
        return self.x[idx], {"label": self.label[idx], "mask": self.mask[idx].long(),
                             "density": self.density[idx], "has_targets": self.has_targets[idx]}

    def shuffled(self, rng: np.random.Generator, batch_size: int) -> Iterator[Batch]:
        order = torch.from_numpy(rng.permutation(len(self)))
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])

    def sampled(self, rng: np.random.Generator, n: int, batch_size: int) -> Iterator[Batch]:
        """``n`` random boxes in batches (the first ``n`` of a shuffled order)."""
        order = torch.from_numpy(rng.permutation(len(self))[:n])
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start:start + batch_size])

    def in_order(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            yield self.batch(slice(start, start + batch_size))


def load_training_data(dataset: str | os.PathLike, split: str, classes: list[str],
                       limit: int | None = None, stream: bool | None = None,
                       ) -> TrainingData | StreamedData:
    """The rows of ``split``: in memory, or streamed when ``stream`` (None: when they would take
    more than `STREAM_ABOVE_BYTES`); a seeded random subset of ``limit`` rows if given."""
    rows = split_rows(dataset, split, limit)
    box = open_dataset_array(dataset, "subtomograms").shape[-1]
    if stream or (stream is None and len(rows) * box**3 * BYTES_PER_VOXEL > STREAM_ABOVE_BYTES):
        return StreamedData(Path(dataset), rows, classes)
    data = load_split(dataset, split, classes, limit)
    return TrainingData(x=torch.from_numpy(data.boxes[:, None]),
                        label=torch.from_numpy(data.labels), mask=torch.from_numpy(data.masks),
                        density=torch.from_numpy(data.densities[:, None]),
                        has_targets=torch.from_numpy(data.has_targets), table=data.table)


class StreamedData:
    """A split streamed from the dataset's arrays: an epoch reads blocks of whole Zarr chunks
    (about `BLOCK_BYTES` each) in a random order, the next block read in a background thread
    while the current one trains, and shuffles the split's boxes within each block. Memory: two
    blocks, whatever the size of the split."""

    BLOCK_BYTES = 256 * 2**20

    def __init__(self, dataset: Path, rows: pd.DataFrame, classes: list[str]):
        self.table = rows
        self.arrays = {name: open_dataset_array(dataset, name)
                       for name in ("subtomograms", "mask", "density")}
        self.index = rows["index"].to_numpy(np.int64)
        self.labels = class_labels(rows, classes)
        self.known = (rows["has_targets"].to_numpy(bool) if "has_targets" in rows.columns
                      else np.ones(len(rows), bool))
        chunk, box = self.arrays["subtomograms"].chunks[0], self.arrays["subtomograms"].shape[-1]
        self.chunk_of = self.index // chunk
        self.chunks_per_block = max(1, self.BLOCK_BYTES // (chunk * box**3 * BYTES_PER_VOXEL))

    def __len__(self) -> int:
        return len(self.index)

    def blocks(self, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Positions (into the split's rows, sorted) of each block: its chunks' rows; blocks in
        a random order with ``rng``, else in box order."""
        chunks, starts = np.unique(self.chunk_of, return_index=True)  # rows are in box order
        by_chunk = np.split(np.arange(len(self.chunk_of)), starts[1:])
        order = rng.permutation(len(chunks)) if rng is not None else np.arange(len(chunks))
        return [np.concatenate([by_chunk[c] for c in np.sort(order[i:i + self.chunks_per_block])])
                for i in range(0, len(order), self.chunks_per_block)]

    def sampled(self, rng: np.random.Generator, n: int, batch_size: int) -> Iterator[Batch]:
        """``n`` random boxes from the whole split, read in one chunk-aligned pass."""
        positions = np.sort(rng.permutation(len(self))[:n])
        x, target = self.read(positions)
        for start in range(0, len(x), batch_size):
            yield _joined([_take((x, target), torch.arange(start, min(start + batch_size,
                                                                       len(x))))], batch_size)

    def read(self, positions: np.ndarray) -> Batch:
        """The rows at ``positions`` (sorted) as one batch, read chunk-aligned; the mask stays
        uint8 here (batches make it int64), and boxes and densities are scaled in place."""
        index = self.index[positions]
        boxes = self.arrays["subtomograms"].get_orthogonal_selection((index,))
        density = self.arrays["density"].get_orthogonal_selection((index,))
        density /= np.float32(DENSITY_SCALE)
        return torch.from_numpy(normalise_boxes(boxes.astype(np.float32, copy=False))[:, None]), {
            "label": torch.from_numpy(self.labels[positions]),
            "mask": torch.from_numpy(self.arrays["mask"].get_orthogonal_selection((index,))),
            "density": torch.from_numpy(density[:, None]),
            "has_targets": torch.from_numpy(self.known[positions])}

    def _stream(self, blocks: list[np.ndarray], rng: np.random.Generator | None,
                batch_size: int) -> Iterator[Batch]:
        """Batches of ``batch_size`` from the blocks, each block's rows shuffled with ``rng``
        (a block's last rows join the next block's first batch); the next block is read while
        the current one is used."""
        carry: list[Batch] = []
        with ThreadPoolExecutor(1) as reader:
            pending = reader.submit(self.read, blocks[0]) if blocks else None
            for k in range(len(blocks)):
                block = pending.result()
                pending = reader.submit(self.read, blocks[k + 1]) if k + 1 < len(blocks) else None
                order = (rng.permutation(len(block[0])) if rng is not None
                         else np.arange(len(block[0])))
                for start in range(0, len(order), batch_size):
                    carry.append(_take(block, torch.from_numpy(order[start:start + batch_size])))
                    if sum(len(x) for x, _ in carry) >= batch_size:
                        yield _joined(carry, batch_size)
                del block
        while carry:
            yield _joined(carry, batch_size)

    def shuffled(self, rng: np.random.Generator, batch_size: int) -> Iterator[Batch]:
        return self._stream(self.blocks(rng), rng, batch_size)

    def in_order(self, batch_size: int) -> Iterator[Batch]:
        return self._stream(self.blocks(None), None, batch_size)


def _take(batch: Batch, rows: torch.Tensor) -> Batch:
    """Rows of a batch (copies: a block is freed once its rows are taken)."""
    x, target = batch
    return x[rows], {name: value[rows] for name, value in target.items()}


def _joined(parts: list[Batch], batch_size: int) -> Batch:
    """Up to ``batch_size`` rows from the front of ``parts`` as one batch (mask as int64); the
    rows left over stay in ``parts`` (emptied and refilled)."""
    x = torch.cat([p[0] for p in parts])
    target = {name: torch.cat([p[1][name] for p in parts]) for name in parts[0][1]}
    parts.clear()
    if len(x) > batch_size:
        parts.append((x[batch_size:], {n: v[batch_size:] for n, v in target.items()}))
        x, target = x[:batch_size], {n: v[:batch_size] for n, v in target.items()}
    return x, target | {"mask": target["mask"].long()}
