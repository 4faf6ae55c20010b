"""Shared test set-up: quiet TF logging, the path to optional real data."""
import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared'))


@pytest.fixture
def shared_dir():
    """../shared (real photos, weights); the test skips where it is absent."""
    if not os.path.isdir(os.path.join(SHARED, 'data')):
        pytest.skip(f'real data not available at {SHARED}')
    return SHARED


@pytest.fixture(scope='session')
def transformed(tmp_path_factory):
    """{'examples': Examples, 'transform_graph': TransformGraph, 'data_root', 'home'}: the pipeline
    up to Transform on 64 synthetic images at 32 pixels."""
    from tfx.types import standard_artifacts
    from petpark.pipeline import settings as config, synthetic_data
    from petpark.pipeline.inspection import summary
    from petpark.pipeline.runners import local as local_runner
    from tests.pipeline_fixtures import IMAGE_SIZE
    home = tmp_path_factory.mktemp('modules_home')
    data_root = os.path.join(home, 'data')
    synthetic_data.generate(data_root, 64, seed=3)
    settings = config.Settings.from_env({'home': str(home), 'data_root': data_root, 'image_size': IMAGE_SIZE,
                                         'pipeline_name': 'modules_fixture'}, environ={})
    local_runner.run(settings, local_runner.local_pipeline(settings, stop_after='Transform'))
    run = summary.latest_run(settings.metadata_path, 'modules_fixture')
    examples = standard_artifacts.Examples()
    examples.set_mlmd_artifact(run.output('Transform', 'transformed_examples'))
    raw_examples = standard_artifacts.Examples()
    raw_examples.set_mlmd_artifact(run.output('ImageExampleGen', 'examples'))
    graph = standard_artifacts.TransformGraph()
    graph.set_mlmd_artifact(run.output('Transform', 'transform_graph'))
    return {'examples': examples, 'raw_examples': raw_examples, 'transform_graph': graph, 'data_root': data_root,
            'home': str(home)}


@pytest.fixture(scope='session')
def trained_model(transformed, tmp_path_factory):
    """A Model artifact: a petpark CNN trained a few steps on the session's Transform output."""
    from tests.pipeline_fixtures import train_model
    return train_model(transformed, str(tmp_path_factory.mktemp('trained')))


@pytest.fixture(scope='session')
def edge_export(transformed, trained_model, tmp_path_factory):
    """(OnnxModel artifact, edge model folder) of the trained model, INT8 shipped."""
    from tests.pipeline_fixtures import export_edge
    work = str(tmp_path_factory.mktemp('edge_work'))
    return export_edge(transformed, trained_model, work, max_int8_accuracy_drop=1.0), os.path.join(work, 'edge', 'petpark')


@pytest.fixture
def shared_dir_or_none():
    """../shared when present, else None (for tests that only add real photos where they exist)."""
    return SHARED if os.path.isdir(os.path.join(SHARED, 'data')) else None
