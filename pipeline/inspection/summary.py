"""Reads a pipeline run back from MLMD: component states, metrics, blessing, push."""
import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

import ml_metadata as mlmd
from google.protobuf import text_format
from ml_metadata.proto import metadata_store_pb2

from petpark.components.common import facts
from petpark.modules import features
from petpark.pipeline.inspection import store as mlmd_store
from petpark.pipeline.ops import run_lock

_STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
METRIC_COLUMNS = (('example_count', 'n'), ('binary_accuracy', 'accuracy'), ('precision', 'precision'),
                  ('recall', 'recall'), ('auc', 'auc'))


@dataclasses.dataclass
class RunRecord:
    """What one pipeline run did, by node id."""
    run_id: str
    states: Dict[str, str]
    seconds: Dict[str, float]
    outputs: Dict[str, Dict[str, List[metadata_store_pb2.Artifact]]]
    parameters: Dict[str, Dict[str, metadata_store_pb2.Value]] = dataclasses.field(default_factory=dict)
    started: Dict[str, float] = dataclasses.field(default_factory=dict)  # epoch seconds

    def output(self, node: str, key: str) -> Optional[metadata_store_pb2.Artifact]:
        artifacts = self.outputs.get(node, {}).get(key, [])
        return artifacts[-1] if artifacts else None


def state_name(execution: metadata_store_pb2.Execution, run_in_progress: bool) -> str:
    """MLMD's state name, except that an execution left NEW or RUNNING while no run holds the
    store's run lock belongs to a killed run: ABANDONED."""
    name = _STATE_NAMES[execution.last_known_state]
    if name in ('NEW', 'RUNNING') and not run_in_progress:
        return 'ABANDONED'
    return name


def latest_run(metadata: mlmd_store.Target, pipeline_name: str,
               having: Optional[Tuple[str, str]] = None) -> RunRecord:
    """The newest run of `pipeline_name` recorded in MLMD (a sqlite file's path or a connection); with
    `having` (node, output key), the newest run that has that output."""
    store = mlmd_store.open_store(metadata)
    runs = [c for c in store.get_contexts_by_type('pipeline_run')
            if any(p.name == pipeline_name for p in store.get_parent_contexts_by_context(c.id))]
    for run in sorted(runs, key=lambda c: c.id, reverse=True):
        record = _run_record(store, run, mlmd_store.sqlite_path(metadata), pipeline_name)
        if having is None or record.output(*having) is not None:
            return record
    raise LookupError(f'No run of pipeline {pipeline_name!r} in {mlmd_store.location(metadata)}'
                      + (f' with a {having[0]} output {having[1]!r}' if having else ''))


def _run_record(store: mlmd.MetadataStore, run: metadata_store_pb2.Context, metadata_path: Optional[str],
                pipeline_name: str) -> RunRecord:
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
    node_of = mlmd_store.node_of_executions(store, pipeline_name, executions)
    # the run lock is beside a sqlite file; on a database server, states are as MLMD records them
    live = run_lock.run_in_progress(metadata_path) if metadata_path else True
    states = {node_of[e.id]: state_name(e, live) for e in executions if e.id in node_of}
    seconds = {node_of[e.id]: (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0
               for e in executions if e.id in node_of}
    outputs: Dict[str, Dict[str, List[metadata_store_pb2.Artifact]]] = {}
    events = store.get_events_by_execution_ids([e.id for e in executions])
    output_events = [e for e in events if e.type == metadata_store_pb2.Event.OUTPUT and e.execution_id in node_of]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in output_events])}
    for event in output_events:
        key = event.path.steps[0].key if event.path.steps else ''
        outputs.setdefault(node_of[event.execution_id], {}).setdefault(key, []).append(artifacts[event.artifact_id])
    parameters = {node_of[e.id]: dict(e.custom_properties) for e in executions if e.id in node_of}
    started = {node_of[e.id]: e.create_time_since_epoch / 1000.0 for e in executions if e.id in node_of}
    return RunRecord(run.name, states, seconds, outputs, parameters, started)


def slice_metrics(evaluation_uri: str) -> List[Tuple[str, Dict[str, float]]]:
    """(slice name, {metric: value}) for P(dog), overall first, then by slice name."""
    return facts.slice_metrics(evaluation_uri, features.POSITIVE_CLASS_ID)


def format_row(slice_name: str, values: Dict[str, float]) -> str:
    """One slice's row under METRIC_COLUMNS."""
    cells = ''.join(f'{values[key]:>10.0f}' if key == 'example_count' else f'{values[key]:>10.3f}'
                    if key in values else f"{'-':>10}" for key, _ in METRIC_COLUMNS)
    return f'{slice_name:<34}{cells}'


def per_class(values: Dict[str, float]) -> Dict[str, Dict[str, float]]:
    """{class: {precision, recall}} at the 0.5 threshold, each class in turn the positive one: the
    cat figures are the dog figures' complements (negative predictive value, true negative rate)."""
    at = f'fairness_indicators_metrics/%s@{facts.FAIRNESS_AT}'
    if at % 'false_omission_rate' not in values:
        return {}
    positive, negative = features.LABELS[features.POSITIVE_CLASS_ID], features.LABELS[1 - features.POSITIVE_CLASS_ID]
    return {positive: {'precision': values[at % 'precision'], 'recall': values[at % 'recall']},
            negative: {'precision': 1.0 - values[at % 'false_omission_rate'],
                       'recall': values[at % 'true_negative_rate']}}


