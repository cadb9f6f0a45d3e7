"""Every real third-party file in ../shared/realdata that holds particles is read here, with the
expected positions computed in the test from the file's own columns (in Å, by the documented
convention of the tool that wrote it) and the labels checked; files without particles get their
one-line answer."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from scipy.spatial.transform import Rotation

from dsmscale.errors import InputError
from dsmscale.io.particles import read_particles

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata"
PORTAL = REAL / "copick" / "test_infra" / "test_files" / "input_bucket"
ANNOTATIONS = PORTAL / "20002" / "annotations"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realdata is not here")


def relion_matrix(angles):
    """RELION's Euler_angles2matrix, written out (not dsmscale's code)."""
    rot, tilt, psi = np.deg2rad(np.asarray(angles, float)).T
    ca, cb, cg, sa, sb, sg = (np.cos(rot), np.cos(tilt), np.cos(psi), np.sin(rot), np.sin(tilt),
                              np.sin(psi))
    return np.stack([
        np.stack([cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb], -1),
        np.stack([-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb], -1),
        np.stack([sb * ca, sb * sa, cb], -1)], -2)


def particles_of(path) -> pd.DataFrame:
    blocks = starfile.read(path, always_dict=True)
    return blocks.get("particles", next(iter(blocks.values())))


def assert_positions(table, expected_xyz_a):
    """The table's centres in Å (z, y, x from voxel 0) equal ``expected_xyz_a`` to 0.01 Å."""
    np.testing.assert_allclose(table.coordinates_a()[:, ::-1], expected_xyz_a, atol=0.01)


def assert_rotations(table, expected_matrices):
    got = relion_matrix(table.df[["rot", "tilt", "psi"]].to_numpy())
    np.testing.assert_allclose(got, expected_matrices, atol=1e-6)
    assert table.df["tilt"].between(0, 180).all() and table.df["rot"].abs().le(180).all()


@pytest.mark.parametrize("name, pixel_column", [
    ("relion/relion_3.1_optics.star", "rlnPixelSize"),
    ("relion/relion5_1_run_it025_data.star", "rlnPixelSize"),
    ("relion/example_starfile.star", "rlnPixelSize"),
])
def test_relion_31_tables_apply_origin_shifts_in_angstrom(name, pixel_column):
    df = particles_of(REAL / name)
    px = df[pixel_column].to_numpy()[:, None]
    coords = df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()
    origin_a = df[["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]].to_numpy()
    table = read_particles(REAL / name)
    assert_positions(table, (coords - origin_a / px) * px)
    assert np.abs(origin_a).max() > 1.0  # the shifts are real: ignoring them misplaces particles
    assert list(table.df["class_name"]) == df["rlnClassNumber"].astype(str).tolist()
    assert_rotations(table, relion_matrix(df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]]))
    stems = df["rlnMicrographName"].str.rsplit("/", n=1).str[-1].str.replace(
        ".tomostar", "").str.replace(".mrc", "")
    assert list(table.df["tomogram"]) == stems.tolist()


def test_the_7488_particle_table_splits_into_its_32_tomograms():
    table = read_particles(REAL / "relion" / "relion5_1_run_it025_data.star")
    assert len(table) == 7488 and table.df["tomogram"].nunique() == 32
    assert "021" in set(table.df["tomogram"])  # 021.tomostar, as Warp names it
    assert table.voxel_size_a == pytest.approx(4.828)


def test_relion_30_pixel_size_from_detector_and_magnification():
    path = ANNOTATIONS / "relion_3_star.star"
    df = particles_of(path)
    px = 1.7005 * 1e4 / 10000.0  # rlnDetectorPixelSize (µm) × 10⁴ / rlnMagnification
    table = read_particles(path)
    assert table.voxel_size_a == pytest.approx(px)
    coords = df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()
    origin_px = df[["rlnOriginX", "rlnOriginY", "rlnOriginZ"]].to_numpy()  # 3.0: in pixels
    assert_positions(table, (coords - origin_px) * px)
    assert sorted(set(table.df["tomogram"])) == ["tomo_1", "tomo_2", "tomo_3"]


def test_relion_4_table_takes_the_micrograph_pixel_size_of_its_optics_group():
    path = ANNOTATIONS / "relion_4_star.star"
    blocks = starfile.read(path)
    df, optics = blocks["particles"], blocks["optics"]
    px = float(optics["rlnMicrographPixelSize"].iloc[0])
    coords = df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()
    origin = df[["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]].to_numpy()
    table = read_particles(path)
    assert_positions(table, (coords - origin / px) * px)
    assert list(table.df["tomogram"]) == df["rlnTomoName"].tolist()  # not rlnMicrographName


def test_tomoman_table_subtracts_origins_in_pixels():
    path = ANNOTATIONS / "tomoman_relion_star.star"
    df = particles_of(path)
    px = df["rlnPixelSize"].to_numpy()[:, None]
    coords = df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()
    origin_px = df[["rlnOriginX", "rlnOriginY", "rlnOriginZ"]].to_numpy()
    table = read_particles(path)
    assert_positions(table, (coords - origin_px) * px)
    assert_rotations(table, relion_matrix(df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]]))


