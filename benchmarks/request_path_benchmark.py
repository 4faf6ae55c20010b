"""Request-path benchmark: what request logging and canary mirroring cost a client. Prints numbers,
asserts nothing.

Serves one pushed petpark model as two versions (1 labelled `stable`, 2 `canary`) from five
`petpark serve` processes, identical but for:
- off, and off again: no request logging (the second shows how far two identical servers differ:
  the noise floor of the comparison);
- logging: every request logged (sampling_rate 1.0);
- unwritable: every request "logged" into a folder that cannot be created (a file stands in its
  path): every record dropped, counted;
- both logging servers are also asked with their logging file re-read at sampling_rate 0 ("logging
  at 0", "unwritable at 0"): that compares logging on and off within one process, free of the
  several percent two identical processes differ by;
- mirror: the requests `stable` answers mirrored to `canary` (--canary_mirror_rate, --mirror-rate
  here, default 1.0), the pairs logged (sampling_rate 0: only them); also asked with the `canary`
  label taken out of its model config ("mirror at 0": nothing to mirror to), which compares
  mirroring on and off inside one process. Its Prometheus counters give how many of the measured
  requests were mirrored and how many were not (the mirror runs only on CPU stable leaves idle).
A client asks for `stable` one request at a time, over REST and gRPC, in blocks taken in turn across
the five servers so that they see the same machine; p50/p99 and each server's added p50 against
`off` are printed, then what each one wrote (records, mirrored pairs). Targets (docs/monitoring.md,
docs/release.md): logging adds <= 5% to p50; an unwritable folder fails no request; mirroring at 1.0
adds <= 5% to stable's p50.

    .venv/bin/python benchmarks/request_path_benchmark.py [--model-dir petpark_home/serving/petpark]
"""
import argparse
import base64
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import requests

from petpark.pipeline import console

console.quiet_libraries(numbers_only=True)

import grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from serving_benchmark import SIGNATURE, grpc_request, percentiles  # noqa: E402
from petpark.monitoring import canary, logs  # noqa: E402
from petpark.serving.ports import free_port  # noqa: E402

SERVERS = ('off', 'off again', 'logging', 'unwritable', 'mirror')
TOGGLED = ('logging', 'unwritable', 'mirror')  # also asked "at 0", see above
ROWS = ('off', 'off again', 'logging', 'logging at 0', 'unwritable', 'unwritable at 0', 'mirror', 'mirror at 0')
RELOAD_SECONDS = 6  # petpark serve re-reads its logging file every 5 s
MODEL_CONFIG_POLL_SECONDS = 1  # the mirror server's --model_config_file_poll_wait_seconds


def logging_config(log_dir: str, rate: float) -> str:
    return (f'sampling_config {{ sampling_rate: {rate} }} '
            f'log_collector_config {{ filename_prefix: "{os.path.join(log_dir, "petpark")}" }}')


def model_config(base: str, canary: bool = True) -> str:
    labels = 'version_labels { key: "stable" value: 1 } ' + ('version_labels { key: "canary" value: 2 } ' if canary else '')
    return (f'model_config_list {{ config {{ name: "petpark" base_path: "{base}" model_platform: "tensorflow" '
            f'model_version_policy {{ specific {{ versions: 1 versions: 2 }} }} {labels}}} }}')


def toggle(server: str, folder: str, log_dir: str, base: str, on: bool) -> None:
    """Logging at sampling_rate 1.0 or 0, or the mirror server's canary label in or out; waits
    until the server has re-read the file."""
    if server == 'mirror':
        with open(os.path.join(folder, 'mirror.models.config'), 'w') as f:
            f.write(model_config(base, canary=on))
        time.sleep(MODEL_CONFIG_POLL_SECONDS * 3)
        return
    with open(os.path.join(folder, f'{server}.logging.config'), 'w') as f:
        f.write(logging_config(log_dir, 1.0 if on else 0.0))
    time.sleep(RELOAD_SECONDS)


def mirror_counts(rest_port: int) -> dict:
    """The mirror server's :petpark:serving:canary_mirror_count by outcome."""
    text = requests.get(f'http://127.0.0.1:{rest_port}/metrics', timeout=10).text
    return {sample.labels['outcome']: int(sample.value) for family in text_string_to_metric_families(text)
            if family.name == ':petpark:serving:canary_mirror_count' for sample in family.samples}


