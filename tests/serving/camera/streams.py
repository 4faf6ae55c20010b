"""What the camera tests (and benchmarks/camera_benchmark.py) stream from, made here: scripted
scenes, video files, a live HTTP MJPEG server and a live RTSP server (RTSP 1.0 with H.264 over
RTP interleaved on the TCP connection, RFC 2326 / RFC 6184, encoded with PyAV's libx264), and a
scripted edge model whose answer the scene says.

A scene is a synthetic pet-park frame (petpark.pipeline.synthetic_data.render_frame) under a band
whose colour scripts the label: red for a cat, blue for a dog, grey for nobody. The scripted ONNX
model reads only the band: P(dog) = sigmoid(12 * (mean blue - mean red)), so a cat scene is
~0.0003, a dog scene ~0.9997 and an empty one 0.5 (no vote): the test knows every right answer,
while frames go through real encoders, streams, decoders and the edge runtime.
"""
import fractions
import hashlib
import http.server
import io
import json
import os
import socket
import socketserver
import struct
import threading
import time
from typing import Callable, List, Sequence

import numpy as np
from PIL import Image

BANDS = {'cat': (210, 40, 40), 'dog': (40, 40, 210), None: (128, 128, 128)}
MODEL_SIZE = 32


def scene(label, size=(320, 240), seed=0) -> np.ndarray:
    """uint8 RGB [H, W, 3]: a park frame with `label`'s animal (none for None) under its band."""
    from petpark.pipeline import synthetic_data
    width, height = size
    rng = np.random.RandomState(seed)
    frame = synthetic_data.render_frame(rng, label or 'cat', 'cam-01', night=False)
    if label is None:  # nobody: the scene's background only
        frame = Image.fromarray(np.asarray(frame)[:8]).resize(frame.size)
    band = height // 4
    picture = np.asarray(frame.resize((width, height - band)))
    top = np.broadcast_to(np.array(BANDS[label], np.uint8), (band, width, 3))
    return np.ascontiguousarray(np.concatenate([top, picture], axis=0))


def jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format='JPEG', quality=quality)
    return buffer.getvalue()


def write_video(path: str, labels: Sequence, fps: int = 10, size=(320, 240), codec: str = 'mpeg4') -> None:
    """A video of one frame per entry of `labels` at `fps`."""
    import av
    cache = {}
    with av.open(path, 'w') as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = 'yuvj420p' if codec == 'mjpeg' else 'yuv420p'
        for i, label in enumerate(labels):
            if label not in cache:
                cache[label] = scene(label, size, seed=len(cache))
            frame = av.VideoFrame.from_ndarray(cache[label], format='rgb24')
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class _LiveServer:
    """A live camera at `fps`: frame i of `label_at(i)` is due at start + i / fps, for every client
    (a client joins at the current frame; with `from_connection`, each client's script starts at
    its connection). stop() drops every connection and the port (a killed server); start() again
    serves on the same port; setting `paused` keeps connections open and silent (a stalled camera)."""

    def __init__(self, label_at: Callable[[int], object], fps: float = 10, size=(320, 240),
                 from_connection: bool = False):
        self.label_at, self.fps, self.size, self.from_connection = label_at, fps, size, from_connection
        self.port = 0
        self._started = time.monotonic()
        self._frames = {}
        self._lock = threading.Lock()
        self._connections: List[socket.socket] = []
        self._running = threading.Event()
        self.paused = threading.Event()
        self.sent = {}  # frame index -> wall time it was sent (the newest 10,000)

    def rgb(self, label) -> np.ndarray:
        with self._lock:
            if label not in self._frames:
                self._frames[label] = scene(label, self.size, seed=len(self._frames))
            return self._frames[label]

    def live_index(self) -> int:
        return int((time.monotonic() - self._started) * self.fps)

    def frames(self):
        """(index, label) as they fall due, until stopped."""
        started = time.monotonic() if self.from_connection else self._started
        index = 0 if self.from_connection else self.live_index()
        while self._running.is_set():
            due = started + index / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.05))
                continue
            if self.paused.is_set():
                index += 1
                continue
            yield index, self.label_at(index)
            index += 1

    def _record(self, index: int) -> None:
        self.sent[index] = time.time()
        if len(self.sent) > 10_000:
            self.sent.pop(min(self.sent))

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.append(connection)

    def _drop_all(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            try:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))  # RST, as a crash
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                connection.close()
            except OSError:
                pass


