"""The facts record of a pushed model version, and what each component contributes to it.

A component that has something to say about a version puts it on its output artifact:
`contribute(artifact, section, values)` stores `{section: values}` as JSON in the artifact's
FACTS_PROPERTY (the ServingValidator's `serving_check`, the OnnxExporter's `edge`, ...). Facts
about TFX's standard artifacts (metrics, blessing, data, statistics, schema, hyperparameters) are
read by the reader of their type. `gather` merges both over whatever artifacts it is given, so
adding a component means adding a contribution, not changing this module. The ModelCardGenerator
gathers the record at push time and stores it on its ModelCard artifact; `petpark models` reads
it from MLMD without importing TensorFlow.

`prop` and `contributions` take an MLMD Artifact proto or a TFX artifact and import nothing heavy.
"""
import json
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

FACTS_PROPERTY = 'petpark_facts'
SLICE_COLUMNS = ('example_count', 'binary_accuracy', 'precision', 'recall', 'auc')
FAIRNESS_AT = '0.50'  # the decision threshold the card's fairness columns use
FAIRNESS_COLUMNS = (f'fairness_indicators_metrics/false_positive_rate@{FAIRNESS_AT}',
                    f'fairness_indicators_metrics/false_negative_rate@{FAIRNESS_AT}')


def _proto(artifact):
    return getattr(artifact, 'mlmd_artifact', artifact)


def prop(artifact, name: str, default=None):
    """A custom (or else declared) property's value, `default` when absent (or no artifact)."""
    if artifact is None:
        return default
    artifact = _proto(artifact)
    for properties in (artifact.custom_properties, artifact.properties):
        if name in properties:
            value = properties[name]
            kind = value.WhichOneof('value')
            return getattr(value, kind) if kind else default
    return default


def contributions(artifact) -> Dict[str, Any]:
    """The sections an artifact contributes to its version's facts ({} when none)."""
    text = prop(artifact, FACTS_PROPERTY)
    return json.loads(text) if text else {}


def contribute(artifact, section: str, values: Any) -> None:
    """Adds `{section: values}` (JSON-able) to a TFX artifact's contribution."""
    found = contributions(artifact)
    found[section] = values
    artifact.set_string_custom_property(FACTS_PROPERTY, json.dumps(found, sort_keys=True))


# -- readers of TFX's standard artifacts (TFMA, TFDV and TFX loaders; imported when called) ---------
def slice_metrics(evaluation_uri: str, class_id: int) -> List[Tuple[str, Dict[str, float]]]:
    """(slice name, {metric: value}) for the positive class `class_id`, overall first, then by name:
    the one reader of the Evaluator's metrics. The candidate's: with a baseline model the Evaluator
    also stores the baseline's metrics under the same names (and their differences)."""
    import tensorflow_model_analysis as tfma
    baseline = baseline_model_name(evaluation_uri)
    rows = []
    for result in tfma.load_metrics(evaluation_uri):
        values = {}
        for item in result.metric_keys_and_values:
            if item.key.HasField('sub_key') and item.key.sub_key.class_id.value != class_id:
                continue
            if baseline is not None and item.key.model_name == baseline:
                continue
            if item.value.HasField('double_value') and not item.key.is_diff:
                values[item.key.name] = item.value.double_value.value
        slice_name = ', '.join(f'{k}={v.decode() if isinstance(v, bytes) else v}'
                               for k, v in tfma.slicer.deserialize_slice_key(result.slice_key)) or 'overall'
        rows.append((slice_name, values))
    rows.sort(key=lambda row: (row[0] != 'overall', row[0]))
    return rows


def baseline_model_name(evaluation_uri: str) -> Optional[str]:
    """The name of the baseline model in the EvalConfig the Evaluator ran with; None without one."""
    from tensorflow_model_analysis.utils import model_util
    from tensorflow_model_analysis.writers import eval_config_writer
    spec = model_util.get_baseline_model_spec(eval_config_writer.load_eval_run(evaluation_uri)[0])
    return spec.name if spec is not None else None


def overall_metrics(evaluation_uri: str, class_id: int) -> Dict[str, float]:
    """The overall slice's metrics for the positive class `class_id`."""
    return dict(slice_metrics(evaluation_uri, class_id)).get('overall', {})


def thresholds(evaluation_uri: str) -> List[str]:
    """The blessing's thresholds, one line each, from the EvalConfig the Evaluator ran with."""
    from google.protobuf import text_format
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


