"""The model's path from data to stable and back, as docs/release.md writes it, through the front doors.

One module fixture runs a tiny `petpark run` (tuning and ONNX off, the serving check on: the test box),
then a monitoring window on that version that breached and started retraining (recorded as
monitoring/record.py records `petpark monitor`'s windows), then the retraining run (a new version).
The tests walk: approval -> stable; the new version as canary; stable refused without approval;
the canary judged on mirrored requests by `petpark monitor canary`; approval -> stable;
rollback in one command; and the records: history, list, show, lineage, the card's decisions page,
`petpark explain` on the version that is stable.
"""
import glob
import json
import os
import subprocess
import sys
import time

import pytest

from petpark.pipeline import cli
from petpark.pipeline.settings import Settings

pytestmark = pytest.mark.e2e
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
TINY = {'PETPARK_SYNTHETIC_COUNT': '80', 'PETPARK_IMAGE_SIZE': '32', 'PETPARK_TUNE': 'false',
        'PETPARK_SEARCH_SPACE': '{"conv_blocks": [2], "filters": [8]}', 'PETPARK_TRAIN_EPOCHS': '1',
        'PETPARK_TRAIN_STEPS': '12', 'PETPARK_EVAL_STEPS': '1', 'PETPARK_BATCH_SIZE': '8',
        'PETPARK_EXPORT_ONNX': 'false', 'PETPARK_MONITOR_BASELINE': 'false', 'PETPARK_VALIDATE_SERVING': 'true',
        'PETPARK_MIN_ACCURACY': '0', 'PETPARK_MAX_ACCURACY_DROP': '1'}


