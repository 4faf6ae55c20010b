"""The release rules: certifying a version, moving its labels, rolling back; each a decision in MLMD.

- `record_decision(settings, kind, version, ...)`: an approval, a rejection or a canary verdict of a
  pushed version, recorded with the evidence it was made on (the Evaluator's blessing, the
  serving check, the model card, the latest canary verdict): the artifacts as input events, their
  values in the details. `petpark models approve|reject` call it; so will `petpark monitor canary`
  with `kind=CANARY_VERDICT, verdict=..., numbers={...}`.
- `promote(settings, label, version, ...)`: `stable` needs an approval of the version (unless
  PETPARK_RELEASE_REQUIRE_APPROVAL=false) and no FAIL as its latest canary verdict; `--force` with a
  reason overrides, recorded as an override. The intent is recorded first (RUNNING), then
  models.config is written (atomically, under its lock) and the edge boxes' labels.json, then the
  record is completed. A crash between leaves a RUNNING record that the next promote, holding the
  same lock, checks against models.config: completed when the file shows it, CANCELED when not.
  A write that fails is reported naming the file or record it could not write.
- `rollback(settings, ...)`: `stable` back to the version it named before, the newest such that is
  still approved; one command, since the version `stable` leaves stays served.

After every decision the version's model card folder gets `decisions.html` and `decisions.json`,
rewritten from MLMD (the card itself, the evidence decided on, never changes).
"""
import dataclasses
import getpass
import html
import json
import math
import os
from typing import Any, Dict, List, Optional

from petpark.components.common import facts as facts_record, uris
from petpark.pipeline.inspection import registry
from petpark.pipeline.inspection.store import Artifact, Lineage, open_store
from petpark.pipeline.release import decisions
from petpark.serving import promote as serving_promote

GATED_LABEL = 'stable'
DECISIONS_HTML, DECISIONS_JSON = 'decisions.html', 'decisions.json'


class Refused(ValueError):
    """The rules do not let the label move; the message says what is missing and how to override."""


class PartlyWritten(ValueError):
    """models.config (and labels.json) were written but the decision record could not be completed."""


def default_by() -> str:
    """Who, when the command does not say: the operating system's user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return 'unknown'


def _check_text(value: Optional[str], flag: str, what: str) -> str:
    text = (value or '').strip()
    if not text:
        raise ValueError(f'{flag} is required: {what}')
    if len(text) > 2000:
        raise ValueError(f'{flag} is over 2000 characters ({len(text)})')
    return text


# -- evidence ------------------------------------------------------------------------------------
def evidence_artifacts(lineage: Lineage, pushed: Artifact) -> Dict[str, Artifact]:
    """What a decision about the version reads: its push, the blessings its Pusher read, its model card."""
    found = {'pushed_model': pushed}
    pusher_inputs = lineage.inputs(lineage.producer(pushed.id))
    for key in ('model_blessing', 'infra_blessing'):
        if pusher_inputs.get(key):
            found[key] = pusher_inputs[key][0]
    for artifact in lineage.downstream(pushed.id):
        if lineage.type_name(artifact) == 'petpark.ModelCard' and facts_record.prop(artifact, 'written', 0) == 1:
            found['model_card'] = artifact
            break
    return found


def evidence_values(record: registry.Record, artifacts: Dict[str, Artifact],
                    found: List[decisions.Decision]) -> Dict[str, Any]:
    """The evidence's values at the moment of a decision: what a reader of the record needs."""
    f = record.facts
    infra = f.get('serving_check')
    canary = decisions.canary_verdict(found, f['version'])
    return {
        'blessing': {'blessed': f['blessing']['blessed'], 'thresholds': f['blessing']['thresholds'],
                     'artifact_id': artifacts['model_blessing'].id if 'model_blessing' in artifacts else None},
        'metrics': {k: f['metrics'].get(k) for k in ('example_count', 'binary_accuracy', 'auc')},
        'worst_slice': f.get('worst_slice'),
        'serving_check': None if not infra else {
            'passed': infra.get('blessed'), 'server': infra.get('server'), 'latency_p99_ms': infra.get('latency_p99_ms'),
            'artifact_id': artifacts['infra_blessing'].id if 'infra_blessing' in artifacts else None},
        'model_card': None if not record.model_card else {
            'html': record.model_card[registry.render.CARD_HTML],
            'artifact_id': artifacts['model_card'].id if 'model_card' in artifacts else None},
        'canary_verdict': None if canary is None else {
            'decision': canary.execution_id, 'verdict': canary.details.get('verdict'), 'at': canary.at_text},
    }


