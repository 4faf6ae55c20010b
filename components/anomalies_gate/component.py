"""AnomaliesGate: a run only continues past it when ExampleValidator found no anomalies."""
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.anomalies_gate import executor


class AnomaliesGateSpec(ComponentSpec):
    PARAMETERS = {}
    INPUTS = {executor.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies)}
    OUTPUTS = {}


class AnomaliesGate(base_component.BaseComponent):
    """Fails its execution, and so every node that depends on it, when `anomalies`
    (ExampleValidator's output) reports any anomaly in any split."""
    SPEC_CLASS = AnomaliesGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies: channel.BaseChannel):
        super().__init__(spec=AnomaliesGateSpec(anomalies=anomalies))