def per_class_lines(rows: List[Tuple[str, Dict[str, float]]]) -> List[str]:
    """'cat as the positive class: precision p, recall r' for each class on the overall slice of
    slice_metrics' rows."""
    overall = dict(rows).get('overall', {})
    return [f'{name} as the positive class: precision {m["precision"]:.3f}, recall {m["recall"]:.3f}'
            for name, m in sorted(per_class(overall).items())]


def evaluated_split(run: RunRecord) -> str:
    """The split the Evaluator of `run` computed its metrics on."""
    value = run.parameters.get('Evaluator', {}).get('example_splits')
    splits = json.loads(value.string_value) if value is not None and value.string_value else None
    return ', '.join(splits) if splits else 'eval'  # TFX's Evaluator default


def ingestion_report(run: RunRecord) -> Optional[Dict]:
    """The ImageExampleGen report.json of `run` (None when ingestion did not finish)."""
    from tfx.dsl.io import fileio
    from petpark.components.image_example_gen import report
    artifact = run.output('ImageExampleGen', 'ingestion_report')
    path = os.path.join(artifact.uri, report.REPORT_FILE) if artifact is not None else ''
    if not path or not fileio.exists(path):
        return None
    with fileio.open(path) as f:
        return dict(json.load(f), path=path)


def describe(run: RunRecord) -> List[str]:
    """Human-readable summary lines of `run`."""
    lines = [f'Run {run.run_id}: ' + ', '.join(f'{node} {state}' for node, state in run.states.items())]
    report = ingestion_report(run)
    if report is not None:
        lines.append(f"Data: {report['examples']} examples from {report['total_files']} files; "
                     f"converted {report['converted'] or 'none'}; rejected {report['rejected'] or 'none'}"
                     f" (report: {report['path']})")
        found = report.get('duplicates')
        if found and found['groups']:
            lines.append(f"  duplicates: {found['groups']} groups of {found['photos_in_groups']} photos "
                         f"({found['exact_pairs']} exact, {found['near_pairs']} near), each kept in one split")
            if found.get('withheld_from_training'):
                lines.append(f"  withheld from training: {found['withheld_from_training']} photos that duplicate "
                             'held-out ones')
        elif found:
            lines.append('  duplicates: none')
    evaluation = run.output('Evaluator', 'evaluation')
    if evaluation is not None:
        lines.append(f'Evaluation on the {evaluated_split(run)} split (positive class: dog, threshold 0.5):')
        lines.append(f"  {'slice':<34}" + ''.join(f'{title:>10}' for _, title in METRIC_COLUMNS))
        rows = slice_metrics(evaluation.uri)
        lines += ['  ' + format_row(name, values) for name, values in rows]
        lines += ['  ' + line for line in per_class_lines(rows)]
    blessing = run.output('Evaluator', 'blessing')
    if blessing is not None:
        blessed = facts.prop(blessing, 'blessed') == 1
        lines.append(f"Blessing: {'BLESSED' if blessed else 'NOT blessed'}")
        if not blessed and evaluation is not None:
            import tensorflow_model_analysis as tfma
            validation = tfma.load_validation_result(evaluation.uri)
            for failure in validation.metric_validations_per_slice:
                for failed in failure.failures:
                    threshold = text_format.MessageToString(failed.metric_threshold, as_one_line=True)
                    key = failed.metric_key
                    of_class = (f' of {features.LABELS[key.sub_key.class_id.value]}'
                                if key.HasField('sub_key') and key.sub_key.HasField('class_id') else '')
                    lines.append(f'  failed: {key.name}{of_class} = {failed.metric_value.double_value.value:.3f}'
                                 f' ({threshold})')
    infra = run.output('ServingValidator', 'blessing')
    if infra is not None:
        server = facts.prop(infra, 'server')
        if facts.prop(infra, 'blessed') == 1:
            lines.append(f"Serving check ({server}): passed, {facts.prop(infra, 'requests'):.0f} gRPC requests, "
                         f"p50 {facts.prop(infra, 'latency_p50_ms'):.1f} ms, p99 {facts.prop(infra, 'latency_p99_ms'):.1f} ms")
        else:
            lines.append(f"Serving check: FAILED: {facts.prop(infra, 'reason')}")
    pushed = run.output('Pusher', 'pushed_model')
    if facts.prop(pushed, 'pushed') == 1:
        lines.append(f"Pushed: {facts.prop(pushed, 'pushed_destination')}")
    elif pushed is not None:
        lines.append('Pushed: nothing (model not blessed)')
    edge = run.output('OnnxExporter', 'onnx_model')
    if facts.prop(edge, 'exported') == 1:
        int8 = 'FP32 and INT8' if facts.prop(edge, 'int8_shipped') == 1 else f"FP32 ({facts.prop(edge, 'int8_reason')})"
        lines.append(f"Edge (ONNX {int8}, largest difference from the SavedModel "
                     f"{facts.prop(edge, 'parity_max_abs_difference')}): "
                     f"{facts.prop(edge, 'edge_destination')}")
    card = run.output('ModelCardGenerator', 'model_card')
    if facts.prop(card, 'written') == 1:
        lines.append(f"Model card: {os.path.join(facts.prop(card, 'card_destination'), 'model_card.html')}")
    return lines
