"""Camera-loop benchmark: prints numbers, asserts nothing.

Cameras are live 640x480 streams served from a separate process (HTTP MJPEG, or RTSP with H.264)
showing synthetic park scenes (a cat, nobody, a dog, in turn); the loop runs in this process, as
`petpark camera` would, on a pushed petpark model:

1. 4 cameras x 10 fps, edge back-end (ONNX FP32, one onnxruntime thread), MJPEG and RTSP/H.264:
   frames sent, received, classified and skipped per camera; decode-to-decision latency p50/p95;
   how far behind live each decision is (decision time minus the time the stream server sent that
   frame), p95 and max.
2. The same through `petpark serve` over gRPC (label stable, --enable_batching): one request per
   camera, batched by the server; and one request carrying all cameras' frames (--client-batch).
3. 4 cameras x 30 fps, edge back-end: more than two cores decide; lag behind live stays bounded,
   skipped frames counted.
4. A stream server killed for 3 s mid-run: time from its return to the first frame again, and the
   other cameras' classified frames per second meanwhile.

    .venv/bin/python benchmarks/camera_benchmark.py [--home petpark_home] [--seconds 20]
"""
import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # tests/serving/camera/streams.py: the stream servers the tests use

from petpark.pipeline import console  # noqa: E402

console.quiet_libraries(numbers_only=True)

from petpark.serving.camera import config  # noqa: E402
from petpark.serving.camera.backends import EdgeBackend, GrpcBackend  # noqa: E402
from petpark.serving.camera.events import EventSink  # noqa: E402
from petpark.serving.camera.loop import CameraLoop  # noqa: E402
from petpark.serving.ports import free_port  # noqa: E402

SIZE = (640, 480)
CYCLE = ['cat'] * 30 + [None] * 20 + ['dog'] * 30 + [None] * 20  # at 10 fps: 3 s cat, 2 s nobody, 3 s dog, 2 s


