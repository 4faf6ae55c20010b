"""What the analysts' notebooks read, found through MLMD from PETPARK_HOME (never by path).

notebooks/data_validation.ipynb and notebooks/model_analysis.ipynb call these; `petpark report`
executes both and renders them to HTML under <home>/reports/.
"""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from petpark.components.common import facts
from petpark.modules import features
from petpark.pipeline.inspection import registry, store, summary
from petpark.pipeline.settings import Settings

NOTEBOOKS = ('data_validation', 'model_analysis')


def settings() -> Settings:
    """The settings of the environment (PETPARK_HOME first); the data folder may be gone."""
    found = Settings.from_env(check_data_root=False)
    if not found.metadata and not os.path.isfile(found.metadata_path):
        raise ValueError(f'No metadata store at {found.metadata_path}: run the pipeline first or set PETPARK_HOME')
    return found


def tfx_artifact(artifact: store.Artifact, artifact_class):
    """An MLMD record as the TFX artifact its loaders take."""
    found = artifact_class()
    found.set_mlmd_artifact(artifact)
    return found


def latest_run(current: Settings, having: Optional[Tuple[str, str]] = None) -> summary.RunRecord:
    """The newest run; with `having` (node, output key), the newest that produced that output."""
    return summary.latest_run(current.metadata_connection(), current.pipeline_name, having)


def required(run: summary.RunRecord, node: str, key: str):
    artifact = run.output(node, key)
    if artifact is None:
        raise ValueError(f'The latest run ({run.run_id}) has no {node} output {key!r}: it stopped before {node}')
    return artifact


def split_statistics(statistics_artifact) -> Dict[str, object]:
    """{split: DatasetFeatureStatisticsList} of an ExampleStatistics artifact (TFX's loader)."""
    from tfx.components.statistics_gen import stats_artifact_utils
    from tfx.types import artifact_utils, standard_artifacts
    statistics = tfx_artifact(statistics_artifact, standard_artifacts.ExampleStatistics)
    return {split: stats_artifact_utils.load_statistics(statistics, split).proto()
            for split in artifact_utils.decode_split_names(statistics.split_names)}


def schema(run: summary.RunRecord):
    from tfx.utils import io_utils
    return io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(required(run, 'ImportSchemaGen', 'schema').uri))


def anomalies(run: summary.RunRecord) -> Dict[str, object]:
    """{split: Anomalies} the ExampleValidator found in `run`."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from tfx.components.example_validator import executor as example_validator
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.utils import io_utils
    artifact = tfx_artifact(required(run, 'ExampleValidator', 'anomalies'), standard_artifacts.ExampleAnomalies)
    return {split: anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(os.path.join(
                artifact_utils.get_split_uri([artifact], split), example_validator.DEFAULT_FILE_NAME)))
            for split in artifact_utils.decode_split_names(artifact.split_names)}


def statistics_by_span(current: Settings) -> List[Tuple[int, object]]:
    """[(span, ExampleStatistics artifact)], one per span (its newest), oldest span first."""
    lineage = store.Lineage(current.metadata_connection(), current.pipeline_name)
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


def pushed_versions(current: Settings) -> List[registry.Record]:
    """Every pushed version, oldest first (the registry's records)."""
    return registry.records(current)


def predictions(run: summary.RunRecord, limit: Optional[int] = None) -> List[Dict[str, object]]:
    """[{image_id, label, p_dog, image}] for the split the Evaluator used (eval, or the hold-out
    `validation`), scored by the run's trained model."""
    import tensorflow as tf
    from tfx.dsl.io import fileio
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.utils import path_utils
    examples = tfx_artifact(required(run, 'ImageExampleGen', 'examples'), standard_artifacts.Examples)
    model_uri = path_utils.serving_model_path(required(run, 'Trainer', 'model').uri)
    score = tf.saved_model.load(model_uri).signatures[features.IMAGE_BYTES_SIGNATURE]
    split = summary.evaluated_split(run).split(', ')[0]
    files = sorted(fileio.glob(os.path.join(artifact_utils.get_split_uri([examples], split), '*')))
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
