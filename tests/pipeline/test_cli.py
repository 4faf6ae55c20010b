"""petpark CLI: synth writes the dataset; bad input exits 2 with a message naming it."""
import csv
import json
import os
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
