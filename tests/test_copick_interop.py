"""dsmscale's copick projects, opened by the real ``copick`` library, and picks written by copick,
read by dsmscale. copick pins ``zarr < 3``, so it lives in its own virtualenv (``.venv-copick``,
made by ``make install`` or, the first time, by this test) and runs in a subprocess."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_realdata import relion_matrix  # RELION's Euler_angles2matrix, written out

from dsmscale.io.copick_project import write_copick_project
from dsmscale.io.omezarr import create_pyramid
from dsmscale.io.particles import make_particles, read_particles

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-copick"

OPEN_PROJECT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import copick

    root = copick.from_file(sys.argv[1])
    out = {"objects": sorted(o.name for o in root.pickable_objects), "runs": {}}
    for run in root.runs:
        points = []
        for picks in run.get_picks():
            for p in picks.points:
                points.append([picks.pickable_object_name, p.location.x, p.location.y,
                               p.location.z, np.asarray(p.transformation).tolist()])
        spacing = run.voxel_spacings[0]
        tomogram = spacing.tomograms[0]
        volume = np.asarray(tomogram.numpy())
        out["runs"][run.name] = {"points": points, "voxel_size": spacing.voxel_size,
                                 "type": tomogram.tomo_type, "shape": list(volume.shape),
                                 "sum": float(volume.astype(np.float64).sum())}
    # copick writes picks of its own, for dsmscale to read back
    run = root.get_run("TS_01")
    picks = run.new_picks(object_name=out["objects"][0], session_id="7", user_id="copicktest")
    picks.from_numpy(np.array([[10.0, 20.0, 30.0], [40.5, 50.25, 60.125]]),
                     np.tile(np.eye(4), (2, 1, 1)))
    picks.store()
    print(json.dumps(out))
""")


@pytest.fixture(scope="session")
def copick_python() -> Path:
    """The Python of the copick virtualenv, made (once, cached) with copick and zarr < 3."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "copick", "zarr<3"],
                       check=True, timeout=900)
    return python


def _tomogram(path: Path, seed: int) -> np.ndarray:
    volume = np.random.default_rng(seed).normal(size=(24, 40, 48)).astype(np.float32)
    arrays = create_pyramid(path, volume.shape, n_levels=2, chunk=16, voxel_size_a=10.0,
                            origin_a=(0.0, 0.0, 0.0), zarr_format=3, codec="lz4", clevel=5,
                            name=path.stem)
    arrays[0][:] = volume
    arrays[1][:] = volume.reshape(12, 2, 20, 2, 24, 2).mean(axis=(1, 3, 5))
    return volume


def test_copick_opens_a_dsmscale_project_and_dsmscale_reads_copick_picks(tmp_path,
                                                                         copick_python):
    volumes = {name: _tomogram(tmp_path / f"{name}.zarr", i)
               for i, name in enumerate(["TS_01", "TS_02"])}
    rng = np.random.default_rng(3)
    table = make_particles(rng.uniform(2, 20, (8, 3)), ["TS_01"] * 4 + ["TS_02"] * 4, 10.0,
                           rot=rng.uniform(-180, 180, 8), tilt=rng.uniform(0, 180, 8),
                           psi=rng.uniform(-180, 180, 8),
                           class_name=["ribosome", "proteasome"] * 4)
    config = write_copick_project(table, tmp_path / "project",
                                  {name: str(tmp_path / f"{name}.zarr") for name in volumes})
    done = subprocess.run([str(copick_python), "-c", OPEN_PROJECT, str(config)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    opened = json.loads(done.stdout.strip().splitlines()[-1])
    assert opened["objects"] == ["proteasome", "ribosome"]
    for name, volume in volumes.items():
        run = opened["runs"][name]
        assert run["voxel_size"] == 10.0 and run["type"] == "dsmscale"
        assert run["shape"] == list(volume.shape)
        assert run["sum"] == pytest.approx(float(volume.astype(np.float64).sum()), rel=1e-6)
        rows = table.df[table.df["tomogram"] == name]
        got = sorted(run["points"], key=lambda p: (p[0], p[3], p[2], p[1]))
        want = sorted(zip(rows["class_name"], *(rows[a] * 10.0 for a in "xyz"),
                          relion_matrix(rows[["rot", "tilt", "psi"]].to_numpy()),
                          strict=True), key=lambda p: (p[0], p[3], p[2], p[1]))
        for g, w in zip(got, want, strict=True):
            assert g[0] == w[0]
            np.testing.assert_allclose(g[1:4], w[1:4], atol=0.01)  # Å
            np.testing.assert_allclose(np.asarray(g[4])[:3, :3], w[4], atol=1e-9)
    back = read_particles(config)  # the project, with copick's own picks among ours
    mine = back.df[back.df["class_name"].isin(["ribosome", "proteasome"])]
    assert len(back) == len(table) + 2 and len(mine) == len(table) + 2
    theirs = back.df[back.df["tomogram"] == "TS_01"][["z", "y", "x"]].to_numpy()
    for zyx in ([30.0, 20.0, 10.0], [60.125, 50.25, 40.5]):  # copick's Å, on the 1 Å grid
        assert np.abs(theirs - zyx).max(axis=1).min() < 1e-9