def hyperparameters(artifact) -> Optional[Dict[str, Any]]:
    """The Tuner's best hyperparameters (values only); None without a Tuner."""
    from tfx.dsl.io import fileio
    from tfx.utils import io_utils
    if artifact is None:
        return None
    path = os.path.join(_proto(artifact).uri, 'best_hyperparameters.txt')
    if not fileio.exists(path):
        return None
    return json.loads(io_utils.read_string_file(path)).get('values')


def split_sizes(statistics) -> Dict[str, int]:
    """{split: examples} from StatisticsGen's statistics (TFX's loader)."""
    from tfx.components.statistics_gen import stats_artifact_utils
    from tfx.types import artifact_utils
    return {split: int(stats_artifact_utils.load_statistics(statistics, split).proto().datasets[0].num_examples)
            for split in artifact_utils.decode_split_names(statistics.split_names)}


def schema_features(schema) -> List[str]:
    """The schema's feature names (TFX's SchemaReader)."""
    from tfx.utils import io_utils
    return [f.name for f in io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri)).feature]


def _evaluation(evaluation, class_id: int) -> Dict[str, Any]:
    rows = slice_metrics(evaluation.uri, class_id)
    slices = [dict(slice=name, **{key: values.get(key) for key in SLICE_COLUMNS + FAIRNESS_COLUMNS})
              for name, values in rows]
    overall = dict(rows).get('overall', {})
    sliced = [s for s in slices if s['slice'] != 'overall' and s['binary_accuracy'] is not None]
    worst = min(sliced, key=lambda s: (s['binary_accuracy'], -(s['example_count'] or 0)), default=None)
    return {'metrics': {key: overall.get(key) for key in SLICE_COLUMNS}, 'worst_slice': worst, 'slices': slices,
            'blessing': {'thresholds': thresholds(evaluation.uri)}}


def _blessing(blessing, class_id: int) -> Dict[str, Any]:
    from tfx.components.util import model_utils
    return {'blessing': {'blessed': model_utils.is_model_blessed(blessing),
                         'baseline_model_id': prop(blessing, 'baseline_model_id')}}


def _examples(examples, class_id: int) -> Dict[str, Any]:
    return {'data': {'examples_uri': examples.uri, 'span': prop(examples, 'span'),
                     'data_version': prop(examples, 'version')}}


def _statistics(statistics, class_id: int) -> Dict[str, Any]:
    return {'data': {'splits': split_sizes(statistics), 'statistics_uri': statistics.uri}}


def _schema(schema, class_id: int) -> Dict[str, Any]:
    return {'schema': {'uri': schema.uri, 'features': schema_features(schema)}}


def _hyperparameters(artifact, class_id: int) -> Dict[str, Any]:
    return {'hyperparameters': hyperparameters(artifact)}


def _pushed(pushed, class_id: int) -> Dict[str, Any]:
    return {'version': prop(pushed, 'pushed_version'), 'destination': prop(pushed, 'pushed_destination')}


# TFX artifact type name -> the facts its reader gives
READERS: Dict[str, Callable[[Any, int], Dict[str, Any]]] = {
    'PushedModel': _pushed, 'ModelEvaluation': _evaluation, 'ModelBlessing': _blessing, 'Examples': _examples,
    'ExampleStatistics': _statistics, 'Schema': _schema, 'HyperParameters': _hyperparameters,
}
EMPTY = {'version': None, 'destination': None, 'metrics': {}, 'worst_slice': None, 'slices': [],
         'blessing': {'blessed': False, 'thresholds': [], 'baseline_model_id': None}, 'serving_check': None,
         'hyperparameters': None, 'data': {'examples_uri': None, 'span': None, 'data_version': None, 'splits': {},
                                           'statistics_uri': None},
         'schema': {'uri': None, 'features': []}, 'edge': None}


def merge(record: Dict[str, Any], found: Dict[str, Any]) -> Dict[str, Any]:
    """`record` with `found`'s sections laid over it (dict sections merged one level deep)."""
    for key, value in found.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = dict(record[key], **value)
        else:
            record[key] = value
    return record


def gather(artifacts: Iterable, *, model_name: str, code_version: str, class_id: int) -> Dict[str, Any]:
    """The version's facts from TFX artifacts: each standard type's reader, then every contribution."""
    record = json.loads(json.dumps(EMPTY))
    record.update(model_name=model_name, code_version=code_version)
    artifacts = [a for a in artifacts if a is not None]
    for artifact in artifacts:
        reader = READERS.get(artifact.type_name)
        if reader is not None:
            merge(record, reader(artifact, class_id))
    for artifact in artifacts:
        merge(record, contributions(artifact))
    return record
