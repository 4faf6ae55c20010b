"""`petpark models`: every pushed version, its facts and its lineage, read from MLMD.

A version's facts are gathered from the artifacts MLMD links to its push (the Pusher's inputs,
the Evaluator and Trainer that made them, the Transform, StatisticsGen and ExampleGen
upstream, the ServingValidator, OnnxExporter and ModelCardGenerator downstream) by the same
functions the ModelCardGenerator used for the card. Labels come from models.config, where
`petpark promote` moves them.
"""
import dataclasses
import datetime
import json
import os
from typing import Any, Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from petpark.components.model_card import facts, render
from petpark.modules import features
from petpark.pipeline import progress

Event = metadata_store_pb2.Event


class Lineage:
    """Read-only questions to one pipeline's MLMD store: who made an artifact, from what."""

    def __init__(self, metadata_path: str, pipeline_name: str):
        self.store = mlmd.MetadataStore(progress.read_only(metadata.sqlite_metadata_connection_config(metadata_path)))
        self.pipeline_name = pipeline_name
        self._types = {t.id: t.name for t in self.store.get_artifact_types()}

    def type_name(self, artifact: metadata_store_pb2.Artifact) -> str:
        return self._types.get(artifact.type_id, str(artifact.type_id))

    def node(self, execution_id: int) -> str:
        execution = self.store.get_executions_by_id([execution_id])
        return progress.node_of_executions(self.store, self.pipeline_name, execution).get(execution_id, '?')

    def producer(self, artifact_id: int) -> Optional[int]:
        """The execution that first output the artifact (later cached executions list it too)."""
        producers = [e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id]) if e.type == Event.OUTPUT]
        return min(producers, default=None)

    def _by_key(self, execution_id: int, kind: int) -> Dict[str, List[metadata_store_pb2.Artifact]]:
        events = [e for e in self.store.get_events_by_execution_ids([execution_id]) if e.type == kind]
        artifacts = {a.id: a for a in self.store.get_artifacts_by_id([e.artifact_id for e in events])}
        found: Dict[str, List[metadata_store_pb2.Artifact]] = {}
        for event in events:
            key = event.path.steps[0].key if event.path.steps else ''
            found.setdefault(key, []).append(artifacts[event.artifact_id])
        return found

    def inputs(self, execution_id: Optional[int]) -> Dict[str, List[metadata_store_pb2.Artifact]]:
        return self._by_key(execution_id, Event.INPUT) if execution_id else {}

    def outputs(self, execution_id: Optional[int]) -> Dict[str, List[metadata_store_pb2.Artifact]]:
        return self._by_key(execution_id, Event.OUTPUT) if execution_id else {}

    def input_of_producer(self, artifact: Optional[metadata_store_pb2.Artifact], key: str):
        if artifact is None:
            return None
        found = self.inputs(self.producer(artifact.id)).get(key) or []
        return found[0] if found else None

    def downstream(self, artifact_id: int, output_key: str) -> List[metadata_store_pb2.Artifact]:
        """What executions that read the artifact wrote under `output_key`, oldest first."""
        readers = sorted({e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id])
                          if e.type == Event.INPUT})
        return [a for execution_id in readers for a in self.outputs(execution_id).get(output_key, [])]

    def pushes(self) -> List[metadata_store_pb2.Artifact]:
        """The first PushedModel of each pushed version of this pipeline, oldest first."""
        pipeline = self.store.get_context_by_type_and_name('pipeline', self.pipeline_name)
        if pipeline is None:
            return []
        pushed_type = self.store.get_artifact_type('PushedModel') if 'PushedModel' in self._types.values() else None
        if pushed_type is None:
            return []
        mine = {a.id for a in self.store.get_artifacts_by_context(pipeline.id)}
        first: Dict[str, metadata_store_pb2.Artifact] = {}
        for artifact in sorted(self.store.get_artifacts_by_type('PushedModel'), key=lambda a: a.id):
            version = facts.prop(artifact, 'pushed_version')
            if artifact.id in mine and facts.prop(artifact, 'pushed', 0) == 1 and version and version not in first:
                first[version] = artifact
        return list(first.values())


def labels_by_version(models_config_path: str, model_name: str) -> Dict[str, List[str]]:
    """{version: [labels]} of `model_name` in models.config (empty when there is none)."""
    from petpark.serving import promote
    found: Dict[str, List[str]] = {}
    for model in promote.read_config(models_config_path).model_config_list.config:
        if model.name == model_name:
            for label, version in sorted(model.version_labels.items()):
                found.setdefault(str(version), []).append(label)
    return found


