"""tests/conftest.py on skipped tests that need ../shared: counted once in the output, and with
PETPARK_REQUIRE_SHARED=1 where ../shared is, a failed run."""
import os
import subprocess
import sys

import pytest

from tests import conftest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIPPING = '''
import pytest

def test_reads_real_photos(shared_dir):
    pytest.skip('the photos are unreadable')

def test_reads_weights(shared_dir):
    pytest.skip('the weights are unreadable')

def test_needs_nothing_shared():
    pytest.skip('for another reason')
'''


def run_pytest(folder, **environ):
    env = {k: v for k, v in os.environ.items() if k != conftest.REQUIRE_SHARED}
    env.update(environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'tests.conftest', '-p', 'no:cacheprovider',
                             'test_skipping.py'], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout


@pytest.fixture
def skipping_tests(tmp_path):
    if not os.path.isdir(conftest.SHARED):
        pytest.skip(f'needs {conftest.SHARED} to be present')  # the case CI checks
    (tmp_path / 'test_skipping.py').write_text(SKIPPING)
    return tmp_path


def test_skipped_shared_data_tests_are_counted_once_with_their_reasons(skipping_tests):
    code, output = run_pytest(skipping_tests)
    assert code == 0, output
    assert output.count('tests that need ../shared') == 2  # the heading and the line
    assert ('2 of 2 tests that need ../shared (real photos and weights) skipped: the photos are unreadable; '
            'the weights are unreadable') in output


def test_a_shared_data_test_that_skips_where_shared_is_fails_the_run_in_ci(skipping_tests):
    code, output = run_pytest(skipping_tests, PETPARK_REQUIRE_SHARED='1')
    assert code == pytest.ExitCode.TESTS_FAILED, output
    assert f'PETPARK_REQUIRE_SHARED=1 and {conftest.SHARED} exists: these skips fail the run' in output
