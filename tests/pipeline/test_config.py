"""Settings: environment, overrides, validation, and the README documents every one."""
import json
import os
import re

import pytest

from pipeline import config

README = os.path.join(config.REPO_ROOT, 'README.md')


def test_environment_then_overrides(tmp_path):
    env = {'PETPARK_HOME': str(tmp_path / 'h'), 'PETPARK_TUNE': 'false', 'PETPARK_TRAIN_STEPS': '7',
           'PETPARK_MIN_ACCURACY': '0.9'}
    settings = config.Settings.from_env({'train_steps': '9', 'data_root': None}, environ=env)
    assert settings.home == str(tmp_path / 'h')
    assert settings.tune is False and settings.train_steps == 9 and settings.min_accuracy == 0.9
    assert settings.serving_model_dir == os.path.join(str(tmp_path / 'h'), 'serving', 'petpark')
    assert settings.input_base == os.path.join(str(tmp_path / 'h'), 'data', 'synthetic')


@pytest.mark.parametrize('env,message', [
    ({'PETPARK_TRAIN_STEPS': 'many'}, "PETPARK_TRAIN_STEPS='many'"),
    ({'PETPARK_TUNE': 'maybe'}, 'PETPARK_TUNE=.*true/false'),
    ({'PETPARK_BACKBONE': 'resnet'}, "PETPARK_BACKBONE must be 'cnn' or 'mobilenet'"),
    ({'PETPARK_BACKBONE_WEIGHTS': '/no/such.h5'}, 'no such file'),
    ({'PETPARK_DATA_ROOT': '/no/such/dir'}, 'PETPARK_DATA_ROOT.*not a directory'),
    ({'PETPARK_BATCH_SIZE': '0'}, 'PETPARK_BATCH_SIZE must be at least 1'),
    ({'PETPARK_TUNER_ALGORITHM': 'grid'}, 'PETPARK_TUNER_ALGORITHM'),
    ({'PETPARK_SEARCH_SPACE': '{filters: 3'}, 'PETPARK_SEARCH_SPACE is not valid JSON'),
    ({'PETPARK_SEARCH_SPACE': '{"filters": []}'}, 'non-empty lists'),
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        config.Settings.from_env(environ=env)


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="Unknown setting 'colour'"):
        config.Settings.from_env({'colour': 'red'}, environ={})


def test_readme_documents_every_setting():
    documented = set(re.findall(r'^\| `(PETPARK_[A-Z_]+)` \|', open(README).read(), re.M))
    assert documented == {s.env for s in config.SETTINGS.values()}


def test_search_space_reaches_tuner_and_fixes_trainer_hyperparameters(tmp_path):
    from pipeline import factory
    settings = config.Settings.from_env(
        {'home': str(tmp_path), 'search_space': '{"filters": [16, 8], "dropout": [0.5]}'}, environ={})
    nodes = {node.id: node for node in factory.create_pipeline(settings).components}
    tuner_config = json.loads(nodes['Tuner'].exec_properties['custom_config'])
    assert tuner_config['search_space']['filters'] == [16, 8]
    assert tuner_config['search_space']['conv_blocks'] == [4, 3]  # defaults kept
    trainer_config = json.loads(nodes['Trainer'].exec_properties['custom_config'])
    assert trainer_config['hyperparameters']['filters'] == 16 and trainer_config['hyperparameters']['dropout'] == 0.5