def serve_streams(kind, ports, fps, commands, results):
    """The stream servers' process: serves until told, kills and restarts on command, returns sent times."""
    from tests.serving.camera import streams
    server_class = streams.MjpegServer if kind == 'mjpeg' else streams.RtspServer
    servers = []
    for port in ports:
        server = server_class(lambda i: CYCLE[(i * 10 // fps) % len(CYCLE)], fps=fps, size=SIZE, from_connection=True)
        server.port = port
        servers.append(server.start())
    results.put('ready')
    while True:
        command = commands.get()
        if command[0] == 'kill':
            servers[command[1]].stop()
        elif command[0] == 'start':
            servers[command[1]].start()
        else:
            results.put([dict(s.sent) for s in servers])
            for server in servers:
                server.stop()
            return


class Streams:
    def __init__(self, kind, count, fps):
        self.kind, self.ports = kind, [free_port() for _ in range(count)]
        self.commands, self.results = multiprocessing.Queue(), multiprocessing.Queue()
        self.process = multiprocessing.Process(target=serve_streams, daemon=True,
                                               args=(kind, self.ports, fps, self.commands, self.results))
        self.process.start()
        assert self.results.get(timeout=60) == 'ready'

    def url(self, i):
        return f'http://127.0.0.1:{self.ports[i]}/video.mjpg' if self.kind == 'mjpeg' else \
            f'rtsp://127.0.0.1:{self.ports[i]}/live'

    def stop(self):
        self.commands.put(('stop',))
        sent = self.results.get(timeout=60)
        self.process.join(30)
        return sent


def run(backend, kind, count, fps, seconds, outage=None):
    """Runs the loop; returns per-camera numbers (and the outage's, when asked)."""
    source = Streams(kind, count, fps)
    decisions = {f'cam{i}': [] for i in range(count)}

    def record(frame, result, latency):
        decisions[frame.camera].append((frame.index, time.time(), latency, time.monotonic()))
    cameras = [config.camera(f'cam{i}', source.url(i), 'benchmark') for i in range(count)]
    loop = CameraLoop(cameras, backend, EventSink(), on_decision=record).start()
    warm = 3.0
    time.sleep(warm)
    before = {n: s.snapshot()['counts'] for n, s in loop.stats.items()}
    start = time.monotonic()
    outage_numbers = None
    if outage:
        time.sleep(outage[0])
        source.commands.put(('kill', 0))
        killed = time.monotonic()
        others = {n: s.snapshot()['counts'].get('classified', 0) for n, s in loop.stats.items()}
        time.sleep(outage[1])
        others_rate = {n: (s.snapshot()['counts'].get('classified', 0) - others[n]) / (time.monotonic() - killed)
                       for n, s in loop.stats.items() if n != 'cam0'}
        received = loop.stats['cam0'].snapshot()['counts'].get('received', 0)
        source.commands.put(('start', 0))
        back = time.monotonic()
        while loop.stats['cam0'].snapshot()['counts'].get('received', 0) == received and time.monotonic() - back < 30:
            time.sleep(0.01)
        outage_numbers = {'reconnect_s': time.monotonic() - back, 'others_fps': others_rate}
        time.sleep(max(0.0, seconds - (time.monotonic() - start)))
    else:
        time.sleep(seconds)
    elapsed = time.monotonic() - start
    after = {n: s.snapshot() for n, s in loop.stats.items()}
    loop.stop()
    sent = source.stop()
    rows = []
    for i, name in enumerate(sorted(decisions)):
        window = [d for d in decisions[name] if start <= d[3] <= start + elapsed]
        latencies = [d[2] for d in window]
        behind = [d[1] - sent[i][d[0] - 1] for d in window if (d[0] - 1) in sent[i]] if not outage else []
        counts, first = after[name]['counts'], before[name]
        rows.append({
            'camera': name, 'fps_sent': fps,
            'received': counts.get('received', 0) - first.get('received', 0),
            'classified': counts.get('classified', 0) - first.get('classified', 0),
            'skipped': counts.get('skipped', 0) - first.get('skipped', 0),
            'failed': counts.get('failed', 0) - first.get('failed', 0),
            'p50': np.percentile(latencies, 50) * 1000 if latencies else float('nan'),
            'p95': np.percentile(latencies, 95) * 1000 if latencies else float('nan'),
            'behind_p95': np.percentile(behind, 95) * 1000 if behind else float('nan'),
            'behind_max': max(behind) * 1000 if behind else float('nan'),
            'events': after[name]['events'], 'elapsed': elapsed})
    return rows, outage_numbers


def show(title, rows):
    print(f'\n{title}')
    print(f'  {"camera":<6} {"in/s":>6} {"decided/s":>9} {"skipped":>7} {"failed":>6} {"p50 ms":>7} {"p95 ms":>7} '
          f'{"behind live p95/max ms":>22}  presences')
    for r in rows:
        print(f'  {r["camera"]:<6} {r["received"] / r["elapsed"]:6.1f} {r["classified"] / r["elapsed"]:9.1f} '
              f'{r["skipped"]:7d} {r["failed"]:6d} {r["p50"]:7.1f} {r["p95"]:7.1f} '
              f'{r["behind_p95"]:10.0f} / {r["behind_max"]:<9.0f}  {r["events"]}')
    total_in = sum(r['received'] for r in rows)
    total = sum(r['classified'] for r in rows)
    print(f'  all: {total} of {total_in} received frames decided ({100 * total / max(total_in, 1):.1f}%), '
          f'p95 {np.nanmax([r["p95"] for r in rows]):.1f} ms (worst camera)')


def start_server(home):
    grpc_port = free_port()
    work = tempfile.mkdtemp(prefix='camera_benchmark_')
    batching = os.path.join(work, 'batching.config')
    with open(batching, 'w') as f:
        f.write('max_batch_size { value: 8 } batch_timeout_micros { value: 2000 } '
                'max_enqueued_batches { value: 100 } num_batch_threads { value: 1 }')
    config_file = os.path.join(work, 'models.config')
    base = os.path.abspath(os.path.join(home, 'serving', 'petpark'))
    version = max(int(v) for v in os.listdir(base) if v.isdigit())
    with open(config_file, 'w') as f:
        f.write(f'model_config_list {{ config {{ name: "petpark" base_path: "{base}" model_platform: "tensorflow" '
                f'model_version_policy {{ specific {{ versions: {version} }} }} '
                f'version_labels {{ key: "stable" value: {version} }} }} }}')
    process = subprocess.Popen([sys.executable, '-c', 'import sys; from petpark.pipeline.cli import main; '
                                'sys.exit(main())', 'serve', f'--port={grpc_port}', f'--model_config_file={config_file}',
                                '--enable_batching', f'--batching_parameters_file={batching}',
                                '--file_system_poll_wait_seconds=0'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from petpark.serving.camera.sources import Frame
    from tests.serving.camera import streams
    probe = GrpcBackend(f'127.0.0.1:{grpc_port}', timeout=2)
    frame = Frame('probe', 0, 0.0, 0.0, rgb=streams.scene('dog', SIZE))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            probe.classify([frame])
            probe.close()
            return process, f'127.0.0.1:{grpc_port}'
        except Exception:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError('petpark serve did not answer within 180 s')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--home', default='petpark_home')
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--skip-server', action='store_true')
    args = parser.parse_args()
    edge = os.path.join(args.home, 'edge', 'petpark')
    if not os.path.isdir(edge):
        print(f'no edge model at {edge}: run `petpark run` first (or give --home)')
        return 2
    load = os.getloadavg()
    print(f'camera benchmark: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start, '
          f'model {edge}, {SIZE[0]}x{SIZE[1]} streams, {args.seconds:g} s per run')
    for kind in ('mjpeg', 'rtsp'):
        rows, _ = run(EdgeBackend(edge, poll_seconds=0), kind, 4, 10, args.seconds)
        show(f'1. edge back-end, 4 x 10 fps, {"MJPEG over HTTP" if kind == "mjpeg" else "H.264 over RTSP"}', rows)
    if not args.skip_server:
        process, target = start_server(args.home)
        try:
            for client_batch in (False, True):
                backend = GrpcBackend(target, client_batch=client_batch, model_dir=edge)
                rows, _ = run(backend, 'mjpeg', 4, 10, args.seconds)
                show('2. petpark serve over gRPC (--enable_batching), 4 x 10 fps MJPEG, ' +
                     ('one request for all cameras (--client-batch)' if client_batch else
                      'one request per camera, batched by the server'), rows)
        finally:
            process.terminate()
            process.wait(30)
    rows, _ = run(EdgeBackend(edge, poll_seconds=0), 'mjpeg', 4, 30, args.seconds)
    show('3. edge back-end, 4 x 30 fps MJPEG (more than the box decides): lag bounded, skipped counted', rows)
    rows, outage = run(EdgeBackend(edge, poll_seconds=0), 'mjpeg', 4, 10, args.seconds, outage=(3.0, 3.0))
    print('\n4. stream server of cam0 killed for 3 s (edge back-end, 4 x 10 fps MJPEG)')
    print(f'  cam0 received frames again {outage["reconnect_s"]:.2f} s after its server came back')
    print('  the other cameras meanwhile: ' + ', '.join(f'{n} {v:.1f} decided/s' for n, v in outage['others_fps'].items()))
    load = os.getloadavg()
    print(f'\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end')
    return 0


if __name__ == '__main__':
    sys.exit(main())
