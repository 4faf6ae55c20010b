"""The one reader of MLMD: opening a pipeline's store, and the lineage questions asked of it.

A store is named by a sqlite file's path or by a ConnectionConfig (`Settings.metadata_connection()`:
the sqlite file, or PostgreSQL). Only ml_metadata is imported (no TensorFlow, no TFX), so `petpark
models` answers in well under two seconds. A store that is missing, not sqlite, damaged or refuses
the connection gives one MetadataError naming it (never its password), never a traceback.
"""
import os
import re
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

# MLMD's PostgreSQL driver logs two INFO lines through glog on every connection; warnings still show
os.environ.setdefault('GLOG_minloglevel', '1')
import ml_metadata as mlmd  # noqa: E402
from ml_metadata import errors  # noqa: E402
from google.protobuf import descriptor  # noqa: E402
from ml_metadata.proto import metadata_store_pb2  # noqa: E402

Artifact = metadata_store_pb2.Artifact
Event = metadata_store_pb2.Event
ConnectionConfig = metadata_store_pb2.ConnectionConfig
Target = Union[str, ConnectionConfig]  # an MLMD sqlite file's path, or a connection
_SQLITE_HEADER = b'SQLite format 3\x00'


class MetadataError(ValueError):
    """The metadata store cannot be read; the message names the store and why."""


def sqlite_config(metadata_path: str, read_only: bool = True) -> ConnectionConfig:
    """The connection to an MLMD sqlite file (TFX's layout: created when written first)."""
    mode = metadata_store_pb2.SqliteMetadataSourceConfig
    return ConnectionConfig(sqlite=mode(
        filename_uri=metadata_path, connection_mode=mode.READONLY if read_only else mode.READWRITE_OPENCREATE))


def read_only(config: ConnectionConfig) -> ConnectionConfig:
    """The same store, opened read-only where the backend supports it (sqlite)."""
    config = ConnectionConfig.FromString(config.SerializeToString())
    if config.HasField('sqlite'):
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return config


def sqlite_path(metadata: Target) -> Optional[str]:
    """The sqlite file of a path or sqlite connection; None for a database server."""
    if isinstance(metadata, str):
        return metadata
    return metadata.sqlite.filename_uri if metadata.HasField('sqlite') else None


def location(metadata: Target) -> str:
    """The store as messages name it: the sqlite file, or the server's URL without the password."""
    path = sqlite_path(metadata)
    if path is not None:
        return path
    kind = metadata.WhichOneof('config')
    server = getattr(metadata, kind) if kind in ('postgresql', 'mysql') else None
    if server is None:
        return f'the MLMD store ({kind})'
    database = server.dbname if kind == 'postgresql' else server.database
    return f'{kind}://{server.user}@{server.host}:{server.port}/{database}'


# ml-metadata 1.16's PostgreSQL backend cannot write a string holding a backslash: it quotes values with
# libpq's PQescapeLiteral and strips the first and last character, which turns the ` E'a\\b'` libpq returns
# for such a string into broken SQL (`'E'a\\b'`: "syntax error"). TFX writes such strings (ImageExampleGen's
# regular expression, the Evaluator's eval_config with JSON inside JSON), so on PostgreSQL every string a
# store sends has each backslash written as _ESCAPE + 'b' (and _ESCAPE itself doubled), and every string it
# receives is decoded: MLMD's users in this process see the strings they wrote.
_ESCAPE = '\ue000'  # a private-use character
_ESCAPED = re.compile(_ESCAPE + '(.)', re.S)
_QUERY_FIELDS = {'filter_query', 'next_page_token', 'order_by_field'}  # MLMD's own syntax, passed as is


def encode_backslashes(text: str) -> str:
    return text.replace(_ESCAPE, _ESCAPE * 2).replace('\\', _ESCAPE + 'b')


def decode_backslashes(text: str) -> str:
    return _ESCAPED.sub(lambda found: '\\' if found.group(1) == 'b' else found.group(1), text) if _ESCAPE in text \
        else text


