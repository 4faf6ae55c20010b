"""Serving benchmark: prints numbers, asserts nothing.

Serves a pushed petpark model with `petpark serve` (a separate process, as in production)
and measures, in one run, on the `serving_image_bytes` signature with a real JPEG:
- p50/p99 latency at batch 1: in-process signature call, gRPC Predict, REST predict;
- throughput with 1, 8 and 32 concurrent gRPC clients, without and with batching, against
  calling the signature in-process on full batches of 32.

    .venv/bin/python benchmarks/serving_benchmark.py --model-dir petpark_home/serving/petpark
"""
import argparse
import base64
import glob
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import requests

from pipeline import console

console.quiet_libraries()

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from modules import features  # noqa: E402

SIGNATURE = features.IMAGE_BYTES_SIGNATURE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_server(model_dir: str, batching_file: str = None):
    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, '-c', 'import sys; from pipeline.cli import main; sys.exit(main())', 'serve',
               f'--port={grpc_port}', f'--rest_api_port={rest_port}', '--model_name=petpark',
               f'--model_base_path={model_dir}', '--file_system_poll_wait_seconds=0']
    if batching_file:
        command += ['--enable_batching', f'--batching_parameters_file={batching_file}']
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


def latency(model_dir: str, image: bytes, grpc_port: int, rest_port: int, calls: int) -> None:
    version = max(glob.glob(os.path.join(model_dir, '[0-9]*')), key=lambda p: int(os.path.basename(p)))
    signature = tf.saved_model.load(version).signatures[SIGNATURE]
    tensor = tf.constant([image])

    def timed(call):
        for _ in range(20):  # warm-up
            call()
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return percentiles(samples)

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f'127.0.0.1:{grpc_port}'))
    request = grpc_request(image)
    session = requests.Session()
    body = {'signature_name': SIGNATURE, 'instances': [{'b64': base64.b64encode(image).decode()}]}
    url = f'http://127.0.0.1:{rest_port}/v1/models/petpark:predict'
    results = {'in-process': timed(lambda: signature(image_bytes=tensor)),
               'gRPC': timed(lambda: stub.Predict(request, timeout=10)),
               'REST': timed(lambda: session.post(url, json=body, timeout=10).raise_for_status())}
    base50 = results['in-process'][0]
    print(f'Latency at batch 1 ({calls} calls each, {SIGNATURE}):')
    for name, (p50, p99) in results.items():
        added = '' if name == 'in-process' else f'   added p50 {p50 - base50:+.2f} ms'
        print(f'  {name:<11} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms{added}')
    print('  targets: added p50 <= 1 ms (gRPC), <= 2 ms (REST)')
    return signature, tensor


def in_process_full_batches(signature, image: bytes, seconds: float) -> float:
    batch = tf.constant([image] * 32)
    signature(image_bytes=batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        signature(image_bytes=batch)
        done += 32
    return done / (time.perf_counter() - start)


def throughput(grpc_port: int, image: bytes, clients: int, seconds: float):
    counts, failures, stop = [0] * clients, [0] * clients, threading.Event()
    request = grpc_request(image)

    def client(index):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f'127.0.0.1:{grpc_port}'))
        while not stop.is_set():
            try:
                stub.Predict(request, timeout=30)
                counts[index] += 1
            except grpc.RpcError:
                failures[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start), sum(failures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model-dir', default=os.path.join('petpark_home', 'serving', 'petpark'))
    parser.add_argument('--image', help='a JPEG to send (default: one from the synthetic data)')
    parser.add_argument('--calls', type=int, default=300)
    parser.add_argument('--seconds', type=float, default=5.0)
    args = parser.parse_args()
    model_dir = os.path.abspath(args.model_dir)
    if not glob.glob(os.path.join(model_dir, '[0-9]*', 'saved_model.pb')):
        print(f'No pushed model under {model_dir}: run `make demo` first, or pass --model-dir')
        return 1
    image_path = args.image or sorted(glob.glob(os.path.join(model_dir, '..', '..', 'data', 'synthetic', '*', '*.jpg')))[0]
    image = open(image_path, 'rb').read()
    print(f'Model {model_dir}; image {image_path} ({len(image)} bytes); {os.cpu_count()} cores')
    with tempfile.NamedTemporaryFile('w', suffix='.config', delete=False) as f:
        f.write('max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } '
                'max_enqueued_batches { value: 100 } num_batch_threads { value: 2 }')
        batching_file = f.name
    plain, grpc_port, rest_port = start_server(model_dir)
    try:
        signature, _ = latency(model_dir, image, grpc_port, rest_port, args.calls)
        baseline = in_process_full_batches(signature, image, args.seconds)
        print(f'Throughput (gRPC, {args.seconds:.0f} s each); in-process full batches of 32: {baseline:.0f} images/s')
        rows = {}
        for clients in (1, 8, 32):
            rows[(clients, False)] = throughput(grpc_port, image, clients, args.seconds)
    finally:
        plain.terminate()
        plain.wait()
    batched, grpc_port, _ = start_server(model_dir, batching_file)
    try:
        for clients in (1, 8, 32):
            rows[(clients, True)] = throughput(grpc_port, image, clients, args.seconds)
    finally:
        batched.terminate()
        batched.wait()
        os.unlink(batching_file)
    for (clients, batching), (rate, failures) in sorted(rows.items()):
        print(f'  {clients:>2} clients, batching {"on " if batching else "off"}: {rate:7.0f} requests/s '
              f'({rate / baseline:5.1%} of in-process full batches), {failures} errors')
    print('  target: with batching at 32 clients >= 70% of in-process full batches, zero errors')
    return 0


if __name__ == '__main__':
    sys.exit(main())
