"""Progress lines for a running pipeline, read from MLMD as the orchestrator records them.

TFX registers each node's execution in MLMD (RUNNING, then COMPLETE, CACHED or FAILED).
A RunProgress thread polls a read-only connection to the store and prints one line when
a node's execution appears and one when it ends, with the time MLMD recorded.
"""
import threading
from typing import Dict, List, Optional, Sequence, TextIO

import ml_metadata as mlmd
from ml_metadata import errors
from ml_metadata.proto import metadata_store_pb2

from petpark.pipeline.inspection.store import node_of_executions, read_only

Execution = metadata_store_pb2.Execution
_ENDED = {Execution.COMPLETE: 'done', Execution.CACHED: 'cached'}


class RunProgress:
    """Context manager: prints `  > Node ...` and `  + Node  done|cached  1.2s` lines for the
    executions a run adds to the store while the `with` block runs."""

    def __init__(self, connection_config: metadata_store_pb2.ConnectionConfig, pipeline_name: str,
                 node_ids: Sequence[str], out: TextIO, interval_seconds: float = 0.5):
        self._config = read_only(connection_config)
        self._pipeline_name, self._node_ids = pipeline_name, list(node_ids)
        self._out, self._interval = out, interval_seconds
        self._store: Optional[mlmd.MetadataStore] = None
        self._after_id = 0
        self._nodes: Dict[int, str] = {}  # execution id -> node id, for this run's executions
        self._started: List[str] = []
        self._state: Dict[str, int] = {}  # node id -> last state seen
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name='run-progress')

    def __enter__(self) -> 'RunProgress':
        store = self._connect()
        if store is not None:
            self._after_id = max((e.id for e in store.get_executions()), default=0)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()
        self.poll()  # the last transitions, after the runner returned or raised

    def _connect(self) -> Optional[mlmd.MetadataStore]:
        """The store; None while it does not exist yet (a first run creates it)."""
        if self._store is None:
            try:
                self._store = mlmd.MetadataStore(self._config)
            except RuntimeError:
                return None
        return self._store

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self.poll()

    def poll(self) -> None:
        """Prints the lines for every transition since the last poll; a store that is busy or
        not created yet is read again at the next poll."""
        store = self._connect()
        if store is None:
            return
        try:
            executions = store.get_executions(list_options=mlmd.ListOptions(filter_query=f'id > {self._after_id}'))
            unknown = [e for e in executions if e.id not in self._nodes]
            if unknown:
                self._nodes.update(node_of_executions(store, self._pipeline_name, unknown))
        except (RuntimeError, errors.StatusError):
            return
        for execution in sorted(executions, key=lambda e: e.id):
            node = self._nodes.get(execution.id)
            if node is None or self._state.get(node) == execution.last_known_state:
                continue
            self._state[node] = execution.last_known_state
            if node not in self._started:
                self._started.append(node)
                self._out.write(f'  > {node} ...\n')
            if execution.last_known_state in _ENDED:
                seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0
                self._out.write(f'  + {node:<32} {_ENDED[execution.last_known_state]:<7}{seconds:7.1f}s\n')
        self._out.flush()

    @property
    def failed_node(self) -> Optional[str]:
        """After a failure: the node whose execution failed or never ended, else the first node
        that never started (its driver failed before registering an execution)."""
        for node in self._started:
            if self._state[node] not in _ENDED:
                return node
        return next((node for node in self._node_ids if node not in self._started), None)
