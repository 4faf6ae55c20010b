"""ServingPusher: tfx.components.Pusher with an executor that skips duplicate versions."""
from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.serving_pusher import executor


class ServingPusher(tfx.components.Pusher):
    """Same inputs, outputs and parameters as TFX's Pusher (filesystem destinations)."""
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
