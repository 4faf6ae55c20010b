"""Shared test set-up: quiet TF logging, the path to optional real data."""
import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared'))


@pytest.fixture
def shared_dir():
    """../shared (real photos, weights); the test skips where it is absent."""
    if not os.path.isdir(os.path.join(SHARED, 'data')):
        pytest.skip(f'real data not available at {SHARED}')
    return SHARED
