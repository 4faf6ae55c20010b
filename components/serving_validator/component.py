"""ServingValidator: TFX's InfraValidator idea with the model servers this project can run."""
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from petpark.components.serving_validator import executor, servers


class ServingValidatorSpec(ComponentSpec):
    PARAMETERS = {
        'model_name': ExecutionParameter(type=str),
        'server': ExecutionParameter(type=str),
        'server_binary': ExecutionParameter(type=str),
        'signature_name': ExecutionParameter(type=str),
        'split': ExecutionParameter(type=str),
        'num_examples': ExecutionParameter(type=int),
        'max_loading_seconds': ExecutionParameter(type=float),
        'max_latency_ms': ExecutionParameter(type=float),
        'tolerance': ExecutionParameter(type=float),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing)}


class ServingValidator(base_component.BaseComponent):
    """Starts the candidate model in a real model server, waits until it is AVAILABLE, sends
    `num_examples` examples of `split` over gRPC as TF Serving PredictRequests (TFX's request
    builder and client), checks each answer against the model called in-process and the p99
    latency against `max_latency_ms`, stops the server, and emits TFX's InfraBlessing (the
    Pusher's `infra_blessing`). Properties: blessed, server, model_version, latency_p50_ms,
    latency_p99_ms, loading_seconds, requests, max_abs_difference; reason when not blessed.

    server: 'petpark' (`petpark serve`), 'tensorflow_model_server' (the binary, `server_binary`
    or on PATH) or 'docker' (TFX's LocalDockerRunner, image tensorflow/serving:`server_binary`).
    """
    SPEC_CLASS = ServingValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: channel.BaseChannel, examples: channel.BaseChannel, *, model_name: str,
                 server: str = 'petpark', server_binary: str = '', signature_name: str = 'serving_default',
                 split: str = 'eval', num_examples: int = 32, max_loading_seconds: float = 300.0,
                 max_latency_ms: float = 1000.0, tolerance: float = 1e-5):
        if server not in servers.SERVERS:
            raise ValueError(f'server must be one of {servers.SERVERS}, got {server!r}')
        if num_examples < 1 or max_loading_seconds <= 0 or max_latency_ms <= 0 or tolerance < 0:
            raise ValueError('num_examples, max_loading_seconds and max_latency_ms must be positive, '
                             'tolerance not negative')
        super().__init__(spec=ServingValidatorSpec(
            model=model, examples=examples, model_name=model_name, server=server, server_binary=server_binary,
            signature_name=signature_name, split=split, num_examples=num_examples,
            max_loading_seconds=float(max_loading_seconds), max_latency_ms=float(max_latency_ms),
            tolerance=float(tolerance),
            blessing=channel.Channel(type=standard_artifacts.InfraBlessing)))