@pytest.mark.parametrize("name", ["warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star",
                                  "warptools_test_4-tomos_10-ptcls_box-32_angpix-12"
                                  "_optimisation_set.star"])
def test_warptools_export_is_in_pixels_of_its_output_pixel_size(name):
    path = REAL / "warp" / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star"
    blocks = starfile.read(path)
    df, optics = blocks["particles"], blocks["optics"]
    px = optics.set_index("rlnOpticsGroup").loc[df["rlnOpticsGroup"], "rlnImagePixelSize"]
    coords = df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()
    table = read_particles(REAL / "warp" / name)
    assert_positions(table, coords * px.to_numpy()[:, None])
    assert sorted(set(table.df["tomogram"])) == ["Unt_050", "Unt_076", "Unt_083", "Unt_088"]
    # the whole volume is used: positions reach across its physical size (tomograms.star)
    sizes = starfile.read(REAL / "warp" / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12"
                          "_tomograms.star", always_dict=True)["global"]
    extent_a = sizes[["rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ"]].to_numpy()[0] * 1.667
    assert (table.coordinates_a()[:, ::-1].max(axis=0) > 0.5 * extent_a).all()


def test_warp_angles_far_outside_180_are_normalised():
    path = REAL / "relion" / "relion5_clean_warp2_particles_matching.star"
    df = particles_of(path)
    angles = df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    assert np.abs(angles).max() > 3000  # what the real file holds
    table = read_particles(path)
    assert_rotations(table, relion_matrix(angles))
    assert table.voxel_size_a == pytest.approx(4.0)


@pytest.mark.parametrize("name", ["atpase", "hsp60", "mitoribosome", "ps2",
                                  "putative_prohibitin", "respirasome"])
def test_chlamy_annotations_keep_their_class_names(name):
    path = REAL / "chlamy" / f"{name}.star"
    with pytest.raises(InputError, match="records no pixel size"):
        read_particles(path)  # 1.96 Å is not in the files: it must be given
    df = particles_of(path)
    table = read_particles(path, voxel_size_a=1.96)
    coords = df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy()
    assert_positions(table, coords * 1.96)
    assert list(table.df["class_name"]) == df["rlnParticleName"].astype(str).tolist()
    assert list(table.df["tomogram"]) == df["rlnTomoName"].tolist()
    assert_rotations(table, relion_matrix(df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]]))


def test_a_class_column_the_user_names():
    path = REAL / "chlamy" / "hsp60.star"
    table = read_particles(path, voxel_size_a=1.96, class_column="rlnTomoMdocName")
    assert table.df["class_name"].iloc[0] == "06042022_BrnoKrios_Arctis_grid5_Position_16"
    with pytest.raises(InputError, match="no class column 'rlnNope'"):
        read_particles(path, voxel_size_a=1.96, class_column="rlnNope")


def test_relion5_centred_coordinates_placed_with_a_real_tomogram_set(tmp_path):
    """A RELION 5 project's layout: the optimisation set in a job folder names its files
    relative to the project; the real tomograms.star of pytom-match-pick's RELION 5 project
    gives the sizes; shifts are turned by the subtomogram orientation, as RELION does."""
    tomograms = (REAL / "relion" / "pytom-match-pick_relion5_project" / "tests" / "Data"
                 / "relion5_project_example" / "Tomograms" / "job009" / "tomograms.star")
    project = tmp_path / "project"
    (project / "Tomograms" / "job009").mkdir(parents=True)
    (project / "Tomograms" / "job009" / "tomograms.star").write_text(tomograms.read_text())
    rng = np.random.default_rng(1)
    centred, origin = rng.uniform(-2000, 2000, (5, 3)), rng.uniform(-20, 20, (5, 3))
    angles, subtomo = rng.uniform(-180, 180, (5, 3)), rng.uniform(-180, 180, (5, 3))
    job = project / "Extract" / "job012"
    job.mkdir(parents=True)
    starfile.write({"particles": pd.DataFrame({
        "rlnTomoName": "tomo200528_107",
        **{f"rlnCenteredCoordinate{a}Angst": centred[:, i] for i, a in enumerate("XYZ")},
        **{f"rlnAngle{a}": angles[:, i] for i, a in enumerate(["Rot", "Tilt", "Psi"])},
        **{f"rlnTomoSubtomogram{a}": subtomo[:, i] for i, a in enumerate(["Rot", "Tilt", "Psi"])},
        **{f"rlnOrigin{a}Angst": origin[:, i] for i, a in enumerate("XYZ")}})},
        job / "particles.star")
    starfile.write({"": {"rlnTomoParticlesFile": "Extract/job012/particles.star",
                         "rlnTomoTomogramsFile": "Tomograms/job009/tomograms.star"}},
                   job / "optimisation_set.star")
    with pytest.raises(InputError, match="optimisation_set.star"):
        read_particles(job / "particles.star")  # centred Å cannot be placed without the sizes
    table = read_particles(job / "optimisation_set.star")
    size = np.array([4000, 4000, 2000]) * 1.724  # rlnTomoSize × rlnTomoTiltSeriesPixelSize
    turned_origin = np.einsum("nij,nj->ni", relion_matrix(subtomo), origin)
    assert_positions(table, centred - turned_origin + size / 2)  # the centre is at size / 2
    assert_rotations(table, relion_matrix(subtomo) @ relion_matrix(angles))