# -- approvals, rejections, canary verdicts ---------------------------------------------------------
def record_decision(settings, kind: str, version: str, *, by: str, reason: str, verdict: Optional[str] = None,
                    numbers: Optional[Dict[str, Any]] = None, details: Optional[Dict[str, Any]] = None,
                    inputs: Optional[Dict[str, Artifact]] = None) -> decisions.Decision:
    """Records an approval, a rejection or a canary verdict of a pushed version, with its evidence.

    kind: decisions.APPROVAL, REJECTION or CANARY_VERDICT. by: who (a person, or the program that
    judged). reason: the note, the reason or the verdict's summary. verdict (canary): PASS, FAIL or
    INCONCLUSIVE; numbers (canary): {name: number}, e.g. flip_rate, requests, p_value; details: any
    more JSON; inputs: more artifacts it was decided on ({event key: MLMD artifact}).
    A ValueError naming what is wrong (unknown version or kind, empty who or why, a bad verdict);
    nothing is recorded then."""
    if kind not in (decisions.APPROVAL, decisions.REJECTION, decisions.CANARY_VERDICT):
        raise ValueError(f'record_decision records approvals, rejections and canary verdicts, not {kind!r} '
                         '(label moves: promote and rollback)')
    by = _check_text(by, '--by', 'who decides')
    if kind == decisions.CANARY_VERDICT and not (reason or '').strip():
        reason = f'canary verdict {verdict}'  # a judge with nothing to add: the verdict and its numbers say it
    reason = _check_text(reason, '--note' if kind == decisions.APPROVAL else '--reason', 'why')
    extra = dict(details or {})
    if kind == decisions.CANARY_VERDICT:
        if verdict not in decisions.VERDICTS:
            raise ValueError(f'A canary verdict is one of {", ".join(decisions.VERDICTS)}, got {verdict!r}')
        if not isinstance(numbers, dict) or not all(isinstance(k, str) for k in numbers):
            raise ValueError(f'A canary verdict needs its numbers as {{name: number}}, got {numbers!r}')
        # a statistic that could not be computed (too few requests) is recorded as null, not NaN
        numbers = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in numbers.items()}
        extra.update(verdict=verdict, numbers=numbers)
    elif verdict is not None or numbers is not None:
        raise ValueError(f'Only a canary verdict has a verdict and numbers, not an {kind}')
    store = open_store(settings.metadata_connection(), read_only=False)
    lineage = Lineage(settings.metadata_connection(), settings.pipeline_name)
    pushed = registry.push_of(lineage, settings, version)
    record = registry.record(lineage, pushed, settings.model_name, {})
    artifacts = evidence_artifacts(lineage, pushed)
    found = decisions.history(store, settings.pipeline_name, settings.model_name)
    extra['evidence'] = evidence_values(record, artifacts, found)
    execution_id = decisions.record(store, settings.pipeline_name, settings.model_name, kind, version, by=by,
                                    reason=reason, details=extra, inputs={**artifacts, **(inputs or {})})
    decided = next(d for d in decisions.history(store, settings.pipeline_name, settings.model_name)
                   if d.execution_id == execution_id)
    write_decisions_page(settings, version, store)
    return decided