def map_strings(message, change: Callable[[str], str]) -> None:
    """Applies `change` to every string field of a proto message, nested messages and map values included."""
    for field, value in message.ListFields():
        if field.name in _QUERY_FIELDS:
            continue
        if field.type == descriptor.FieldDescriptor.TYPE_STRING:
            if field.label == descriptor.FieldDescriptor.LABEL_REPEATED:
                changed = [change(item) for item in value]
                del value[:]
                value.extend(changed)
            else:
                setattr(message, field.name, change(value))
        elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                kind = field.message_type.fields_by_name['value'].type
                for key in list(value):
                    if kind == descriptor.FieldDescriptor.TYPE_MESSAGE:
                        map_strings(value[key], change)
                    elif kind == descriptor.FieldDescriptor.TYPE_STRING:
                        value[key] = change(value[key])
            elif field.label == descriptor.FieldDescriptor.LABEL_REPEATED:
                for item in value:
                    map_strings(item, change)
            else:
                map_strings(value, change)


def handle_backslashes_on_postgresql() -> None:
    """Makes every MetadataStore of this process on PostgreSQL encode backslashes (see above); idempotent."""
    plain_call = mlmd.MetadataStore._call
    if getattr(plain_call, 'petpark_backslashes', False):
        return

    def call(self, method_name, request, response, extra_options=None):
        config = getattr(self, '_config', None)
        if not isinstance(config, ConnectionConfig) or not config.HasField('postgresql'):
            return plain_call(self, method_name, request, response, extra_options)
        encoded = type(request)()
        encoded.CopyFrom(request)
        map_strings(encoded, encode_backslashes)
        result = plain_call(self, method_name, encoded, response, extra_options)
        map_strings(response, decode_backslashes)
        return result
    call.petpark_backslashes = True
    mlmd.MetadataStore._call = call


def _check_sqlite_file(metadata_path: str, read_only: bool) -> None:
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


def open_store(metadata: Target, read_only: bool = True) -> mlmd.MetadataStore:
    """The store at `metadata` (a sqlite file's path or a ConnectionConfig); MetadataError when it cannot
    be read. `read_only` opens sqlite read-only (a missing file is an error); PostgreSQL has no such mode."""
    path = sqlite_path(metadata)
    if path is not None:
        _check_sqlite_file(path, read_only)
    else:
        handle_backslashes_on_postgresql()
    try:
        store = mlmd.MetadataStore(sqlite_config(path, read_only) if path is not None else metadata)
        store.get_context_types()  # reads the schema: a damaged file fails here, not later
    except (RuntimeError, errors.StatusError) as e:
        reason = str(e).strip().splitlines()[0].rsplit(' query: ', 1)[0][:200]  # the reason, without MLMD's SQL
        if path is not None:
            raise MetadataError(f'{path}: not a readable MLMD store ({reason})') from None
        password = metadata.postgresql.password if metadata.HasField('postgresql') else ''
        if password:
            reason = reason.replace(password, '***')
        raise MetadataError(f'{location(metadata)}: cannot open the MLMD store ({reason}; a refused login, '
                            'a wrong password or a missing database: the reason is logged above)') from None
    return store


WRITE_RETRY_SECONDS = 60.0  # a pipeline run holds sqlite's one writer (a database server's locks) for a moment


def retrying(call):
    """call() retried with back-off while the store is busy (aborted, unavailable, locked), up to
    WRITE_RETRY_SECONDS; then the last error."""
    deadline = time.monotonic() + WRITE_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            return call()
        except (errors.AbortedError, errors.UnavailableError, errors.InternalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def keyed_events(kind: int, artifacts: Dict[str, Optional[Artifact]]) -> List[tuple]:
    """(artifact, event) pairs for MLMD's put_execution: one event of `kind` (Event.INPUT or OUTPUT)
    per key, its path that key; keys whose artifact is None are left out."""
    pairs = []
    for key, artifact in artifacts.items():
        if artifact is None:
            continue
        event = metadata_store_pb2.Event(type=kind)
        event.path.steps.add().key = key
        pairs.append((artifact, event))
    return pairs


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

    def __init__(self, metadata: Target, pipeline_name: str):
        self.store = open_store(metadata)
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
