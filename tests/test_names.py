"""Inputs are named by file stem, the same way for tomograms, stores and tables."""

import pytest

from dsmscale.errors import InputError
from dsmscale.io.names import by_stem, input_stem, is_mrc


@pytest.mark.parametrize(("path", "stem", "mrc"), [
    ("data/TS_01.mrc", "TS_01", True), ("TS_01.MAP.bz2", "TS_01", True),
    ("a/TS_01.rec.gz", "TS_01", True), ("TS_01.mrcs", "TS_01", True),
    ("s3://bucket/TS_01.zarr/", "TS_01", False), ("TS_01.star", "TS_01", False),
    ("picks/TS_01.csv", "TS_01", False), ("run.v2.zarr", "run.v2", False),
])
def test_stems_and_formats(path, stem, mrc):
    assert input_stem(path) == stem and is_mrc(path) is mrc


def test_two_inputs_of_one_name_are_an_error():
    assert by_stem(["a/TS_01.mrc", "a/TS_02.mrc"], "tomogram") == {
        "TS_01": "a/TS_01.mrc", "TS_02": "a/TS_02.mrc"}
    with pytest.raises(InputError, match="b/TS_01.zarr.*'TS_01' is also the name of a/TS_01.mrc"):
        by_stem(["a/TS_01.mrc", "b/TS_01.zarr"], "tomogram")