# -- label moves -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Paths:
    config: str
    model_dir: str
    base_path: str = ''

    @classmethod
    def of(cls, settings, config: Optional[str] = None, model_dir: Optional[str] = None,
           base_path: Optional[str] = None) -> 'Paths':
        return cls(os.path.abspath(config or settings.models_config_path),
                   os.path.abspath(model_dir or settings.serving_model_dir), base_path or '')


def gate(settings, found: List[decisions.Decision], label: str, version: str) -> List[str]:
    """What keeps `label` from moving to `version` (empty: nothing)."""
    if label != GATED_LABEL:
        return []
    missing = []
    if settings.release.require_approval:
        latest = decisions.certification(found, version)
        if latest is None:
            missing.append(f'no approval of version {version} (`petpark models approve {version} --by NAME '
                           '--note TEXT`)')
        elif latest.kind == decisions.REJECTION:
            missing.append(f'version {version} was rejected by {latest.by} at {latest.at_text} '
                           f'(decision #{latest.execution_id}: {latest.reason}); a new approval would replace it')
    canary = decisions.canary_verdict(found, version)
    if canary is not None and canary.details.get('verdict') == decisions.FAIL:
        missing.append(f'the latest canary verdict of version {version} is FAIL (decision #{canary.execution_id} '
                       f'at {canary.at_text}: {canary.reason})')
    return missing


def canary_line(found: List[decisions.Decision], version: str) -> str:
    canary = decisions.canary_verdict(found, version)
    if canary is None:
        return f'Canary verdict of version {version}: none recorded.'
    numbers = ', '.join(f'{k} {v}' for k, v in sorted((canary.details.get('numbers') or {}).items()))
    return (f"Canary verdict of version {version}: {canary.details.get('verdict')} at {canary.at_text} by {canary.by}"
            f"{f' ({numbers})' if numbers else ''}: {canary.reason}")


def recover(settings, store, paths: Paths) -> List[str]:
    """Label moves of this models.config left RUNNING by an interrupted command: completed when the file
    shows them, CANCELED when not. Call with the config's lock held. Returns one line each."""
    lines = []
    config = serving_promote.read_config(paths.config)
    for decision in decisions.incomplete(decisions.history(store, settings.pipeline_name, settings.model_name)):
        d = decision.details
        if d.get('config_path') != paths.config:
            continue
        labels = serving_promote.labels_of(config, settings.model_name)
        shown = (labels.get(d.get('label')) == int(decision.version) if d.get('action') == 'label'
                 else int(decision.version) in serving_promote.served_of(config, settings.model_name))
        if shown:
            decisions.update(store, decision.execution_id, decisions.COMPLETE,
                             outcome='completed at the next start: models.config shows it')
            lines.append(f'Decision #{decision.execution_id} ({decision.kind} of {d.get("label")!r} to '
                         f'{decision.version}) was left incomplete; models.config shows it: completed now.')
        else:
            decisions.update(store, decision.execution_id, decisions.CANCELED,
                             outcome='interrupted before models.config was written: canceled at the next start')
            lines.append(f'Decision #{decision.execution_id} ({decision.kind} of {d.get("label")!r} to '
                         f'{decision.version}) was left incomplete; models.config does not show it: canceled now.')
    return lines


