"""MonitoringBaselineGen without a pipeline: a baseline from a trained model and its data, on a local
and on a non-local filesystem; nothing for a version that was not pushed."""
import json
import os

import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.dsl.io import fileio
from tfx.types import channel, standard_artifacts

from petpark.components.common import facts
from petpark.components.common.artifacts import MonitoringBaseline
from petpark.components.monitoring_baseline import component, drift, executor
from petpark.pipeline.inspection import summary
from petpark.pipeline.inspection.analysis import tfx_artifact

SIZES = (8, 32)


@pytest.fixture(scope='module')
def inputs(transformed, trained_model):
    """The baseline's inputs from the session's small pipeline (up to Transform) and trained model."""
    run = summary.latest_run(os.path.join(transformed['home'], 'metadata.sqlite'), 'modules_fixture')
    pushed = standard_artifacts.PushedModel()
    pushed.set_int_custom_property('pushed', 1)
    pushed.set_string_custom_property('pushed_version', '1800000000')
    return {'pushed_model': [pushed], 'model': [trained_model], 'examples': [transformed['raw_examples']],
            'statistics': [tfx_artifact(run.output('StatisticsGen', 'statistics'), standard_artifacts.ExampleStatistics)],
            'schema': [tfx_artifact(run.output('AnomaliesGate', 'validated_schema'), standard_artifacts.Schema)]}


def run_baseline(inputs, uri, **parameters):
    spec = component.MonitoringBaselineGen(
        *[channel.Channel(type=t) for t in (standard_artifacts.PushedModel, standard_artifacts.Model,
                                            standard_artifacts.Examples, standard_artifacts.ExampleStatistics,
                                            standard_artifacts.Schema)],
        split='eval', slice_features=['lighting', 'camera_id'], window_sizes=SIZES, windows_per_size=6,
        **parameters)
    baseline = MonitoringBaseline()
    baseline.uri = uri
    executor.Executor().Do(inputs, {'baseline': [baseline]}, dict(spec.exec_properties))
    return baseline


def test_a_baseline_holds_references_and_a_threshold_per_check_and_size(inputs, tmp_path):
    baseline = run_baseline(inputs, str(tmp_path / 'baseline'))
    record = json.load(open(tmp_path / 'baseline' / executor.BASELINE_FILE))
    checks = {f'skew:{f}' for f in ('brightness', 'resolution_bucket', 'aspect_bucket', 'is_grayscale', 'lighting',
                                    'camera_id')}
    assert checks | {'prediction:score', 'prediction:uncertain'} <= set(record['thresholds'])
    for check, table in record['thresholds'].items():
        assert sorted(table, key=int) == [str(n) for n in SIZES], check
        floor = drift.FLOORS['share'] if 'uncertain' in check else min(drift.FLOORS.values())
        assert all(value >= floor for value in table.values()), check
    assert record['model_version'] == '1800000000' and record['min_window'] == SIZES[0]
    assert sum(record['scores']['histogram']) == record['examples'] > 0
    shares = record['slices']['lighting']
    assert sum(v['share'] for v in shares.values()) == pytest.approx(1.0)
    training = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        open(tmp_path / 'baseline' / executor.TRAINING_STATISTICS_FILE, 'rb').read())
    assert training.datasets[0].num_examples > record['examples']  # the train split, not the evaluated one
    assert baseline.get_int_custom_property('written') == 1
    assert facts.contributions(baseline)['monitoring_baseline']['min_window'] == SIZES[0]


def test_a_baseline_is_written_through_fileio_on_any_filesystem(inputs):
    uri = 'ram://monitoring_baseline_test/baseline'
    run_baseline(inputs, uri)
    record = json.loads(fileio.open(os.path.join(uri, executor.BASELINE_FILE)).read())
    assert record['format'] == executor.FORMAT
    assert fileio.exists(os.path.join(uri, executor.TRAINING_STATISTICS_FILE))
    assert tf.io.gfile.exists(os.path.join(uri, executor.SCHEMA_FILE))


def test_nothing_pushed_records_no_baseline(inputs, tmp_path):
    unpushed = standard_artifacts.PushedModel()
    unpushed.set_int_custom_property('pushed', 0)
    baseline = run_baseline(dict(inputs, pushed_model=[unpushed]), str(tmp_path / 'none'))
    assert baseline.get_int_custom_property('written') == 0 and not os.path.exists(tmp_path / 'none')


def test_bad_parameters_are_refused():
    channels = [channel.Channel(type=t) for t in (standard_artifacts.PushedModel, standard_artifacts.Model,
                                                  standard_artifacts.Examples, standard_artifacts.ExampleStatistics,
                                                  standard_artifacts.Schema)]
    with pytest.raises(ValueError, match='window_sizes'):
        component.MonitoringBaselineGen(*channels, window_sizes=())
    with pytest.raises(ValueError, match='false_alarm_rate'):
        component.MonitoringBaselineGen(*channels, false_alarm_rate=1.5)