def start(name: str, folder: str, config_file: str, mirror_rate: float, intra_op: int):
    """`petpark serve` for one of SERVERS; (process, grpc port, rest port, its log folder)."""
    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, '-c', 'import sys; from petpark.pipeline.cli import main; sys.exit(main())', 'serve',
               f'--port={grpc_port}', f'--rest_api_port={rest_port}', f'--model_config_file={config_file}']
    if intra_op:
        command.append(f'--tensorflow_intra_op_parallelism={intra_op}')
    log_dir = os.path.join(folder, name.replace(' ', '_'), 'logs')
    if name == 'unwritable':
        os.makedirs(os.path.dirname(log_dir))
        open(log_dir, 'w').close()  # a file where the log folder would be
    if not name.startswith('off'):
        rate = 0.0 if name == 'mirror' else 1.0
        logging_file = os.path.join(folder, f'{name}.logging.config')
        with open(logging_file, 'w') as f:
            f.write(logging_config(log_dir, rate))
        command.append(f'--request_logging_config_file={logging_file}')
    if name == 'mirror':
        mirror_config = os.path.join(folder, 'mirror.models.config')
        shutil.copyfile(config_file, mirror_config)
        monitoring_file = os.path.join(folder, 'monitoring.config')
        with open(monitoring_file, 'w') as f:
            f.write('prometheus_config { enable: true path: "/metrics" }')
        command = [c for c in command if not c.startswith('--model_config_file=')]
        command += [f'--canary_mirror_rate={mirror_rate}', f'--model_config_file={mirror_config}',
                    f'--model_config_file_poll_wait_seconds={MODEL_CONFIG_POLL_SECONDS}',
                    f'--monitoring_config_file={monitoring_file}']
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            status = requests.get(f'http://127.0.0.1:{rest_port}/v1/models/petpark', timeout=1).json()
            if sum(s['state'] == 'AVAILABLE' for s in status['model_version_status']) == 2:
                return process, grpc_port, rest_port, log_dir
        except (requests.ConnectionError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f'petpark serve ({name}) did not load both versions within 180 s')