def promote(settings, label: str, version: int, *, by: Optional[str] = None, reason: str = '', force: bool = False,
            paths: Optional[Paths] = None, kind: str = decisions.PROMOTION) -> List[str]:
    """Moves `label` to `version` under the rules; returns what it did, line by line. Refused (nothing
    written) when the rules say no; PartlyWritten when the config was written and its record not."""
    paths = paths or Paths.of(settings)
    by = (by or '').strip() or default_by()
    reason = (reason or '').strip()
    if force and not reason:
        raise ValueError('--force needs --reason: an override is recorded with why')
    serving_promote.check_request(settings.model_name, paths.model_dir, label, version)
    store = open_store(settings.metadata_connection(), read_only=False)
    with serving_promote.locked(paths.config):
        lines = recover(settings, store, paths)
        found = decisions.history(store, settings.pipeline_name, settings.model_name)
        config = serving_promote.read_config(paths.config)
        if label == GATED_LABEL:
            lines.append(canary_line(found, str(version)))
        missing = gate(settings, found, label, str(version))
        if missing and not force:
            shown = f' {canary_line(found, str(version))}' if label == GATED_LABEL else ''
            raise Refused(f"Refusing to move {label!r} of {settings.model_name} to version {version}: "
                          + '; '.join(missing) + f'. `--force --reason TEXT` overrides, recorded as an override.{shown}')
        change = serving_promote.plan(config, settings.model_name, paths.model_dir, label, version, paths.base_path)
        if change.action == 'label' and change.previous == version:
            lines.append(f'Label {label!r} of {settings.model_name} already names version {version}; nothing changed.')
            return lines
        push = _push_or_none(settings, str(version))
        details = {'label': label, 'from_version': None if change.previous is None else str(change.previous),
                   'to_version': str(version), 'action': change.action, 'forced': bool(force and missing),
                   'overridden': missing if force else [], 'config_path': paths.config}
        intent = decisions.record(store, settings.pipeline_name, settings.model_name, kind, str(version), by=by,
                                  reason=reason, details=details, inputs={'pushed_model': push},
                                  state=decisions.RUNNING)
        try:
            serving_promote.write_config_atomically(change.config, paths.config)
        except OSError as e:
            decisions.update(store, intent, decisions.FAILED, outcome=f'models.config not written: {e}')
            raise ValueError(f'{paths.config}: not written ({e.strerror or e}); labels unchanged, decision #{intent} '
                             'recorded as FAILED') from None
        edge = _edge_labels(settings, change)
        try:
            decisions.update(store, intent, decisions.COMPLETE, outcome=change.message, edge_labels=edge)
        except Exception as e:  # the config is written: say exactly what is not
            raise PartlyWritten(f'{paths.config} written ({change.message}), but decision #{intent} could not be '
                                f'completed in MLMD ({type(e).__name__}: {e}); it stays incomplete and the next '
                                '`petpark promote` completes it (`petpark models history` shows it)') from None
        lines.append(change.message)
        if force and missing:
            lines.append(f'Recorded as an OVERRIDE by {by} (decision #{intent}): ' + '; '.join(missing))
        else:
            lines.append(f'Recorded as decision #{intent} by {by}.')
        if edge.get('written') is not None:
            lines.append(f"Edge labels: {edge['path']} = {json.dumps(edge['written'])}")
        elif edge.get('problem'):
            lines.append(f"Edge labels: {edge['problem']}")
    write_decisions_page(settings, str(version), store)
    if change.previous is not None and change.previous != version:
        write_decisions_page(settings, str(change.previous), store)
    return lines


def _push_or_none(settings, version: str) -> Optional[Artifact]:
    try:
        lineage = Lineage(settings.metadata_connection(), settings.pipeline_name)
        return registry.push_of(lineage, settings, version)
    except ValueError:  # a version put there by hand: the move is recorded, with no push to point at
        return None


def _edge_labels(settings, change: serving_promote.Change) -> Dict[str, Any]:
    """labels.json for the edge boxes when the moved label's version has an edge export."""
    if change.action != 'label':
        return {}
    labels = serving_promote.labels_of(change.config, settings.model_name)
    moved = [label for label, version in labels.items()
             if serving_promote.edge_version_exists(settings.edge_model_dir, version)]
    path = os.path.join(settings.edge_model_dir, serving_promote.EDGE_LABELS_FILE)
    if not moved:
        return {'problem': f'no edge export of the labelled versions in {settings.edge_model_dir}; labels.json unchanged'}
    try:
        return {'path': path, 'written': serving_promote.write_edge_labels(settings.edge_model_dir, labels)}
    except OSError as e:
        return {'problem': f'{path}: not written ({e.strerror or e})'}