@dataclasses.dataclass
class Record:
    facts: Dict[str, Any]
    labels: List[str]
    pushed_at: str
    trainer_module: Optional[str]
    model_card: Optional[Dict[str, str]]

    def as_json(self) -> Dict[str, Any]:
        return dict(self.facts, labels=self.labels, pushed_at=self.pushed_at, trainer_module=self.trainer_module,
                    model_card=self.model_card)


def _one(artifacts: Dict[str, List[metadata_store_pb2.Artifact]], key: str) -> Optional[metadata_store_pb2.Artifact]:
    return (artifacts.get(key) or [None])[0]


def _first(artifacts: List[metadata_store_pb2.Artifact], written: str) -> Optional[metadata_store_pb2.Artifact]:
    return next((a for a in artifacts if facts.prop(a, written, 0) == 1), None)


def record(lineage: Lineage, pushed: metadata_store_pb2.Artifact, model_name: str,
           labels: Dict[str, List[str]]) -> Record:
    """Everything about one pushed version, by following MLMD's links from its push."""
    pusher = lineage.producer(pushed.id)
    pusher_inputs = lineage.inputs(pusher)
    blessing = _one(pusher_inputs, 'model_blessing')
    evaluator = lineage.producer(blessing.id)
    trainer = lineage.producer(_one(pusher_inputs, 'model').id)
    trainer_inputs = lineage.inputs(trainer)
    examples = _one(lineage.inputs(evaluator), 'examples')
    statistics = (lineage.downstream(examples.id, 'statistics') or [None])[0]
    card = _first(lineage.downstream(pushed.id, 'model_card'), 'written')
    gathered = facts.gather(
        model_name=model_name, pushed=pushed, evaluation=_one(lineage.outputs(evaluator), 'evaluation'),
        blessing=blessing, examples=examples, statistics=statistics,
        schema=lineage.input_of_producer(_one(trainer_inputs, 'transform_graph'), 'schema'),
        hyperparameters_artifact=_one(trainer_inputs, 'hyperparameters'),
        infra_blessing=_one(pusher_inputs, 'infra_blessing'),
        onnx_model=_first(lineage.downstream(pushed.id, 'onnx_model'), 'exported'),
        code_version=facts.prop(card, 'code_version', 'unknown'), class_id=features.POSITIVE_CLASS_ID)
    execution = lineage.store.get_executions_by_id([pusher])[0]
    trainer_execution = lineage.store.get_executions_by_id([trainer])[0]
    module = trainer_execution.custom_properties.get('module_path')
    model_card = None
    if card is not None:
        folder = facts.prop(card, 'card_destination')
        model_card = {name: os.path.join(folder, name) for name in (render.CARD_MD, render.CARD_HTML)}
    return Record(gathered, labels.get(gathered['version'], []),
                  datetime.datetime.fromtimestamp(execution.create_time_since_epoch / 1000).isoformat(timespec='seconds'),
                  module.string_value if module is not None else None, model_card)


def records(settings) -> List[Record]:
    lineage = Lineage(settings.metadata_path, settings.pipeline_name)
    labels = labels_by_version(settings.models_config_path, settings.model_name)
    return [record(lineage, pushed, settings.model_name, labels) for pushed in lineage.pushes()]


def find(settings, version: str) -> Record:
    lineage = Lineage(settings.metadata_path, settings.pipeline_name)
    pushes = {facts.prop(a, 'pushed_version'): a for a in lineage.pushes()}
    if version not in pushes:
        raise ValueError(f'No pushed version {version!r} of {settings.model_name} in {settings.metadata_path} '
                         f'(pushed: {sorted(pushes) or "none"})')
    return record(lineage, pushes[version], settings.model_name,
                  labels_by_version(settings.models_config_path, settings.model_name))


