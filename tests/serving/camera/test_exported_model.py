"""With a real exported model (the session's `edge_export`: ONNX and metadata.json from the
OnnxExporter), the loop decides each frame exactly as the edge runtime does on the same pixels,
batched across cameras, and its events are what those scores give."""
import numpy as np

from petpark.serving import edge_runtime
from petpark.serving.camera import config
from petpark.serving.camera.backends import EdgeBackend
from petpark.serving.camera.events import Debouncer, EventSink
from tests.serving.camera import streams
from tests.serving.camera.conftest import wait_until


def test_the_loop_decides_as_the_edge_runtime_on_an_exported_model(edge_export, tmp_path, loops):
    model_dir = edge_export[1]
    labels = ['cat'] * 12 + ['dog'] * 12
    videos = []
    for codec in ('mpeg4', 'mjpeg'):  # decoded by FFmpeg, and by Pillow (MJPEG frames, as photos)
        videos.append(str(tmp_path / f'park-{codec}.avi'))
        streams.write_video(videos[-1], labels, codec=codec)
    decided = []
    cameras = [config.camera(f'cam{i}', video, 'test') for i, video in enumerate(videos)]
    loop = loops(cameras, EdgeBackend(model_dir, poll_seconds=0), EventSink(),
                 on_decision=lambda frame, result, latency: decided.append((frame, result)))
    wait_until(loop.done.is_set, 60, message='both files played out')
    model = edge_runtime.EdgeModel(model_dir)
    assert len(decided) == 2 * len(labels)
    for frame, result in decided:
        expected = model.scores([frame.rgb()])[0]
        assert np.allclose(result.scores, expected, atol=1e-6)
        assert result.model.version == int(model.metadata['version']) and result.model.threshold == model.threshold
    for camera in ('cam0', 'cam1'):
        offline = Debouncer(camera)
        expected = []
        for frame, result in (d for d in decided if d[0].camera == camera):
            expected += offline.update(frame.wall, result.scores, model.class_names, model.positive, model.threshold)
        expected += offline.close('stream ended')
        assert [(e.kind, e.label, e.frames) for e in loop.events if e.camera == camera] == \
            [(e.kind, e.label, e.frames) for e in expected]
