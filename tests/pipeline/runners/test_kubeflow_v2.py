"""The same pipeline compiled for Kubeflow Pipelines v2 / Vertex AI (no cluster here: the spec is checked)."""
import json

import pytest
from tfx.dsl.components.base import base_beam_executor

from petpark.pipeline import factory, settings as config
from petpark.pipeline.runners import beam as local_runner, kubeflow_v2 as kubeflow_v2_runner

IMAGE = 'europe-docker.pkg.dev/petpark/pipelines/petpark:test'
DATAFLOW = ['--runner=DataflowRunner', '--project=petpark', '--region=europe-west4',
            '--temp_location=gs://petpark-bucket/tmp']


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
    settings = config.Settings.from_env({'home': 'gs://petpark-bucket/home', 'data_root': 'gs://petpark-bucket/photos',
                                         'beam_args': ' '.join(DATAFLOW)}, environ={})
    output = str(tmp_path_factory.mktemp('kfp') / 'petpark_pipeline.json')
    spec = kubeflow_v2_runner.compile_pipeline(settings, IMAGE, output)
    pipeline = factory.pipeline_from_settings(settings, pipeline_root=settings.pipeline_root, metadata_connection_config=None,
                                       beam_pipeline_args=DATAFLOW, user_code_from='installed')
    with open(output) as f:
        written = json.load(f)
    assert written == spec
    return spec['pipelineSpec'], pipeline, written


def test_every_component_runs_in_the_image_with_its_executor(compiled):
    spec, pipeline, _ = compiled
    tasks = spec['root']['dag']['tasks']
    executors = spec['deploymentSpec']['executors']
    for node in pipeline.components:
        if node.id == 'latest_blessed_model_resolver':  # compiled into two resolver tasks, no container
            assert {f'{node.id}-model-resolver', f'{node.id}-model-blessing-resolver'} <= set(tasks)
            continue
        assert node.id in tasks, node.id
        container = executors[f'{node.id}_executor']['container']
        assert container['image'] == IMAGE
        assert container['command'][-1] == 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor'
        executor_class = node.executor_spec.executor_class
        assert container['args'][:2] == ['--executor_class_path',
                                         f'{executor_class.__module__}.{executor_class.__name__}'], node.id


def test_the_image_example_gen_resolves_spans_before_it_runs(compiled):
    """Kubeflow V2 runs TFX's span-resolving driver before FileBasedExampleGens; ImageExampleGen is one."""
    spec, _, _ = compiled
    hook = spec['deploymentSpec']['executors']['ImageExampleGen_executor']['container']['lifecycle']['preCacheCheck']
    assert hook['command'][-1] == 'tfx.orchestration.kubeflow.v2.file_based_example_gen.driver'
    assert hook['args'][-len(DATAFLOW):] == DATAFLOW


def test_beam_args_reach_every_beam_powered_component(compiled):
    spec, pipeline, _ = compiled
    executors = spec['deploymentSpec']['executors']
    beam_nodes = [node.id for node in pipeline.components if hasattr(node, 'executor_spec')
                  and issubclass(node.executor_spec.executor_class, base_beam_executor.BaseBeamExecutor)]
    assert {'ImageExampleGen', 'StatisticsGen', 'Transform', 'Evaluator'} <= set(beam_nodes)
    for node_id in beam_nodes:
        assert executors[f'{node_id}_executor']['container']['args'][-len(DATAFLOW):] == DATAFLOW, node_id


def test_module_code_comes_from_the_image_and_nothing_is_uploaded(compiled):
    spec, _, _ = compiled
    parameters = {name: json.dumps(spec['root']['dag']['tasks'][name]) for name in ('Transform', 'Tuner', 'Trainer')}
    assert 'petpark.modules.preprocessing.preprocessing_fn' in parameters['Transform']
    assert 'petpark.modules.tuner.tuner_fn' in parameters['Tuner']
    assert 'petpark.modules.trainer.run_fn' in parameters['Trainer']
    assert not any('_wheels' in text or 'module_file' in text for text in parameters.values())


def task_parameter(spec, task, name):
    """A constant parameter of a compiled task, as the executor will receive it."""
    parameter = spec['root']['dag']['tasks'][task]['inputs']['parameters'][name]
    return parameter['runtimeValue']['constantValue']['stringValue']


def test_the_pipeline_root_and_every_destination_stay_in_the_bucket(compiled):
    """What the compiled file tells Vertex/Kubeflow, not the Pipeline object this test built."""
    spec, _, written = compiled
    assert written['runtimeConfig']['gcsOutputDirectory'] == 'gs://petpark-bucket/home/pipeline_root/petpark'
    assert task_parameter(spec, 'ImageExampleGen', 'input_base') == 'gs://petpark-bucket/photos'
    push = json.loads(task_parameter(spec, 'Pusher', 'push_destination'))
    assert push == {'filesystem': {'base_directory': 'gs://petpark-bucket/home/serving/petpark'}}
    assert task_parameter(spec, 'OnnxExporter', 'edge_base_directory') == 'gs://petpark-bucket/home/edge/petpark'
    assert task_parameter(spec, 'ModelCardGenerator', 'card_base_directory') == \
        'gs://petpark-bucket/home/model_cards/petpark'
    assert 'gs:/petpark' not in json.dumps(written)  # no URI was made a local path (one slash lost)


@pytest.mark.parametrize('value,message', [('--runner=Flink "unclosed', 'PETPARK_BEAM_ARGS: No closing quotation'),
                                           ('runner=DataflowRunner', "must be a --flag=value, got 'runner=DataflowRunner'")])
def test_bad_beam_args_are_named(value, message):
    with pytest.raises(ValueError, match=message):
        config.Settings.from_env({'beam_args': value}, environ={})


def test_the_local_runner_takes_beam_args_from_the_settings(tmp_path):
    flink = ['--runner=FlinkRunner', '--flink_master=flink:8081', '--environment_type=LOOPBACK']
    settings = config.Settings.from_env({'home': str(tmp_path), 'beam_args': ' '.join(flink)}, environ={})
    assert local_runner.pipeline_beam_args(settings.beam) == flink
    default = config.Settings.from_env({'home': str(tmp_path), 'beam_workers': '2'}, environ={})
    assert local_runner.pipeline_beam_args(default.beam) == local_runner.beam_pipeline_args(2)
    assert f'--requirements_file={local_runner.BEAM_REQUIREMENTS}' in local_runner.beam_pipeline_args(2)


@pytest.mark.parametrize('args,added', [
    (['--runner=FnApiRunner', '--direct_num_workers=2'], True),
    (['--runner=apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner'], True),
    (['--runner=fnapi'], True),
    (['--runner=FnApiRunner', '--setup_file=./setup.py'], False),
    (['--runner=FnApiRunner', '--sdk_container_image=gcr.io/p/beam:1'], False),
    (['--runner=DataflowRunner', '--project=p'], False),
    (['--runner=FlinkRunner', '--environment_type=LOOPBACK'], False)])
def test_tfx_repackages_itself_only_for_runners_that_stage(args, added):
    from tfx.utils import dependency_utils

    extended = local_runner.worker_dependency_args(args)
    assert extended == (args + [f'--requirements_file={local_runner.BEAM_REQUIREMENTS}'] if added else args)
    if added:  # TFX's own check now finds the workers' dependencies and builds nothing
        assert dependency_utils.make_beam_dependency_flags(extended) == extended
