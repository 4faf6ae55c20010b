"""What the analysts' notebooks read, found through MLMD from PETPARK_HOME (never by path).

notebooks/data_validation.ipynb and notebooks/model_analysis.ipynb call these; `petpark report`
executes both and renders them to HTML under <home>/reports/.
"""
import glob
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from petpark.components.model_card import facts
from petpark.modules import features
from petpark.pipeline import config, registry, summary

NOTEBOOKS = ('data_validation', 'model_analysis')


def settings() -> config.Settings:
    """The settings of the environment (PETPARK_HOME first); the data folder may be gone."""
    found = config.Settings.from_env(check_data_root=False)
    if not os.path.isfile(found.metadata_path):
        raise ValueError(f'No metadata store at {found.metadata_path}: run the pipeline first or set PETPARK_HOME')
    return found


def latest_run(current: config.Settings, having: Optional[Tuple[str, str]] = None) -> summary.RunRecord:
    """The newest run; with `having` (node, output key), the newest that produced that output."""
    return summary.latest_run(current.metadata_path, current.pipeline_name, having)


def required(run: summary.RunRecord, node: str, key: str):
    artifact = run.output(node, key)
    if artifact is None:
        raise ValueError(f'The latest run ({run.run_id}) has no {node} output {key!r}: it stopped before {node}')
    return artifact


def split_statistics(statistics_artifact) -> Dict[str, object]:
    """{split: DatasetFeatureStatisticsList} of an ExampleStatistics artifact."""
    import tensorflow_data_validation as tfdv
    return {os.path.basename(folder)[len('Split-'):]: tfdv.load_stats_binary(os.path.join(folder, 'FeatureStats.pb'))
            for folder in sorted(glob.glob(os.path.join(statistics_artifact.uri, 'Split-*')))}


def schema(run: summary.RunRecord):
    import tensorflow_data_validation as tfdv
    return tfdv.load_schema_text(os.path.join(required(run, 'ImportSchemaGen', 'schema').uri, 'schema.pbtxt'))


def anomalies(run: summary.RunRecord) -> Dict[str, object]:
    """{split: Anomalies} the ExampleValidator found in `run`."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    artifact = required(run, 'ExampleValidator', 'anomalies')
    found = {}
    for folder in sorted(glob.glob(os.path.join(artifact.uri, 'Split-*'))):
        with open(os.path.join(folder, 'SchemaDiff.pb'), 'rb') as f:
            found[os.path.basename(folder)[len('Split-'):]] = anomalies_pb2.Anomalies.FromString(f.read())
    return found


def statistics_by_span(current: config.Settings) -> List[Tuple[int, object]]:
    """[(span, ExampleStatistics artifact)], one per span (its newest), oldest span first."""
    lineage = registry.Lineage(current.metadata_path, current.pipeline_name)
    newest: Dict[int, object] = {}
    for artifact in sorted(lineage.store.get_artifacts_by_type('ExampleStatistics'), key=lambda a: a.id):
        examples = lineage.input_of_producer(artifact, 'examples')
        if examples is not None and examples.uri.startswith(current.pipeline_root):
            newest[int(facts.prop(examples, 'span', 0))] = artifact
    return sorted(newest.items())


def eval_result(run: summary.RunRecord):
    import tensorflow_model_analysis as tfma
    return tfma.load_eval_result(required(run, 'Evaluator', 'evaluation').uri)


def slice_table(run: summary.RunRecord):
    """pandas DataFrame: one row per slice, the metrics and Fairness Indicators at 0.5 for P(dog)."""
    import pandas as pd
    rows = facts.slice_metrics(required(run, 'Evaluator', 'evaluation').uri, features.POSITIVE_CLASS_ID)
    columns = facts.SLICE_COLUMNS + facts.FAIRNESS_COLUMNS
    return pd.DataFrame([dict(slice=name, **{c.split('/')[-1]: values.get(c) for c in columns}) for name, values in rows])


def blessing(run: summary.RunRecord) -> Dict[str, object]:
    """The Evaluator's verdict, its thresholds and the baseline it compared with."""
    verdict = required(run, 'Evaluator', 'blessing')
    return {'blessed': bool(facts.prop(verdict, 'blessed', 0)),
            'thresholds': facts.thresholds(required(run, 'Evaluator', 'evaluation').uri),
            'baseline_model_id': facts.prop(verdict, 'baseline_model_id')}


def pushed_versions(current: config.Settings) -> List[registry.Record]:
    """Every pushed version, oldest first (the registry's records)."""
    return registry.records(current)


def predictions(run: summary.RunRecord, limit: Optional[int] = None) -> List[Dict[str, object]]:
    """[{image_id, label, p_dog, image}] for the split the Evaluator used (eval, or the hold-out
    `validation`), scored by the run's trained model."""
    import tensorflow as tf
    examples = required(run, 'ImageExampleGen', 'examples')
    model_uri = os.path.join(required(run, 'Trainer', 'model').uri, 'Format-Serving')
    score = tf.saved_model.load(model_uri).signatures[features.IMAGE_BYTES_SIGNATURE]
    split = summary.evaluated_split(run).split(', ')[0]
    files = sorted(glob.glob(os.path.join(examples.uri, f'Split-{split}', '*')))
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP').take(limit or -1):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append({'image_id': feature[features.IMAGE_ID_KEY].bytes_list.value[0].decode(),
                     'label': feature[features.LABEL_KEY].bytes_list.value[0].decode(),
                     'image': feature[features.IMAGE_KEY].bytes_list.value[0]})
    for start in range(0, len(rows), 64):
        batch = rows[start:start + 64]
        scores = score(image_bytes=tf.constant([r['image'] for r in batch]))['scores'].numpy()
        for row, p in zip(batch, scores[:, features.POSITIVE_CLASS_ID]):
            row['p_dog'] = float(p)
    return rows


def confusion(rows: List[Dict[str, object]], threshold: float = 0.5) -> np.ndarray:
    """[[true cat→cat, cat→dog], [dog→cat, dog→dog]] at `threshold` on P(dog)."""
    matrix = np.zeros((2, 2), dtype=int)
    for row in rows:
        matrix[features.LABELS.index(row['label']), int(row['p_dog'] >= threshold)] += 1
    return matrix


def precision_recall(rows: List[Dict[str, object]]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) for P(dog), one point per distinct score."""
    scores = np.array([r['p_dog'] for r in rows])
    positive = np.array([r['label'] == features.LABELS[features.POSITIVE_CLASS_ID] for r in rows])
    order = np.argsort(-scores)
    true_positives = np.cumsum(positive[order])
    precision = true_positives / np.arange(1, len(order) + 1)
    recall = true_positives / max(int(positive.sum()), 1)
    return precision, recall, scores[order]


def misclassified(rows: List[Dict[str, object]], threshold: float = 0.5) -> List[Dict[str, object]]:
    """The eval photos the model gets wrong at `threshold`, most confident mistakes first."""
    wrong = [r for r in rows if (r['p_dog'] >= threshold) != (r['label'] == features.LABELS[features.POSITIVE_CLASS_ID])]
    return sorted(wrong, key=lambda r: -abs(r['p_dog'] - threshold))
