import re

import numpy as np
import pandas as pd
import pytest
import starfile

from dsmscale.errors import InputError
from dsmscale.io.particles import (
    ANGLES,
    COORDS,
    make_particles,
    output_format,
    read_copick,
    read_csv,
    read_particles,
    read_star,
    write_copick,
    write_csv,
    write_particles,
    write_star,
)


@pytest.fixture()
def table():
    rng = np.random.default_rng(0)
    n = 12
    return make_particles(
        rng.uniform(0, 90, size=(n, 3)), ["TS_01"] * 6 + ["TS_02"] * 6, voxel_size_a=10.0,
        ids=np.arange(100, 100 + n), rot=rng.uniform(-180, 180, n), tilt=rng.uniform(1, 179, n),
        psi=rng.uniform(-180, 180, n), class_name=["ribosome", "apoferritin"] * 6,
        score=rng.random(n))
def _same(a, b, angles=True):
    a = a.df.sort_values("particle_id").reset_index(drop=True)
    b = b.df.sort_values("particle_id").reset_index(drop=True)
    np.testing.assert_array_equal(a["particle_id"], b["particle_id"])
    np.testing.assert_allclose(a[COORDS], b[COORDS], atol=1e-6)
    assert list(a["tomogram"]) == list(b["tomogram"])
    assert list(a["class_name"]) == list(b["class_name"])
    np.testing.assert_allclose(a["score"], b["score"])
    if angles:  # compare rotations, not Euler triples (ZYZ is not unique)
        from dsmscale.rotations import rotation_matrix_zyz

        for ra, rb in zip(a[ANGLES].to_numpy(), b[ANGLES].to_numpy(), strict=True):
            np.testing.assert_allclose(rotation_matrix_zyz(*ra), rotation_matrix_zyz(*rb), atol=1e-9)


def test_star_relion3_round_trip(tmp_path, table):
    write_star(table, tmp_path / "p.star")
    raw = starfile.read(tmp_path / "p.star")["particles"]
    np.testing.assert_allclose(raw["rlnCoordinateX"], table.df["x"])  # xyz order, pixels
    _same(table, read_star(tmp_path / "p.star"))


def test_star_relion5_round_trip(tmp_path, table):
    shapes = {"TS_01": ((100, 200, 300), 10.0), "TS_02": ((90, 250, 301), 10.0)}
    files = write_particles(table, tmp_path / "relion5", tomograms=shapes)
    assert [f.name for f in files] == ["particles.star", "tomograms.star", "optimisation_set.star"]
    raw = starfile.read(tmp_path / "relion5" / "particles.star")["particles"]
    first = table.df["tomogram"] == "TS_01"
    expected = (table.df["x"][first] - 150) * 10.0  # Å from the tomogram centre at size/2
    np.testing.assert_allclose(raw["rlnCenteredCoordinateXAngst"][first], expected, atol=1e-5)
    assert set(raw["rlnClassNumber"]) == {1, 2}  # apoferritin 1, ribosome 2: sorted names
    assert "dsmParticleId" not in raw.columns  # RELION's own labels only
    back = read_particles(tmp_path / "relion5" / "optimisation_set.star")
    np.testing.assert_allclose(back.coordinates_a(), table.coordinates_a(), atol=0.01)
    _same(table, back)
    with pytest.raises(InputError, match="optimisation_set.star"):
        read_star(tmp_path / "relion5" / "particles.star")
    with pytest.raises(InputError, match="no tomogram shape and voxel size for 'TS_02'"):
        write_particles(table, tmp_path / "x_relion5", tomograms={"TS_01": shapes["TS_01"]})


def test_copick_round_trip_in_angstrom(tmp_path, table):
    files = write_copick(table, tmp_path / "copick")
    assert len(files) == 4  # 2 runs × 2 objects
    assert files[0].parent.name == "Picks" and files[0].parts[-3] in ("TS_01", "TS_02")
    back = read_copick(tmp_path / "copick")
    assert back.voxel_size_a == 1.0  # copick's Å, unchanged
    _same(table, back.on_grid(10.0))
    np.testing.assert_allclose(np.sort(back.df["x"]), np.sort(table.df["x"] * 10.0))
    write_copick(make_particles([[1.0, 2, 3]], "TS_01", 10.0), tmp_path / "copick")
    counts = read_copick(tmp_path / "copick").df["tomogram"].value_counts()
    assert counts.to_dict() == {"TS_02": 6, "TS_01": 1}  # TS_01's earlier picks went


def test_csv_round_trip(tmp_path, table):
    write_csv(table.at_level(1), tmp_path / "p.csv")
    back = read_csv(tmp_path / "p.csv")
    assert back.level == 1 and back.voxel_size_a == 20.0
    _same(table, back.at_level(0))


def test_level_conversion_keeps_physical_position(table):
    for level in (1, 2, 3):
        moved = table.at_level(level)
        np.testing.assert_allclose(moved.coordinates_a(), table.coordinates_a())
        np.testing.assert_allclose(moved.at_level(0).df[COORDS], table.df[COORDS])