def rollback_target(settings, found: List[decisions.Decision], current: Optional[int], label: str) -> str:
    """The version `label` named before `current`, the newest such still approved (any, without the rule),
    never one `label` was rolled back from."""
    moves = [d for d in found if d.kind in decisions.LABEL_MOVES and d.complete and d.details.get('label') == label
             and d.details.get('action') == 'label']
    rolled_back = {d.details.get('from_version') for d in moves if d.kind == decisions.ROLLBACK}
    seen = []
    for move in reversed(moves):
        for candidate in (move.version, move.details.get('from_version')):
            if candidate and candidate != str(current) and candidate not in seen and candidate not in rolled_back:
                seen.append(candidate)
    for candidate in seen:
        if not settings.release.require_approval or decisions.approved(found, candidate):
            return candidate
    why = f'earlier versions of {label!r}: {", ".join(seen)}, none approved now' if seen else \
        f'no earlier version of {label!r} is recorded that it was not rolled back from'
    raise ValueError(f'Nothing to roll {label!r} of {settings.model_name} back from version {current} ({why})')


def rollback(settings, label: str = GATED_LABEL, *, by: Optional[str] = None, reason: str = '',
             paths: Optional[Paths] = None) -> List[str]:
    """`label` back to the previous approved version it named, in one command."""
    paths = paths or Paths.of(settings)
    store = open_store(settings.metadata_connection(), read_only=False)
    current = serving_promote.labels_of(serving_promote.read_config(paths.config), settings.model_name).get(label)
    if current is None:
        raise ValueError(f'{paths.config}: {settings.model_name} has no {label!r} label to roll back')
    target = rollback_target(settings, decisions.history(store, settings.pipeline_name, settings.model_name),
                             current, label)
    lines = [f'Rolling {label!r} of {settings.model_name} back from version {current} to version {target}.']
    return lines + promote(settings, label, int(target), by=by, reason=reason, paths=paths, kind=decisions.ROLLBACK)


# -- the decisions page beside the model card -----------------------------------------------------
def write_decisions_page(settings, version: str, store) -> Optional[str]:
    """`<card folder>/decisions.html` and `decisions.json`: the version's decisions, from MLMD; None when
    the version has no local card folder."""
    folder = os.path.join(settings.model_card_dir, version)
    if not uris.is_local(folder) or not os.path.isdir(folder):
        return None
    found = decisions.history(store, settings.pipeline_name, settings.model_name, version)
    from petpark.serving import files
    files.write_text_atomically(os.path.join(folder, DECISIONS_JSON),
                                json.dumps([d.as_json() for d in found], indent=1, sort_keys=True) + '\n')
    latest = decisions.certification(found, version)
    status = 'not certified yet' if latest is None else \
        f'{"APPROVED" if latest.kind == decisions.APPROVAL else "REJECTED"} by {latest.by} at {latest.at_text}: {latest.reason}'
    rows = ''.join(f'<tr><td>{html.escape(d.at_text)}</td><td>#{d.execution_id}</td><td>{html.escape(d.kind)}</td>'
                   f'<td>{html.escape(decisions.summary(d).split("  ", 2)[2])}</td></tr>\n' for d in found)
    page = ('<!doctype html>\n<html><head><meta charset="utf-8">'
            f'<title>Decisions: {html.escape(settings.model_name)} {html.escape(version)}</title>\n'
            '<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}'
            'td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}</style></head>\n<body>\n'
            f'<h1>Decisions about {html.escape(settings.model_name)} version {html.escape(version)}</h1>\n'
            f'<p>Certification: <strong>{html.escape(status)}</strong></p>\n'
            f'<p>{html.escape(canary_line(found, version))}</p>\n'
            '<p>Rewritten from MLMD after every decision (<code>petpark models history</code>); the '
            '<a href="model_card.html">model card</a> they were made on does not change.</p>\n'
            '<table><tr><th>when (UTC)</th><th>record</th><th>kind</th><th>what, who, why</th></tr>\n'
            f'{rows}</table>\n</body></html>\n')
    path = os.path.join(folder, DECISIONS_HTML)
    files.write_text_atomically(path, page)
    return path