def petpark_run(env):
    result = subprocess.run([os.path.join(BIN, 'petpark'), 'run'], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def breaching_window(settings, version, window_id):
    """A window of `petpark monitor` on `version` that breached and started retraining, recorded as the
    monitor records one (monitoring/record.py) with the report.json it writes."""
    from petpark.monitoring import record
    from petpark.pipeline.inspection import registry
    from petpark.pipeline.inspection.store import Lineage
    pushed = registry.push_of(Lineage(settings.metadata_connection(), settings.pipeline_name), settings, version)
    folder = os.path.join(settings.monitoring_dir, version, window_id)
    os.makedirs(folder)
    with open(os.path.join(folder, 'report.json'), 'w') as f:
        json.dump({'verdict': 'BREACH', 'actions': ['retraining started: local run (pid 1, log retraining.log)']}, f)
    return record.record_window(settings.metadata_connection(), settings.pipeline_name, settings.model_name, version,
                                window_id, {'pushed_model': pushed}, None, None, [], folder, 'BREACH',
                                json.dumps({'monitoring': {'window': window_id, 'verdict': 'BREACH'}}))


def mirrored_traffic(settings, stable, canary, count):
    """`count` requests stable answered, mirrored to the canary, which answered the same, logged as
    `petpark serve --canary_mirror_rate` logs them (serving/request_logging.py)."""
    import numpy as np

    from petpark.serving import request_logging
    config = os.path.join(settings.home, 'logging.config')
    prefix = os.path.join(settings.request_log_dir, settings.model_name)
    with open(config, 'w') as f:
        f.write(f'sampling_config {{ sampling_rate: 0.0 }} log_collector_config {{ filename_prefix: "{prefix}" }}')
    frames = sorted(glob.glob(os.path.join(settings.home, 'data', 'synthetic', '*', '*.jpg')))
    logs = request_logging.ServingLog(config)
    for index in range(count):
        with open(frames[index % len(frames)], 'rb') as f:
            inputs = {'image_bytes': np.array([f.read()], dtype=object)}
        answer = {'scores': np.array([[1 - index % 10 / 10, index % 10 / 10]], np.float32)}
        pair = request_logging.Mirrored(settings.model_name, int(stable), int(canary), 'serving_image_bytes', inputs,
                                        answer, answer, 2000 + index % 7, 2000 + index % 5)
        while not logs.mirrored(pair, 1.0):  # the writer's queue is full: wait for it
            time.sleep(0.01)
    logs.close()


@pytest.fixture(scope='module')
def path(tmp_path_factory):
    home = str(tmp_path_factory.mktemp('release_home'))
    env = {k: v for k, v in os.environ.items() if not k.startswith('PETPARK_')}
    env.update(TINY, PETPARK_HOME=home, PATH=BIN + os.pathsep + os.environ['PATH'],
               TMPDIR=str(tmp_path_factory.mktemp('release_tmp')))
    first = petpark_run(env)
    settings = Settings.from_env({'home': home}, environ={}, check_data_root=False)
    (v1,) = sorted(os.listdir(settings.serving_model_dir))
    window = breaching_window(settings, v1, 'w-breach')
    second = petpark_run(dict(env, PETPARK_TRAIN_STEPS='13'))  # the retraining: a new model, a new version
    v2 = max(os.listdir(settings.serving_model_dir))
    assert v2 != v1
    return {'home': home, 'settings': settings, 'v1': v1, 'v2': v2, 'first': first, 'second': second,
            'window': window}


def petpark(path, capfd, *args):
    """`petpark ARGS --home HOME` in this process: (exit status, stdout, stderr)."""
    capfd.readouterr()
    code = cli.main([*args, '--home', path['home']])
    out, err = capfd.readouterr()
    return code, out, err


def test_the_release_path_from_run_to_stable_and_back(path, capfd, monkeypatch):
    for name in [n for n in os.environ if n.startswith('PETPARK_')]:
        monkeypatch.delenv(name)
    v1, v2, home = path['v1'], path['v2'], path['home']
    # run -> the test box: both runs checked their model in a real server before pushing it
    for output in (path['first'], path['second']):
        assert 'Serving check (petpark): passed' in output and 'Pushed: ' in output
    # approval -> stable (two steps: serve it, then label it once AVAILABLE)
    assert petpark(path, capfd, 'models', 'approve', v1, '--by', 'qa.alice', '--note', 'card read, slices fine')[0] == 0
    for _ in range(2):
        code, out, err = petpark(path, capfd, 'promote', '--label', 'stable', '--version', v1, '--by', 'ops')
        assert code == 0, err
    assert "'stable' of petpark moved to version " + v1 in out
    # the retrained version as canary; stable refused without its approval, showing its canary verdict
    for _ in range(2):
        assert petpark(path, capfd, 'promote', '--label', 'canary', '--version', v2, '--by', 'ops')[0] == 0
    code, out, err = petpark(path, capfd, 'promote', '--label', 'stable', '--version', v2)
    assert code == 2 and f'no approval of version {v2}' in err and f'Canary verdict of version {v2}: none' in err
    # the canary judged on mirrored requests by `petpark monitor canary`, its verdict recorded
    mirrored_traffic(path['settings'], v1, v2, 1000)
    code, out, err = petpark(path, capfd, 'monitor', 'canary', '--json')
    assert code == 0, err
    judged = json.loads(out)
    assert judged['verdict'] == 'PASS' and judged['numbers']['requests'] == 1000, judged
    assert judged['canary_version'] == int(v2) and judged['stable_version'] == int(v1)
    from petpark.pipeline.release import decisions
    settings = path['settings']
    verdict = decisions.canary_verdict(decisions.history(settings.metadata_connection(), settings.pipeline_name,
                                                         settings.model_name), v2)
    assert verdict.execution_id == judged['decision'] and verdict.state == 'COMPLETE'
    assert verdict.details['evidence']['serving_check']['passed'] is True
    # approval -> stable, showing the verdict
    assert petpark(path, capfd, 'models', 'approve', v2, '--by', 'qa.bob', '--note', 'canary passed')[0] == 0
    code, out, err = petpark(path, capfd, 'promote', '--label', 'stable', '--version', v2, '--by', 'ops')
    assert code == 0, err
    assert f'Canary verdict of version {v2}: PASS' in out and f"moved from {v1} to version {v2}" in out
    assert f'version {v1} stays served for a rollback' in out
    # rollback: one command
    code, out, err = petpark(path, capfd, 'promote', '--rollback', '--by', 'ops.dave', '--reason', 'errors up')
    assert code == 0, err
    assert f'back from version {v2} to version {v1}' in out
    from petpark.serving import promote
    config = promote.read_config(os.path.join(home, 'serving', 'models.config'))
    assert promote.labels_of(config, 'petpark') == {'stable': int(v1), 'canary': int(v2)}
    assert promote.served_of(config, 'petpark') == sorted([int(v1), int(v2)])

    # the record: every decision, who, when, from which version to which, why
    code, out, _ = petpark(path, capfd, 'models', 'history', '--json')
    history = json.loads(out)
    assert [(d['kind'], d['version'], d['by']) for d in history] == [
        ('approval', v1, 'qa.alice'), ('promotion', v1, 'ops'), ('promotion', v1, 'ops'),
        ('promotion', v2, 'ops'), ('promotion', v2, 'ops'), ('canary_verdict', v2, 'petpark monitor canary'),
        ('approval', v2, 'qa.bob'), ('promotion', v2, 'ops'), ('rollback', v1, 'ops.dave')]
    assert history[-1]['details']['from_version'] == v2 and history[-1]['reason'] == 'errors up'
    assert all(d['state'] == 'COMPLETE' and d['at_text'].endswith('Z') for d in history)
    code, out, _ = petpark(path, capfd, 'models', 'list')
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert 'approved' in rows[v1] and 'stable' in rows[v1]
    assert 'approved' in rows[v2] and 'PASS' in rows[v2] and 'canary' in rows[v2]
    code, out, _ = petpark(path, capfd, 'models', 'show', v2)
    assert 'certification: APPROVED by qa.bob' in out and 'canary verdict: ' in out and 'PASS' in out

    # traceability: from the version to its approval, canary verdict, the window that saw it and the retraining
    code, out, _ = petpark(path, capfd, 'models', 'lineage', v1, '--json')
    tree = json.loads(out)
    assert [d['kind'] for d in tree['decisions']][:1] == ['approval']
    assert [w['verdict'] for w in tree['monitoring_windows']] == ['BREACH']
    (retraining,) = tree['retraining']
    assert retraining['window'] == 'w-breach' and retraining['run']['pushed_versions'] == [v2]
    code, out, _ = petpark(path, capfd, 'models', 'lineage', v2)
    assert 'canary verdict PASS' in out and 'approval of ' + v2 in out and 'Trainer' in out

    # the card of the new version: its explanations, and the decisions page beside it
    cards = os.path.join(home, 'model_cards', 'petpark', v2)
    card = open(os.path.join(cards, 'model_card.md')).read()
    assert '## Why the model decided' in card and 'Integrated Gradients' in card
    assert glob.glob(os.path.join(cards, 'explanations', '*.png'))
    page = open(os.path.join(cards, 'decisions.html')).read()
    assert 'APPROVED by qa.bob' in page and 'canary verdict PASS' in page and 'rollback' in page

    # why the stable version calls a frame a dog: `petpark explain`, without a server
    frame = sorted(glob.glob(os.path.join(home, 'data', 'synthetic', 'dog', '*.jpg')))[0]
    code, out, err = petpark(path, capfd, 'explain', frame, '--steps', '8')
    assert code == 0, err
    assert f'version {v1}, Integrated Gradients' in out
    overlay = out.splitlines()[0].split('\t')[3]
    assert open(overlay, 'rb').read(4) == b'\x89PNG'
