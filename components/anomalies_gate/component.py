"""AnomaliesGate: a run only continues past it when the data validators blessed every split."""
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from petpark.components.anomalies_gate import executor


class AnomaliesGateSpec(ComponentSpec):
    PARAMETERS = {}
    INPUTS = {
        executor.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        executor.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
    }
    OUTPUTS = {executor.VALIDATED_SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema)}


class AnomaliesGate(base_component.BaseComponent):
    """Fails its execution when `anomalies` (ExampleValidator) did not bless every split;
    otherwise outputs `validated_schema`,
    the schema those examples were validated against. Wire the Transform's schema from it:
    the Transform then runs only on validated data, and MLMD's lineage shows why."""
    SPEC_CLASS = AnomaliesGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies: channel.BaseChannel, schema: channel.BaseChannel):
        super().__init__(spec=AnomaliesGateSpec(
            anomalies=anomalies, schema=schema,
            validated_schema=channel.Channel(type=standard_artifacts.Schema)))
