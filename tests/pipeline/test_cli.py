"""petpark CLI: synth writes the dataset; bad input exits 2 with a message naming it."""
import csv
import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from petpark.pipeline import cli, synthetic_data


def test_synth_writes_images_and_metadata(tmp_path, capsys):
    assert cli.main(['synth', '--out', str(tmp_path / 'd'), '--count', '6', '--seed', '4']) == 0
    rows = list(csv.DictReader(open(tmp_path / 'd' / 'metadata.csv')))
    assert len(rows) == 6 and {r['label'] for r in rows} == {'cat', 'dog'}
    assert {r['camera_id'] for r in rows} <= set(synthetic_data.CAMERAS)
    for row in rows:
        image = Image.open(tmp_path / 'd' / row['image'])
        assert image.size == (synthetic_data.IMAGE_SIZE,) * 2 and image.mode == 'RGB'
    assert 'Wrote 6 images' in capsys.readouterr().out


def test_synth_is_deterministic(tmp_path):
    synthetic_data.generate(str(tmp_path / 'a'), 4, seed=9)
    synthetic_data.generate(str(tmp_path / 'b'), 4, seed=9)
    synthetic_data.generate(str(tmp_path / 'c'), 4, seed=10)
    def read(folder):
        return (tmp_path / folder / 'dog' / 'dog_00001.jpg').read_bytes()
    assert read('a') == read('b') != read('c')


def test_night_frames_are_dark_and_gray():
    import numpy as np
    rng = np.random.RandomState(0)
    night = np.asarray(synthetic_data.render_frame(rng, 'cat', 'cam-01', night=True), dtype=float)
    day = np.asarray(synthetic_data.render_frame(np.random.RandomState(0), 'cat', 'cam-01', night=False), dtype=float)
    assert night.mean() < day.mean()
    assert np.percentile(night.max(axis=2) - night.min(axis=2), 99) <= 8


def test_synth_into_a_place_it_cannot_write_is_a_clear_error(tmp_path, capsys):
    (tmp_path / 'a-file').write_text('not a folder')
    for out, problem in ((tmp_path / 'a-file' / 'data', 'Not a directory'), ('/proc/petpark-data', 'No such file')):
        assert cli.main(['synth', '--out', str(out), '--count', '4']) == 2
        err = capsys.readouterr().err
        assert err.startswith(f'petpark: error: cannot write the dataset to {out}: ') and problem in err
        assert 'Traceback' not in err


@pytest.mark.parametrize('argv,message', [
    (['synth', '--out', 'x', '--count', '1'], '--count must be at least 2'),
    (['run', '--data-root', '/no/such/folder'], 'not a directory'),
    (['run', '--set', 'train_steps'], '--set expects NAME=VALUE'),
    (['run', '--set', 'colour=red'], "Unknown setting 'colour'"),
])
def test_bad_input_exits_2_naming_the_problem(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'petpark_home')


def imported_after(code):
    """The modules a fresh interpreter holds after running `code`."""
    script = code + '\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))'
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300, cwd='/')
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_help_imports_no_tensorflow():
    modules = imported_after('from petpark.pipeline import cli\ncli.build_parser().format_help()')
    assert 'tensorflow' not in modules and 'tfx' not in modules


def test_a_run_imports_neither_tfx_v1_nor_cloud_sdks(tmp_path):
    """`tfx.v1` pulls every TFX extension and the Google Cloud SDKs: seconds that every run would pay."""
    synthetic_data.generate(str(tmp_path / 'data'), 4)
    modules = imported_after(
        'from petpark.pipeline import settings as config\n'
        'from petpark.pipeline.runners import local as local_runner\n'
        f'settings = config.Settings.from_env({{"home": "{tmp_path}", "data_root": "{tmp_path / "data"}"}}, environ={{}})\n'
        'local_runner.local_pipeline(settings)')
    assert 'tfx.orchestration.local.local_dag_runner' in modules
    assert not {'tfx.v1', 'google.cloud.aiplatform', 'tfx.extensions.google_cloud_ai_platform'} & modules


def petpark(*argv, timeout=300):
    """(exit code, stdout, stderr) of the petpark CLI in a process of its own, with no PETPARK_* set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PETPARK_')}
    result = subprocess.run([sys.executable, '-m', 'petpark.pipeline.cli', *argv], capture_output=True, text=True,
                            env=env, timeout=timeout, cwd='/')
    return result.returncode, result.stdout, result.stderr


def unwritable_folder(tmp_path):
    """A folder nobody may create anything in: sysfs for root (which ignores modes), else a 0555 folder."""
    if os.geteuid() == 0:
        return '/sys'
    folder = tmp_path / 'read-only'
    folder.mkdir(mode=0o555)
    return str(folder)


@pytest.mark.parametrize('damage,message', [
    ('header_then_garbage', 'not a readable MLMD store (Error when executing query: file is not a database)'),
    ('random_bytes', 'not an MLMD sqlite file (it does not start with the SQLite header)'),
    ('folder', 'a folder, not an MLMD sqlite file'),
])
@pytest.mark.parametrize('action', [['list'], ['show', '3']])
def test_models_on_a_damaged_metadata_file_is_one_line_naming_it(tmp_path, damage, message, action):
    home = tmp_path / 'home'
    home.mkdir()
    metadata = home / 'metadata.sqlite'
    if damage == 'header_then_garbage':
        metadata.write_bytes(b'SQLite format 3\x00' + os.urandom(3000))
    elif damage == 'random_bytes':
        metadata.write_bytes(b'\x00' + os.urandom(5000))
    else:
        metadata.mkdir()
    code, out, err = petpark('models', *action, '--home', str(home))
    assert (code, out, err) == (2, '', f'petpark: error: {metadata}: {message}\n')


def test_an_impossible_or_unwritable_home_is_one_line_naming_it(tmp_path):
    """A home below a regular file, and one nobody may write in: `petpark run` (generating the default
    data, or with a data root) and `petpark models list` each end in one line naming the path."""
    (tmp_path / 'a-file').write_text('not a folder')
    synthetic_data.generate(str(tmp_path / 'data'), 4)
    impossible, unwritable = str(tmp_path / 'a-file' / 'home'), unwritable_folder(tmp_path)
    for home, problem in ((impossible, 'Not a directory'), (unwritable, 'ermission denied|not permitted')):
        for argv in (['run', '--home', home], ['run', '--home', home, '--data-root', str(tmp_path / 'data')]):
            code, out, err = petpark(*argv)
            assert code == 2 and 'Traceback' not in err and err.count('\n') == 1, err
            assert re.fullmatch(f'petpark: error: {re.escape(home)}(/data|/logs)?: .*({problem}).*\n', err), err
        code, out, err = petpark('models', 'list', '--home', home)
        assert (code, out) == (2, '') and err == f'petpark: error: No metadata store at {home}/metadata.sqlite: ' \
                                                'nothing has run in this home yet\n'
