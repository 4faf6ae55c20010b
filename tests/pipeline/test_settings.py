"""Settings: declared once; environment, overrides, validation; docs/settings.md is generated from them."""
import json
import os
import re
import warnings

import pytest

from petpark.pipeline import settings as config

SETTINGS_PAGE = os.path.join(config.REPO_ROOT, 'docs', 'settings.md')


def test_environment_then_overrides(tmp_path):
    env = {'PETPARK_HOME': str(tmp_path / 'h'), 'PETPARK_TUNE': 'false', 'PETPARK_TRAIN_STEPS': '7',
           'PETPARK_MIN_ACCURACY': '0.9'}
    settings = config.Settings.from_env({'train_steps': '9', 'data_root': None}, environ=env)
    assert settings.home == str(tmp_path / 'h')
    assert settings.training.tune is False and settings.training.train_steps == 9
    assert settings.evaluation.min_accuracy == 0.9
    assert settings.serving_model_dir == os.path.join(str(tmp_path / 'h'), 'serving', 'petpark')
    assert settings.input_base == os.path.join(str(tmp_path / 'h'), 'data', 'synthetic')


@pytest.mark.parametrize('env,message', [
    ({'PETPARK_TRAIN_STEPS': 'many'}, "PETPARK_TRAIN_STEPS='many'"),
    ({'PETPARK_TUNE': 'maybe'}, 'PETPARK_TUNE=.*true/false'),
    ({'PETPARK_BACKBONE': 'resnet'}, 'PETPARK_BACKBONE must be one of cnn, mobilenet, mobilenet_v1_0.25'),
    ({'PETPARK_BACKBONE': 'mobilenet_v2_0.5'}, 'PETPARK_BACKBONE_WEIGHTS is required for .mobilenet_v2_0.5.'),
    ({'PETPARK_BACKBONE': 'mobilenet', 'PETPARK_BACKBONE_WEIGHTS': '/nonexistent.h5'},
     "PETPARK_BACKBONE_WEIGHTS '/nonexistent.h5' is not a file"),
    ({'PETPARK_BACKBONE_WEIGHTS': '/etc/hostname'}, 'PETPARK_BACKBONE_WEIGHTS is for pretrained backbones'),
    ({'PETPARK_DATA_ROOT': '/no/such/dir'}, 'PETPARK_DATA_ROOT.*not a directory'),
    ({'PETPARK_BATCH_SIZE': '0'}, 'PETPARK_BATCH_SIZE must be at least 1'),
    ({'PETPARK_TUNER_ALGORITHM': 'grid'}, 'PETPARK_TUNER_ALGORITHM'),
    ({'PETPARK_SEARCH_SPACE': '{filters: 3'}, 'PETPARK_SEARCH_SPACE is not valid JSON'),
    ({'PETPARK_SEARCH_SPACE': '{"filters": []}'}, 'non-empty lists'),
    ({'PETPARK_VALIDATION_SERVER': 'kserve'}, "PETPARK_VALIDATION_SERVER must be one of .*'kserve'"),
    ({'PETPARK_VALIDATION_MAX_LATENCY_MS': '0'}, 'PETPARK_VALIDATION_MAX_LATENCY_MS must be positive'),
    ({'PETPARK_PROFILE': 'prod'}, "Unknown profile 'prod': one of demo, real"),
    ({'PETPARK_FINE_TUNE_EPOCHS': '2'}, "PETPARK_FINE_TUNE_EPOCHS must be 0 for 'cnn'"),
    ({'PETPARK_FINE_TUNE_LEARNING_RATE': '2'}, 'PETPARK_FINE_TUNE_LEARNING_RATE must be in'),
    ({'PETPARK_MIN_CLASS_RECALL': '1.5'}, 'PETPARK_MIN_CLASS_RECALL must be between 0 and 1'),
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        config.Settings.from_env(environ=env)


def test_a_weights_file_with_another_hash_is_rejected_before_anything_runs(tmp_path):
    impostor = tmp_path / 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5'
    impostor.write_bytes(b'not the published weights')
    with pytest.raises(ValueError, match='PETPARK_BACKBONE_WEIGHTS .* has sha256 [0-9a-f]{64}, not the '
                                         'mobilenet_v2_0.5 weights'):
        config.Settings.from_env(environ={'PETPARK_BACKBONE': 'mobilenet_v2_0.5',
                                          'PETPARK_BACKBONE_WEIGHTS': str(impostor)})


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="Unknown setting 'colour'"):
        config.Settings.from_env({'colour': 'red'}, environ={})


def test_the_settings_page_is_the_declarations():
    """docs/settings.md holds exactly the generated table (`petpark settings --markdown`)."""
    page = open(SETTINGS_PAGE).read()
    assert config.markdown_table() in page, 'docs/settings.md is stale: regenerate its table with petpark settings --markdown'
    documented = set(re.findall(r'^\| `(PETPARK_[A-Z0-9_]+)` \|', page, re.M))
    assert documented == {s.env for s in config.DECLARED.values()} | set(config.OTHER_VARIABLES)


def test_each_setting_is_declared_once_and_named_by_its_variable():
    assert len(config.DECLARED) == 70
    assert all(d.env == 'PETPARK_' + d.name.upper() for d in config.DECLARED.values())
    assert {group for group, _, _ in config.groups()} == {
        'pipeline', 'data', 'training', 'evaluation', 'serving_check', 'export', 'beam', 'monitoring', 'release',
        'airflow'}
    settings = config.Settings.from_env({'airflow_retries': '5'}, environ={})
    assert settings.airflow.retries == 5 and settings.value('airflow_retries') == 5


@pytest.mark.parametrize('variable,value,message', [
    ('PETPARK_MODEL_NAME', '../../x', "PETPARK_MODEL_NAME='../../x': a name of letters"),
    ('PETPARK_PIPELINE_NAME', 'a/b', "PETPARK_PIPELINE_NAME='a/b'"),
    ('PETPARK_MODEL_NAME', '.hidden', 'no leading'),
    ('PETPARK_TRAIN_FRACTION', 'nan', 'PETPARK_TRAIN_FRACTION must be a finite number'),
    ('PETPARK_BEAM_WORKERS', '0', 'PETPARK_BEAM_WORKERS must be between 1 and 256'),
    ('PETPARK_AIRFLOW_WEB_PORT', '70000', 'PETPARK_AIRFLOW_WEB_PORT must be between 0 and 65535'),
])
def test_names_that_become_paths_and_numbers_are_checked_when_read(variable, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        config.Settings.from_env(environ={variable: value})


SECRET = 'hunter2-secret'


@pytest.mark.parametrize('url,message', [
    (f'mysql://u:{SECRET}@h/db', "the scheme must be postgresql, not 'mysql'"),
    ('/tmp/metadata.sqlite', 'not a URL'),
    (f'postgresql://u:{SECRET}@h:99999/db', 'the host or port cannot be read'),
    (f'postgresql://u:{SECRET}@h:0/db', 'the port must be a number from 1 to 65535'),
    (f'postgresql://u:{SECRET}@h', 'it needs one database name after the host'),
    (f'postgresql://u:{SECRET}@h/a/b', 'it needs one database name after the host'),
    (f'postgresql://u:{SECRET}@h/db?sslmode=require', 'no ?options or #fragment are read'),
    (f'postgresql://:{SECRET}@h/db', 'it needs a user and a host'),
    (f'postgresql:/u:{SECRET}@h/db', 'it needs a user and a host'),
    (f'postgresql://u:{SECRET}/x@h/db', 'the host or port cannot be read'),  # an unencoded "/" in the password
    (f'postgresql://u:{SECRET}%20x@h/db', 'none may hold a space, a quote or a backslash'),  # MLMD would cut it
])
def test_a_bad_metadata_url_names_the_variable_and_never_shows_the_password(url, message):
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        config.Settings.from_env(environ={'PETPARK_METADATA': url})
    assert str(raised.value).startswith('PETPARK_METADATA=') and 'postgresql://USER:PASSWORD@HOST:PORT/DBNAME' \
        in str(raised.value)
    assert 'hunter2' not in str(raised.value) and 'secret' not in str(raised.value)


def test_the_metadata_setting_builds_mlmds_connection(tmp_path):
    from ml_metadata.proto import metadata_store_pb2
    sqlite = config.Settings.from_env({'home': str(tmp_path)}, environ={}).metadata_connection()
    assert sqlite.WhichOneof('config') == 'sqlite' and sqlite.sqlite.filename_uri == str(tmp_path / 'metadata.sqlite')
    assert sqlite.sqlite.connection_mode == metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    url = 'postgresql://ml%40md:p%2Fw:x@db.example:6543/mlmd'  # percent-encoded "@" and "/"; ":" may stay
    server = config.Settings.from_env(environ={'PETPARK_METADATA': url}).metadata_connection()
    assert server.WhichOneof('config') == 'postgresql'
    found = server.postgresql
    assert (found.host, found.port, found.user, found.password, found.dbname) == \
        ('db.example', '6543', 'ml@md', 'p/w:x', 'mlmd')
    default_port = config.Settings.from_env(environ={'PETPARK_METADATA': 'postgres://u@h/d'}).metadata_connection()
    assert (default_port.postgresql.port, default_port.postgresql.password) == ('5432', '')


def test_the_metadata_password_is_never_shown(tmp_path, monkeypatch, capsys, caplog):
    """Not by `petpark settings`, nor where MLMD is named (errors, a refused connection), nor in the local
    runner's log (LocalDagRunner logs its whole connection config)."""
    import logging
    from absl import logging as absl_logging
    from petpark.pipeline import cli
    from petpark.pipeline.inspection import store
    from petpark.pipeline.runners import local as local_runner
    from petpark.serving.ports import free_port
    url = f'postgresql://mlmd:{SECRET}@127.0.0.1:{free_port()}/mlmd'  # nothing listens there
    monkeypatch.setenv('PETPARK_METADATA', url)
    assert cli.main(['settings']) == 0
    printed = capsys.readouterr().out
    assert re.search(r'PETPARK_METADATA +"postgresql://mlmd:\*\*\*@127\.0\.0\.1:\d+/mlmd"', printed)
    assert SECRET not in printed
    settings = config.Settings.from_env({'home': str(tmp_path / 'home'), 'data_root': str(tmp_path)})
    assert store.location(settings.metadata_connection()) == url.replace(f':{SECRET}', '')
    with pytest.raises(store.MetadataError, match='cannot open the MLMD store') as refused:
        store.open_store(settings.metadata_connection())
    assert str(refused.value).startswith('postgresql://mlmd@127.0.0.1:') and SECRET not in str(refused.value)
    pipeline = local_runner.local_pipeline(settings)
    assert pipeline.metadata_connection_config.postgresql.password == SECRET
    assert not (tmp_path / 'home').exists()  # no sqlite file, so no folder for it
    caplog.set_level(logging.INFO, logger='absl')  # as TFX's runner logs, whatever earlier tests quietened
    monkeypatch.setattr(logging.getLogger('absl'), 'propagate', True)
    monkeypatch.setattr(logging.getLogger('absl'), 'disabled', False)
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    with local_runner._password_masked(pipeline):
        absl_logging.info('Using connection config:\n %s', pipeline.metadata_connection_config)
    absl_logging.info('after the run: %s', SECRET)
    absl_logging.set_verbosity(verbosity)
    assert 'password: "***"' in caplog.text and caplog.text.count(SECRET) == 1  # masked during the run only


def test_an_unknown_variable_is_warned_about_naming_the_closest_setting():
    with pytest.warns(config.UnknownSettingWarning, match="PETPARK_IMAGE_SZIE .*did you mean 'PETPARK_IMAGE_SIZE'"):
        settings = config.Settings.from_env(environ={'PETPARK_IMAGE_SZIE': '99'})
    assert settings.training.image_size == 64
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the variables scripts and tests use are known
        config.Settings.from_env(environ={'PETPARK_REQUIRE_AIRFLOW': '1', 'PETPARK_IMAGE_SIZE': '32'})


def test_search_space_reaches_tuner_and_fixes_trainer_hyperparameters(tmp_path):
    from petpark.modules import training_config
    settings = config.Settings.from_env(
        {'home': str(tmp_path), 'search_space': '{"filters": [16, 8], "dropout": [0.5]}'}, environ={})
    nodes = {node.id: node for node in build(settings).components}
    tuner_config = json.loads(nodes['Tuner'].exec_properties['custom_config'])
    assert tuner_config['model']['search_space']['filters'] == [16, 8]
    assert tuner_config['model']['search_space']['conv_blocks'] == [4, 3]  # defaults kept
    trainer_config = training_config.TrainingConfig.from_custom_config(
        json.loads(nodes['Trainer'].exec_properties['custom_config']), 'Trainer')
    hyperparameters = trainer_config.model.fixed_hyperparameters()
    assert hyperparameters['filters'] == 16 and hyperparameters['dropout'] == 0.5


def build(settings, **choices):
    from petpark.pipeline import factory
    return factory.pipeline_from_settings(settings, **dict(dict(
        pipeline_root=settings.pipeline_root, metadata_connection_config=None, beam_pipeline_args=[]), **choices))


@pytest.mark.parametrize('env,message', [
    ({'PETPARK_SEARCH_SPACE': '{"depth": [1, 2]}'}, r"PETPARK_SEARCH_SPACE has unknown hyperparameters \['depth'\]"),
    ({'PETPARK_SEARCH_SPACE': '{"dropout": [0.2, 1.5]}'}, r"PETPARK_SEARCH_SPACE 'dropout': 1.5 is outside \[0.0, 0.9\]"),
    ({'PETPARK_SEARCH_SPACE': '{"filters": [16, "many"]}'}, r"PETPARK_SEARCH_SPACE 'filters': 'many' is not an integer"),
    ({'PETPARK_IMAGE_SIZE': '8'}, 'PETPARK_IMAGE_SIZE must be at least 16, got 8'),
    ({'PETPARK_TUNER_TRIALS': '0'}, 'PETPARK_TUNER_TRIALS must be at least 1'),
])
def test_training_config_is_validated_before_any_component_runs(env, message):
    with pytest.raises(ValueError, match=message):
        config.Settings.from_env(environ=env)


def test_each_component_gets_only_the_config_sections_it_reads(tmp_path):
    settings = config.Settings.from_env({'home': str(tmp_path), 'train_epochs': '3'}, environ={})
    nodes = {node.id: node for node in build(settings).components}
    sections = {name: sorted(json.loads(nodes[name].exec_properties['custom_config']))
                for name in ('Transform', 'Tuner', 'Trainer')}
    assert sections == {'Transform': ['preprocessing'], 'Tuner': ['model', 'preprocessing', 'tuning'],
                        'Trainer': ['fine_tuning', 'model', 'preprocessing', 'training']}
    trainer = json.loads(nodes['Trainer'].exec_properties['custom_config'])
    assert trainer['training'] == {'epochs': 3, 'batch_size': 32, 'seed': 0}


def test_the_push_requires_the_serving_check_unless_it_is_switched_off(tmp_path):
    from petpark.components.serving_validator import runners
    assert config.DECLARED['validation_server'].choices == runners.SERVERS
    nodes = {node.id: node for node in build(config.Settings.from_env({'home': str(tmp_path)}, environ={})).components}
    assert nodes['Pusher'].inputs['infra_blessing'].producer_component_id == 'ServingValidator'
    assert nodes['ServingValidator'].exec_properties['server'] == 'petpark'
    quick = config.Settings.from_env({'home': str(tmp_path), 'validate_serving': 'false'}, environ={})
    nodes = {node.id: node for node in build(quick).components}
    assert 'ServingValidator' not in nodes and 'infra_blessing' not in nodes['Pusher'].inputs


def test_runner_choices_are_passed_through_unchanged(tmp_path):
    settings = config.Settings.from_env({'home': 'gs://petpark-bucket/home'}, environ={})
    assert settings.pipeline_root == 'gs://petpark-bucket/home/pipeline_root/petpark'
    pipeline = build(settings, pipeline_root='s3://other/root', beam_pipeline_args=['--runner=DataflowRunner'])
    assert pipeline.pipeline_info.pipeline_root == 's3://other/root'
    assert pipeline.metadata_connection_config is None
    assert pipeline.beam_pipeline_args == ['--runner=DataflowRunner']


def test_local_runner_builds_its_choices_and_generates_no_data(tmp_path):
    from petpark.pipeline.runners import local as local_runner
    settings = config.Settings.from_env({'home': str(tmp_path / 'home'), 'beam_workers': '2'}, environ={})
    with pytest.raises(ValueError, match='No input data.*petpark synth --out'):
        local_runner.local_pipeline(settings)
    assert not (tmp_path / 'home').exists()
    data = tmp_path / 'data'
    data.mkdir()
    settings = config.Settings.from_env({'home': str(tmp_path / 'home'), 'data_root': str(data),
                                         'beam_workers': '2'}, environ={})
    pipeline = local_runner.local_pipeline(settings)
    assert pipeline.pipeline_info.pipeline_root == settings.pipeline_root
    assert pipeline.metadata_connection_config.sqlite.filename_uri == settings.metadata_path
    assert '--direct_num_workers=2' in pipeline.beam_pipeline_args
    assert not list((tmp_path / 'home').iterdir())  # TFX makes the sqlite file's folder; nothing else


def real_profile(tmp_path, **env):
    """The real profile with its data and weights replaced (a user's machine has neither)."""
    data = tmp_path / 'data'
    data.mkdir(exist_ok=True)
    return config.Settings.from_env(environ=dict({
        'PETPARK_PROFILE': 'real', 'PETPARK_HOME': str(tmp_path / 'home'), 'PETPARK_DATA_ROOT': str(data),
        'PETPARK_BACKBONE': 'cnn', 'PETPARK_BACKBONE_WEIGHTS': '', 'PETPARK_FINE_TUNE_EPOCHS': '0'}, **env))


def test_a_profile_sets_defaults_that_the_environment_and_flags_override(tmp_path):
    settings = real_profile(tmp_path, PETPARK_TRAIN_STEPS='11')
    assert settings.profile == 'real' and settings.training.image_size == 160 and settings.training.train_steps == 11
    assert settings.data.input_patterns == ['cats_and_dogs_filtered/train/*/*', 'kaggle_dogs_vs_cats_128/*/*']
    assert settings.data.holdout_pattern == 'cats_and_dogs_filtered/validation/*/*'
    evaluation = settings.evaluation
    assert (evaluation.min_accuracy, evaluation.min_class_precision, evaluation.min_class_recall) == (0.98, 0.97, 0.97)
    assert config.Settings.from_env({'profile': 'demo'}, environ={'PETPARK_PROFILE': 'real'}).training.image_size == 64
    real = config.PROFILES['real']
    assert real['backbone'] == 'mobilenet_v1_1.0' and real['fine_tune_epochs'] > 0
    assert os.path.basename(real['backbone_weights']) == 'mobilenet_v1_1_0_224_imagenet_no_top_converted.h5'


def test_the_real_profile_resolves_on_a_machine_with_the_shared_data(shared_dir):
    settings = config.Settings.from_env({'profile': 'real'}, environ={})
    assert settings.data.data_root == os.path.abspath(os.path.join(shared_dir, 'data'))
    assert settings.training_config().fine_tuning.epochs == 2  # weights found and their sha256 checked


def test_the_hold_out_split_is_evaluated_and_never_transformed_for_training(tmp_path):
    from petpark.components.image_example_gen.executor import HOLDOUT_SPLIT
    nodes = {node.id: node for node in build(real_profile(tmp_path)).components}
    splits = json.loads(nodes['ImageExampleGen'].exec_properties['input_config'])['splits']
    assert [(s['name'], s['pattern']) for s in splits] == [
        ('pool-1', 'cats_and_dogs_filtered/train/*/*'), ('pool-2', 'kaggle_dogs_vs_cats_128/*/*'),
        (HOLDOUT_SPLIT, 'cats_and_dogs_filtered/validation/*/*')]
    assert json.loads(nodes['Evaluator'].exec_properties['example_splits']) == [HOLDOUT_SPLIT]
    transform_splits = json.loads(nodes['Transform'].exec_properties['splits_config'])
    assert transform_splits == {'analyze': ['train'], 'transform': ['train', 'eval']}
    demo = {node.id: node for node in build(config.Settings.from_env({'home': str(tmp_path)}, environ={})).components}
    assert json.loads(demo['Evaluator'].exec_properties['example_splits'] or 'null') is None


def test_per_class_precision_and_recall_gate_the_blessing(tmp_path):
    from petpark.modules import features
    from petpark.pipeline import factory
    specs = factory.eval_config(real_profile(tmp_path).evaluation).metrics_specs
    gated = {(spec.binarize.class_ids.values[0], metric.class_name):
             metric.per_slice_thresholds[0].threshold.value_threshold.lower_bound.value
             for spec in specs for metric in spec.metrics if metric.class_name in ('Precision', 'Recall')}
    dog, cat = features.POSITIVE_CLASS_ID, 1 - features.POSITIVE_CLASS_ID
    assert gated == {(dog, 'Precision'): 0.97, (dog, 'Recall'): 0.97, (cat, 'Precision'): 0.97, (cat, 'Recall'): 0.97}
    demo = factory.eval_config(config.Settings.from_env({'home': str(tmp_path)}, environ={}).evaluation)
    assert len(demo.metrics_specs) == 1
    assert not any(m.per_slice_thresholds for m in demo.metrics_specs[0].metrics if m.class_name == 'Precision')
