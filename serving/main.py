"""`petpark serve`: a model server with TF Serving's flags, REST and gRPC wire contract."""
import argparse
import logging
import os
import signal
import threading

from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import config_protos, limits, request_logging
from petpark.serving.log_limits import RateLimitedLog

DEFAULT_METRICS_PATH = '/monitoring/prometheus/metrics'


def _threads(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number of threads, got {value!r}') from None
    if count < 0:
        raise argparse.ArgumentTypeError(f'must be 0 (as many as cores) or more, got {count}')
    return count


def add_flags(parser: argparse.ArgumentParser) -> None:
    """TF Serving's own flag names and defaults (`--flag=value` works too)."""
    parser.add_argument('--port', type=int, default=8500, help='gRPC port (0: pick a free one)')
    parser.add_argument('--rest_api_port', type=int, default=0, help='REST port; 0 disables REST')
    parser.add_argument('--model_name', default='default', help='model name (without --model_config_file)')
    parser.add_argument('--model_base_path', help='folder of numeric version folders')
    parser.add_argument('--model_config_file', help='text ModelServerConfig; overrides name/base path')
    parser.add_argument('--file_system_poll_wait_seconds', type=float, default=1.0,
                        help='seconds between scans for new versions (0: only at start-up)')
    parser.add_argument('--model_config_file_poll_wait_seconds', type=float, default=0.0,
                        help='seconds between re-reads of --model_config_file (0: never)')
    parser.add_argument('--enable_batching', action='store_true', help='batch concurrent requests')
    parser.add_argument('--batching_parameters_file', help='text BatchingParameters (needs --enable_batching)')
    parser.add_argument('--monitoring_config_file',
                        help='text MonitoringConfig; prometheus_config enables metrics on the REST port')
    parser.add_argument('--tensorflow_intra_op_parallelism', type=_threads, default=0,
                        help='threads for one op (0: as many as cores)')
    parser.add_argument('--tensorflow_inter_op_parallelism', type=_threads, default=0,
                        help='ops run at once (0: as many as cores)')
    parser.add_argument('--host', default='127.0.0.1', help='address to bind (TF Serving binds all; we do not)')
    parser.add_argument('--request_logging_config_file',
                        help='text LoggingConfig (sampling_config, log_collector_config.filename_prefix): log sampled '
                             'requests as PredictionLog TFRecords; re-read when it changes (docs/monitoring.md)')
    rotation = request_logging.Rotation()
    parser.add_argument('--request_log_max_file_bytes', type=limits.positive(int), default=rotation.max_file_bytes,
                        help='a request-log file is completed (renamed) at this size')
    parser.add_argument('--request_log_max_file_seconds', type=limits.positive(float), default=rotation.max_file_seconds,
                        help='... or at this age')
    parser.add_argument('--request_log_quota_bytes', type=limits.positive(int), default=rotation.quota_bytes,
                        help='complete request-log files beyond this total are removed, oldest first')
    parser.add_argument('--request_log_retention_seconds', type=limits.positive(float),
                        default=rotation.retention_seconds, help='complete request-log files older than this are removed')
    parser.add_argument('--request_log_max_queued', type=limits.positive(int), default=rotation.max_queued,
                        help='sampled records waiting for the writer; beyond it they are dropped and counted')
    parser.add_argument('--canary_mirror_rate', type=float, default=0.0,
                        help='petpark: share of the requests the `stable` version answers that are also sent to the '
                             '`canary` version off the request path, both answers logged for `petpark monitor canary` '
                             '(needs --request_logging_config_file; docs/release.md)')
    parser.add_argument('--canary_mirror_max_queued', type=limits.positive(int), default=64,
                        help='mirrored requests waiting for the canary; beyond it they are not mirrored (counted)')
    parser.add_argument('--inference_threads', type=limits.positive(int), default=64,
                        help='threads that run model calls, REST and gRPC together')
    limits.Limits.add_flags(parser)


def read_config(args: argparse.Namespace) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig from --model_config_file, or from --model_name/--model_base_path."""
    if args.model_config_file:
        return config_protos.parse_text(args.model_config_file, model_server_config_pb2.ModelServerConfig)
    if not args.model_base_path:
        raise ValueError('Both --model_base_path and --model_config_file are empty: give one of them')
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=args.model_name, base_path=os.path.abspath(args.model_base_path),
                                        model_platform='tensorflow')
    return config


class ConfigWatcher:
    """Re-reads --model_config_file when it changes and reloads the store; a bad file is
    reported and the config in force keeps serving, as in TF Serving."""

    def __init__(self, store, args: argparse.Namespace):
        self.store, self.args = store, args
        self._stamp = os.path.getmtime(args.model_config_file)

    def poll(self) -> str:
        """'unchanged', 'reloaded' or the error that kept the old config. Any other failure (the file
        unreadable for now) raises and leaves the change to be read again."""
        from petpark.serving import errors
        stamp = os.path.getmtime(self.args.model_config_file)
        if stamp == self._stamp:
            return 'unchanged'
        try:
            self.store.reload_config(read_config(self.args))
        except (ValueError, errors.ServingError) as e:
            self._stamp = stamp
            return f'kept the previous config: {getattr(e, "message", e)}'
        self._stamp = stamp
        return 'reloaded'

    def _report(self) -> None:
        result = self.poll()
        if result != 'unchanged':
            print(f'{self.args.model_config_file}: {result}', flush=True)

    def run(self, stopped: threading.Event) -> None:
        """Polls until `stopped`; a failed poll is logged and retried, never ends the thread."""
        from petpark.serving.concurrency import repeat_until_stopped
        log = RateLimitedLog(logging.getLogger('petpark.serving.config'))
        repeat_until_stopped(self._report, self.args.model_config_file_poll_wait_seconds, stopped,
                             f'reading {self.args.model_config_file}', log)


def configure_tensorflow(args: argparse.Namespace) -> None:
    """TF's thread pools as the --tensorflow_*_parallelism flags ask; before any model loads."""
    import tensorflow as tf
    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)


