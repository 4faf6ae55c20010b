"""Decisions about a pushed version, recorded in MLMD: who decided what, when, why, on which evidence.

Every decision is one execution of type `petpark.ReleaseDecision` in the context
`petpark.Release` `<pipeline>.<model>`, with input events to what it was decided on: the
version's PushedModel (`pushed_model`) and the evidence artifacts (`model_blessing`,
`infra_blessing`, `model_card`, ...). Its properties say the kind (approval, rejection,
promotion, rollback, canary_verdict), the version, who (`by`) and why (`reason`); `details` is
JSON: the evidence's values at that moment, and per kind the label, from and to versions, an
override and what it overrode, a canary verdict (PASS, FAIL, INCONCLUSIVE) with its numbers.
The execution's state tells a complete decision (COMPLETE) from an intent whose files were not
all written yet (RUNNING: `petpark promote` records the intent first, writes models.config,
then completes it), one whose file write failed (FAILED) and one found interrupted and never
written (CANCELED).

Only ml_metadata is imported: `petpark models list` reads this in well under two seconds.
Writes retry while sqlite's one writer (a pipeline run) holds the store, as monitoring/record.py.
"""
import dataclasses
import datetime
import json
from typing import Any, Dict, List, Optional, Union

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from petpark.pipeline.inspection import store as mlmd_store

EXECUTION_TYPE = 'petpark.ReleaseDecision'
CONTEXT_TYPE = 'petpark.Release'
APPROVAL, REJECTION, PROMOTION, ROLLBACK, CANARY_VERDICT = 'approval', 'rejection', 'promotion', 'rollback', \
    'canary_verdict'
KINDS = (APPROVAL, REJECTION, PROMOTION, ROLLBACK, CANARY_VERDICT)
CERTIFICATIONS = (APPROVAL, REJECTION)
LABEL_MOVES = (PROMOTION, ROLLBACK)
PASS, FAIL, INCONCLUSIVE = 'PASS', 'FAIL', 'INCONCLUSIVE'
VERDICTS = (PASS, FAIL, INCONCLUSIVE)
COMPLETE, RUNNING, FAILED, CANCELED = 'COMPLETE', 'RUNNING', 'FAILED', 'CANCELED'
_STATES = {COMPLETE: metadata_store_pb2.Execution.COMPLETE, RUNNING: metadata_store_pb2.Execution.RUNNING,
           FAILED: metadata_store_pb2.Execution.FAILED, CANCELED: metadata_store_pb2.Execution.CANCELED}
_STATE_NAMES = {value: name for name, value in _STATES.items()}
Store = Union[mlmd_store.Target, mlmd.MetadataStore]


@dataclasses.dataclass
class Decision:
    """One recorded decision. `version`: the version decided about (a label move's target)."""
    execution_id: int
    kind: str
    model_name: str
    version: str
    by: str
    reason: str
    at: float  # epoch seconds: when it was decided (a label move: its intent)
    updated: float  # when its record last changed (a label move: completed)
    state: str
    details: Dict[str, Any]

    @property
    def at_text(self) -> str:
        return moment(self.at)

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    def as_json(self) -> Dict[str, Any]:
        return dict(dataclasses.asdict(self), at_text=self.at_text)


def moment(epoch: float) -> str:
    """A record's time as people read it: UTC, ISO 8601 to the second."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _open(metadata: Store, read_only: bool) -> mlmd.MetadataStore:
    return metadata if isinstance(metadata, mlmd.MetadataStore) else mlmd_store.open_store(metadata, read_only=read_only)


def _types(store: mlmd.MetadataStore) -> Dict[str, int]:
    execution = metadata_store_pb2.ExecutionType(name=EXECUTION_TYPE)
    for name in ('kind', 'model_name', 'model_version', 'by', 'reason', 'details'):
        execution.properties[name] = metadata_store_pb2.STRING
    context = metadata_store_pb2.ContextType(name=CONTEXT_TYPE)
    return {EXECUTION_TYPE: store.put_execution_type(execution, can_add_fields=True, can_omit_fields=True),
            CONTEXT_TYPE: store.put_context_type(context, can_add_fields=True, can_omit_fields=True)}


def context_name(pipeline_name: str, model_name: str) -> str:
    return f'{pipeline_name}.{model_name}'


def record(metadata: Store, pipeline_name: str, model_name: str, kind: str, version: str, *, by: str, reason: str,
           details: Optional[Dict[str, Any]] = None, inputs: Optional[Dict[str, metadata_store_pb2.Artifact]] = None,
           state: str = COMPLETE) -> int:
    """Records a decision (inputs: {event key: artifact} it was made on); returns its execution id.
    A ValueError for a kind, state or detail it cannot record; nothing is written then."""
    if kind not in KINDS:
        raise ValueError(f'Unknown decision kind {kind!r}: one of {", ".join(KINDS)}')
    if state not in _STATES:
        raise ValueError(f'Unknown decision state {state!r}: one of {", ".join(_STATES)}')
    try:
        details_text = json.dumps(details or {}, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f'The details of a {kind} must be JSON (finite numbers, strings, lists, objects): {e}') from None

    def put() -> int:
        store = _open(metadata, read_only=False)
        types = _types(store)
        execution = metadata_store_pb2.Execution(type_id=types[EXECUTION_TYPE], last_known_state=_STATES[state])
        for name, value in (('kind', kind), ('model_name', model_name), ('model_version', str(version)), ('by', by),
                            ('reason', reason), ('details', details_text)):
            execution.properties[name].string_value = value
        name = context_name(pipeline_name, model_name)
        context = store.get_context_by_type_and_name(CONTEXT_TYPE, name) or \
            metadata_store_pb2.Context(type_id=types[CONTEXT_TYPE], name=name)
        events = mlmd_store.keyed_events(metadata_store_pb2.Event.INPUT, inputs or {})
        execution_id, _, _ = store.put_execution(execution, events, [context], reuse_context_if_already_exist=True)
        return execution_id
    return mlmd_store.retrying(put)


def update(metadata: Store, execution_id: int, state: str, **more_details: Any) -> None:
    """Sets a recorded decision's state and adds `more_details` to its details."""
    def put() -> None:
        store = _open(metadata, read_only=False)
        found = store.get_executions_by_id([execution_id])
        if not found:
            raise ValueError(f'No decision #{execution_id} in {_where(metadata)}')
        execution = found[0]
        details = json.loads(execution.properties['details'].string_value or '{}')
        details.update(more_details)
        execution.properties['details'].string_value = json.dumps(details, sort_keys=True)
        execution.last_known_state = _STATES[state]
        store.put_executions([execution])
    mlmd_store.retrying(put)