def test_bad_tables(tmp_path, table):
    with pytest.raises(InputError, match="duplicate particle ids"):
        make_particles(np.zeros((2, 3)), "t", 10.0, ids=[1, 1])
    with pytest.raises(InputError, match="NaN"):
        make_particles(np.array([[1.0, np.nan, 2.0]]), "t", 10.0)
    starfile.write(pd.DataFrame({"rlnTomoName": ["a"], "rlnAngleRot": [1.0]}), tmp_path / "no.star")
    with pytest.raises(InputError, match="no.star.*no particle rows"):
        read_particles(tmp_path / "no.star", voxel_size_a=10.0)
    (tmp_path / "empty.csv").write_text("z,y,x\n")
    with pytest.raises(InputError, match="empty.csv.*empty"):
        read_particles(tmp_path / "empty.csv", voxel_size_a=10.0)


@pytest.mark.parametrize("suffix", [".star", ".csv"])
def test_a_table_keeps_its_own_pixel_size(tmp_path, table, suffix):
    """The pixel size a table records wins; a given one only fills a gap and must agree."""
    path = write_csv(table, tmp_path / "p.csv") if suffix == ".csv" else write_star(
        table, tmp_path / "p.star")
    assert read_particles(path, voxel_size_a=10.0).voxel_size_a == 10.0
    with pytest.raises(InputError, match=f"p{suffix}: records pixel size 10 Å.* but 5 Å was given"):
        read_particles(path, voxel_size_a=5.0)
    bare = tmp_path / f"bare{suffix}"
    if suffix == ".csv":
        table.df.to_csv(bare, index=False)
    else:
        starfile.write(pd.DataFrame({f"rlnCoordinate{a}": table.df[a.lower()] for a in "XYZ"}), bare)
    assert read_particles(bare, voxel_size_a=5.0).voxel_size_a == 5.0
    with pytest.raises(InputError, match="records no pixel size"):
        read_particles(bare)
def test_output_format_by_suffix_or_an_existing_folder(tmp_path):
    assert [output_format(tmp_path / n) for n in ("p.star", "p.csv", "project", "TS_relion5")] == [
        "star", "csv", "copick", "relion5"]
    (tmp_path / "run_2024.05").mkdir()  # a copick project whose name holds a dot
    assert output_format(tmp_path / "run_2024.05") == "copick"
    with pytest.raises(InputError, match="new_2024.05: unknown particle table format '.05'"):
        output_format(tmp_path / "new_2024.05")


def test_each_particle_takes_its_optics_groups_pixel_size(tmp_path):
    """RELION 3.1/4: two optics groups of other pixel sizes in one table; positions in Å
    follow each particle's group, and the table is expressed in the smaller pixel size."""
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnOpticsGroupName": ["a", "b"],
                           "rlnTomoTiltSeriesPixelSize": [1.5, 3.0]})
    particles = pd.DataFrame({"rlnTomoName": ["TS_01", "TS_02"], "rlnOpticsGroup": [2, 1],
                              "rlnCoordinateX": [100.0, 100.0], "rlnCoordinateY": [10.0, 10.0],
                              "rlnCoordinateZ": [4.0, 4.0], "rlnOriginXAngst": [3.0, 3.0],
                              "rlnOriginYAngst": [0.0, 0.0], "rlnOriginZAngst": [0.0, 0.0]})
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "p.star")
    table = read_particles(tmp_path / "p.star")
    assert table.voxel_size_a == 1.5
    np.testing.assert_allclose(table.coordinates_a(), [[12.0, 30.0, 297.0], [6.0, 15.0, 147.0]])
    particles["rlnOpticsGroup"] = [2, 3]
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "bad.star")
    with pytest.raises(InputError, match="bad.star: particles name optics group 3, which "
                                         "data_optics does not define"):
        read_particles(tmp_path / "bad.star")


@pytest.mark.parametrize("change, problem", [
    ({"rlnOpticsGroup": ["opticsGroup1", 1]}, "column rlnOpticsGroup holds 'opticsGroup1' (row 1)"),
    ({"rlnOpticsGroup": [np.nan, 1]}, "rlnOpticsGroup of the particles holds a value"),
    ({"rlnTomoName": ["/a/TS_01.mrc", "/b/TS_01.mrc"]},
     "names tomograms '/a/TS_01.mrc' and '/b/TS_01.mrc', which both go by 'TS_01'"),
])
def test_star_problems_are_one_line(tmp_path, change, problem):
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [2.0]})
    particles = pd.DataFrame({"rlnTomoName": ["TS_01", "TS_02"], "rlnOpticsGroup": [1, 1],
                              **{f"rlnCoordinate{a}": [1.0, 2.0] for a in "XYZ"}})
    particles = particles.assign(**change)
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "p.star")
    with pytest.raises(InputError, match=f"p.star: {re.escape(problem)}"):
        read_particles(tmp_path / "p.star")
