"""MonitoringBaselineGen executor: reference statistics, reference scores, per-slice accuracy and
calibrated thresholds of a pushed version, in one artifact the monitor reads."""
import json
import os
from typing import Any, Dict, List, Tuple

import numpy as np
from absl import logging
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils
from tfx.utils import io_utils, path_utils

from petpark.components.common import facts, storage
from petpark.components.monitoring_baseline import drift

PUSHED_MODEL_KEY, MODEL_KEY, EXAMPLES_KEY = 'pushed_model', 'model', 'examples'
STATISTICS_KEY, EVALUATION_KEY, SCHEMA_KEY, BASELINE_KEY = 'statistics', 'evaluation', 'schema', 'baseline'
BASELINE_FILE = 'baseline.json'
TRAINING_STATISTICS_FILE = 'training_statistics.pb'
SCHEMA_FILE = 'schema.pbtxt'
FORMAT = 'petpark-monitoring-baseline/1'
TRAINING_SPLIT = 'train'


def _value(feature) -> Any:
    """A tf.Example feature's first value (None when empty)."""
    kind = feature.WhichOneof('kind')
    values = getattr(feature, kind).value if kind else []
    if not values:
        return None
    value = values[0]
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else value


def read_split(examples: artifact.Artifact, split: str, names: List[str], limit: int) -> Tuple[Dict[str, list], List[bytes]]:
    """({feature: values} of `names`, serialized examples) of the first `limit` examples of a split."""
    import tensorflow as tf
    files = fileio.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*'))
    columns: Dict[str, list] = {name: [] for name in names}
    serialized = []
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP').take(limit):
        data = record.numpy()
        feature = tf.train.Example.FromString(data).features.feature
        for name in names:
            columns[name].append(_value(feature[name]) if name in feature else None)
        serialized.append(data)
    if not serialized:
        raise ValueError(f'Split {split!r} of {examples.uri} holds no examples')
    return columns, serialized


def scores(model_uri: str, serialized: List[bytes], class_id: int, batch_size: int = 64) -> np.ndarray:
    """P(class_id) from the model's serving_default signature (serialized tf.Examples in)."""
    import tensorflow as tf
    signature = tf.saved_model.load(path_utils.serving_model_path(model_uri)).signatures['serving_default']
    name = next(iter(signature.structured_input_signature[1]))
    found = [signature(**{name: tf.constant(serialized[i:i + batch_size])})['scores'].numpy()[:, class_id]
             for i in range(0, len(serialized), batch_size)]
    return np.concatenate(found).astype(np.float32)


def slice_accuracy(evaluation_uri: str, class_id: int, features: List[str]) -> Tuple[Dict[str, Dict[str, dict]], float]:
    """({feature: {value: {accuracy, example_count}}} for single-feature slices, overall accuracy)."""
    rows = facts.slice_metrics(evaluation_uri, class_id)
    found: Dict[str, Dict[str, dict]] = {}
    for name, values in rows:
        if ', ' in name or '=' not in name:
            continue
        feature, value = name.split('=', 1)
        if feature in features and values.get('binary_accuracy') is not None:
            found.setdefault(feature, {})[value] = {'accuracy': values['binary_accuracy'],
                                                    'example_count': values.get('example_count')}
    return found, dict(rows).get('overall', {}).get('binary_accuracy')