def drained(rest_port: int, limit_seconds: float = 120) -> dict:
    """The mirror's counts once its process has started and its queue is empty (they stop changing)."""
    deadline, counts = time.monotonic() + limit_seconds, mirror_counts(rest_port)
    while time.monotonic() < deadline:
        time.sleep(1)
        previous, counts = counts, mirror_counts(rest_port)
        if counts == previous and counts.get('mirrored'):
            break
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model-dir', default=os.path.join('petpark_home', 'serving', 'petpark'))
    parser.add_argument('--calls', type=int, default=200, help='calls per server, path and block')
    parser.add_argument('--blocks', type=int, default=5, help='blocks taken in turn (the first warms up)')
    parser.add_argument('--mirror-rate', type=float, default=1.0, help="the mirror server's --canary_mirror_rate")
    parser.add_argument('--intra-op', type=int, default=0,
                        help="every server's --tensorflow_intra_op_parallelism (0: TensorFlow's default, all cores)")
    args = parser.parse_args()
    versions = sorted(glob.glob(os.path.join(os.path.abspath(args.model_dir), '[0-9]*', 'saved_model.pb')))
    if not versions:
        print(f'No pushed model under {args.model_dir}: run `make demo` first, or pass --model-dir')
        return 1
    pushed = os.path.dirname(versions[-1])
    frames = sorted(glob.glob(os.path.join(pushed, '..', '..', '..', 'data', 'synthetic', '*', '*.jpg')))
    if not frames:
        print(f'No synthetic photo beside {pushed} (it is not in a demo home)')
        return 1
    image = open(frames[0], 'rb').read()
    folder = tempfile.mkdtemp(prefix='petpark_request_path_')
    base = os.path.join(folder, 'models')
    for version in ('1', '2'):
        shutil.copytree(pushed, os.path.join(base, version))
    config_file = os.path.join(folder, 'models.config')
    with open(config_file, 'w') as f:
        f.write(model_config(base))
    print(f'Model {pushed} as versions 1 (stable) and 2 (canary); image {frames[0]}; {os.cpu_count()} cores; '
          f'intra-op threads per server: {args.intra_op or "all cores"}')
    servers = {}
    try:
        for name in SERVERS:
            servers[name] = start(name, folder, config_file, args.mirror_rate, args.intra_op)
        body = {'signature_name': SIGNATURE, 'instances': [{'b64': base64.b64encode(image).decode()}]}
        request = grpc_request(image)
        request.model_spec.version_label = 'stable'
        session = requests.Session()
        calls = {}
        for name in ROWS:
            _, grpc_port, rest_port, _ = servers[name.replace(' at 0', '')]
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f'127.0.0.1:{grpc_port}'))
            url = f'http://127.0.0.1:{rest_port}/v1/models/petpark/labels/stable:predict'
            calls[(name, 'REST')] = lambda url=url: session.post(url, json=body, timeout=30).raise_for_status()
            calls[(name, 'gRPC')] = lambda stub=stub: stub.Predict(request, timeout=30)
        samples = {key: [] for key in calls}
        failures = {key: 0 for key in calls}
        on, counted_from = dict.fromkeys(TOGGLED, True), {}
        for block in range(args.blocks):
            if block == 1:
                counted_from = drained(servers['mirror'][2])
            for key, call in calls.items():
                server, wanted = key[0].replace(' at 0', ''), not key[0].endswith(' at 0')
                if server in TOGGLED and wanted != on[server]:
                    on[server] = wanted
                    toggle(server, folder, servers[server][3], base, wanted)
                for _ in range(args.calls):
                    start_at = time.perf_counter()
                    try:
                        call()
                    except Exception:  # counted: the target is none
                        failures[key] += 1
                        continue
                    if block:
                        samples[key].append(time.perf_counter() - start_at)
        time.sleep(1)  # the mirror's queue drains
        counted = mirror_counts(servers['mirror'][2])
    finally:
        for process, *_ in servers.values():
            process.terminate()
        for process, *_ in servers.values():
            process.wait()
    measured = (args.blocks - 1) * args.calls
    print(f'Latency asking for `stable`, one request at a time ({measured} calls per server and path, in blocks '
          'taken in turn):')
    for path in ('REST', 'gRPC'):
        base50 = percentiles(samples[('off', path)])[0]
        for name in ROWS:
            p50, p99 = percentiles(samples[(name, path)]) if samples[(name, path)] else (float('nan'),) * 2
            print(f'  {path:<4} {name:<15} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  p50 vs off {p50 / base50 - 1:+6.1%}'
                  f'  failed {failures[(name, path)]}')
        for name in TOGGLED:
            same = percentiles(samples[(name, path)])[0] / percentiles(samples[(f'{name} at 0', path)])[0] - 1
            print(f'  {path:<4} {name} at {args.mirror_rate if name == "mirror" else 1.0:g} vs the same server at 0: '
                  f'p50 {same:+.1%}')
    total = args.blocks * args.calls * 2
    outcomes = {k: counted.get(k, 0) - counted_from.get(k, 0) for k in set(counted) | set(counted_from)}
    print(f'Mirror, in the measured blocks: {outcomes.get("mirrored", 0)} of {measured * 2} requests to `stable` '
          f'mirrored; not mirrored: ' + (', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()) if k != 'mirrored')
                                         or 'none'))
    written = {name: sum(len(logs.file_records(path)) for path in logs.log_files(servers[name][3]))
               for name in ('logging', 'mirror')}
    pairs = canary.read_pairs(servers['mirror'][3], 'petpark')
    print(f'Written: logging {written["logging"]} records of {total} requests; mirror {len(pairs)} mirrored pairs '
          f'of {total} requests ({written["mirror"]} records); unwritable: nothing (every record dropped, counted)')
    if pairs:
        verdict = canary.judge(pairs, canary.Tolerances(1000, 0.005, 0.1, 0.001, 0.25))
        print(f'  canary (the same model) on them: {verdict["verdict"]}; ' + '; '.join(canary.lines(
            dict(verdict, canary_version=2, stable_version=1, model_name='petpark'))[1:]))
    print('  targets: logging and mirroring add <= 5% to p50; no request fails')
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
