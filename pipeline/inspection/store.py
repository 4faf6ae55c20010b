"""The one reader of MLMD: opening a pipeline's store, and the lineage questions asked of it.

Only ml_metadata is imported (no TensorFlow, no TFX), so `petpark models` answers in well under
two seconds. A metadata file that is missing, not sqlite or damaged gives one MetadataError
naming the file, never a traceback.
"""
import os
from typing import Dict, List, Optional, Sequence

import ml_metadata as mlmd
from ml_metadata import errors
from ml_metadata.proto import metadata_store_pb2

Artifact = metadata_store_pb2.Artifact
Event = metadata_store_pb2.Event
_SQLITE_HEADER = b'SQLite format 3\x00'


class MetadataError(ValueError):
    """The metadata store cannot be read; the message names the file and why."""


def sqlite_config(metadata_path: str, read_only: bool = True) -> metadata_store_pb2.ConnectionConfig:
    """The connection to an MLMD sqlite file (TFX's layout: created when written first)."""
    mode = metadata_store_pb2.SqliteMetadataSourceConfig
    return metadata_store_pb2.ConnectionConfig(sqlite=mode(
        filename_uri=metadata_path, connection_mode=mode.READONLY if read_only else mode.READWRITE_OPENCREATE))


def read_only(config: metadata_store_pb2.ConnectionConfig) -> metadata_store_pb2.ConnectionConfig:
    """The same store, opened read-only where the backend supports it (sqlite)."""
    config = metadata_store_pb2.ConnectionConfig.FromString(config.SerializeToString())
    if config.HasField('sqlite'):
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return config


def open_store(metadata_path: str, read_only: bool = True) -> mlmd.MetadataStore:
    """The store in the sqlite file at `metadata_path`; MetadataError when it cannot be read."""
    if os.path.isdir(metadata_path):
        raise MetadataError(f'{metadata_path}: a folder, not an MLMD sqlite file')
    if read_only and not os.path.isfile(metadata_path):
        raise MetadataError(f'No metadata store at {metadata_path}: nothing has run in this home yet')
    if os.path.isfile(metadata_path):
        try:
            with open(metadata_path, 'rb') as f:
                header = f.read(len(_SQLITE_HEADER))
        except OSError as e:
            raise MetadataError(f'{metadata_path}: cannot be read ({e.strerror})') from None
        if header and header != _SQLITE_HEADER:
            raise MetadataError(f'{metadata_path}: not an MLMD sqlite file (it does not start with the SQLite header)')
    try:
        store = mlmd.MetadataStore(sqlite_config(metadata_path, read_only))
        store.get_context_types()  # reads the schema: a damaged file fails here, not later
    except (RuntimeError, errors.StatusError) as e:
        reason = str(e).strip().splitlines()[0].rsplit(' query: ', 1)[0][:200]  # sqlite's reason, without MLMD's SQL
        raise MetadataError(f'{metadata_path}: not a readable MLMD store ({reason})') from None
    return store


def first(artifacts: Dict[str, List[Artifact]], key: str) -> Optional[Artifact]:
    """The first artifact under `key`, None when there is none."""
    return (artifacts.get(key) or [None])[0]


def node_of_executions(store: mlmd.MetadataStore, pipeline_name: str,
                       executions: Sequence[metadata_store_pb2.Execution]) -> Dict[int, str]:
    """{execution id: node id} for those executions that belong to a node of `pipeline_name`."""
    node_type = store.get_context_type('node').id
    prefix = f'{pipeline_name}.'
    nodes = {}
    for execution in executions:
        for context in store.get_contexts_by_execution(execution.id):
            if context.type_id == node_type and context.name.startswith(prefix):
                nodes[execution.id] = context.name[len(prefix):]
    return nodes


class Lineage:
    """Read-only lineage questions to one pipeline's store: who made an artifact, from what."""

    def __init__(self, metadata_path: str, pipeline_name: str):
        self.store = open_store(metadata_path)
        self.pipeline_name = pipeline_name
        self._types = {t.id: t.name for t in self.store.get_artifact_types()}

    def type_name(self, artifact: Artifact) -> str:
        return self._types.get(artifact.type_id, str(artifact.type_id))

    def node(self, execution_id: int) -> str:
        execution = self.store.get_executions_by_id([execution_id])
        return node_of_executions(self.store, self.pipeline_name, execution).get(execution_id, '?')

    def producer(self, artifact_id: int) -> Optional[int]:
        """The execution that first output the artifact (later cached executions list it too)."""
        producers = [e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id])
                     if e.type == Event.OUTPUT]
        return min(producers, default=None)

    def _by_key(self, execution_id: int, kind: int) -> Dict[str, List[Artifact]]:
        events = [e for e in self.store.get_events_by_execution_ids([execution_id]) if e.type == kind]
        artifacts = {a.id: a for a in self.store.get_artifacts_by_id([e.artifact_id for e in events])}
        found: Dict[str, List[Artifact]] = {}
        for event in events:
            key = event.path.steps[0].key if event.path.steps else ''
            found.setdefault(key, []).append(artifacts[event.artifact_id])
        return found

    def inputs(self, execution_id: Optional[int]) -> Dict[str, List[Artifact]]:
        return self._by_key(execution_id, Event.INPUT) if execution_id else {}

    def outputs(self, execution_id: Optional[int]) -> Dict[str, List[Artifact]]:
        return self._by_key(execution_id, Event.OUTPUT) if execution_id else {}

    def input_of_producer(self, artifact: Optional[Artifact], key: str) -> Optional[Artifact]:
        return first(self.inputs(self.producer(artifact.id)), key) if artifact is not None else None

    def downstream(self, artifact_id: int) -> List[Artifact]:
        """What executions that read the artifact wrote, oldest first."""
        readers = sorted({e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id])
                          if e.type == Event.INPUT})
        return [a for execution_id in readers for found in self.outputs(execution_id).values() for a in found]

    def pipeline_artifacts(self, type_name: str) -> List[Artifact]:
        """This pipeline's artifacts of a type, oldest first."""
        pipeline = self.store.get_context_by_type_and_name('pipeline', self.pipeline_name)
        if pipeline is None or type_name not in self._types.values():
            return []
        mine = {a.id for a in self.store.get_artifacts_by_context(pipeline.id)}
        return [a for a in sorted(self.store.get_artifacts_by_type(type_name), key=lambda a: a.id) if a.id in mine]
