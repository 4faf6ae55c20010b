"""The launcher of petpark's Airflow tasks: TFX's in-process launcher, one MLMD event per input artifact.

Airflow runs TFX's legacy launchers, whose metadata layer records one INPUT event per (input key,
artifact). When training is cached, the candidate model is also the latest blessed model, so the
Evaluator gets the same artifact as `model` and `baseline_model`, and MLMD rejects the second event
(`AlreadyExistsError: Given event already exists`), failing every run with no new data. Here an
artifact already recorded under an earlier key of the same execution is not recorded again; the
executor still receives both inputs.

An Airflow retry of a task meets the same error: TFX reuses the execution the failed try
registered and records its input events again. Inputs that execution already has are not
recorded twice, so a retried task runs.
"""
from typing import Dict, List, Optional, Set

from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.orchestration import metadata
from tfx.orchestration.launcher import in_process_component_launcher


def first_occurrences(input_artifacts: Optional[Dict[str, List[types.Artifact]]]) -> Dict[str, List[types.Artifact]]:
    """`input_artifacts` without artifacts already listed under an earlier key."""
    seen = set()
    result = {}
    for key, artifacts in (input_artifacts or {}).items():
        result[key] = [artifact for artifact in artifacts if artifact.id not in seen]
        seen.update(artifact.id for artifact in artifacts)
    return result


def not_recorded(input_artifacts: Dict[str, List[types.Artifact]], recorded: Set[int]) -> Dict[str, List[types.Artifact]]:
    """`input_artifacts` without those whose ids are in `recorded`."""
    return {key: [artifact for artifact in artifacts if artifact.id not in recorded]
            for key, artifacts in input_artifacts.items()}


class OneEventPerArtifactMetadata(metadata.Metadata):
    """TFX's legacy Metadata; registers each input artifact of an execution once, retries included."""

    def register_execution(self, pipeline_info, component_info, contexts, exec_properties=None,
                           input_artifacts=None):
        inputs = first_occurrences(input_artifacts)
        retried = self.get_component_run_context(component_info)
        if retried is not None:  # an earlier try of this task in this run registered the execution
            executions = [e.id for e in self.store.get_executions_by_context(retried.id)]
            recorded = {e.artifact_id for e in self.store.get_events_by_execution_ids(executions)
                        if e.type == metadata_store_pb2.Event.INPUT}
            inputs = not_recorded(inputs, recorded)
        return super().register_execution(pipeline_info, component_info, contexts, exec_properties, inputs)


class InProcessLauncher(in_process_component_launcher.InProcessComponentLauncher):
    """InProcessComponentLauncher over OneEventPerArtifactMetadata."""

    def __init__(self, **kwargs):
        connection: metadata.Metadata = kwargs.pop('metadata_connection')
        super().__init__(metadata_connection=OneEventPerArtifactMetadata(connection.connection_config), **kwargs)
