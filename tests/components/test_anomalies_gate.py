"""AnomaliesGate executor: passes clean splits, fails naming every anomaly."""
import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from components.anomalies_gate import executor


def anomalies_artifact(tmp_path, per_split):
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path)
    artifact.split_names = artifact_utils.encode_split_names(list(per_split))
    for split, anomalies in per_split.items():
        directory = os.path.join(str(tmp_path), f'Split-{split}')
        os.makedirs(directory)
        with open(os.path.join(directory, 'SchemaDiff.pb'), 'wb') as f:
            f.write(anomalies.SerializeToString())
    return artifact


def anomaly(feature, short, description):
    result = anomalies_pb2.Anomalies()
    info = result.anomaly_info[feature]
    info.short_description = short
    info.description = description
    return result


def run(artifact):
    executor.Executor().Do({'anomalies': [artifact]}, {}, {})


def test_clean_splits_pass(tmp_path):
    run(anomalies_artifact(tmp_path, {'train': anomalies_pb2.Anomalies(), 'eval': anomalies_pb2.Anomalies()}))


def test_anomalies_fail_the_execution_naming_split_feature_and_value(tmp_path):
    artifact = anomalies_artifact(tmp_path, {
        'train': anomaly('label', 'Unexpected string values', 'Examples contain values missing from the schema: rabbit'),
        'eval': anomaly('camera_id', 'Unexpected string values', 'values missing from the schema: cam-99')})
    with pytest.raises(executor.DataAnomaliesError) as error:
        run(artifact)
    message = str(error.value)
    assert "split train: feature 'label': Unexpected string values" in message and 'rabbit' in message
    assert "split eval: feature 'camera_id'" in message and 'cam-99' in message


def test_dataset_level_anomaly_fails_too(tmp_path):
    dataset = anomalies_pb2.Anomalies()
    dataset.dataset_anomaly_info.short_description = 'Low number of examples'
    with pytest.raises(executor.DataAnomaliesError, match='dataset: Low number of examples'):
        run(anomalies_artifact(tmp_path, {'train': dataset}))
