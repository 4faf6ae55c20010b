"""Shared test set-up: quiet TF logging, the path to optional real data."""
import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared'))
SHARED_FIXTURE = 'shared_dir'
REQUIRE_SHARED = 'PETPARK_REQUIRE_SHARED'  # CI sets it: where ../shared is, every test that needs it must run


def shared_present() -> bool:
    return os.path.isdir(os.path.join(SHARED, 'data'))


@pytest.fixture
def shared_dir():
    """../shared (real photos, weights); the test skips where it is absent."""
    if not shared_present():
        pytest.skip(f'real data not available at {SHARED}')
    return SHARED


_SHARED_TESTS = pytest.StashKey()


def pytest_collection_modifyitems(session, config, items):
    config.stash[_SHARED_TESTS] = {item.nodeid for item in items if SHARED_FIXTURE in item.fixturenames}


def shared_skips(config):
    """(test id, reason) of each collected test needing ../shared that skipped so far."""
    reporter = config.pluginmanager.get_plugin('terminalreporter')
    needing = config.stash.get(_SHARED_TESTS, set())
    found = reporter.stats.get('skipped', []) if reporter is not None else []
    return [(report.nodeid, report.longrepr[2].removeprefix('Skipped: ') if isinstance(report.longrepr, tuple)
             else str(report.longrepr)) for report in found if report.nodeid in needing]


def shared_required() -> bool:
    return os.environ.get(REQUIRE_SHARED) == '1' and os.path.isdir(SHARED)


def pytest_sessionfinish(session, exitstatus):
    """With PETPARK_REQUIRE_SHARED=1 and ../shared present, a skipped shared-data test fails the run."""
    if shared_required() and shared_skips(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Once: how many tests that need ../shared skipped, and why."""
    skipped = shared_skips(config)
    if not skipped:
        return
    reasons = '; '.join(sorted({reason for _, reason in skipped}))
    terminalreporter.write_sep('-', 'tests that need ../shared', yellow=True)
    terminalreporter.write_line(f'{len(skipped)} of {len(config.stash[_SHARED_TESTS])} tests that need ../shared '
                                f'(real photos and weights) skipped: {reasons}')
    if shared_required():
        terminalreporter.write_line(f'{REQUIRE_SHARED}=1 and {SHARED} exists: these skips fail the run', red=True)


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
    return SHARED if shared_present() else None