def make_loader(args: argparse.Namespace, metrics):
    """How the store loads a version: the SavedModel, behind a batch queue with --enable_batching."""
    from petpark.serving import batching, tf_servable
    if args.batching_parameters_file and not args.enable_batching:
        raise ValueError('--batching_parameters_file requires --enable_batching')
    if not args.enable_batching:
        return tf_servable.load
    params = config_protos.BatchingParameters()
    if args.batching_parameters_file:
        params = config_protos.parse_text(args.batching_parameters_file, config_protos.BatchingParameters)
    return lambda name, path, version: batching.BatchingServable(
        tf_servable.load(name, path, version), params, metrics, name)


def open_descriptors() -> int:
    """Descriptors this process has open now."""
    return len(os.listdir('/proc/self/fd')) if os.path.isdir('/proc/self/fd') else 0


def raise_open_files_limit() -> int:
    """The soft open-files limit raised to the hard one (connections each hold a descriptor)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def serve(args: argparse.Namespace) -> int:
    """Starts the store, gRPC and (optionally) REST; runs until SIGINT/SIGTERM."""
    from petpark.serving import errors  # TensorFlow: imported only when serving starts
    from petpark.serving.concurrency import InferencePool
    from petpark.serving.grpc_service import GrpcServer
    from petpark.serving.metrics import ServingMetrics
    from petpark.serving.mirror import CanaryMirror
    from petpark.serving.mirror_process import MirrorProcess
    from petpark.serving.model_store import ModelStore, State
    from petpark.serving.server import RestServer
    configure_tensorflow(args)
    bounds = limits.Limits.from_args(args)
    metrics = ServingMetrics()
    try:
        store = ModelStore(read_config(args), make_loader(args, metrics))
    except errors.ServingError as e:
        raise ValueError(e.message) from None
    if args.request_logging_config_file and not os.path.isfile(args.request_logging_config_file):
        raise ValueError(f'--request_logging_config_file: {args.request_logging_config_file} is not a file')
    request_logs = request_logging.ServingLog(args.request_logging_config_file, request_logging.Rotation(
        args.request_log_max_file_bytes, args.request_log_max_file_seconds, args.request_log_quota_bytes,
        args.request_log_retention_seconds, args.request_log_max_queued))
    if request_logs.enabled:
        metrics.request_log_counts = request_logs.counts
    request_logs.mirror = mirror = CanaryMirror(
        store, request_logs, args.canary_mirror_rate, args.canary_mirror_max_queued,
        process=MirrorProcess(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism))
    if mirror.rate:
        metrics.mirror_counts = mirror.snapshot
    metrics_path = None
    if args.monitoring_config_file:
        monitoring = config_protos.parse_text(args.monitoring_config_file, config_protos.MonitoringConfig)
        if monitoring.prometheus_config.enable:
            metrics_path = monitoring.prometheus_config.path or DEFAULT_METRICS_PATH
    open_files_limit = raise_open_files_limit()
    store.start(args.file_system_poll_wait_seconds)
    bounds = limits.fit_connections(bounds, open_files_limit, open_descriptors(), rest=bool(args.rest_api_port))
    rest_connections = f'at most {bounds.max_rest_connections}' if args.rest_api_port else 'off'
    print(f'connections: gRPC at most {bounds.max_grpc_connections}, REST {rest_connections} '
          f'(open files limit {open_files_limit})', flush=True)
    pool = InferencePool(args.inference_threads, bounds.max_inflight_requests)
    grpc_server = GrpcServer(store, args.host, args.port, metrics, pool, bounds, request_logs).start()
    print(f'gRPC (PredictionService, ModelService) at {args.host}:{grpc_server.port}', flush=True)
    rest = None
    if args.rest_api_port:
        rest = RestServer(store, args.host, args.rest_api_port, metrics, metrics_path, pool, bounds, request_logs).start()
        print(f'REST at http://{args.host}:{rest.port}/v1/models/...', flush=True)
        if metrics_path:
            print(f'Prometheus metrics at http://{args.host}:{rest.port}{metrics_path}', flush=True)
    for name in store.model_names():
        try:
            versions = ', '.join(f'version {r.version} {State.Name(r.state)}' for r in store.status(name))
        except errors.ServingError as e:
            versions = e.message
        print(f'model {name}: {versions}', flush=True)
    print(request_logs.describe(), flush=True)
    print(mirror.describe(), flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    if request_logs.enabled:
        threading.Thread(target=request_logs.watch, args=(stopped,), daemon=True, name='request-log-config').start()
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        threading.Thread(target=ConfigWatcher(store, args).run, args=(stopped,), daemon=True).start()
    stopped.wait()
    if rest:
        rest.stop()
    grpc_server.stop(grace=5)
    pool.shutdown()
    mirror.close()
    request_logs.close()
    store.stop()
    return 0
