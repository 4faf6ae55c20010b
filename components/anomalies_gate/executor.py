"""AnomaliesGate executor: fails the execution when any checked split has anomalies."""
import os
from typing import Any, Dict, List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.components.example_validator.executor import DEFAULT_FILE_NAME
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

ANOMALIES_KEY = 'anomalies'


class DataAnomaliesError(RuntimeError):
    """The examples do not match the curated schema."""


def describe_anomalies(anomalies: anomalies_pb2.Anomalies) -> List[str]:
    """One line per anomalous feature (or the dataset), with TFDV's description."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        lines.append(f"feature '{feature}': {info.short_description} ({info.description})")
    if anomalies.HasField('dataset_anomaly_info'):
        info = anomalies.dataset_anomaly_info
        lines.append(f'dataset: {info.short_description} ({info.description})')
    return lines


def load_split_anomalies(artifact, split: str) -> anomalies_pb2.Anomalies:
    path = os.path.join(artifact_utils.get_split_uri([artifact], split), DEFAULT_FILE_NAME)
    anomalies = anomalies_pb2.Anomalies()
    with fileio.open(path, 'rb') as f:
        anomalies.ParseFromString(f.read())
    return anomalies


class Executor(base_executor.BaseExecutor):
    """Raises DataAnomaliesError naming every anomaly, split by split."""

    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        artifact = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
        problems = []
        for split in artifact_utils.decode_split_names(artifact.split_names):
            problems.extend(f'split {split}: {line}'
                            for line in describe_anomalies(load_split_anomalies(artifact, split)))
        if problems:
            raise DataAnomaliesError(
                'The examples do not match the curated schema; no model will be trained or pushed '
                f'from them. Anomalies ({artifact.uri}):\n  ' + '\n  '.join(problems))
