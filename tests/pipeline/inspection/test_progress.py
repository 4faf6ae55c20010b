"""Progress lines come from the executions TFX records in MLMD, not from log wording."""
import io

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from petpark.pipeline.inspection import progress

Execution = metadata_store_pb2.Execution


class FakeRun:
    """An MLMD store written the way TFX's launcher writes it: executions tied to node contexts."""

    def __init__(self, path):
        self.config = metadata.sqlite_metadata_connection_config(path)
        self.store = mlmd.MetadataStore(self.config)
        self.types = {name: self.store.put_context_type(metadata_store_pb2.ContextType(name=name))
                      for name in ('pipeline', 'node')}
        self.execution_type = self.store.put_execution_type(metadata_store_pb2.ExecutionType(name='Component'))
        self.pipeline = self._context('pipeline', 'petpark')

    def _context(self, kind, name):
        context = metadata_store_pb2.Context(type_id=self.types[kind], name=name)
        context.id = self.store.put_contexts([context])[0]
        return context

    def execute(self, node, state, pipeline='petpark'):
        execution = Execution(type_id=self.execution_type, last_known_state=state)
        contexts = [self.pipeline, self._node(f'{pipeline}.{node}')]
        execution.id = self.store.put_execution(execution, [], contexts)[0]
        return execution

    def _node(self, name):
        found = self.store.get_context_by_type_and_name('node', name)
        return found or self._context('node', name)

    def finish(self, execution, state):
        execution.last_known_state = state
        self.store.put_executions([execution])


def test_lines_follow_execution_states_of_this_run_only(tmp_path):
    run = FakeRun(str(tmp_path / 'metadata.sqlite'))
    run.execute('ImageExampleGen', Execution.COMPLETE)  # an earlier run: not reported
    out = io.StringIO()
    watch = progress.RunProgress(run.config, 'petpark', ['ImageExampleGen', 'Transform', 'Trainer', 'Pusher'],
                                 out, interval_seconds=3600)
    with watch:
        run.execute('ImageExampleGen', Execution.CACHED)
        transform = run.execute('Transform', Execution.RUNNING)
        run.execute('Transform', Execution.COMPLETE, pipeline='other_pipeline')  # not ours
        watch.poll()
        assert out.getvalue() == '  > ImageExampleGen ...\n  + ImageExampleGen                  cached     0.0s\n' \
                                 '  > Transform ...\n'
        run.finish(transform, Execution.COMPLETE)
        trainer = run.execute('Trainer', Execution.RUNNING)
        run.finish(trainer, Execution.FAILED)
    lines = out.getvalue().splitlines()
    assert [line.split()[:3] for line in lines[3:]] == [['+', 'Transform', 'done'], ['>', 'Trainer', '...']]
    assert lines.count('  > ImageExampleGen ...') == 1
    assert watch.failed_node == 'Trainer'


def test_a_node_that_fails_before_registering_an_execution_is_named(tmp_path):
    run = FakeRun(str(tmp_path / 'metadata.sqlite'))
    watch = progress.RunProgress(run.config, 'petpark', ['ImageExampleGen', 'StatisticsGen'], io.StringIO(),
                                 interval_seconds=3600)
    with watch:
        run.execute('ImageExampleGen', Execution.COMPLETE)
    assert watch.failed_node == 'StatisticsGen'


def test_a_store_that_does_not_exist_yet_is_waited_for(tmp_path):
    config = metadata.sqlite_metadata_connection_config(str(tmp_path / 'later' / 'metadata.sqlite'))
    out = io.StringIO()
    watch = progress.RunProgress(config, 'petpark', ['ImageExampleGen'], out, interval_seconds=3600)
    with watch:
        watch.poll()
        assert not (tmp_path / 'later' / 'metadata.sqlite').exists()
        FakeRun(str(tmp_path / 'later' / 'metadata.sqlite')).execute('ImageExampleGen', Execution.COMPLETE)
    assert out.getvalue().splitlines()[-1].split()[:3] == ['+', 'ImageExampleGen', 'done']
