"""ServingPusher: TFX's Pusher with an executor that publishes versions atomically and skips duplicates."""
from tfx.components.pusher.component import Pusher
from tfx.dsl.components.base import executor_spec

from petpark.components.serving_pusher import executor


class ServingPusher(Pusher):
    """Same inputs, outputs and parameters as TFX's Pusher (filesystem destinations)."""
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
