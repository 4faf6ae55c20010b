"""`petpark models`: every pushed version, its facts and its lineage, read from MLMD.

A version's facts are its facts record (components/common/facts.py): what every artifact made
from its push contributes, the ModelCardGenerator's record of the whole pipeline first. Nothing
here knows which component says what, and nothing imports TensorFlow. Labels come from
models.config, where `petpark promote` moves them. Decisions (approvals, rejections, canary
verdicts, promotions, rollbacks) come from their records in MLMD (pipeline/release/decisions.py).
"""
import dataclasses
import datetime
import json
import os
from typing import Any, Dict, List, Optional

from petpark.components.common import facts
from petpark.components.model_card import render
from petpark.pipeline.inspection.store import Artifact, Lineage, location
from petpark.pipeline.release import decisions as release


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
    decisions: List[release.Decision] = dataclasses.field(default_factory=list)  # about this version, oldest first

    @property
    def certification(self) -> Optional[release.Decision]:
        return release.certification(self.decisions, self.facts['version'])

    @property
    def canary(self) -> Optional[release.Decision]:
        return release.canary_verdict(self.decisions, self.facts['version'])

    def as_json(self) -> Dict[str, Any]:
        certified, canary = self.certification, self.canary
        return dict(self.facts, labels=self.labels, pushed_at=self.pushed_at, trainer_module=self.trainer_module,
                    model_card=self.model_card,
                    certification=None if certified is None else {
                        'state': 'approved' if certified.kind == release.APPROVAL else 'rejected', 'by': certified.by,
                        'at': certified.at_text, 'reason': certified.reason, 'decision': certified.execution_id},
                    canary_verdict=None if canary is None else {
                        'verdict': canary.details.get('verdict'), 'numbers': canary.details.get('numbers'),
                        'by': canary.by, 'at': canary.at_text, 'decision': canary.execution_id},
                    decisions=[d.as_json() for d in self.decisions])


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


def record(lineage: Lineage, pushed: Artifact, model_name: str, labels: Dict[str, List[str]],
           decided: Optional[List[release.Decision]] = None) -> Record:
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
    version = gathered['version']
    mine = [d for d in decided or [] if version in (d.version, str(d.details.get('from_version')))]
    return Record(gathered, labels.get(version, []), pushed_at, _trainer_module(lineage, pushed), model_card, mine)


def decisions_of(lineage: Lineage, settings) -> List[release.Decision]:
    return release.history(lineage.store, settings.pipeline_name, settings.model_name)


def records(settings) -> List[Record]:
    lineage = Lineage(settings.metadata_connection(), settings.pipeline_name)
    labels = labels_by_version(settings.models_config_path, settings.model_name)
    decided = decisions_of(lineage, settings)
    return [record(lineage, pushed, settings.model_name, labels, decided) for pushed in pushes(lineage)]


def push_of(lineage: Lineage, settings, version: str) -> Artifact:
    """The version's first PushedModel; a ValueError naming the pushed versions when there is none."""
    found = {facts.prop(a, 'pushed_version'): a for a in pushes(lineage)}
    if version not in found:
        raise ValueError(f'No pushed version {version!r} of {settings.model_name} in '
                         f'{location(settings.metadata_connection())} '
                         f'(pushed: {", ".join(sorted(found)) or "none"}; see `petpark models list`)')
    return found[version]


def find(settings, version: str) -> Record:
    lineage = Lineage(settings.metadata_connection(), settings.pipeline_name)
    return record(lineage, push_of(lineage, settings, version), settings.model_name,
                  labels_by_version(settings.models_config_path, settings.model_name), decisions_of(lineage, settings))


def history(settings, version: Optional[str] = None) -> List[release.Decision]:
    """Every decision about the model (or one version), oldest first."""
    lineage = Lineage(settings.metadata_connection(), settings.pipeline_name)
    if version is not None:
        push_of(lineage, settings, version)
    return release.history(lineage.store, settings.pipeline_name, settings.model_name, version)


def lineage_tree(settings, version: str) -> Dict[str, Any]:
    """The pushed version's artifact and, recursively, what its producer read: MLMD's lineage."""
    lineage = Lineage(settings.metadata_connection(), settings.pipeline_name)
    pushed = push_of(lineage, settings, version)
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
    tree = visit(pushed)
    tree.update(traceability(lineage, settings, version))
    return tree


RETRAINING_STARTED = 'retraining started'  # how monitoring/actions.py says a breach started a training run
_RUN_MARGIN_S = 60.0  # a triggered run may register its context this much before its window's record


def _report_actions(window: Dict[str, Any]) -> List[str]:
    """The actions a window's report says it took (report.json's `actions`)."""
    path = os.path.join(window.get('report_uri') or '', 'report.json')
    try:
        with open(path) as f:
            actions = json.load(f).get('actions') or []
    except (OSError, ValueError, AttributeError):
        return []
    return [a for a in actions if isinstance(a, str)]


def pipeline_runs(lineage: Lineage) -> List[Dict[str, Any]]:
    """This pipeline's runs, oldest first: {run_id, started (epoch s), pushed_versions}."""
    store = lineage.store
    if 'pipeline_run' not in {t.name for t in store.get_context_types()}:
        return []
    found = []
    for run in sorted(store.get_contexts_by_type('pipeline_run'), key=lambda c: c.id):
        if not any(p.name == lineage.pipeline_name for p in store.get_parent_contexts_by_context(run.id)):
            continue
        pushed = sorted({facts.prop(a, 'pushed_version') for a in store.get_artifacts_by_context(run.id)
                         if lineage.type_name(a) == 'PushedModel' and facts.prop(a, 'pushed', 0) == 1})
        found.append({'run_id': run.name, 'started': run.create_time_since_epoch / 1000.0, 'pushed_versions': pushed})
    return found


