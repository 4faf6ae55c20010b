"""Cameras from flags and a config file; every bad input (URL, config file, model folder, flag) is
one line naming it, exit status 2, before any stream is opened."""
import json
import subprocess
import sys

import pytest

from petpark.pipeline import cli
from petpark.serving.camera import config


def test_cameras_from_flags_and_a_config_file(tmp_path):
    video = tmp_path / 'park.mp4'
    video.write_bytes(b'')
    path = tmp_path / 'cameras.json'
    path.write_text(json.dumps({'cameras': [
        {'name': 'gate', 'url': 'rtsp://192.0.2.10:554/stream1'},
        {'name': 'shed', 'url': '/dev/video0', 'options': {'video_size': '640x480', 'framerate': 10}},
        {'name': 'demo', 'url': str(video), 'loop': True}]}))
    args = cli.build_parser().parse_args(['camera', '--config', str(path), '--camera', 'pond=http://192.0.2.11/mjpg',
                                          '--camera', 'hls=https://192.0.2.12/live/index.m3u8', '--model-dir', 'x'])
    cameras = config.cameras_of(args)
    assert [(c.name, c.kind) for c in cameras] == [('gate', 'rtsp'), ('shed', 'device'), ('demo', 'file'),
                                                   ('pond', 'http'), ('hls', 'http')]
    assert cameras[1].options == {'video_size': '640x480', 'framerate': '10'}
    assert cameras[2].loop and not cameras[0].loop and cameras[2].live is False


@pytest.mark.parametrize('document,message', [
    ('{"cameras": [{"name": "gate"}]}', 'cameras[0].url is missing'),
    ('{"cameras": [{"name": "gate", "url": "ftp://host/x"}]}', "'ftp://host/x': unsupported source"),
    ('{"cameras": [{"name": "gate", "url": "rtsp://"}]}', 'has no host'),
    ('{"cameras": [{"name": "gate", "url": "rtsp://host:port/x"}]}', 'has a bad port'),
    ('{"cameras": [{"name": "gate", "url": "/nowhere/park.mp4"}]}', '/nowhere/park.mp4: no such video file'),
    ('{"cameras": [{"name": "no spaces", "url": "rtsp://h/x"}]}', "camera name 'no spaces' must be"),
    ('{"cameras": [{"name": "a", "url": "rtsp://h/x", "fps": 3}]}', "unknown keys ['fps']"),
    ('{"cameras": [{"name": "a", "url": "rtsp://h/x"}, {"name": "a", "url": "rtsp://h/y"}]}', "'a' is given twice"),
    ('{"cameras": []}', '"cameras" must be a non-empty list'),
    ('{"camera": []}', "unknown keys ['camera']"),
    ('{"cameras": [', 'not JSON'),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, capsys, document, message):
    path = tmp_path / 'cameras.json'
    path.write_text(document)
    code = cli.main(['camera', '--config', str(path), '--model-dir', str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith('petpark camera: ') and (str(path) in err or 'given twice' in err)


@pytest.mark.parametrize('flags,message', [
    (['--camera', 'gate'], "--camera 'gate': expected NAME=URL"),
    ([], 'no camera: give --camera NAME=URL or --config FILE'),
    (['--camera', 'a=rtsp://h/x'], 'give --model-dir (the edge back-end) or --server HOST:PORT'),
    (['--camera', 'a=rtsp://h/x', '--model-dir', '/nowhere/edge'], '/nowhere/edge: no such model folder'),
    (['--camera', 'a=rtsp://h/x', '--model-dir', '{empty}'], 'no version folder with a metadata.json'),
    (['--camera', 'a=rtsp://h/x', '--model-dir', '{model}', '--webhook', 'mailto:x'], "--webhook 'mailto:x'"),
    (['--camera', 'a=rtsp://h/x', '--model-dir', '{model}', '--metrics-port', 'x:y'], "--metrics-port 'x:y'"),
    (['--camera', 'a=rtsp://h/x', '--model-dir', '{model}', '--enter-frames', '6'], '--enter-frames 6 must be'),
    (['--camera', 'a=rtsp://h/x', '--model-dir', '{model}', '--version', '7'], '/7: no metadata.json'),
    (['--camera', 'a=rtsp://h/x', '--server', 'nohostport'], "--server 'nohostport': expected HOST:PORT"),
    (['--config', '/nowhere/cameras.json', '--model-dir', '{model}'], '/nowhere/cameras.json: No such file'),
])
def test_bad_flags_and_model_folders_are_one_line(tmp_path, capsys, model_dir, flags, message):
    (tmp_path / 'empty').mkdir()
    flags = [f.format(empty=tmp_path / 'empty', model=model_dir) for f in flags]
    code = cli.main(['camera', *flags, '--duration', '1'])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_the_command_line_stays_light():
    """`petpark camera --help` and a bad flag load neither TensorFlow nor the camera loop's libraries."""
    script = ('import sys\nfrom petpark.pipeline.cli import main\n'
              'try:\n    main(["camera", "--help"])\nexcept SystemExit:\n    pass\n'
              'print(sorted(m for m in ("tensorflow", "av", "petpark.serving.camera.loop") if m in sys.modules))')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == '[]'
    assert '--camera NAME=URL' in result.stdout