class MjpegServer(_LiveServer):
    """HTTP multipart/x-mixed-replace JPEG frames, as IP cameras serve MJPEG."""

    def start(self) -> 'MjpegServer':
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner._track(self.connection)
                self.send_response(200)
                self.send_header('Content-Type', 'multipart/x-mixed-replace; boundary=frame')
                self.end_headers()
                encoded = {}
                try:
                    for index, label in owner.frames():
                        if label not in encoded:
                            encoded[label] = jpeg(owner.rgb(label))
                        data = encoded[label]
                        self.wfile.write(b'--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n' % len(data)
                                         + data + b'\r\n')
                        owner._record(index)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._running.set()
        self._server = Server(('127.0.0.1', self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}/video.mjpg'

    def stop(self) -> None:
        self._running.clear()
        self._server.shutdown()
        self._server.server_close()
        self._drop_all()


class RtspServer(_LiveServer):
    """RTSP 1.0 (OPTIONS, DESCRIBE, SETUP over TCP only, PLAY, TEARDOWN) sending H.264 over RTP
    interleaved on the RTSP connection; each client gets its own encoder (its first frame a keyframe,
    with SPS and PPS in-band)."""

    def start(self) -> 'RtspServer':
        self._running.set()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(('127.0.0.1', self.port))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f'rtsp://127.0.0.1:{self.port}/live'

    def stop(self) -> None:
        self._running.clear()
        try:
            self._listener.close()
        except OSError:
            pass
        self._drop_all()

    def _accept(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            self._track(connection)
            threading.Thread(target=self._session, args=(connection,), daemon=True).start()

    def _session(self, connection: socket.socket) -> None:
        reader = connection.makefile('rb')
        send_lock = threading.Lock()
        try:
            while self._running.is_set():
                first = reader.read(1)
                if not first:
                    return
                if first == b'$':  # the client's interleaved RTCP: skipped
                    header = reader.read(3)
                    reader.read(struct.unpack('>H', header[1:3])[0])
                    continue
                lines = [first + reader.readline()]
                while lines[-1] not in (b'\r\n', b'\n', b''):
                    lines.append(reader.readline())
                method, url = lines[0].decode().split()[:2]
                headers = {}
                for line in lines[1:-1]:
                    key, _, value = line.decode().partition(':')
                    headers[key.strip().lower()] = value.strip()
                if int(headers.get('content-length', 0)):
                    reader.read(int(headers['content-length']))
                reply = {'CSeq': headers.get('cseq', '0')}
                body, status = b'', '200 OK'
                if method == 'OPTIONS':
                    reply['Public'] = 'OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER'
                elif method == 'DESCRIBE':
                    body = ('v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=petpark test camera\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n'
                            'm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n'
                            'a=control:track0\r\n').encode()
                    reply.update({'Content-Type': 'application/sdp', 'Content-Base': url.rstrip('/') + '/'})
                elif method == 'SETUP':
                    if 'interleaved' not in headers.get('transport', '') and 'TCP' not in headers.get('transport', ''):
                        status = '461 Unsupported Transport'
                    else:
                        reply.update({'Transport': 'RTP/AVP/TCP;unicast;interleaved=0-1', 'Session': '20261207'})
                elif method == 'PLAY':
                    reply.update({'Session': '20261207', 'Range': 'npt=0.000-'})
                elif method == 'TEARDOWN':
                    self._reply(connection, send_lock, status, reply, body)
                    return
                self._reply(connection, send_lock, status, reply, body)
                if method == 'PLAY':
                    threading.Thread(target=self._send_video, args=(connection, send_lock), daemon=True).start()
        except (OSError, ValueError, IndexError):
            pass
        finally:
            try:
                connection.close()
            except OSError:
                pass

    @staticmethod
    def _reply(connection, lock, status, headers, body) -> None:
        text = f'RTSP/1.0 {status}\r\n' + ''.join(f'{k}: {v}\r\n' for k, v in headers.items())
        if body:
            text += f'Content-Length: {len(body)}\r\n'
        with lock:
            connection.sendall(text.encode() + b'\r\n' + body)

    def _send_video(self, connection: socket.socket, lock: threading.Lock) -> None:
        import av
        encoder = av.CodecContext.create('libx264', 'w')
        encoder.width, encoder.height = self.size
        encoder.pix_fmt = 'yuv420p'
        encoder.time_base = fractions.Fraction(1, int(self.fps))
        encoder.framerate = fractions.Fraction(int(self.fps), 1)
        encoder.options = {'preset': 'ultrafast', 'tune': 'zerolatency',
                           'x264-params': f'keyint={int(self.fps)}:repeat-headers=1'}
        encoder.open()
        sequence, pts = 0, 0
        try:
            for index, label in self.frames():
                frame = av.VideoFrame.from_ndarray(self.rgb(label), format='rgb24').reformat(format='yuv420p')
                frame.pts = pts
                pts += 1
                for packet in encoder.encode(frame):
                    sequence = self._send_access_unit(connection, lock, bytes(packet), index * 90000 // int(self.fps),
                                                      sequence)
                self._record(index)
        except OSError:
            pass

    @staticmethod
    def _send_access_unit(connection, lock, data: bytes, timestamp: int, sequence: int) -> int:
        """One frame's NAL units as RTP packets (single NAL units, FU-A fragments over 1,400 bytes)."""
        units = [unit for unit in data.replace(b'\x00\x00\x00\x01', b'\x00\x00\x01').split(b'\x00\x00\x01') if unit]
        payloads = []
        for unit in units:
            if len(unit) <= 1400:
                payloads.append(unit)
                continue
            indicator, kind, rest = (unit[0] & 0xE0) | 28, unit[0] & 0x1F, unit[1:]
            for start in range(0, len(rest), 1400):
                flags = (0x80 if start == 0 else 0) | (0x40 if start + 1400 >= len(rest) else 0)
                payloads.append(bytes([indicator, flags | kind]) + rest[start:start + 1400])
        with lock:
            for i, payload in enumerate(payloads):
                marker = 0x80 if i == len(payloads) - 1 else 0
                rtp = struct.pack('>BBHII', 0x80, marker | 96, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, 0x5E7CA3) + payload
                connection.sendall(b'$\x00' + struct.pack('>H', len(rtp)) + rtp)
                sequence += 1
        return sequence


def scripted_edge_model(model_dir: str, version: int, invert: bool = False, threshold: float = 0.5,
                        broken: bool = False) -> str:
    """Publishes `<model_dir>/<version>/` (model.onnx, metadata.json) of the scripted model;
    `invert` swaps its answers (a different version, told apart by its scores); `broken` writes a
    model whose sha256 does not match its metadata (a version that must not load)."""
    import onnx
    from onnx import TensorProto, helper
    gain = -12.0 if invert else 12.0
    nodes = [
        helper.make_node('Slice', ['pixels', 'starts', 'ends', 'axes'], ['band']),
        helper.make_node('ReduceMean', ['band'], ['means'], axes=[1, 2], keepdims=0),
        helper.make_node('MatMul', ['means', 'weights'], ['logit']),
        helper.make_node('Sigmoid', ['logit'], ['dog']),
        helper.make_node('Sub', ['one', 'dog'], ['cat']),
        helper.make_node('Concat', ['cat', 'dog'], ['scores'], axis=1),
    ]
    initializers = [
        helper.make_tensor('starts', TensorProto.INT64, [1], [0]),
        helper.make_tensor('ends', TensorProto.INT64, [1], [MODEL_SIZE // 4 - 1]),
        helper.make_tensor('axes', TensorProto.INT64, [1], [1]),
        helper.make_tensor('weights', TensorProto.FLOAT, [3, 1], [-gain, 0.0, gain]),
        helper.make_tensor('one', TensorProto.FLOAT, [1], [1.0]),
    ]
    graph = helper.make_graph(nodes, 'scripted', [helper.make_tensor_value_info(
        'pixels', TensorProto.FLOAT, ['batch', MODEL_SIZE, MODEL_SIZE, 3])],
        [helper.make_tensor_value_info('scores', TensorProto.FLOAT, ['batch', 2])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    stage = os.path.join(model_dir, f'.{version}.tmp')
    os.makedirs(stage, exist_ok=True)
    with open(os.path.join(stage, 'model.onnx'), 'wb') as f:
        f.write(data[:-7] + b'broken!' if broken else data)
    metadata = {
        'format': 'petpark-edge/1', 'model_name': 'petpark', 'version': str(version),
        'files': {'fp32': 'model.onnx', 'int8': None}, 'sha256': {'model.onnx': hashlib.sha256(data).hexdigest()},
        'input': {'name': 'pixels', 'dtype': 'float32', 'layout': 'NHWC', 'colour_order': 'RGB',
                  'resize': {'height': MODEL_SIZE, 'width': MODEL_SIZE, 'method': 'bilinear', 'antialias': True,
                             'keep_aspect_ratio': False},
                  'round': True, 'scale': {'divide_by': 255.0, 'clip': [0.0, 255.0]}},
        'output': {'name': 'scores', 'class_names': ['cat', 'dog'], 'positive_class': 'dog',
                   'decision_threshold': threshold},
        'quantization': {'reason': 'scripted test model'},
    }
    with open(os.path.join(stage, 'metadata.json'), 'w') as f:
        json.dump(metadata, f)
    onnx.checker.check_model(model)
    destination = os.path.join(model_dir, str(version))
    os.rename(stage, destination)  # published whole, as the exporter does
    return destination


def write_labels(model_dir: str, **labels) -> None:
    """labels.json as `petpark promote` writes it: whole, then renamed."""
    path = os.path.join(model_dir, 'labels.json')
    with open(path + '.tmp', 'w') as f:
        json.dump({label: str(version) for label, version in labels.items()}, f)
    os.replace(path + '.tmp', path)


class FileServer:
    """Serves a folder over HTTP (an HLS playlist and its segments)."""

    def __init__(self, folder: str):
        import functools
        handler = functools.partial(_QuietFiles, directory=folder)
        self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f'http://127.0.0.1:{self.port}/{name}'

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def write_hls(folder: str, labels: Sequence, fps: int = 10, size=(320, 240)) -> str:
    """An HLS (VOD) playlist of `labels` in `folder`, H.264 in MPEG-TS segments of 1 s; returns its name."""
    import av
    os.makedirs(folder, exist_ok=True)
    cache = {}
    with av.open(os.path.join(folder, 'index.m3u8'), 'w', format='hls', options={'hls_time': '1', 'hls_list_size': '0',
                                                                                   'hls_playlist_type': 'vod'}) as out:
        stream = out.add_stream('libx264', rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], 'yuv420p'
        stream.options = {'preset': 'ultrafast', 'x264-params': f'keyint={fps}'}
        for label in labels:
            if label not in cache:
                cache[label] = scene(label, size, seed=len(cache))
            for packet in stream.encode(av.VideoFrame.from_ndarray(cache[label], format='rgb24')):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return 'index.m3u8'
