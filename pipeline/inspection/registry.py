"""`petpark models`: every pushed version, its facts and its lineage, read from MLMD.

A version's facts are its facts record (components/common/facts.py): what every artifact made
from its push contributes, the ModelCardGenerator's record of the whole pipeline first. Nothing
here knows which component says what, and nothing imports TensorFlow. Labels come from
models.config, where `petpark promote` moves them.
"""
import dataclasses
import datetime
import json
import os
from typing import Any, Dict, List, Optional

from petpark.components.common import facts
from petpark.components.model_card import render
from petpark.pipeline.inspection.store import Artifact, Lineage


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


def pushes(lineage: Lineage) -> List[Artifact]:
    """The first PushedModel of each pushed version of this pipeline, oldest first."""
    first: Dict[str, Artifact] = {}
    for artifact in lineage.pipeline_artifacts('PushedModel'):
        version = facts.prop(artifact, 'pushed_version')
        if facts.prop(artifact, 'pushed', 0) == 1 and version and version not in first:
            first[version] = artifact
    return list(first.values())


def _trainer_module(lineage: Lineage, pushed: Artifact) -> Optional[str]:
    """The module file of the execution that made the pushed Model (TFX records it there)."""
    for found in lineage.inputs(lineage.producer(pushed.id)).values():
        for artifact in found:
            if lineage.type_name(artifact) == 'Model':
                execution = lineage.store.get_executions_by_id([lineage.producer(artifact.id)])[0]
                module = execution.custom_properties.get('module_path')
                return module.string_value if module is not None else None
    return None


def record(lineage: Lineage, pushed: Artifact, model_name: str, labels: Dict[str, List[str]]) -> Record:
    """One pushed version: the contributions of everything made from its push, merged oldest first."""
    gathered = json.loads(json.dumps(facts.EMPTY))
    gathered.update(model_name=model_name, code_version='unknown', version=facts.prop(pushed, 'pushed_version'),
                    destination=facts.prop(pushed, 'pushed_destination'))
    model_card = None
    for artifact in lineage.downstream(pushed.id):
        found = facts.contributions(artifact)
        if found and model_card is None and facts.prop(artifact, 'card_destination'):
            folder = facts.prop(artifact, 'card_destination')
            model_card = {name: os.path.join(folder, name) for name in (render.CARD_MD, render.CARD_HTML)}
        facts.merge(gathered, found)
    pushed_at = datetime.datetime.fromtimestamp(pushed.create_time_since_epoch / 1000).isoformat(timespec='seconds')
    return Record(gathered, labels.get(gathered['version'], []), pushed_at, _trainer_module(lineage, pushed),
                  model_card)


def records(settings) -> List[Record]:
    lineage = Lineage(settings.metadata_path, settings.pipeline_name)
    labels = labels_by_version(settings.models_config_path, settings.model_name)
    return [record(lineage, pushed, settings.model_name, labels) for pushed in pushes(lineage)]


def _push_of(lineage: Lineage, settings, version: str) -> Artifact:
    found = {facts.prop(a, 'pushed_version'): a for a in pushes(lineage)}
    if version not in found:
        raise ValueError(f'No pushed version {version!r} of {settings.model_name} in {settings.metadata_path} '
                         f'(pushed: {", ".join(sorted(found)) or "none"}; see `petpark models list`)')
    return found[version]


def find(settings, version: str) -> Record:
    lineage = Lineage(settings.metadata_path, settings.pipeline_name)
    return record(lineage, _push_of(lineage, settings, version), settings.model_name,
                  labels_by_version(settings.models_config_path, settings.model_name))


def lineage_tree(settings, version: str) -> Dict[str, Any]:
    """The pushed version's artifact and, recursively, what its producer read: MLMD's lineage."""
    lineage = Lineage(settings.metadata_path, settings.pipeline_name)
    pushed = _push_of(lineage, settings, version)
    seen = set()

    def visit(artifact: Artifact) -> Dict[str, Any]:
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
        worst_text = '-'
        if worst:
            worst_text = f"{worst['slice']} {render.number(worst['binary_accuracy'])} " \
                         f"(n={render.number(worst['example_count'], 0)})"
        infra = f['serving_check']
        checks = f"{infra['latency_p99_ms']:.1f} ms p99" if infra else 'skipped'
        metrics = f['metrics']
        lines.append(f"{f['version']:<12}{r.pushed_at:<21}{render.number(metrics.get('binary_accuracy')):>9}"
                     f"{render.number(metrics.get('precision')):>10}{render.number(metrics.get('recall')):>8}  {worst_text:<46}"
                     f"{checks:<15}{','.join(r.labels) or '-':<16}{'ONNX' if f['edge'] else '-'}")
    return lines


def show_lines(r: Record) -> List[str]:
    f = r.facts
    lines = [f"{f['model_name']} version {f['version']}, pushed {r.pushed_at} to {f['destination']}",
             f"  labels: {', '.join(r.labels) or 'none'}",
             '  metrics (eval split): ' + ', '.join(f'{k} {render.number(v, 0 if k == "example_count" else 3)}'
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
