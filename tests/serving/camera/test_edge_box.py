"""The camera box: the loop on the edge back-end runs from the files the container recipe copies,
on the packages of serving/deploy/camera/requirements.txt alone, without TensorFlow (checked in
sys.modules of a subprocess), and follows a new stable version without a restart; the recipe's
files agree with the loop's flags, the lock and the tree."""
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

from petpark.pipeline import cli
from petpark.serving.camera import config
from tests.serving.camera import streams
from tests.serving.camera.conftest import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEPLOY = os.path.join(REPO, 'serving', 'deploy', 'camera')
SCRIPT = '''
import importlib.abc, json, os, sys
# The camera box has only the distributions of requirements.txt: anything else cannot be imported
# (an optional import, such as Pillow's defusedxml, then fails as it would there).
box = set(json.loads(os.environ['CAMERA_BOX_MODULES']))
blocked = set()


class NotOnTheBox(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split('.')[0]
        if top in box or top in sys.stdlib_module_names or top == 'petpark':
            return None
        blocked.add(top)
        raise ModuleNotFoundError(f'{name} is not installed on the camera box', name=name)


sys.meta_path.insert(0, NotOnTheBox())
from petpark.serving.camera.__main__ import main
code = main(sys.argv[1:])
loaded = sorted({name.split('.')[0] for name in sys.modules} - set(sys.stdlib_module_names))
print(json.dumps({'code': code, 'loaded': loaded, 'outside': sorted(set(loaded) - box), 'blocked': sorted(blocked),
                  'petpark': sorted(n for n in sys.modules if n.startswith('petpark')),
                  'camera_file': sys.modules['petpark.serving.camera'].__file__}))
'''


def requirement_pins(path):
    return {re.sub(r'[-_.]+', '-', name).lower(): version.strip() for name, version in
            (line.split('==') for line in open(path) if '==' in line and not line.startswith('#'))}


def box_modules():
    """The top-level modules the distributions of the box's requirements.txt install (as installed here)."""
    names = set()
    for name in requirement_pins(os.path.join(DEPLOY, 'requirements.txt')):
        for path in importlib.metadata.distribution(name).files or []:
            top = path.parts[0]
            if not top.endswith(('.dist-info', '.data', '.pth')) and top not in ('..', '__pycache__', 'bin'):
                names.add(top.split('.')[0])
    return names


def copy_box_files(destination):
    """What the Dockerfile copies, where it copies it (PYTHONPATH=destination)."""
    copies = [line.split()[1:] for line in open(os.path.join(DEPLOY, 'Dockerfile')) if line.startswith('COPY ')]
    for *sources, target in copies:
        if 'requirements' in target:
            continue
        target = os.path.join(destination, os.path.relpath(target.rstrip('/'), '/opt/petpark'))
        for source in sources:
            source = os.path.join(REPO, source)
            if os.path.isdir(source):
                shutil.copytree(source, target, ignore=shutil.ignore_patterns('__pycache__'))
            else:
                os.makedirs(target, exist_ok=True)
                shutil.copy(source, target)


