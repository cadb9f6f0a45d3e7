import numpy as np
import pytest

from dsmscale.conversion import ConvertConfig, convert_mrc_to_ome_zarr
from dsmscale.errors import InputError
from dsmscale.extraction import (
    ExtractConfig,
    SlabWindow,
    cut_boxes,
    extract_subtomograms,
    extract_to_folder,
    group_by_slab,
)
from dsmscale.io.omezarr import open_tomogram
from dsmscale.io.particles import make_particles, write_csv
from dsmscale.io.subtomograms import read_subtomograms, write_subtomograms


def _collect(batches):
    out = {}
    for b in batches:
        for pid, box, pad, c in zip(b.particle_id, b.boxes, b.padded, b.centres_px, strict=True):
            assert pid not in out, "a particle was yielded twice"
            out[int(pid)] = (box, bool(pad), c)
    return out


def _reference_box(volume, centre, box):
    """Direct numpy slicing of the in-memory volume, NaN outside it."""
    padded = np.pad(volume, box, constant_values=np.nan)
    s = np.floor(np.asarray(centre) + 0.5).astype(int) - box // 2 + box
    return padded[s[0]:s[0] + box, s[1]:s[1] + box, s[2]:s[2] + box]


def test_blobs_sit_at_box_centres(blob_store):
    table = make_particles(blob_store["centres"], "blobs", blob_store["voxel_size_a"])
    got = _collect(extract_subtomograms(blob_store["store"], table, box=20, batch_size=7))
    assert sorted(got) == list(range(len(table)))
    for pid, (box, _, _) in got.items():
        peak = np.unravel_index(np.argmax(box), box.shape)
        assert np.all(np.abs(np.array(peak) - 10) <= 1), f"blob {pid} not at the box centre"
        np.testing.assert_array_equal(box, _reference_box(blob_store["volume"],
                                                         blob_store["centres"][pid], 20))


def test_chunk_boundaries_and_edges_match_direct_slicing(blob_store):
    vol = blob_store["volume"]
    # centres straddling the 32-voxel chunk boundaries, and at every face/corner of the volume
    edges = [0, 31, 31.6, 32, 63.4, 64, 95]
    centres = np.array([[z, y, x] for z in edges for y in (0, 32, 64, 129) for x in (0, 63.5, 149)])
    centres = np.minimum(centres, np.array(vol.shape) - 1)
    table = make_particles(centres, "blobs", 8.0)
    got = _collect(extract_subtomograms(blob_store["store"], table, box=40, batch_size=16))
    assert len(got) == len(centres)
    for pid, (box, padded, _) in got.items():
        ref = _reference_box(vol, centres[pid], 40)
        inside = np.isfinite(ref)
        np.testing.assert_array_equal(box[inside], ref[inside])
        assert padded == (not inside.all())
        if padded:  # padding uses the mean of the valid part
            assert np.allclose(box[~inside], ref[inside].mean())


def test_skip_policy_reports_skipped_ids(blob_store):
    centres = np.array([[48, 65, 75], [2, 65, 75], [48, 128, 75]], dtype=float)
    table = make_particles(centres, "blobs", 8.0, ids=[10, 11, 12])
    tomo = open_tomogram(blob_store["store"])
    groups = group_by_slab(tomo, table, box=20, edge="skip")
    assert groups.n_particles == 1 and sorted(groups.skipped_ids) == [11, 12]
    got = _collect(extract_subtomograms(tomo, table, box=20, edge="skip"))
    assert list(got) == [10]


def test_normalise_and_levels(blob_store):
    table = make_particles(blob_store["centres"][:5], "blobs", 8.0)
    got = _collect(extract_subtomograms(blob_store["store"], table, box=16, normalise=True))
    assert sorted(got) == list(range(5))
    for box, _, _ in got.values():
        assert abs(box.mean()) < 1e-5 and abs(box.std() - 1) < 1e-4
    # the same particles on pyramid level 1: coordinates converted, blob still centred
    lvl1 = _collect(extract_subtomograms(blob_store["store"], table, box=10, level=1))
    assert sorted(lvl1) == list(range(5))
    for box, _, _ in lvl1.values():
        peak = np.unravel_index(np.argmax(box), box.shape)
        assert np.all(np.abs(np.array(peak) - 5) <= 1)


def test_each_slab_is_read_once(blob_store):
    """The rolling window decodes each slab (chunk row) once, however many particles it serves."""
    tomo = open_tomogram(blob_store["store"])
    reads = []

    class CountingArray:  # a spy around the real zarr array
        def __init__(self, array):
            self._array = array

        def __getattr__(self, name):
            return getattr(self._array, name)

        def __getitem__(self, key):
            reads.append(key)
            return self._array[key]

    from dataclasses import replace

    spied = replace(tomo, array=CountingArray(tomo.array))
    rng = np.random.default_rng(0)
    table = make_particles(rng.uniform(0, [95, 129, 149], size=(2000, 3)), "blobs", 8.0)
    groups = group_by_slab(tomo, table, box=20)
    assert len(groups.groups) == 1  # 3 slabs fit in one group of 4
    got = _collect(b for group in groups.groups for b in cut_boxes(spied, group, box=20))
    assert len(got) == 2000
    z_starts = [k.start for k in reads]
    assert sorted(z_starts) == sorted(set(z_starts)) == [0, 32, 64]


