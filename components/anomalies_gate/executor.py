"""AnomaliesGate executor: reads ExampleValidator's per-split `blessed` verdicts; fails when any
split is not blessed, naming every anomaly; otherwise passes the schema on."""
import os
from typing import Any, Dict, List, Optional

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.components.example_validator import executor as example_validator
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils
from tfx.utils import io_utils

ANOMALIES_KEY = 'anomalies'
SCHEMA_KEY = 'schema'
VALIDATED_SCHEMA_KEY = 'validated_schema'
BLESSED_PROPERTY = example_validator.ARTIFACT_PROPERTY_BLESSED_KEY
NOT_BLESSED = example_validator.NOT_BLESSED_VALUE
MAX_SHOWN_CHARACTERS = 300  # of one anomaly's description: a value from data may be any length


class DataAnomaliesError(RuntimeError):
    """The examples do not match the curated schema."""


def shortened(text: str, limit: int = MAX_SHOWN_CHARACTERS) -> str:
    """`text`, cut to `limit` characters with a note of how many were left out."""
    return text if len(text) <= limit else f'{text[:limit]}... ({len(text) - limit} more characters)'


def describe_anomalies(anomalies: anomalies_pb2.Anomalies) -> List[str]:
    """One line per anomalous feature (or the dataset), with TFDV's description."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        lines.append(f"feature '{shortened(feature, 100)}': {info.short_description} ({shortened(info.description)})")
    if anomalies.HasField('dataset_anomaly_info'):
        info = anomalies.dataset_anomaly_info
        lines.append(f'dataset: {info.short_description} ({shortened(info.description)})')
    return lines


def verdicts(anomalies: artifact.Artifact) -> Dict[str, int]:
    """{split: verdict} as the validator recorded it in the artifact's `blessed` property."""
    recorded = anomalies.get_json_value_custom_property(BLESSED_PROPERTY)
    if not isinstance(recorded, dict) or not recorded:
        raise DataAnomaliesError(
            f'{anomalies.uri}: the anomalies artifact records no per-split "{BLESSED_PROPERTY}" verdicts '
            '(ExampleValidator of TFX 1.14 or later writes them)')
    return {split: int(value) for split, value in recorded.items()}


def _load(anomalies: artifact.Artifact, split: str) -> Optional[anomalies_pb2.Anomalies]:
    try:
        folder = artifact_utils.get_split_uri([anomalies], split)
    except ValueError:  # a verdict for a split the artifact does not list
        return None
    path = os.path.join(folder, example_validator.DEFAULT_FILE_NAME)
    if not fileio.exists(path):
        return None
    return anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))


def problems(anomalies: artifact.Artifact) -> List[str]:
    """Lines naming each anomaly of each split the validator did not bless."""
    lines = []
    for split, verdict in sorted(verdicts(anomalies).items()):
        if verdict != NOT_BLESSED:
            continue
        found = _load(anomalies, split)
        details = describe_anomalies(found) if found is not None else ['(no anomalies file written)']
        lines.extend(f'split {split}: {line}' for line in details)
    return lines


class Executor(base_executor.BaseExecutor):
    """Raises DataAnomaliesError naming every anomaly, split by split; else copies the schema."""

    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        anomalies = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
        checked = {ANOMALIES_KEY: verdicts(anomalies)}
        found = problems(anomalies)
        if found:
            raise DataAnomaliesError(
                'The examples failed data validation; no model will be trained or pushed from them. '
                f'Anomalies ({anomalies.uri}):\n  ' + '\n  '.join(found))
        validated = artifact_utils.get_single_instance(output_dict[VALIDATED_SCHEMA_KEY])
        io_utils.copy_dir(artifact_utils.get_single_uri(input_dict[SCHEMA_KEY]), validated.uri)
        validated.set_json_value_custom_property('validated_splits', checked)
