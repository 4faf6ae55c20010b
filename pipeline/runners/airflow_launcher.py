"""The launcher of petpark's Airflow tasks: TFX's in-process launcher, one MLMD event per input artifact.

Airflow runs TFX's legacy launchers, whose metadata layer records one INPUT event per (input key,
artifact). When training is cached, the candidate model is also the latest blessed model, so the
Evaluator gets the same artifact as `model` and `baseline_model`, and MLMD rejects the second event
(`AlreadyExistsError: Given event already exists`), failing every run with no new data. Here an
artifact already recorded under an earlier key of the same execution is not recorded again; the
executor still receives both inputs.

An Airflow retry of a task meets the same error: TFX reuses the execution the failed try
registered and records its input events again. Inputs that execution already has are not
recorded twice. The failed try also left its output artifacts registered (pending) under the names
the retry gives its own (`<key>:<run id>`, unique per type in MLMD); the retry's are named
`<key>:<run id>:try-N`, and the next task takes the published ones as its inputs, not those left
pending. So a retried task runs, and the tasks after it too.
"""
from typing import Dict, List, Optional, Set

from ml_metadata import errors
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.orchestration import metadata
from tfx.orchestration.launcher import in_process_component_launcher
from tfx.types.artifact import ArtifactState


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


def renamed_for_retry(store, output_artifacts: Optional[Dict[str, List[types.Artifact]]]) -> None:
    """Gives each new output artifact whose name (`<key>:<run id>`) an earlier try of the task took
    the name `<key>:<run id>:try-N`, so MLMD's unique (type, name) holds."""
    for artifacts in (output_artifacts or {}).values():
        for artifact in artifacts:
            if artifact.id or not artifact.name:
                continue
            base, attempt = artifact.name, 1
            while _named(store, artifact.type_name, artifact.name):
                attempt += 1
                artifact.name = f'{base}:try-{attempt}'


def _named(store, type_name: str, name: str) -> bool:
    try:
        return store.get_artifact_by_type_and_name(type_name, name) is not None
    except errors.NotFoundError:  # the type itself is new
        return False


class OneEventPerArtifactMetadata(metadata.Metadata):
    """TFX's legacy Metadata; registers each input artifact of an execution once, retries included,
    and names the outputs of a retried try apart from those the failed try left pending."""

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

    def update_execution(self, execution, component_info, input_artifacts=None, output_artifacts=None, **more):
        renamed_for_retry(self.store, output_artifacts)
        return super().update_execution(execution, component_info, input_artifacts, output_artifacts, **more)

    def search_artifacts(self, artifact_name, pipeline_info, producer_component_id):
        """The producer's outputs under `artifact_name` in this run: its published ones, when it has
        any (not those a failed try left pending beside them)."""
        found = super().search_artifacts(artifact_name, pipeline_info, producer_component_id)
        published = [artifact for artifact in found if artifact.state == ArtifactState.PUBLISHED]
        return published or found


class InProcessLauncher(in_process_component_launcher.InProcessComponentLauncher):
    """InProcessComponentLauncher over OneEventPerArtifactMetadata."""

    def __init__(self, **kwargs):
        connection: metadata.Metadata = kwargs.pop('metadata_connection')
        super().__init__(metadata_connection=OneEventPerArtifactMetadata(connection.connection_config), **kwargs)
