"""tuner_fn and run_fn on real Transform output; the exported signatures."""
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from petpark.modules import features, tuner, trainer
from tests.pipeline_fixtures import custom_config


def test_tuner_fn_searches_keras3_models_and_finds_best_hyperparameters(fn_args):
    fn_args.custom_config = custom_config('Tuner', max_trials=2, search_space={'filters': [8, 16], 'conv_blocks': [2]})
    result = tuner.tuner_fn(fn_args)
    assert isinstance(result.tuner.hypermodel.build(result.tuner.oracle.hyperparameters.copy()), keras.Model)
    result.tuner.search(**result.fit_kwargs)
    best = result.tuner.get_best_hyperparameters()[0]
    assert best.get('filters') in (8, 16) and best.get('conv_blocks') == 2
    trials = list(result.tuner.oracle.trials.values())
    assert len(trials) == 2 and all(trial.score is not None for trial in trials)
    top = max(trial.score for trial in trials)  # the objective is validation accuracy, higher is better
    # the best trial's values (here the scores differ, 0.6875 and 0.625: a flipped objective direction fails)
    assert best.values in [trial.hyperparameters.values for trial in trials if trial.score == top]
    assert [trial.hyperparameters.values for trial in trials].count(best.values) == 1


def test_tuner_fn_rejects_unknown_algorithm(fn_args):
    fn_args.custom_config = custom_config('Tuner')
    fn_args.custom_config['tuning']['algorithm'] = 'grid'
    with pytest.raises(ValueError, match="algorithm must be one of .*'grid'"):
        tuner.tuner_fn(fn_args)


def test_run_fn_exports_three_signatures_with_probabilities(fn_args, transformed):
    fn_args.custom_config = custom_config('Trainer', search_space={'conv_blocks': [2], 'filters': [8]})
    trainer.run_fn(fn_args)
    export = fn_args.serving_model_dir
    saved_model = saved_model_pb2.SavedModel.FromString(open(os.path.join(export, 'saved_model.pb'), 'rb').read())
    signatures = saved_model.meta_graphs[0].signature_def
    assert signatures[features.EXAMPLES_SIGNATURE].method_name == 'tensorflow/serving/classify'
    assert set(signatures[features.EXAMPLES_SIGNATURE].outputs) == {'classes', 'scores'}

    loaded = tf.saved_model.load(export)
    image_files = sorted(glob.glob(os.path.join(transformed['data_root'], '*', '*.jpg')))[:4]
    images = [open(path, 'rb').read() for path in image_files]
    examples = [tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))})).SerializeToString()
        for data in images]
    by_example = loaded.signatures[features.EXAMPLES_SIGNATURE](inputs=tf.constant(examples))
    by_bytes = loaded.signatures[features.IMAGE_BYTES_SIGNATURE](image_bytes=tf.constant(images))
    for out in (by_example, by_bytes):
        scores = out['scores'].numpy()
        assert scores.shape == (4, 2) and ((scores >= 0) & (scores <= 1)).all()
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
        assert out['classes'].numpy().tolist() == [[b'cat', b'dog']] * 4
    np.testing.assert_allclose(by_example['scores'], by_bytes['scores'], atol=1e-6)
    pixels = np.random.RandomState(0).rand(2, 32, 32, 3).astype('float32')
    assert loaded.signatures[features.PIXELS_SIGNATURE](pixels=tf.constant(pixels))['scores'].shape == (2, 2)


def test_tuner_is_reproducible_with_seed_zero(fn_args):
    fn_args.custom_config = custom_config('Tuner', seed=0, max_trials=3)
    first, second = tuner.tuner_fn(fn_args).tuner.oracle, tuner.tuner_fn(fn_args).tuner.oracle
    assert first.seed == second.seed
    assert first._random_values() == second._random_values()