def _where(metadata: Store) -> str:
    return 'the MLMD store' if isinstance(metadata, mlmd.MetadataStore) else mlmd_store.location(metadata)


def history(metadata: Store, pipeline_name: str, model_name: str, version: Optional[str] = None) -> List[Decision]:
    """Every recorded decision of the model (about `version`, as the decided or the left version, when
    given), oldest first; [] when nothing was decided yet."""
    store = _open(metadata, read_only=True)
    if CONTEXT_TYPE not in {t.name for t in store.get_context_types()}:
        return []
    context = store.get_context_by_type_and_name(CONTEXT_TYPE, context_name(pipeline_name, model_name))
    if context is None:
        return []
    type_id = store.get_execution_type(EXECUTION_TYPE).id
    found = []
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
        if execution.type_id != type_id:
            continue
        values = {name: value.string_value for name, value in execution.properties.items()}
        decision = Decision(execution.id, values.get('kind', ''), values.get('model_name', model_name),
                            values.get('model_version', ''), values.get('by', ''), values.get('reason', ''),
                            execution.create_time_since_epoch / 1000.0, execution.last_update_time_since_epoch / 1000.0,
                            _STATE_NAMES.get(execution.last_known_state, 'UNKNOWN'),
                            json.loads(values.get('details') or '{}'))
        if version is None or version in (decision.version, str(decision.details.get('from_version'))):
            found.append(decision)
    return found


def certification(found: List[Decision], version: str) -> Optional[Decision]:
    """The version's latest approval or rejection (the one in force), None when it has neither."""
    return next((d for d in reversed(found) if d.kind in CERTIFICATIONS and d.version == version and d.complete),
                None)


def approved(found: List[Decision], version: str) -> bool:
    latest = certification(found, version)
    return latest is not None and latest.kind == APPROVAL


def canary_verdict(found: List[Decision], version: str) -> Optional[Decision]:
    """The version's latest canary verdict, None when it has none."""
    return next((d for d in reversed(found) if d.kind == CANARY_VERDICT and d.version == version and d.complete),
                None)


def incomplete(found: List[Decision]) -> List[Decision]:
    """Label moves whose record was not completed: interrupted (or in progress right now)."""
    return [d for d in found if d.state == RUNNING]


def summary(decision: Decision) -> str:
    """One line: when, what, who, why."""
    d = decision.details
    if decision.kind in LABEL_MOVES:
        moved = f"{d.get('from_version') or '-'} -> {decision.version}"
        action = f"{decision.kind} of {d.get('label')!r}: {moved}"
        if d.get('action') == 'serve':
            action = f"{decision.kind} of {d.get('label')!r}: version {decision.version} added to the served versions"
        if d.get('forced'):
            action += f" OVERRIDE (overrode: {'; '.join(d.get('overridden') or []) or 'nothing'})"
    elif decision.kind == CANARY_VERDICT:
        numbers = ', '.join(f'{k} {_number(v)}' for k, v in sorted((d.get('numbers') or {}).items()))
        action = f"canary verdict {d.get('verdict')} for {decision.version}" + (f' ({numbers})' if numbers else '')
    else:
        action = f'{decision.kind} of {decision.version}'
    state = '' if decision.complete else f'  [{_STATE_TEXT.get(decision.state, decision.state)}]'
    why = f': {decision.reason}' if decision.reason else ''
    return f'{decision.at_text}  #{decision.execution_id}  {action}  by {decision.by}{why}{state}'


_STATE_TEXT = {RUNNING: 'INCOMPLETE: interrupted, or in progress now', FAILED: 'FAILED: models.config not written',
               CANCELED: 'CANCELED: interrupted before models.config was written'}


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value)
