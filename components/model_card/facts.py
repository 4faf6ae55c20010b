"""The facts about one pushed model version, read from its artifacts (MLMD records).

The ModelCardGenerator renders them at push time; `petpark models` gathers the same artifacts
through MLMD lineage and calls the same functions, so a card and the registry cannot disagree.
Every function takes MLMD Artifact protos (TFX artifacts: `.mlmd_artifact`).
"""
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from google.protobuf import text_format
from ml_metadata.proto import metadata_store_pb2

Artifact = metadata_store_pb2.Artifact
SLICE_COLUMNS = ('example_count', 'binary_accuracy', 'precision', 'recall', 'auc')
FAIRNESS_AT = '0.50'  # the decision threshold the card's fairness columns use
FAIRNESS_COLUMNS = (f'fairness_indicators_metrics/false_positive_rate@{FAIRNESS_AT}',
                    f'fairness_indicators_metrics/false_negative_rate@{FAIRNESS_AT}')


def prop(artifact: Optional[Artifact], name: str, default=None):
    """A custom (or else declared) property's value, `default` when absent."""
    if artifact is None:
        return default
    for properties in (artifact.custom_properties, artifact.properties):
        if name in properties:
            value = properties[name]
            kind = value.WhichOneof('value')
            return getattr(value, kind) if kind else default
    return default


def slice_metrics(evaluation_uri: str, class_id: int) -> List[Tuple[str, Dict[str, float]]]:
    """(slice name, {metric: value}) for the positive class `class_id`, overall first, then by name."""
    import tensorflow_model_analysis as tfma
    rows = []
    for result in tfma.load_metrics(evaluation_uri):
        values = {}
        for item in result.metric_keys_and_values:
            if item.key.HasField('sub_key') and item.key.sub_key.class_id.value != class_id:
                continue
            if item.value.HasField('double_value') and not item.key.is_diff:
                values[item.key.name] = item.value.double_value.value
        slice_name = ', '.join(f'{k}={v.decode() if isinstance(v, bytes) else v}'
                               for k, v in tfma.slicer.deserialize_slice_key(result.slice_key)) or 'overall'
        rows.append((slice_name, values))
    rows.sort(key=lambda row: (row[0] != 'overall', row[0]))
    return rows


def thresholds(evaluation_uri: str) -> List[str]:
    """The blessing's thresholds, one line each, from the EvalConfig the Evaluator ran with."""
    from tensorflow_model_analysis.writers import eval_config_writer
    config = eval_config_writer.load_eval_run(evaluation_uri)[0]
    lines = []
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            for per_slice in metric.per_slice_thresholds:
                slices = ', '.join(text_format.MessageToString(s, as_one_line=True) or 'overall'
                                   for s in per_slice.slicing_specs)
                threshold = text_format.MessageToString(per_slice.threshold, as_one_line=True)
                lines.append(f'{metric.class_name} on {slices}: {threshold}')
    return lines


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    from tfx.dsl.io import fileio
    if not fileio.exists(path):
        return None
    with fileio.open(path) as f:
        return json.load(f)


def hyperparameters(artifact: Optional[Artifact]) -> Optional[Dict[str, Any]]:
    """The Tuner's best hyperparameters (values only); None without a Tuner."""
    if artifact is None:
        return None
    found = _read_json(os.path.join(artifact.uri, 'best_hyperparameters.txt'))
    return found.get('values') if found else None


def split_sizes(statistics: Optional[Artifact]) -> Dict[str, int]:
    """{split: examples} from StatisticsGen's statistics."""
    if statistics is None:
        return {}
    from tensorflow_data_validation import load_stats_binary
    from tfx.dsl.io import fileio
    sizes = {}
    for split in json.loads(prop(statistics, 'split_names', '[]')):
        path = os.path.join(statistics.uri, f'Split-{split}', 'FeatureStats.pb')
        if fileio.exists(path):
            sizes[split] = int(load_stats_binary(path).datasets[0].num_examples)
    return sizes


def schema_features(schema: Optional[Artifact]) -> List[str]:
    if schema is None:
        return []
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils
    return [f.name for f in io_utils.parse_pbtxt_file(os.path.join(schema.uri, 'schema.pbtxt'),
                                                      schema_pb2.Schema()).feature]


def gather(*, model_name: str, pushed: Artifact, evaluation: Artifact, blessing: Artifact, examples: Artifact,
           statistics: Optional[Artifact], schema: Optional[Artifact], hyperparameters_artifact: Optional[Artifact],
           infra_blessing: Optional[Artifact], onnx_model: Optional[Artifact], code_version: str,
           class_id: int) -> Dict[str, Any]:
    """Everything a card shows and `petpark models show` prints, as JSON-ready values."""
    rows = slice_metrics(evaluation.uri, class_id)
    slices = [dict(slice=name, **{key: values.get(key) for key in SLICE_COLUMNS + FAIRNESS_COLUMNS})
              for name, values in rows]
    overall = next((dict(values) for name, values in rows if name == 'overall'), {})
    sliced = [s for s in slices if s['slice'] != 'overall' and s['binary_accuracy'] is not None]
    worst = min(sliced, key=lambda s: (s['binary_accuracy'], -(s['example_count'] or 0)), default=None)
    infra = None
    if infra_blessing is not None:
        infra = {'blessed': bool(prop(infra_blessing, 'blessed', 0)), 'server': prop(infra_blessing, 'server'),
                 'latency_p50_ms': prop(infra_blessing, 'latency_p50_ms'),
                 'latency_p99_ms': prop(infra_blessing, 'latency_p99_ms'),
                 'requests': prop(infra_blessing, 'requests'), 'reason': prop(infra_blessing, 'reason')}
    edge = None
    if onnx_model is not None and prop(onnx_model, 'exported', 0):
        edge = {'destination': prop(onnx_model, 'edge_destination'), 'opset': prop(onnx_model, 'opset'),
                'int8': bool(prop(onnx_model, 'int8_shipped', 0)),
                'parity_max_abs_difference': prop(onnx_model, 'parity_max_abs_difference')}
    return {
        'model_name': model_name,
        'version': prop(pushed, 'pushed_version'),
        'destination': prop(pushed, 'pushed_destination'),
        'metrics': {key: overall.get(key) for key in SLICE_COLUMNS},
        'worst_slice': worst,
        'slices': slices,
        'blessing': {'blessed': bool(prop(blessing, 'blessed', 0)), 'thresholds': thresholds(evaluation.uri),
                     'baseline_model_id': prop(blessing, 'baseline_model_id')},
        'serving_check': infra,
        'hyperparameters': hyperparameters(hyperparameters_artifact),
        'data': {'examples_uri': examples.uri, 'span': prop(examples, 'span'), 'data_version': prop(examples, 'version'),
                 'splits': split_sizes(statistics), 'statistics_uri': statistics.uri if statistics else None},
        'schema': {'uri': schema.uri if schema else None, 'features': schema_features(schema)},
        'code_version': code_version,
        'edge': edge,
    }
