"""The Airflow launcher records an artifact given under two input keys as one MLMD input event,
and a retried task's inputs once."""
import ml_metadata as mlmd
import pytest
from tfx.orchestration import data_types, metadata
from tfx.types import standard_artifacts

from petpark.pipeline import settings as config
from petpark.pipeline.runners import airflow_launcher


def model(artifact_id):
    artifact = standard_artifacts.Model()
    artifact.id = artifact_id
    return artifact


def test_an_artifact_under_two_keys_is_registered_once_and_others_are_kept():
    candidate, other, examples = model(7), model(8), model(3)
    inputs = {'examples': [examples], 'model': [candidate], 'baseline_model': [candidate, other]}
    kept = airflow_launcher.first_occurrences(inputs)
    assert {key: [a.id for a in artifacts] for key, artifacts in kept.items()} == \
        {'examples': [3], 'model': [7], 'baseline_model': [8]}
    assert [a.id for a in inputs['baseline_model']] == [7, 8]  # what the executor gets is untouched
    assert airflow_launcher.first_occurrences(None) == {}


def register_twice(metadata_class, path):
    """Registers the Pusher's execution of one run twice, as an Airflow retry does, each try with its
    pending output as TFX's driver prepares it (`pushed_model:<run id>`), the second try published;
    returns both executions, both outputs and what the next task would take as its input."""
    pipeline = data_types.PipelineInfo('petpark', str(path / 'root'), run_id='manual__1')
    component = data_types.ComponentInfo('ServingPusher', 'Pusher', pipeline)
    with metadata_class(metadata.sqlite_metadata_connection_config(str(path / 'mlmd.sqlite'))) as store:
        candidate = standard_artifacts.Model()
        candidate.uri = str(path / 'model')
        store.publish_artifacts([candidate])
        executions, outputs = [], []
        for attempt in range(2):
            contexts = store.register_pipeline_contexts_if_not_exists(pipeline)
            execution = store.register_execution(pipeline, component, contexts, input_artifacts={'model': [candidate]})
            pushed = standard_artifacts.PushedModel()
            pushed.name, pushed.uri = 'pushed_model:manual__1', str(path / 'pushed' / str(attempt))
            store.update_execution(execution, component, output_artifacts={'pushed_model': [pushed]},
                                   artifact_state='pending', contexts=contexts)
            executions.append(execution)
            outputs.append(pushed)
        store.publish_execution(component, output_artifacts={'pushed_model': [pushed]})  # the retry succeeded
        found = store.search_artifacts('pushed_model', pipeline, 'Pusher')  # what the next task takes as input
        return executions, outputs, found


def test_a_retried_task_reuses_its_execution_without_recording_its_inputs_again(tmp_path):
    (tmp_path / 'tfx').mkdir()
    with pytest.raises(mlmd.errors.AlreadyExistsError, match='event already exists'):
        register_twice(metadata.Metadata, tmp_path / 'tfx')  # TFX's own, on a retry
    (tmp_path / 'petpark').mkdir()
    (first, retry), (failed_output, retried_output), found = register_twice(
        airflow_launcher.OneEventPerArtifactMetadata, tmp_path / 'petpark')
    assert retry.id == first.id
    assert (failed_output.name, retried_output.name) == ('pushed_model:manual__1', 'pushed_model:manual__1:try-2')
    assert retried_output.id and retried_output.id != failed_output.id
    assert [artifact.id for artifact in found] == [retried_output.id]  # not the one the failed try left pending


@pytest.mark.parametrize('name,value,message', [
    ('PETPARK_AIRFLOW_START_DATE', '28/11/2026', 'YYYY-MM-DD'),
    ('PETPARK_AIRFLOW_RETRIES', '-1', '0 or more'),
    ('PETPARK_AIRFLOW_RETRY_DELAY_S', '0', 'at least 1'),
    ('PETPARK_AIRFLOW_WEB_PORT', '70000', 'port number'),
])
def test_bad_airflow_settings_are_named(name, value, message):
    with pytest.raises(ValueError, match=f'{name}.*{message}|{name} must'):
        config.Settings.from_env(environ={name: value})


def test_a_missing_data_folder_is_left_to_the_run_when_asked():
    with pytest.raises(ValueError, match='PETPARK_DATA_ROOT'):
        config.Settings.from_env(environ={'PETPARK_DATA_ROOT': '/nonexistent/photos'})
    settings = config.Settings.from_env(environ={'PETPARK_DATA_ROOT': '/nonexistent/photos'}, check_data_root=False)
    assert settings.data.data_root == '/nonexistent/photos'