def test_slab_window_holds_at_most_three_slabs(blob_store, tmp_path, monkeypatch):
    """Memory is bounded by the window, not by the group: slabs are dropped once passed."""
    store = convert_mrc_to_ome_zarr(blob_store["mrc"], tmp_path / "c16.zarr",
                                    ConvertConfig(chunk=16, levels=1), progress=False)
    tomo = open_tomogram(store)  # 6 slabs of 16 planes
    held, slab = [], SlabWindow.slab

    def counting_slab(window, s):
        out = slab(window, s)
        held.append(len(window.slabs))
        return out

    monkeypatch.setattr(SlabWindow, "slab", counting_slab)
    table = make_particles(np.random.default_rng(1).uniform(0, [95, 129, 149], size=(500, 3)),
                           "blobs", 8.0)
    groups = group_by_slab(tomo, table, box=12, slabs_per_group=6)
    assert len(groups.groups) == 1
    got = _collect(cut_boxes(tomo, groups.groups[0], box=12))
    assert len(got) == 500 and max(held) == 3  # a box across two slabs, and the prefetch


def test_input_errors(blob_store):
    tomo = open_tomogram(blob_store["store"])
    outside = make_particles([[10, 10, 10], [500, 10, 10]], "blobs", 8.0)
    with pytest.raises(InputError, match=r"blobs.zarr: 1 particle centres lie outside"):
        group_by_slab(tomo, outside)
    unbinned = make_particles([[40.0, 80, 120], [12, 16, 400]], "blobs", 2.0)  # 2 Å pixels
    groups = group_by_slab(tomo, unbinned)  # placed through Å on the 8 Å grid
    np.testing.assert_allclose(groups.groups[0].particles[["z", "y", "x"]].to_numpy(),
                               [[3.0, 4, 100], [10, 20, 30]])
    z_edge = tomo.shape[0] - 0.5
    rounding = make_particles([[z_edge + 1e-5, 10, 10], [-0.5 - 1e-5, 10, 10]], "blobs", 8.0)
    kept = group_by_slab(tomo, rounding, edge="pad").groups  # float noise: onto the edge
    z = np.concatenate([g.particles["z"].to_numpy() for g in kept])
    assert sorted(z) == [-0.5, np.nextafter(z_edge, 0)]
    with pytest.raises(InputError, match="1 particle centres lie outside"):
        group_by_slab(tomo, make_particles([[z_edge + 0.01, 10, 10]], "blobs", 8.0))
    empty = make_particles(np.empty((0, 3)), "blobs", 8.0)
    with pytest.raises(InputError, match="particle table is empty"):
        group_by_slab(tomo, empty)


def test_collection_round_trip(blob_store, tmp_path):
    table = make_particles(blob_store["centres"], "blobs", 8.0)
    tomo = open_tomogram(blob_store["store"])
    groups = group_by_slab(tomo, table, box=20)
    out = write_subtomograms(extract_subtomograms(tomo, table, box=20), groups.n_particles, 20,
                             tmp_path / "sub", {"tomogram": "blobs"})
    boxes, meta = read_subtomograms(out)
    assert boxes.shape == (len(table), 20, 20, 20)
    assert sorted(meta["particle_id"]) == list(range(len(table)))
    row = meta.iloc[5]
    np.testing.assert_array_equal(
        boxes[int(row["index"])],
        _reference_box(blob_store["volume"], blob_store["centres"][row["particle_id"]], 20))


def test_extract_to_folder_resamples_to_the_grid_asked_for(blob_store, tmp_path):
    """``dsmscale extract --resample-to 10`` on the 8 Å blob store: the boxes are those
    `extract_subtomograms` resamples to 10 Å (from level 0, the coarsest not coarser than
    10 Å), and the collection records 10 Å and the level."""
    table = make_particles(blob_store["centres"], "blobs", 8.0)
    csv = write_csv(table, tmp_path / "blobs.csv")
    out, n, skipped = extract_to_folder(str(blob_store["store"]), csv, tmp_path / "sub",
                                        ExtractConfig(box=16, resample_to_a=10.0), progress=False)
    assert (n, skipped) == (len(table), 0)
    boxes, meta = read_subtomograms(out)
    assert set(meta["voxel_size_a"]) == {10.0} and set(meta["level"]) == {0}
    want = _collect(extract_subtomograms(blob_store["store"], table, box=16, resample_to_a=10.0))
    for row in meta.itertuples():
        np.testing.assert_array_equal(boxes[int(row.index)], want[int(row.particle_id)][0])
    out, *_ = extract_to_folder(str(blob_store["store"]), csv, tmp_path / "sub16",
                                ExtractConfig(box=16, resample_to_a=16.0), progress=False)
    assert set(read_subtomograms(out)[1]["level"]) == {1}  # 16 Å: level 1, not resampled
