"""The edge runtime: images and video frames from file to class without TensorFlow, standing
alone on the edge extra's packages, with a clear error for every bad input."""
import glob
import json
import os
import shutil
import site
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from petpark.serving import edge_runtime

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def photos(transformed, count=4):
    return sorted(glob.glob(os.path.join(transformed['data_root'], '*', '*.jpg')))[:count]


def run(*argv):
    result = subprocess.run([sys.executable, '-c', 'import sys; from petpark.pipeline.cli import main; '
                             'code = main(sys.argv[1:]); assert "tensorflow" not in sys.modules; sys.exit(code)',
                             'edge-predict', *argv], capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout, result.stderr


def write_video(path, frames=12, size=(48, 40)):
    import av
    with av.open(path, 'w') as container:
        stream = container.add_stream('mpeg4', rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], 'yuv420p'
        for i in range(frames):
            rgb = np.full((size[1], size[0], 3), (20 * i) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_classifies_images_as_the_saved_model_does_without_importing_tensorflow(edge_export, trained_model,
                                                                              transformed):
    images = photos(transformed)
    code, out, err = run('--model-dir', edge_export[1], *images)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith('model ') and 'FP32' in lines[0] and 'frames/s' in lines[-1]
    saved = tf.saved_model.load(os.path.join(trained_model.uri, 'Format-Serving'))
    scores = saved.signatures['serving_image_bytes'](image_bytes=tf.constant([open(p, 'rb').read() for p in images]))
    for line, expected in zip(lines[1:-1], scores['scores'].numpy()):
        path, label, probability, latency = line.split('\t')
        assert label == ('dog' if expected[1] >= 0.5 else 'cat')
        assert float(probability) == pytest.approx(float(expected[1]), abs=2e-2)  # Pillow vs TF JPEG decoding
        assert latency.endswith(' ms')


def test_every_nth_frame_of_a_video_and_the_int8_model(edge_export, tmp_path):
    video = str(tmp_path / 'camera.mp4')
    write_video(video, frames=12)
    code, out, err = run('--model-dir', edge_export[1], '--int8', '--every', '5', video)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert 'INT8' in lines[0]
    assert [line.split('\t')[0] for line in lines[1:-1]] == [f'{video}#frame={i}' for i in (0, 5, 10)]
    assert lines[-1].startswith('3 images/frames in ')


def test_bad_inputs_get_a_clear_error_each_and_the_rest_is_classified(edge_export, transformed, tmp_path):
    good = photos(transformed, 1)[0]
    (tmp_path / 'notes.jpg').write_text('not an image')
    data = open(good, 'rb').read()
    (tmp_path / 'cut.jpg').write_bytes(data[:len(data) // 2])
    (tmp_path / 'broken.mp4').write_bytes(b'\x00' * 100)
    code, out, err = run('--model-dir', edge_export[1], str(tmp_path / 'notes.jpg'), str(tmp_path / 'cut.jpg'),
                         str(tmp_path / 'missing.jpg'), str(tmp_path / 'broken.mp4'), good)
    assert code == 1 and 'Traceback' not in err
    assert f'{tmp_path}/notes.jpg: not a readable image' in err
    assert f'{tmp_path}/cut.jpg: not a readable image' in err and 'truncated' in err.lower()
    assert f'{tmp_path}/missing.jpg: no such file' in err
    assert f'{tmp_path}/broken.mp4: not a readable video' in err
    assert len(out.strip().splitlines()) == 3 and good in out  # the good photo was still classified


@pytest.mark.parametrize('damage,message', [
    ('missing', 'no such model folder'),
    ('corrupt_onnx', 'not a loadable ONNX model'),
    ('no_metadata', 'no version folder with a metadata.json'),
    ('no_int8', 'ships no INT8 model'),
])
def test_bad_model_folders_get_a_clear_error(edge_export, transformed, tmp_path, damage, message):
    model_dir = str(tmp_path / 'edge')
    shutil.copytree(edge_export[1], model_dir)
    (version,) = os.listdir(model_dir)
    folder = os.path.join(model_dir, version)
    flags = []
    if damage == 'missing':
        model_dir = str(tmp_path / 'nowhere')
    elif damage == 'corrupt_onnx':
        with open(os.path.join(folder, 'model.onnx'), 'r+b') as f:
            f.truncate(1000)
    elif damage == 'no_metadata':
        os.remove(os.path.join(folder, 'metadata.json'))
    else:
        metadata = json.load(open(os.path.join(folder, 'metadata.json')))
        metadata['files']['int8'] = None
        metadata['quantization']['reason'] = 'INT8 accuracy too low'
        json.dump(metadata, open(os.path.join(folder, 'metadata.json'), 'w'))
        flags = ['--int8']
    code, out, err = run('--model-dir', model_dir, *flags, photos(transformed, 1)[0])
    assert code == 2 and message in err and 'Traceback' not in err


def test_the_runtime_file_stands_alone_on_the_edge_packages(edge_export, transformed, tmp_path):
    """Copied alone to a box: no petpark importable, only numpy, Pillow, onnxruntime, av."""
    shutil.copy(os.path.join(REPO, 'serving', 'edge_runtime.py'), tmp_path)
    script = ('import sys, importlib.util\n'
              f'sys.path[:0] = [{str(tmp_path)!r}]; sys.path.append({site.getsitepackages()[0]!r})\n'
              'assert importlib.util.find_spec("petpark") is None\n'
              'import edge_runtime\n'
              f'code = edge_runtime.main(["--model-dir", {edge_export[1]!r}, {photos(transformed, 1)[0]!r}])\n'
              'assert not {"tensorflow", "tf2onnx", "petpark"} & {m.split(".")[0] for m in sys.modules}\n'
              'sys.exit(code)\n')
    result = subprocess.run([sys.executable, '-S', '-c', script], capture_output=True, text=True, timeout=300,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'frames/s' in result.stdout


def test_the_newest_complete_version_is_used(edge_export, tmp_path):
    model_dir = str(tmp_path / 'edge')
    shutil.copytree(edge_export[1], model_dir)
    (version,) = os.listdir(model_dir)
    os.makedirs(os.path.join(model_dir, str(int(version) + 5)))  # being published: no metadata.json
    shutil.copytree(os.path.join(model_dir, version), os.path.join(model_dir, str(int(version) - 5)))
    assert edge_runtime.version_folder(model_dir, None).endswith(version)
    assert edge_runtime.version_folder(model_dir, str(int(version) - 5)).endswith(str(int(version) - 5))
    img = np.asarray(Image.new('RGB', (50, 30), (255, 0, 0)))
    assert edge_runtime.EdgeModel(model_dir).pixels(img)[..., 0].min() == pytest.approx(1.0)