@pytest.mark.parametrize("name", ["copick.json", "copick_instance.json"])
def test_copick_picks_files(name):
    import json

    doc = json.loads((ANNOTATIONS / name).read_text())
    table = read_particles(ANNOTATIONS / name)
    expected = [[p["location"][a] for a in "xyz"] for p in doc["points"]]
    assert_positions(table, np.array(expected, float))
    assert set(table.df["class_name"]) == {doc["pickable_object_name"]}
    matrices = np.array([p["transformation_"] for p in doc["points"]], float)[:, :3, :3]
    assert_rotations(table, matrices)


def test_dynamo_table_adds_shifts_and_converts_angles():
    values = np.loadtxt(REAL / "relion" / "crop.tbl")
    table = read_particles(REAL / "relion" / "crop.tbl", voxel_size_a=2.0)
    assert_positions(table, (values[:, 23:26] + values[:, 3:6]) * 2.0)
    tdrot, tilt, narot = values[:, 6:9].T
    # Dynamo: extrinsic zxz, passive (the eulerangles package's definition)
    dynamo = Rotation.from_euler("zxz", np.stack([tdrot, tilt, narot], 1), degrees=True)
    assert_rotations(table, dynamo.inv().as_matrix())
    assert set(table.df["class_name"]) == {f"{c:g}" for c in values[:, 21]}


def test_stopgap_positions_add_shifts():
    path = ANNOTATIONS / "stopgap_star.star"
    df = starfile.read(path)
    table = read_particles(path, voxel_size_a=3.0)
    xyz = df[["orig_x", "orig_y", "orig_z"]].to_numpy() + df[["x_shift", "y_shift",
                                                               "z_shift"]].to_numpy()
    assert_positions(table, xyz * 3.0)
    assert list(table.df["tomogram"]) == df["tomo_num"].astype(str).tolist()


@pytest.mark.parametrize("name", ["points_with_header.csv", "points_with_header_pipe_delim.csv"])
def test_csv_with_a_header(name):
    table = read_particles(ANNOTATIONS / name, voxel_size_a=5.0)
    expected = pd.read_csv(ANNOTATIONS / name, sep=None, engine="python")[["x", "y", "z"]]
    assert_positions(table, expected.to_numpy() * 5.0)
def test_tardis_csv_in_angstrom():
    df = pd.read_csv(ANNOTATIONS / "tardis.csv")
    table = read_particles(ANNOTATIONS / "tardis.csv", voxel_size_a=7.0)  # Å need no pixel size
    assert_positions(table, df[["X [A]", "Y [A]", "Z [A]"]].to_numpy())


@pytest.mark.parametrize("path, answer", [
    (REAL / "relion" / "relion5_clean_warp2_matching_tomograms.star", "tomogram set"),
    (REAL / "warp" / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_tomograms.star",
     "tomogram set"),
    (REAL / "relion" / "relion5_clean_warp2_matching_optimisation_set.star",
     "names rlnTomoParticlesFile matching.star, which is neither next to it nor in a folder"),
    (REAL / "relion" / "relion_with_optics_group.star", "2D coordinates"),
    (REAL / "relion" / "pytom-match-pick_relion5_project" / "tests" / "Data"
     / "relion5_project_example" / "Tomograms" / "job009" / "tilt_series" / "tomo200528_107.star",
     "no particle rows"),
    (ANNOTATIONS / "points.csv", "no header row"),
    (ANNOTATIONS / "points_tab_delim.csv", "no header row"),
    (REAL / "csv" / "TS_037_cyto_ribosomes.csv", "no header row"),
    (REAL / "csv" / "TS_037_fas.csv", "no header row"),
    (PORTAL / "20002" / "run_data.csv", "no x, y and z columns"),
    (ANNOTATIONS / "points.mod", "IMOD model"),
    (ANNOTATIONS / "oriented_points.mod", "IMOD model"),
    (REAL / "csv" / "shrec19_ground_truth_simulated" / "object_list_tomo0.xml", "XML"),
    (REAL / "csv" / "shrec19_ground_truth_simulated" / "particle_locations_model_9.txt",
     "without named columns"),
    (REAL / "copick" / "czii_cryoet_mlchallenge_2024_copick_config.json",
     "overlay_root H:/Projects"),
    (REAL / "relion" / "crop.tbl", "records no pixel size"),
])
def test_files_without_readable_particles_get_a_one_line_answer(path, answer):
    with pytest.raises(InputError) as err:
        read_particles(path)
    assert answer in str(err.value) and "\n" not in str(err.value)
    assert str(path) in str(err.value)
