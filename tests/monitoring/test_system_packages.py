"""scripts/system_packages.sh and its place in `make test`: as root it installs only what is
missing (apt-get, quiet), does nothing when all is there, and elsewhere names what is missing;
`make test` runs it and makes tests that need the binaries fail instead of skipping."""
import os
import shutil
import subprocess

import pytest

from tests.monitoring.prometheus_fixtures import PACKAGES, REPO

SCRIPT = os.path.join(REPO, 'scripts', 'system_packages.sh')
WANTED = ['prometheus', 'prometheus-alertmanager', 'chromium']


def fake_system(tmp_path, installed, uid, apt_fails=False):
    """A PATH whose dpkg-query, id and apt-get are stand-ins; apt-get writes its arguments to a log."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    log = tmp_path / 'apt.log'
    scripts = {
        'dpkg-query': '#!/bin/sh\nfor p in $FAKE_INSTALLED; do [ "$p" = "$3" ] && printf "install ok installed" '
                      '&& exit 0; done\nexit 1\n',
        'id': f'#!/bin/sh\necho {uid}\n',
        'apt-get': f'#!/bin/sh\necho "$@" >> {log}\n' + ('echo "E: Unable to locate package" >&2; exit 100\n'
                                                         if apt_fails else 'exit 0\n'),
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_INSTALLED=' '.join(installed))
    return env, log


def run_script(env):
    return subprocess.run(['bash', SCRIPT], capture_output=True, text=True, env=env, timeout=60)


def test_nothing_happens_when_everything_is_installed(tmp_path):
    env, log = fake_system(tmp_path, WANTED, uid=0)
    done = run_script(env)
    assert (done.returncode, done.stdout, done.stderr) == (0, '', '')
    assert not log.exists()


def test_as_root_only_the_missing_packages_are_installed_after_an_update(tmp_path):
    env, log = fake_system(tmp_path, ['prometheus'], uid=0)
    done = run_script(env)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[0].endswith(' update')
    assert calls[1].split()[-5:] == ['install', '-y', '--no-install-recommends', 'prometheus-alertmanager', 'chromium']
    assert '-qq' in calls[1] and 'DPkg::Lock::Timeout=600' in calls[1]
    assert done.stdout.startswith('system packages: installed prometheus-alertmanager chromium in ')


def test_a_failed_install_fails_with_apts_reason(tmp_path):
    env, _ = fake_system(tmp_path, [], uid=0, apt_fails=True)
    done = run_script(env)
    assert done.returncode == 1
    assert 'Unable to locate package' in done.stderr and 'apt-get could not install' in done.stderr


def test_without_root_it_names_what_is_missing_and_installs_nothing(tmp_path):
    env, log = fake_system(tmp_path, ['chromium'], uid=1000)
    done = run_script(env)
    assert done.returncode == 0 and not log.exists()
    assert 'system packages missing: prometheus prometheus-alertmanager' in done.stderr
    assert 'PETPARK_REQUIRE_SYSTEM_PACKAGES=1' in done.stderr


def test_make_test_installs_them_and_requires_them():
    if not shutil.which('make'):
        pytest.skip('make is not installed')
    planned = subprocess.run(['make', '-n', 'test'], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()
    pytest_line = next(line for line in lines if '-m pytest' in line)
    assert 'bash scripts/system_packages.sh' in lines[:lines.index(pytest_line)]
    assert 'PETPARK_REQUIRE_SYSTEM_PACKAGES=1' in pytest_line


def test_the_tests_binaries_come_from_those_packages():
    assert set(PACKAGES.values()) == set(WANTED)
    script = open(SCRIPT).read()
    assert f"PACKAGES=({' '.join(WANTED)})" in script


def test_on_this_machine_the_script_is_a_no_op_once_installed():
    """After `make test` (or by hand) installed them, a second run changes nothing, quickly."""
    missing = [p for p in WANTED if subprocess.run(['dpkg-query', '-W', '-f=${Status}', p], capture_output=True,
                                                   text=True).stdout != 'install ok installed']
    if missing:
        if os.environ.get('PETPARK_REQUIRE_SYSTEM_PACKAGES') == '1':
            pytest.fail(f'not installed: {missing} (scripts/system_packages.sh)')
        pytest.skip(f'not installed: {missing}')
    done = subprocess.run(['bash', SCRIPT], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, '', '')