class Executor(base_executor.BaseExecutor):
    """See component.MonitoringBaselineGen."""

    def Do(self, input_dict: Dict[str, List[artifact.Artifact]], output_dict: Dict[str, List[artifact.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        import pandas as pd
        baseline = artifact_utils.get_single_instance(output_dict[BASELINE_KEY])
        pushed = artifact_utils.get_single_instance(input_dict[PUSHED_MODEL_KEY])
        if not facts.prop(pushed, 'pushed', 0):
            baseline.set_int_custom_property('written', 0)
            logging.info('MonitoringBaselineGen: nothing was pushed; no baseline.')
            return
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        statistics = artifact_utils.get_single_instance(input_dict[STATISTICS_KEY])
        evaluation = (input_dict.get(EVALUATION_KEY) or [None])[0]
        schema_artifact = artifact_utils.get_single_instance(input_dict[SCHEMA_KEY])
        schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema_artifact.uri))
        class_id, split = int(exec_properties['positive_class_id']), exec_properties['split']
        slice_features = json.loads(exec_properties['slice_features'])
        monitored = sorted(set(drift.comparators(schema, 'skew')) | set(drift.comparators(schema, 'drift')))
        columns, serialized = read_split(examples, split, sorted(set(monitored) | set(slice_features)),
                                         int(exec_properties['max_examples']))
        held_scores = scores(model.uri, serialized, class_id)
        held_out = pd.DataFrame({name: columns[name] for name in monitored})
        held_out[drift.SCORE_FEATURE] = held_scores
        held_out = held_out.dropna(axis=1, how='all')
        training = stats_artifact_utils.load_statistics(statistics, TRAINING_SPLIT).proto()
        sizes = json.loads(exec_properties['window_sizes'])
        thresholds, null = drift.calibrate(held_out, training, schema, sizes,
                                           int(exec_properties['windows_per_size']),
                                           float(exec_properties['false_alarm_rate']), int(exec_properties['seed']))
        accuracy, overall = slice_accuracy(evaluation.uri, class_id, slice_features) if evaluation else ({}, None)
        for feature in slice_features:
            values = [v for v in columns.get(feature, []) if v is not None]
            for value, count in zip(*np.unique(np.asarray(values, dtype=str), return_counts=True)) if values else []:
                accuracy.setdefault(feature, {}).setdefault(str(value), {'accuracy': None, 'example_count': None})[
                    'share'] = float(count) / len(serialized)
        record = {
            'format': FORMAT, 'model_version': facts.prop(pushed, 'pushed_version'), 'model_uri': model.uri,
            'split': split, 'examples': len(serialized), 'positive_class_id': class_id,
            'training_statistics': {'uri': statistics.uri, 'split': TRAINING_SPLIT},
            'scores': {'histogram': drift.score_histogram(held_scores).tolist(),
                       'bins': drift.SCORE_BINS.tolist(), 'uncertain_share': drift.uncertain_share(held_scores),
                       'uncertain_band': drift.UNCERTAIN_BAND, 'mean': float(held_scores.mean())},
            'overall_accuracy': overall, 'slices': accuracy,
            'checks': {'skew': drift.comparators(schema, 'skew'), 'drift': drift.comparators(schema, 'drift'),
                       'prediction': {drift.SCORE_FEATURE: 'jensen_shannon_divergence', drift.UNCERTAIN_FEATURE: 'share'}},
            'thresholds': thresholds, 'in_distribution': null, 'window_sizes': sizes, 'min_window': min(sizes),
            'false_alarm_rate': float(exec_properties['false_alarm_rate']),
        }
        with storage.local_stage(baseline.uri) as stage:
            with open(os.path.join(stage, TRAINING_STATISTICS_FILE), 'wb') as f:
                f.write(training.SerializeToString())
            io_utils.write_pbtxt_file(os.path.join(stage, SCHEMA_FILE), schema)
            with open(os.path.join(stage, BASELINE_FILE), 'w') as f:  # last: marks the baseline complete
                json.dump(record, f, indent=1, sort_keys=True)
        baseline.set_int_custom_property('written', 1)
        baseline.set_string_custom_property('model_version', record['model_version'])
        facts.contribute(baseline, 'monitoring_baseline', {
            'uri': baseline.uri, 'split': split, 'examples': len(serialized), 'min_window': min(sizes),
            'false_alarm_rate': record['false_alarm_rate'], 'uncertain_share': record['scores']['uncertain_share']})
        logging.info('MonitoringBaselineGen: %d %s examples, %d checks calibrated for windows of %s frames',
                     len(serialized), split, len(thresholds), sizes)
