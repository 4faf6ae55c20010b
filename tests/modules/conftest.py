"""Real Transform output for the module tests: the pipeline up to Transform on 64 synthetic images."""
import os

import pytest
from tfx.components.trainer import fn_args_utils
from tfx.types import standard_artifacts

from petpark.modules import training_config
from petpark.pipeline import config, local_runner, summary, synthetic_data

IMAGE_SIZE = 32


def custom_config(component, search_space=None, algorithm='random', max_trials=2, seed=0):
    """`component`'s custom_config, as the pipeline passes it, for a small and quick model."""
    return training_config.TrainingConfig(
        preprocessing=training_config.PreprocessingConfig(image_size=IMAGE_SIZE),
        model=training_config.ModelConfig(backbone='cnn', backbone_weights=None,
                                          search_space=training_config.search_space_with(search_space)),
        tuning=training_config.TuningConfig(epochs=2, batch_size=8, seed=seed, algorithm=algorithm,
                                            max_trials=max_trials),
        training=training_config.FitConfig(epochs=2, batch_size=8, seed=seed)).custom_config(component)


@pytest.fixture(scope='session')
def transformed(tmp_path_factory):
    """{'examples': Examples, 'transform_graph': TransformGraph, 'data_root': str} artifacts."""
    home = tmp_path_factory.mktemp('modules_home')
    data_root = os.path.join(home, 'data')
    synthetic_data.generate(data_root, 64, seed=3)
    settings = config.Settings.from_env({'home': str(home), 'data_root': data_root, 'image_size': IMAGE_SIZE,
                                         'pipeline_name': 'modules_fixture'}, environ={})
    local_runner.run(settings, local_runner.local_pipeline(settings, stop_after='Transform'))
    run = summary.latest_run(settings.metadata_path, 'modules_fixture')
    examples = standard_artifacts.Examples()
    examples.set_mlmd_artifact(run.output('Transform', 'transformed_examples'))
    graph = standard_artifacts.TransformGraph()
    graph.set_mlmd_artifact(run.output('Transform', 'transform_graph'))
    return {'examples': examples, 'transform_graph': graph, 'data_root': data_root, 'home': str(home)}


@pytest.fixture
def fn_args(transformed, tmp_path):
    """FnArgs as the Tuner/Trainer executors build them, over the fixture's Transform output
    (custom_config: set by each test for its component)."""
    args = fn_args_utils.get_common_fn_args(
        {'examples': [transformed['examples']], 'transform_graph': [transformed['transform_graph']]},
        {'train_args': '{"num_steps": 6}', 'eval_args': '{"num_steps": 2}'},
        working_dir=str(tmp_path / 'work'))
    args.serving_model_dir = str(tmp_path / 'serving_model')
    args.model_run_dir = str(tmp_path / 'model_run')
    return args
