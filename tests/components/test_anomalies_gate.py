"""AnomaliesGate executor: decides from the validators' per-split verdicts, fails naming every
anomaly, passes the validated schema on."""
import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from petpark.components.anomalies_gate import component, executor


def anomalies_artifact(path, per_split, folder='Split-{}', verdicts=None):
    """An ExampleAnomalies artifact as ExampleValidator writes it: one SchemaDiff.pb per split and
    a `blessed` verdict each."""
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(path)
    artifact.split_names = artifact_utils.encode_split_names(list(per_split))
    for split, anomalies in per_split.items():
        directory = os.path.join(str(path), folder.format(split))
        os.makedirs(directory)
        with open(os.path.join(directory, 'SchemaDiff.pb'), 'wb') as f:
            f.write(anomalies.SerializeToString())
    if verdicts is None:
        verdicts = {split: int(not (a.anomaly_info or a.HasField('dataset_anomaly_info')))
                    for split, a in per_split.items()}
    artifact.set_json_value_custom_property('blessed', verdicts)
    return artifact


def anomaly(feature, short, description):
    result = anomalies_pb2.Anomalies()
    info = result.anomaly_info[feature]
    info.short_description = short
    info.description = description
    return result


def run(tmp_path, artifact):
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / 'schema')
    os.makedirs(schema.uri, exist_ok=True)
    with open(os.path.join(schema.uri, 'schema.pbtxt'), 'w') as f:
        f.write('feature { name: "label" type: BYTES }\n')
    validated = standard_artifacts.Schema()
    validated.uri = str(tmp_path / 'validated')
    inputs = {'anomalies': [artifact], 'schema': [schema]}
    executor.Executor().Do(inputs, {'validated_schema': [validated]}, {})
    return validated


def test_clean_splits_pass_and_the_schema_goes_on(tmp_path):
    validated = run(tmp_path, anomalies_artifact(tmp_path / 'a', {'train': anomalies_pb2.Anomalies(),
                                                                   'eval': anomalies_pb2.Anomalies()}))
    assert open(os.path.join(validated.uri, 'schema.pbtxt')).read().startswith('feature { name: "label"')
    assert validated.get_json_value_custom_property('validated_splits') == {'anomalies': {'train': 1, 'eval': 1}}


def test_anomalies_fail_the_execution_naming_split_feature_and_value(tmp_path):
    artifact = anomalies_artifact(tmp_path / 'a', {
        'train': anomaly('label', 'Unexpected string values', 'Examples contain values missing from the schema: rabbit'),
        'eval': anomaly('camera_id', 'Unexpected string values', 'values missing from the schema: cam-99')})
    with pytest.raises(executor.DataAnomaliesError) as error:
        run(tmp_path, artifact)
    message = str(error.value)
    assert "split train: feature 'label': Unexpected string values" in message and 'rabbit' in message
    assert "split eval: feature 'camera_id'" in message and 'cam-99' in message
    assert not os.path.exists(tmp_path / 'validated')


def test_dataset_level_anomaly_fails_too(tmp_path):
    dataset = anomalies_pb2.Anomalies()
    dataset.dataset_anomaly_info.short_description = 'Low number of examples'
    with pytest.raises(executor.DataAnomaliesError, match='dataset: Low number of examples'):
        run(tmp_path, anomalies_artifact(tmp_path / 'a', {'train': dataset}))


def test_the_verdict_is_what_the_validator_recorded(tmp_path):
    """A split the validator blessed passes whatever its file holds; one it did not bless fails."""
    noisy = anomaly('brightness', 'Out of range', 'values above 1')
    run(tmp_path / 'blessed', anomalies_artifact(tmp_path / 'a', {'train': noisy}, verdicts={'train': 1}))
    with pytest.raises(executor.DataAnomaliesError, match='split eval: \\(no anomalies file written\\)'):
        run(tmp_path / 'not', anomalies_artifact(tmp_path / 'b', {}, verdicts={'eval': 0}))


def test_an_artifact_without_verdicts_is_a_clear_error(tmp_path):
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path / 'old')
    with pytest.raises(executor.DataAnomaliesError, match='records no per-split "blessed" verdicts'):
        run(tmp_path, artifact)


def test_component_outputs_a_schema_for_the_transform():
    from tfx.types import channel
    gate = component.AnomaliesGate(anomalies=channel.Channel(type=standard_artifacts.ExampleAnomalies),
                                   schema=channel.Channel(type=standard_artifacts.Schema))
    assert gate.outputs['validated_schema'].type is standard_artifacts.Schema