def lineage_tree(settings, version: str) -> Dict[str, Any]:
    """The pushed version's artifact and, recursively, what its producer read: MLMD's lineage."""
    lineage = Lineage(settings.metadata_path, settings.pipeline_name)
    pushed = next((a for a in lineage.pushes() if facts.prop(a, 'pushed_version') == version), None)
    if pushed is None:
        raise ValueError(f'No pushed version {version!r} of {settings.model_name} in {settings.metadata_path} '
                         f'(see `petpark models list`)')
    seen = set()

    def visit(artifact: metadata_store_pb2.Artifact) -> Dict[str, Any]:
        producer = lineage.producer(artifact.id)
        node = {'artifact_id': artifact.id, 'type': lineage.type_name(artifact), 'uri': artifact.uri,
                'producer': lineage.node(producer) if producer else None, 'execution_id': producer,
                'properties': {k: facts.prop(artifact, k) for k in ('span', 'version', 'pushed_version')
                               if facts.prop(artifact, k) is not None}}
        if artifact.id in seen:
            return dict(node, inputs='(above)')
        seen.add(artifact.id)
        node['inputs'] = {key: [visit(a) for a in found] for key, found in lineage.inputs(producer).items()}
        return node
    return visit(pushed)


def list_lines(found: List[Record]) -> List[str]:
    header = f"{'version':<12}{'pushed at':<21}{'accuracy':>9}{'precision':>10}{'recall':>8}  {'worst slice':<46}" \
             f"{'serving check':<15}{'labels':<16}edge"
    lines = [header]
    for r in found:
        f, worst = r.facts, r.facts['worst_slice']
        worst_text = f"{worst['slice']} {render.number(worst['binary_accuracy'])} (n={render.number(worst['example_count'], 0)})" \
            if worst else '-'
        infra = f['serving_check']
        checks = f"{infra['latency_p99_ms']:.1f} ms p99" if infra else 'skipped'
        lines.append(f"{f['version']:<12}{r.pushed_at:<21}{render.number(f['metrics']['binary_accuracy']):>9}"
                     f"{render.number(f['metrics']['precision']):>10}{render.number(f['metrics']['recall']):>8}  {worst_text:<46}"
                     f"{checks:<15}{','.join(r.labels) or '-':<16}{'ONNX' if f['edge'] else '-'}")
    return lines


def show_lines(r: Record) -> List[str]:
    f = r.facts
    lines = [f"{f['model_name']} version {f['version']}, pushed {r.pushed_at} to {f['destination']}",
             f"  labels: {', '.join(r.labels) or 'none'}",
             f"  metrics (eval split): " + ', '.join(f'{k} {render.number(v, 0 if k == "example_count" else 3)}'
                                                   for k, v in f['metrics'].items())]
    if f['worst_slice']:
        w = f['worst_slice']
        lines.append(f"  worst slice: {w['slice']} accuracy {render.number(w['binary_accuracy'])} on "
                     f"{render.number(w['example_count'], 0)} examples")
    lines.append(f"  blessing: {'BLESSED' if f['blessing']['blessed'] else 'NOT blessed'}")
    lines += [f'    {t}' for t in f['blessing']['thresholds']]
    infra = f['serving_check']
    lines.append(f"  serving check: {infra['server']}, {'passed' if infra['blessed'] else 'FAILED'}, "
                 f"p50 {render.number(infra['latency_p50_ms'], 1)} ms, p99 {render.number(infra['latency_p99_ms'], 1)} ms"
                 if infra else '  serving check: skipped')
    lines.append(f"  hyperparameters: {json.dumps(f['hyperparameters']) if f['hyperparameters'] else 'fixed (no Tuner)'}")
    data = f['data']
    version = f", version {data['data_version']}" if data['data_version'] is not None else ''
    lines.append(f"  data: span {data['span']}{version}, examples {json.dumps(data['splits'])}, "
                 f"{data['examples_uri']}")
    lines.append(f"  statistics: {data['statistics_uri']}")
    lines.append(f"  schema: {f['schema']['uri']} ({len(f['schema']['features'])} features)")
    lines.append(f"  code: {f['code_version']}; trainer module {r.trainer_module}")
    lines.append(f"  edge: {f['edge']['destination'] if f['edge'] else 'not exported'}")
    lines.append(f"  model card: {r.model_card[render.CARD_HTML] if r.model_card else 'none'}")
    return lines


def tree_lines(node: Dict[str, Any], key: str = 'pushed', depth: int = 0) -> List[str]:
    properties = ''.join(f' {k}={v}' for k, v in node['properties'].items())
    producer = f"{node['producer']} (execution {node['execution_id']})" if node['producer'] else 'imported'
    lines = [f"{'  ' * depth}{key}: {node['type']} #{node['artifact_id']}{properties} <- {producer}  {node['uri']}"]
    if isinstance(node['inputs'], str):
        lines[-1] += '  ' + node['inputs']
        return lines
    for input_key, found in node['inputs'].items():
        for child in found:
            lines += tree_lines(child, input_key, depth + 1)
    return lines