def traceability(lineage: Lineage, settings, version: str) -> Dict[str, Any]:
    """What happened to the version after its push: decisions about it (approval, canary verdicts, label
    moves), the monitoring windows that saw it, and the training runs their breaches started (the
    first run of the pipeline after a breaching window whose report says it started one)."""
    from petpark.monitoring import record as monitoring_record  # ml_metadata only
    decided = release.history(lineage.store, settings.pipeline_name, settings.model_name, version)
    windows = monitoring_record.windows(settings.metadata_connection(), settings.pipeline_name, settings.model_name, version)
    runs = pipeline_runs(lineage)
    retraining = []
    for window in windows:
        actions = _report_actions(window) if window.get('verdict') == 'BREACH' else []
        window['actions'] = actions
        if not any(a.startswith(RETRAINING_STARTED) for a in actions):
            continue
        later = [r for r in runs if r['started'] >= window['time'] - _RUN_MARGIN_S]
        retraining.append({'window': window.get('window'), 'window_execution_id': window['execution_id'],
                           'action': next(a for a in actions if a.startswith(RETRAINING_STARTED)),
                           'run': later[0] if later else None})
    return {'decisions': [d.as_json() for d in decided],
            'monitoring_windows': [{k: window.get(k) for k in ('execution_id', 'window', 'verdict', 'time', 'report_uri',
                                                               'statistics_uri', 'actions')} for window in windows],
            'retraining': retraining}


def list_lines(found: List[Record]) -> List[str]:
    header = f"{'version':<12}{'pushed at':<21}{'accuracy':>9}{'precision':>10}{'recall':>8}  {'worst slice':<46}" \
             f"{'serving check':<15}{'certified':<11}{'canary':<14}{'labels':<16}edge"
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
                     f"{checks:<15}{_certified_text(r):<11}{_canary_text(r):<14}{','.join(r.labels) or '-':<16}"
                     f"{'ONNX' if f['edge'] else '-'}")
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
    baseline = f.get('monitoring_baseline')
    lines.append('  monitoring baseline: ' + (
        f"{baseline['uri']} ({baseline['examples']} {baseline['split']} examples, windows from {baseline['min_window']} "
        f"frames, false-alarm rate {baseline['false_alarm_rate']:g})" if baseline else 'none (`petpark monitor` has '
        'nothing to compare this version with)'))
    certified, canary = r.certification, r.canary
    lines.append('  certification: ' + ('none yet (`petpark models approve VERSION --by NAME --note TEXT`)'
                                        if certified is None else
                                        f"{'APPROVED' if certified.kind == release.APPROVAL else 'REJECTED'} by "
                                        f"{certified.by} at {certified.at_text}: {certified.reason} "
                                        f"(decision #{certified.execution_id})"))
    lines.append('  canary verdict: ' + ('none recorded' if canary is None else release.summary(canary)))
    if r.decisions:
        lines.append(f'  decisions ({len(r.decisions)}, oldest first; `petpark models history`):')
        lines += [f'    {release.summary(d)}' for d in r.decisions]
    return lines


def _certified_text(r: Record) -> str:
    certified = r.certification
    return '-' if certified is None else 'approved' if certified.kind == release.APPROVAL else 'REJECTED'


def _canary_text(r: Record) -> str:
    canary = r.canary
    return '-' if canary is None else str(canary.details.get('verdict'))


def history_lines(found: List[release.Decision]) -> List[str]:
    """`petpark models history`: one line per decision, oldest first, incomplete ones said so."""
    if not found:
        return ['No decisions recorded yet (`petpark models approve|reject`, `petpark promote`).']
    lines = [release.summary(d) for d in found]
    pending = release.incomplete(found)
    if pending:
        lines.append(f"{len(pending)} incomplete (#{', #'.join(str(d.execution_id) for d in pending)}): a command "
                     'stopped between its record and models.config, or runs now; the next `petpark promote` checks '
                     'them against models.config')
    return lines


def lineage_lines(tree: Dict[str, Any]) -> List[str]:
    """`petpark models lineage`: the artifact tree, then what happened to the version after its push."""
    lines = tree_lines(tree)
    lines.append('after the push:')
    for decision in tree.get('decisions') or []:
        lines.append(f"  decision: {release.summary(release.Decision(**{k: v for k, v in decision.items() if k != 'at_text'}))}")
    if not tree.get('decisions'):
        lines.append('  decisions: none')
    for window in tree.get('monitoring_windows') or []:
        when = release.moment(window['time']) if window.get('time') else '?'
        lines.append(f"  monitoring window {window['window']} (execution {window['execution_id']}, {when}): "
                     f"{window['verdict']}  {window['report_uri']}")
    if not tree.get('monitoring_windows'):
        lines.append('  monitoring windows: none')
    for retraining in tree.get('retraining') or []:
        run = retraining['run']
        started = f"run {run['run_id']} started {release.moment(run['started'])}, pushed " \
                  f"{', '.join(run['pushed_versions']) or 'nothing'}" if run else 'no run of the pipeline recorded yet'
        lines.append(f"  retraining after window {retraining['window']}: {retraining['action']}; {started}")
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
