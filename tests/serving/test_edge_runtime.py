"""The edge runtime: images and video frames from file to class without TensorFlow, standing
alone on the edge extra's packages, with a clear error for every bad input: a metadata.json outside
its schema, a model file that is not the one its sha256 names, an image or frame over the pixel bound."""
import copy
import glob
import hashlib
import json
import os
import shutil
import site
import struct
import subprocess
import sys
import zlib

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
    ('replaced_onnx', 'model.onnx: sha256 '),
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
    elif damage in ('corrupt_onnx', 'replaced_onnx'):
        with open(os.path.join(folder, 'model.onnx'), 'r+b') as f:
            f.truncate(1000)
        if damage == 'corrupt_onnx':  # its digest updated too: onnxruntime is what refuses it
            metadata = json.load(open(os.path.join(folder, 'metadata.json')))
            metadata['sha256']['model.onnx'] = hashlib.sha256(open(os.path.join(folder, 'model.onnx'), 'rb').read()).hexdigest()
            json.dump(metadata, open(os.path.join(folder, 'metadata.json'), 'w'))
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


def test_an_edge_box_logs_its_frames_as_the_server_does(edge_export, transformed, tmp_path):
    """edge_runtime.py and request_log.py copied alone: sampled frames become PredictionLog records
    that TensorFlow Serving's protos and the monitor read, with the camera as request_origin."""
    from petpark.monitoring import logs
    for name in ('edge_runtime.py', 'request_log.py'):
        shutil.copy(os.path.join(REPO, 'serving', name), tmp_path)
    images = photos(transformed, 3)
    script = ('import sys\n'
              f'sys.path[:0] = [{str(tmp_path)!r}]; sys.path.append({site.getsitepackages()[0]!r})\n'
              'import edge_runtime\n'
              f'code = edge_runtime.main(["--model-dir", {edge_export[1]!r}, "--log-dir", {str(tmp_path / "logs")!r}, '
              f'"--camera", "cam-07", *{images!r}])\n'
              'assert not {"tensorflow", "petpark"} & {m.split(".")[0] for m in sys.modules}\n'
              'sys.exit(code)\n')
    result = subprocess.run([sys.executable, '-S', '-c', script], capture_output=True, text=True, timeout=300,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'request log: 3 frames logged' in result.stdout and ', 0 dropped' in result.stdout
    window = logs.read_window(str(tmp_path / 'logs'), 'petpark')
    printed = [float(line.split('\t')[2]) for line in result.stdout.splitlines() if line.count('\t') == 3]
    assert [f.origin for f in window.frames] == ['cam-07'] * 3 and [f.version for f in window.frames] == [1800000000] * 3
    assert [round(f.score, 3) for f in window.frames] == printed
    assert [f.image for f in window.frames] == [open(path, 'rb').read() for path in images]


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


def tiny_onnx(path, side):
    """A three-weight ONNX model on [batch, side, side, 3] pixels: mean red -> cat, mean blue -> dog."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    weights = numpy_helper.from_array(np.array([[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]], dtype=np.float32), 'weights')
    graph = helper.make_graph(
        [helper.make_node('ReduceMean', ['pixels'], ['mean'], axes=[1, 2], keepdims=0),
         helper.make_node('MatMul', ['mean', 'weights'], ['logits']),
         helper.make_node('Softmax', ['logits'], ['scores'], axis=-1)],
        'tiny', [helper.make_tensor_value_info('pixels', TensorProto.FLOAT, ['batch', side, side, 3])],
        [helper.make_tensor_value_info('scores', TensorProto.FLOAT, ['batch', 2])], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), path)


def tiny_metadata(digest, side):
    """metadata.json as the exporter writes it."""
    return {
        'format': 'petpark-edge/1', 'model_name': 'petpark', 'version': '7',
        'files': {'fp32': 'model.onnx', 'int8': None}, 'sha256': {'model.onnx': digest}, 'opset': 17,
        'input': {'name': 'pixels', 'dtype': 'float32', 'layout': 'NHWC', 'shape': [-1, side, side, 3],
                  'colour_order': 'RGB',
                  'resize': {'height': side, 'width': side, 'method': 'bilinear', 'antialias': True,
                             'keep_aspect_ratio': False, 'as': 'tf.image.resize(...)'},
                  'round': True, 'scale': {'divide_by': 255.0, 'clip': [0.0, 255.0]}},
        'output': {'name': 'scores', 'class_names': ['cat', 'dog'], 'positive_class': 'dog', 'decision_threshold': 0.5},
        'quantization': {'shipped': False, 'accuracy': None, 'reason': 'INT8 quantization is off'},
    }


@pytest.fixture
def tiny_model(tmp_path):
    """(model folder, version folder) of a published tiny model: no training, no TensorFlow."""
    folder = tmp_path / 'edge' / '7'
    folder.mkdir(parents=True)
    tiny_onnx(str(folder / 'model.onnx'), 8)
    digest = hashlib.sha256((folder / 'model.onnx').read_bytes()).hexdigest()
    (folder / 'metadata.json').write_text(json.dumps(tiny_metadata(digest, 8)))
    return str(tmp_path / 'edge'), folder


def colour_file(path, colour, size=(30, 20)):
    Image.new('RGB', size, colour).save(path)
    return str(path)


def predict(capsys, *argv):
    code = edge_runtime.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_tiny_model_within_the_schema_classifies(tiny_model, tmp_path, capsys):
    model_dir, _ = tiny_model
    red, blue = colour_file(tmp_path / 'red.png', (250, 0, 0)), colour_file(tmp_path / 'blue.png', (0, 0, 250))
    code, out, err = predict(capsys, '--model-dir', model_dir, red, blue)
    assert (code, err) == (0, '')
    assert [line.split('\t')[:2] for line in out.splitlines()[1:3]] == [[red, 'cat'], [blue, 'dog']]


def test_input_round_and_scale_are_followed(tiny_model):
    model_dir, folder = tiny_model
    gradient = np.tile(np.arange(0, 250, 10, dtype=np.uint8)[None, :, None], (8, 1, 3))  # 25 wide, resized to 8
    rounded = edge_runtime.EdgeModel(model_dir).pixels(gradient)
    assert np.allclose(rounded * 255, np.round(rounded * 255), atol=1e-4)
    metadata = json.loads((folder / 'metadata.json').read_text())
    metadata['input']['round'] = False
    metadata['input']['scale'] = {'divide_by': 100.0, 'clip': [20.0, 200.0]}
    (folder / 'metadata.json').write_text(json.dumps(metadata))
    exact = edge_runtime.EdgeModel(model_dir).pixels(gradient)
    assert not np.allclose(exact * 100, np.round(exact * 100), atol=1e-3)
    assert exact.min() == pytest.approx(0.2) and exact.max() == pytest.approx(2.0)


def set_field(metadata, field, value):
    *parents, last = field.split('.')
    for key in parents:
        metadata = metadata[key]
    if value is DELETE:
        del metadata[last]
    else:
        metadata[last] = value


DELETE = object()
BAD_METADATA = [  # (field, value, the error after the version folder: the file it names, then why)
    ('input.resize.height', 100000, 'metadata.json: input.resize.height must be an integer from 1 to 2048, got 100000'),
    ('input.resize.width', 0, 'metadata.json: input.resize.width must be an integer from 1 to 2048, got 0'),
    ('input.resize.width', 8.0, 'metadata.json: input.resize.width must be an integer from 1 to 2048, got 8.0'),
    ('files', DELETE, 'metadata.json: files is missing'),
    ('files', ['model.onnx'], 'metadata.json: files must be a JSON object, got ["model.onnx"]'),
    ('files.fp32', '../../../etc/passwd', 'metadata.json: files.fp32 must be a file name in the version folder'),
    ('input.resize.method', 'nearest',
     'metadata.json: input.resize.method must be "bilinear" (all this runtime implements), got "nearest"'),
    ('input.resize.antialias', False,
     'metadata.json: input.resize.antialias must be true (all this runtime implements), got false'),
    ('input.resize.antialias', 1, 'metadata.json: input.resize.antialias must be true (all this runtime implements), got 1'),
    ('input.resize.keep_aspect_ratio', True, 'metadata.json: input.resize.keep_aspect_ratio must be false'),
    ('input.colour_order', 'BGR', 'metadata.json: input.colour_order must be "RGB"'),
    ('input.round', 'yes', 'metadata.json: input.round must be true or false, got "yes"'),
    ('input.scale.divide_by', 0, 'metadata.json: input.scale.divide_by must be a number from 0.001 to 65535, got 0'),
    ('input.scale.clip', [255.0, 0.0], 'metadata.json: input.scale.clip must be a [low, high] pair of pixel levels'),
    ('input.scale', DELETE, 'metadata.json: input.scale is missing'),
    ('output.decision_threshold', 1.5, 'metadata.json: output.decision_threshold must be a number from 0 to 1, got 1.5'),
    ('output.class_names', ['cat'], 'metadata.json: output.class_names must be a list of 2 to 1000 distinct texts'),
    ('output.class_names', ['cat', 'cat'], 'metadata.json: output.class_names must be a list of 2 to 1000 distinct'),
    ('output.positive_class', 'rabbit', 'metadata.json: output.positive_class "rabbit" is not one of output.class_names'),
    ('version', 'x' * 5000, 'metadata.json: version must be a text of 1 to 64 characters, got "xxxxxxxx'),
    ('sha256', {'model.onnx': 'abc'}, 'metadata.json: sha256 must be an object of at most 10 file names, each with'),
    ('sha256', {}, 'metadata.json: sha256 has no digest for model.onnx; not loaded'),
    ('sha256.model.onnx', 'f' * 64, 'model.onnx: sha256 '),
    ('input.name', 'image', "metadata.json: input.name 'image' is not an input of model.onnx (it has ['pixels'])"),
    ('input.resize.height', 16, "metadata.json: input.resize is 16 x 8 but model.onnx takes ['batch', 8, 8, 3]"),
]


@pytest.mark.parametrize('field,value,message', BAD_METADATA,
                         ids=[f'{f}={"deleted" if v is DELETE else str(v)[:20]}' for f, v, _ in BAD_METADATA])
def test_metadata_outside_the_schema_is_one_line_naming_the_field(tiny_model, tmp_path, capsys, field, value, message):
    model_dir, folder = tiny_model
    metadata = json.loads((folder / 'metadata.json').read_text())
    if field.startswith('sha256.'):
        metadata['sha256'][field[len('sha256.'):]] = value
    else:
        set_field(metadata, field, value if value is DELETE else copy.deepcopy(value))
    (folder / 'metadata.json').write_text(json.dumps(metadata))
    code, out, err = predict(capsys, '--model-dir', model_dir, colour_file(tmp_path / 'red.png', (250, 0, 0)))
    assert code == 2 and out == '' and err.count('\n') == 1, err
    assert err.startswith(f'edge-predict: {folder}/{message}'), err


@pytest.mark.parametrize('content,message', [
    ('[1, 2]', 'format [1, 2], this runtime reads'),
    ('{"format": "petpark-edge/1", "x": "' + 'y' * (1 << 20) + '"}', 'over 1048576 bytes; not a metadata file'),
    ('{"format": "petpark-edge/1"', 'unreadable'),
])
def test_a_metadata_file_that_is_no_metadata_object_is_refused(tiny_model, tmp_path, capsys, content, message):
    model_dir, folder = tiny_model
    (folder / 'metadata.json').write_text(content)
    code, _, err = predict(capsys, '--model-dir', model_dir, colour_file(tmp_path / 'red.png', (250, 0, 0)))
    assert code == 2 and err.startswith(f'edge-predict: {folder}/metadata.json: ') and message in err


def test_a_model_file_that_is_not_the_one_published_is_not_loaded(tiny_model, tmp_path, capsys):
    model_dir, folder = tiny_model
    tiny_onnx(str(folder / 'model.onnx'), 8)  # rebuilt: same model, but is it the same bytes?
    with open(folder / 'model.onnx', 'ab') as f:
        f.write(b'\x00')
    code, _, err = predict(capsys, '--model-dir', model_dir, colour_file(tmp_path / 'red.png', (250, 0, 0)))
    expected = json.loads((folder / 'metadata.json').read_text())['sha256']['model.onnx']
    assert code == 2 and err.startswith(f'edge-predict: {folder}/model.onnx: sha256 ') and f'differs from {expected}' in err


def test_the_pixel_bound_is_the_servers():
    from petpark.serving.limits import Limits
    assert edge_runtime.MAX_IMAGE_PIXELS == Limits.max_image_pixels == 40_000_000


def png_header(width, height):
    """A PNG that declares width x height but holds almost no pixel data: decoding it would fail."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


@pytest.mark.parametrize('width,height,message', [
    (10000, 10000, 'the pixel count of the image is 100000000 (10000 x 10000), above the edge runtime limit '
                   'max_image_pixels=40000000'),
    (8000, 5001, 'the pixel count of the image is 40008000 (8000 x 5001), above the edge runtime limit'),
    (20000, 20000, 'the pixel count of the image is over 178956970, above the edge runtime limit'),
    (8000, 5000, 'not a readable image'),  # at the bound: decoded, and found empty
])
def test_images_over_the_pixel_bound_are_refused_from_their_header(tmp_path, width, height, message):
    path = tmp_path / 'huge.png'
    path.write_bytes(png_header(width, height))
    with pytest.raises(edge_runtime.EdgeError) as error:
        edge_runtime.decode_image(str(path))
    assert str(error.value).startswith(f'{path}: {message}')


def test_the_pixel_bound_message_is_worded_as_the_servers():
    from petpark.serving.limits import Limits
    server = Limits().exceeded('max_image_pixels', '100000000 (10000 x 10000)', 'The pixel count of an image in input x')
    edge = edge_runtime.pixel_limit_error('photo.png', 'the image', 10000, 10000)
    assert 'is 100000000 (10000 x 10000), above the server limit max_image_pixels=40000000' in str(server)
    assert 'is 100000000 (10000 x 10000), above the edge runtime limit max_image_pixels=40000000' in str(edge)


def test_video_frames_over_the_pixel_bound_are_refused_before_decoding(tmp_path, monkeypatch):
    video = str(tmp_path / 'camera.mp4')
    write_video(video, frames=3, size=(48, 40))
    monkeypatch.setattr(edge_runtime, 'MAX_IMAGE_PIXELS', 48 * 40)
    assert [index for index, _ in edge_runtime.video_frames(video, 1)] == [0, 1, 2]
    monkeypatch.setattr(edge_runtime, 'MAX_IMAGE_PIXELS', 48 * 40 - 1)
    with pytest.raises(edge_runtime.EdgeError, match=f'^{video}: the pixel count of a frame is 1920 \\(48 x 40\\), '
                                                     'above the edge runtime limit max_image_pixels=1919$'):
        next(edge_runtime.video_frames(video, 1))
