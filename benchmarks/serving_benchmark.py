"""Serving benchmark: prints numbers, asserts nothing.

Serves a pushed petpark model with `petpark serve` (a separate process, as in production)
and measures, in one run, on the `serving_image_bytes` signature with a real JPEG:
- p50/p99 latency at batch 1: in-process signature call, gRPC Predict, REST predict;
- throughput with 1, 8 and 32 concurrent gRPC clients, without and with batching, against
  calling the signature in-process on full batches of 32. The clients run in their own
  process (grpc.aio, one coroutine each); CPU time per request is reported for the server
  and the clients, since on a small machine they share the same cores;
- the request path's own cost: GetModelStatus (no model) at 32 clients, and from it the
  throughput this machine could reach if serving added nothing beyond that path.

    .venv/bin/python benchmarks/serving_benchmark.py [--model-dir petpark_home/serving/petpark] [--server-flag=...]
"""
import argparse
import asyncio
import base64
import glob
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import requests

from petpark.pipeline import console

console.quiet_libraries(numbers_only=True)

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (get_model_status_pb2, predict_pb2,  # noqa: E402
                                     prediction_service_pb2_grpc)

from petpark.modules import features  # noqa: E402
from petpark.serving.ports import free_port  # noqa: E402

SIGNATURE = features.IMAGE_BYTES_SIGNATURE
PREDICT = '/tensorflow.serving.PredictionService/Predict'
GET_MODEL_STATUS = '/tensorflow.serving.ModelService/GetModelStatus'



def start_server(model_dir: str, batching_file: str = None, extra=()):
    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, '-c', 'import sys; from petpark.pipeline.cli import main; sys.exit(main())', 'serve',
               f'--port={grpc_port}', f'--rest_api_port={rest_port}', '--model_name=petpark',
               f'--model_base_path={model_dir}', '--file_system_poll_wait_seconds=0']
    if batching_file:
        command += ['--enable_batching', f'--batching_parameters_file={batching_file}']
    command += list(extra)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status = requests.get(f'http://127.0.0.1:{rest_port}/v1/models/petpark', timeout=1).json()
            if status['model_version_status'][0]['state'] == 'AVAILABLE':
                return process, grpc_port, rest_port
        except (requests.ConnectionError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError('petpark serve did not become ready within 120 s')


def percentiles(seconds):
    values = np.array(seconds) * 1000
    return np.percentile(values, 50), np.percentile(values, 99)


def grpc_request(image: bytes, count: int = 1) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = 'petpark', SIGNATURE
    request.inputs['image_bytes'].CopyFrom(tf.make_tensor_proto([image] * count, dtype=tf.string))
    return request


def latency(model_dir: str, image: bytes, grpc_port: int, rest_port: int, calls: int):
    """Prints batch-1 p50/p99 of the three paths, called in blocks taken in turn so that they see
    the same machine; returns the in-process signature."""
    version = max(glob.glob(os.path.join(model_dir, '[0-9]*')), key=lambda p: int(os.path.basename(p)))
    signature = tf.saved_model.load(version).signatures[SIGNATURE]
    tensor = tf.constant([image])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f'127.0.0.1:{grpc_port}'))
    request = grpc_request(image)
    session = requests.Session()
    body = {'signature_name': SIGNATURE, 'instances': [{'b64': base64.b64encode(image).decode()}]}
    url = f'http://127.0.0.1:{rest_port}/v1/models/petpark:predict'
    paths = {'in-process': lambda: signature(image_bytes=tensor),
             'gRPC': lambda: stub.Predict(request, timeout=10),
             'REST': lambda: session.post(url, json=body, timeout=10).raise_for_status()}
    samples = {name: [] for name in paths}
    for block in range(4):  # blocks in turn, so drift hits all paths alike; the first block warms up
        for name, call in paths.items():
            for _ in range(calls // 3):
                start = time.perf_counter()
                call()
                if block:
                    samples[name].append(time.perf_counter() - start)
    base50 = percentiles(samples['in-process'])[0]
    print(f'Latency at batch 1 ({calls // 3 * 3} calls each, in blocks taken in turn, {SIGNATURE}):')
    for name, values in samples.items():
        p50, p99 = percentiles(values)
        added = '' if name == 'in-process' else f'   added p50 {p50 - base50:+.2f} ms'
        print(f'  {name:<11} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms{added}')
    print('  targets: added p50 <= 1 ms (gRPC), <= 2 ms (REST)')
    return signature


def in_process_full_batches(signature, image: bytes, seconds: float):
    """Images/s and CPU ms per image calling the signature on batches of 32 in this process."""
    batch = tf.constant([image] * 32)
    signature(image_bytes=batch)
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        signature(image_bytes=batch)
        done += 32
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done * 1000


def _client_process(port: int, method: str, request: bytes, clients: int, seconds: float, started, results) -> None:
    """Load generator: `clients` coroutines each sending `method` back to back for `seconds`."""
    async def drive():
        async with grpc.aio.insecure_channel(f'127.0.0.1:{port}') as channel:
            call = channel.unary_unary(method)  # requests pre-serialized; replies not parsed
            counts = {'ok': 0, 'failed': 0}
            for _ in range(20):  # warm-up
                await call(request, timeout=30)
            stop = time.monotonic() + seconds

            async def client():
                while time.monotonic() < stop:
                    try:
                        await call(request, timeout=30)
                        counts['ok'] += 1
                    except grpc.RpcError:
                        counts['failed'] += 1
            started.set()
            start, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*[client() for _ in range(clients)])
            return counts, time.perf_counter() - start, time.process_time() - cpu
    results.put(asyncio.run(drive()))


