"""A monitoring window in MLMD: an execution that read the version's push and baseline and wrote
TFDV's artifacts (ExampleStatistics of the window, ExampleAnomalies with a split per check:
schema, skew, drift) and a petpark.MonitoringReport (report.json, report.html) whose facts
contribution `monitoring` the registry shows. Everything a window writes is in its folder before
the execution is recorded, so a recorded window is complete."""
from typing import Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from petpark.pipeline.inspection import store as mlmd_store

EXECUTION_TYPE = 'petpark.MonitorWindow'
CONTEXT_TYPE = 'petpark.Monitor'
REPORT_TYPE = 'petpark.MonitoringReport'


def _tfx_type(name: str) -> metadata_store_pb2.ArtifactType:
    from tfx.types import standard_artifacts
    return getattr(standard_artifacts, name)().artifact_type


def _type_ids(store: mlmd.MetadataStore) -> Dict[str, int]:
    report = metadata_store_pb2.ArtifactType(name=REPORT_TYPE)
    execution = metadata_store_pb2.ExecutionType(name=EXECUTION_TYPE)
    for name in ('verdict', 'model_version', 'window'):
        execution.properties[name] = metadata_store_pb2.STRING
    context = metadata_store_pb2.ContextType(name=CONTEXT_TYPE)
    return {
        'ExampleStatistics': store.put_artifact_type(_tfx_type('ExampleStatistics'), can_add_fields=True,
                                                     can_omit_fields=True),
        'ExampleAnomalies': store.put_artifact_type(_tfx_type('ExampleAnomalies'), can_add_fields=True,
                                                    can_omit_fields=True),
        REPORT_TYPE: store.put_artifact_type(report, can_add_fields=True, can_omit_fields=True),
        EXECUTION_TYPE: store.put_execution_type(execution, can_add_fields=True, can_omit_fields=True),
        CONTEXT_TYPE: store.put_context_type(context, can_add_fields=True, can_omit_fields=True),
    }


def _artifact(type_id: int, uri: str, properties: Dict[str, str], custom: Dict[str, object]) -> metadata_store_pb2.Artifact:
    artifact = metadata_store_pb2.Artifact(type_id=type_id, uri=uri, state=metadata_store_pb2.Artifact.LIVE)
    for name, value in properties.items():
        artifact.properties[name].string_value = value
    for name, value in custom.items():
        if isinstance(value, int):
            artifact.custom_properties[name].int_value = value
        else:
            artifact.custom_properties[name].string_value = str(value)
    return artifact


def record_window(metadata: mlmd_store.Target, pipeline_name: str, model_name: str, version: str, window_id: str,
                  inputs: Dict[str, metadata_store_pb2.Artifact], statistics_uri: Optional[str],
                  anomalies_uri: Optional[str], anomaly_splits: List[str], report_uri: str, verdict: str,
                  contribution: str) -> int:
    """Records the window in MLMD (a sqlite file's path or a connection); returns its execution id."""
    def put() -> int:
        store = mlmd_store.open_store(metadata, read_only=False)
        types = _type_ids(store)
        outputs = {'report': _artifact(types[REPORT_TYPE], report_uri, {}, {
            'verdict': verdict, 'model_version': version, 'window': window_id, 'petpark_facts': contribution})}
        if statistics_uri:
            outputs['statistics'] = _artifact(types['ExampleStatistics'], statistics_uri, {'split_names': '["window"]'},
                                              {'model_version': version, 'window': window_id})
        if anomalies_uri:
            outputs['anomalies'] = _artifact(types['ExampleAnomalies'], anomalies_uri,
                                             {'split_names': '[' + ','.join(f'"{s}"' for s in anomaly_splits) + ']'},
                                             {'model_version': version, 'window': window_id})
        execution = metadata_store_pb2.Execution(type_id=types[EXECUTION_TYPE],
                                                 last_known_state=metadata_store_pb2.Execution.COMPLETE)
        for name, value in (('verdict', verdict), ('model_version', version), ('window', window_id)):
            execution.properties[name].string_value = value
        context = store.get_context_by_type_and_name(CONTEXT_TYPE, f'{pipeline_name}.{model_name}')
        if context is None:
            context = metadata_store_pb2.Context(type_id=types[CONTEXT_TYPE], name=f'{pipeline_name}.{model_name}')
        events = (mlmd_store.keyed_events(metadata_store_pb2.Event.INPUT, inputs)
                  + mlmd_store.keyed_events(metadata_store_pb2.Event.OUTPUT, outputs))
        execution_id, _, _ = store.put_execution(execution, events, [context], reuse_context_if_already_exist=True)
        return execution_id
    return mlmd_store.retrying(put)


def windows(metadata: mlmd_store.Target, pipeline_name: str, model_name: str,
            version: Optional[str] = None) -> List[dict]:
    """Recorded windows of a model (and version), oldest first: {execution id, verdict, version,
    window, statistics uri, report uri}."""
    store = mlmd_store.open_store(metadata)
    context = store.get_context_by_type_and_name(CONTEXT_TYPE, f'{pipeline_name}.{model_name}') \
        if CONTEXT_TYPE in {t.name for t in store.get_context_types()} else None
    if context is None:
        return []
    found = []
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
        properties = {name: value.string_value for name, value in execution.properties.items()}
        if version is not None and properties.get('model_version') != version:
            continue
        outputs = {}
        events = [e for e in store.get_events_by_execution_ids([execution.id]) if e.type == metadata_store_pb2.Event.OUTPUT]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        for event in events:
            outputs[event.path.steps[0].key] = artifacts[event.artifact_id].uri
        found.append(dict(properties, execution_id=execution.id, statistics_uri=outputs.get('statistics'),
                          report_uri=outputs.get('report'),
                          time=execution.create_time_since_epoch / 1000.0))
    return found
