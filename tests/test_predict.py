"""`predict`'s input rows: values in order or by name, on the command line or in a CSV file, each
mistake refused naming the row (or the file's line) and what is wrong, before any prediction.
(The model itself, loaded without pickle, is tested end to end in test_feynman.py and test_faults.py.)"""

from __future__ import annotations

import argparse

import pytest

from pipeline.config import ConfigError
from pipeline.stages.predict import _rows

NAMES = ["G", "m1", "m2", "r"]


def rows(*row: str, csv=None) -> list[list[float]]:
    return _rows(argparse.Namespace(row=list(row), csv=csv), NAMES)


def test_rows_in_order_by_name_and_from_a_csv_with_or_without_a_header(tmp_path):
    assert rows("1,2,3,4", "r=4, m2=3, G=1, m1=2") == [[1, 2, 3, 4], [1, 2, 3, 4]]
    headed = tmp_path / "headed.csv"
    headed.write_text("r,G,m1,m2\n\n4,1,2,3\n8, 1.5, 2, -3e2\n")
    plain = tmp_path / "plain.csv"
    plain.write_text("1,2,3,4\n")
    assert rows(csv=headed) == [[1, 2, 3, 4], [1.5, 2, -300, 8]]
    assert rows("0,0,0,1", csv=plain) == [[0, 0, 0, 1], [1, 2, 3, 4]]


@pytest.mark.parametrize(
    "row, message",
    [
        ("G=1,m1=2", "--row 'G=1,m1=2': missing m2, r (the model takes 4 inputs: G, m1, m2, r)"),
        ("G=1,m1=2,m2=3,r=4,z=5", "--row 'G=1,m1=2,m2=3,r=4,z=5': no input named z (the model takes"),
        ("G=1,G=2,m2=3,r=4", "--row 'G=1,G=2,m2=3,r=4': G given twice"),
        ("G=1,M1=2,m2=3,r=4", "no input named M1; missing m1"),
        ("1,2", "--row '1,2': the model takes 4 inputs: G, m1, m2, r (in this order, or as name=value); got 2 values"),
        ("G=a,m1=2,m2=3,r=4", "--row 'G=a,m1=2,m2=3,r=4': G = 'a' is not a finite number"),
        ("1,2,nan,4", "--row '1,2,nan,4': value 3 = 'nan' is not a finite number"),
        ("1,2,3,1e400", "value 4 = '1e400' is not a finite number"),
        ("", "--row '': the model takes 4 inputs"),
    ],
)
def test_a_bad_row_is_refused_saying_what_is_wrong(row, message):
    with pytest.raises(ConfigError) as info:
        rows(row)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ("G,m1,m2\n1,2,3\n", "line 1, the header: missing r (the model takes G, m1, m2, r)"),
        ("G,m1,m2,r\n1,2,3\n", "line 2: 3 values under a header of 4"),
        ("1,2,3,4\n\n1,2,x,4\n", "line 3: value 3 = 'x' is not a finite number"),
        ("G,m1,m2,r\n", ": no input rows"),
        ("", ": no input rows"),
    ],
)
def test_a_bad_csv_is_refused_naming_its_line(tmp_path, content, message):
    path = tmp_path / "rows.csv"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        rows(csv=path)
    assert f"--csv {path}" in str(info.value) and message in str(info.value)


def test_a_binary_or_missing_file_is_refused(tmp_path):
    binary = tmp_path / "rows.csv"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not a text file"):
        rows(csv=binary)
    with pytest.raises(FileNotFoundError, match="not found"):
        rows(csv=tmp_path / "none.csv")


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """A real MLflow store with nothing in it (created once: its tables take a second)."""
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")


@pytest.mark.parametrize(
    "uri, message",
    [
        (
            "models:/nope@champion",
            "model 'models:/nope@champion': Registered Model with name=nope not found in the tracking store sqlite:///",
        ),
        ("models:/nope/3", "model 'models:/nope/3': Model Version (name=nope, version=3) not found in the tracking"),
        ("runs:/" + "0" * 32, f"model 'runs:/{'0' * 32}': Run with id={'0' * 32} not found in the tracking store"),
        ("garbage", "model URI 'garbage': expected models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID"),
    ],
)
def test_a_model_that_is_not_in_the_store_is_bad_input_naming_it_and_the_store(empty_store, uri, message):
    from pipeline.errors import InputError
    from pipeline.loading import resolve_run

    with pytest.raises(InputError) as info:  # exit code 2 at the command line, one line
        resolve_run(empty_store, uri)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        '{"x0": 2.0, "x1": -3.0}',  # the constant missing
        '{"x0": 2.0, "x1": -3.0, "1": 1.0, "x9": 0.5}',  # a feature the model does not have
        '{"x0": NaN, "x1": -3.0, "1": 1.0}',
        '{"x0": true, "x1": -3.0, "1": 1.0}',
        "[2.0, -3.0, 1.0]",
        "{not json",
    ],
)
def test_an_equation_file_that_matches_its_digest_but_not_the_model_is_refused(tmp_path, content):
    # The digest vouches for the bytes, not for what they say: a file logged wrong is refused too.
    from pipeline.model_files import EQUATION, EQUATION_TAG, ModelIntegrityError, sha256, with_equation
    from pipeline.models import ModelSpec, build_model

    model = build_model(ModelSpec("linear"), 2)
    (tmp_path / EQUATION).write_text(content)
    with pytest.raises(ModelIntegrityError, match=f"there: {EQUATION} (is not JSON|does not give a finite coeff)"):
        with_equation(tmp_path, {EQUATION_TAG: sha256(tmp_path / EQUATION)}, "there", model)


def test_an_equation_file_replaces_every_weight_of_the_model(tmp_path):
    import torch

    from pipeline.model_files import EQUATION, EQUATION_TAG, sha256, with_equation
    from pipeline.models import ModelSpec, build_model

    (tmp_path / EQUATION).write_text('{"x0": 2.0, "x1": -3.0, "1": 1.0}')
    model = with_equation(tmp_path, {EQUATION_TAG: sha256(tmp_path / EQUATION)}, "there",
                          build_model(ModelSpec("linear"), 2))  # fmt: skip
    assert model(torch.tensor([[1.0, 2.0], [0.5, 0.0]])).tolist() == [-3.0, 2.0]