def throughput(server: subprocess.Popen, grpc_port: int, method: str, request: bytes, clients: int,
               seconds: float):
    """(requests/s, failures, server CPU ms/request, client CPU ms/request)."""
    context = multiprocessing.get_context('spawn')
    started, results = context.Event(), context.Queue()
    load = context.Process(target=_client_process,
                           args=(grpc_port, method, request, clients, seconds, started, results))
    server_process = psutil.Process(server.pid)
    load.start()
    while not started.wait(0.5):
        if not load.is_alive():
            raise RuntimeError(f'the load generator exited with code {load.exitcode} before sending load')
    before = sum(server_process.cpu_times()[:2])
    counts, elapsed, client_cpu = results.get(timeout=seconds + 120)
    server_cpu = sum(server_process.cpu_times()[:2]) - before
    load.join()
    done = max(counts['ok'], 1)
    return counts['ok'] / elapsed, counts['failed'], server_cpu / done * 1000, client_cpu / done * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model-dir', default=os.path.join('petpark_home', 'serving', 'petpark'))
    parser.add_argument('--image', help='a JPEG to send (default: one from the synthetic data)')
    parser.add_argument('--calls', type=int, default=300)
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--server-flag', action='append', default=[], metavar='FLAG',
                        help='passed on to `petpark serve`, e.g. --server-flag=--tensorflow_intra_op_parallelism=1')
    args = parser.parse_args()
    model_dir = os.path.abspath(args.model_dir)
    if not glob.glob(os.path.join(model_dir, '[0-9]*', 'saved_model.pb')):
        print(f'No pushed model under {model_dir}: run `make demo` first, or pass --model-dir')
        return 1
    beside = sorted(glob.glob(os.path.join(model_dir, '..', '..', 'data', 'synthetic', '*', '*.jpg')))
    image_path = args.image or (beside[0] if beside else None)
    if image_path is None:
        print(f'No synthetic photo beside {model_dir} (it is not in a demo home): pass --image PHOTO.jpg')
        return 1
    if not os.path.isfile(image_path):
        print(f'--image {image_path}: no such file')
        return 1
    image = open(image_path, 'rb').read()
    print(f'Model {model_dir}; image {image_path} ({len(image)} bytes); {os.cpu_count()} cores')
    with tempfile.NamedTemporaryFile('w', suffix='.config', delete=False) as f:
        f.write('max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } '
                'max_enqueued_batches { value: 100 } num_batch_threads { value: 2 }')
        batching_file = f.name
    predict = grpc_request(image).SerializeToString()
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = 'petpark'
    rows = {}

    def measure(signature, server, port, clients):
        """This row's throughput and, just before it, the in-process baseline it is compared with."""
        baseline = in_process_full_batches(signature, image, args.seconds)
        return baseline, throughput(server, port, PREDICT, predict, clients, args.seconds)

    plain, grpc_port, rest_port = start_server(model_dir, extra=args.server_flag)
    try:
        signature = latency(model_dir, image, grpc_port, rest_port, args.calls)
        for clients in (1, 8, 32):
            rows[(clients, False)] = measure(signature, plain, grpc_port, clients)
        floor = throughput(plain, grpc_port, GET_MODEL_STATUS, status.SerializeToString(), 32, args.seconds)
    finally:
        plain.terminate()
        plain.wait()
    batched, grpc_port, _ = start_server(model_dir, batching_file, args.server_flag)
    try:
        for clients in (1, 8, 32):
            rows[(clients, True)] = measure(signature, batched, grpc_port, clients)
    finally:
        batched.terminate()
        batched.wait()
        os.unlink(batching_file)
    print(f'Throughput (gRPC, {args.seconds:.0f} s each), against calling the signature in-process on full batches '
          'of 32, measured just before each row:')
    print('  clients  batching  requests/s  in-process images/s  ratio  errors  server CPU/req  client CPU/req')
    for (clients, batching), ((baseline, _), (rate, failures, server_ms, client_ms)) in sorted(rows.items()):
        print(f'  {clients:>7}  {"on " if batching else "off":>8}  {rate:10.0f}  {baseline:19.0f}  {rate / baseline:5.1%}'
              f'  {failures:6d}  {server_ms:11.2f} ms  {client_ms:11.2f} ms')
    (baseline, model_ms), _ = rows[(32, True)]
    rate, failures, server_ms, client_ms = floor
    ceiling = os.cpu_count() * 1000 / (model_ms + server_ms + client_ms)
    print(f'Request path alone (GetModelStatus, 32 clients): {rate:.0f} requests/s, {failures} errors, '
          f'server {server_ms:.2f} ms + client {client_ms:.2f} ms CPU per request.')
    print(f'  With {model_ms:.2f} ms of model CPU per image on full batches, {os.cpu_count()} cores can serve at most '
          f'{ceiling:.0f} requests/s ({ceiling / baseline:.1%} of in-process full batches) over this path.')
    print('  target: with batching at 32 clients >= 70% of in-process full batches, zero errors')
    return 0


if __name__ == '__main__':
    sys.exit(main())
