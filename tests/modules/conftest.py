"""FnArgs over the session's Transform output (tests/conftest.py), for the Tuner and Trainer tests."""
import pytest

from tests.pipeline_fixtures import fn_args_for


@pytest.fixture
def fn_args(transformed, tmp_path):
    return fn_args_for(transformed, str(tmp_path))