def test_the_box_runs_on_its_requirements_without_tensorflow_and_follows_stable(tmp_path, model_dir):
    box = tmp_path / 'box'
    copy_box_files(str(box))
    assert not (box / 'petpark' / '__init__.py').exists()  # a namespace package, as in the image
    server = streams.MjpegServer(lambda i: 'dog' if (i // 30) % 2 else 'cat').start()
    events = tmp_path / 'events'
    try:
        env = {**os.environ, 'PYTHONPATH': str(box), 'CAMERA_BOX_MODULES': json.dumps(sorted(box_modules()))}
        process = subprocess.Popen(
            [sys.executable, '-c', SCRIPT, '--camera', f'gate={server.url}', '--model-dir', model_dir, '--model-poll',
             '0.2', '--events-dir', str(events), '--log-dir', str(tmp_path / 'logs'), '--log-sampling', '1',
             '--metrics-port', '0', '--status-every', '0'],
            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = events / 'events.jsonl'

        def seen(text):
            if process.poll() is not None:
                raise AssertionError(f'the loop exited: {process.communicate()}')
            return lines.exists() and text in lines.read_text()
        wait_until(lambda: seen('"version": 1'), 60, message='an event of version 1')
        streams.scripted_edge_model(model_dir, 2)  # the exporter publishes version 2 ...
        streams.write_labels(model_dir, stable=2)  # ... and `petpark promote` makes it stable
        wait_until(lambda: seen('"version": 2'), 30, message='an event of version 2, no restart')
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        server.stop()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result['code'] == 0 and result['camera_file'].startswith(str(box))
    assert 'now deciding with version 2 (was 1)' in err and 'Traceback' not in err
    outside = [m for m in result['outside'] if not m.startswith(('_cython_', '__editable__', '_distutils_hack'))
               and m not in ('__main__', 'cython_runtime', 'petpark')]
    assert outside == [], 'imported from outside the camera box'
    assert 'tensorflow' not in result['loaded'] and 'grpc' not in result['loaded']
    # result['blocked']: optional imports that failed as they would on the box (Pillow's defusedxml, ...)
    copied = {os.path.relpath(os.path.join(root, name), box) for root, _, names in os.walk(box) for name in names}
    for module in result['petpark']:
        relative = module.replace('.', '/')
        assert f'{relative}.py' in copied or f'{relative}/__init__.py' in copied or module == 'petpark', module
    ended = [json.loads(line) for line in lines.read_text().splitlines() if '"end"' in line]
    assert ended and ended[-1]['reason'] == 'stopped'  # SIGTERM ended the open presence


def test_petpark_camera_on_the_edge_back_end_does_not_import_tensorflow(tmp_path, model_dir):
    video = str(tmp_path / 'park.mp4')
    streams.write_video(video, ['dog'] * 10)
    script = ('import sys; from petpark.pipeline.cli import main; code = main(sys.argv[1:]); '
              'assert "tensorflow" not in sys.modules, "tensorflow imported"; sys.exit(code)')
    result = subprocess.run([sys.executable, '-c', script, 'camera', '--camera', f'demo={video}', '--model-dir',
                             model_dir, '--status-every', '0'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'demo: dog present since' in result.stdout and 'demo: dog present from' in result.stdout
    assert 'demo ' in result.stderr and 'classified' in result.stderr  # the final status line


def test_the_recipes_flags_config_and_pins_agree_with_the_loop_and_the_lock():
    parser = cli.build_parser()
    unit = open(os.path.join(DEPLOY, 'petpark-camera.service')).read()
    exec_start = re.search(r'^ExecStart=(.*?)(?<!\\)\n', unit, re.M | re.S).group(1).replace('\\\n', ' ')
    argv = shlex.split(exec_start)
    assert argv[1:3] == ['-m', 'petpark.serving.camera']
    unit_args = parser.parse_args(['camera', *argv[3:]])
    dockerfile = open(os.path.join(DEPLOY, 'Dockerfile')).read()
    cmd = json.loads(re.search(r'^CMD (\[.*?\])\n', dockerfile, re.M | re.S).group(1).replace('\\\n', ''))
    image_args = parser.parse_args(['camera', *cmd])
    for args in (unit_args, image_args):
        assert args.label == 'stable' and args.model_dir and args.events_dir and args.log_dir and args.metrics_port
        assert args.server is None  # the edge back-end
    assert re.search(r'^ENTRYPOINT \["python", "-m", "petpark.serving.camera"\]', dockerfile, re.M)
    cameras = config.from_file(os.path.join(DEPLOY, 'cameras.json'))
    assert [c.kind for c in cameras] == ['rtsp', 'rtsp', 'http', 'device']
    lock = requirement_pins(os.path.join(REPO, 'requirements', 'lock.txt'))
    pins = requirement_pins(os.path.join(DEPLOY, 'requirements.txt'))
    assert pins == {name: lock[name] for name in pins}
    edge_extra = {re.sub(r'[-_.]+', '-', re.match(r'[A-Za-z0-9_.-]+', r).group(0)).lower()
                  for r in importlib.metadata.requires('petpark') if 'extra == "edge"' in r.replace("'", '"')}
    assert edge_extra <= set(pins) and 'prometheus-client' in pins
    for name in ('petpark-edge-sync.service', 'petpark-edge-sync.timer'):
        assert os.path.isfile(os.path.join(DEPLOY, name))
